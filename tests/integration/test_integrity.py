"""Model file integrity: a declared SHA-256, and a version directory's SHA256SUMS manifest."""

from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pytest

import mindserve
from mindserve import DefinitionError, LoadError


def sha256(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@pytest.fixture
def mlp_dir(exported, tmp_path):
    """A copy of the MLP's servable directory (version 1), to tamper with."""
    root = tmp_path / "mlp"
    shutil.copytree(os.path.join(exported["root"], "mlp", "1"), root / "1")
    return root


def mlp_servable(root, **options):
    svc = mindserve.Servable("mlp", directory=root)
    model = svc.model("mlp.mindir", **options)
    svc.add_method(lambda x: model(x), name="predict")
    return svc


def test_a_declared_sha256_is_checked_at_load(rt, mlp_dir):
    digest = sha256(mlp_dir / "1" / "mlp.mindir")
    rt.start(mlp_servable(mlp_dir, sha256=digest))
    assert rt.infer("mlp", "predict", [{"x": np.zeros(16, np.float32)}])[0]["output"].shape == (10,)
    with pytest.raises(LoadError, match=r"SHA-256 .* does not match"):
        rt.start(mlp_servable(mlp_dir, sha256="0" * 64))
    assert rt.servable_status("mlp").default_version == 1  # what ran keeps running


@pytest.mark.parametrize("bad", ["abc", 5, "g" * 64])
def test_a_sha256_is_64_hex_digits(bad):
    with pytest.raises(DefinitionError, match="sha256 must be 64 hexadecimal digits"):
        mindserve.Servable("s").model("m.mindir", sha256=bad)


def test_only_model_files_have_a_sha256():
    with pytest.raises(DefinitionError, match="sha256 only applies to MindIR files"):
        mindserve.Servable("s").model(lambda x: x, name="f", sha256="0" * 64)


def test_a_manifest_checks_every_file_it_lists(rt, mlp_dir):
    model = mlp_dir / "1" / "mlp.mindir"
    (mlp_dir / "1" / "SHA256SUMS").write_text(f"{sha256(model)}  mlp.mindir\n")
    rt.start(mlp_servable(mlp_dir))
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit: MindIR has no checksum of its own
    model.write_bytes(bytes(data))
    with pytest.raises(LoadError, match=r"mlp.mindir.*does not match the SHA-256 in .*SHA256SUMS"):
        rt.start(mlp_servable(mlp_dir))


def test_a_manifest_must_list_every_model_file(rt, mlp_dir):
    (mlp_dir / "1" / "SHA256SUMS").write_text(f"{'0' * 64}  other.bin\n")
    with pytest.raises(LoadError, match=r"mlp.mindir is not listed in .*SHA256SUMS"):
        rt.start(mlp_servable(mlp_dir))


def test_a_malformed_manifest_is_a_load_error(rt, mlp_dir):
    (mlp_dir / "1" / "SHA256SUMS").write_text("not a manifest line\n")
    with pytest.raises(LoadError, match=r"SHA256SUMS line 1"):
        rt.start(mlp_servable(mlp_dir))


def test_the_watcher_loads_a_version_only_once_its_manifest_matches(rt, mlp_dir):
    from waiting import wait_until

    rt.start(mlp_servable(mlp_dir), watch=True, poll_interval=0.02)
    (mlp_dir / "2").mkdir()
    shutil.copy(mlp_dir / "1" / "mlp.mindir", mlp_dir / "2" / "mlp.mindir")
    (mlp_dir / "2" / "SHA256SUMS").write_text(f"{'0' * 64}  mlp.mindir\n")  # not yet right
    wait_until(lambda: rt.servable_status("mlp").last_error is not None)
    assert rt.servable_status("mlp").default_version == 1
    (mlp_dir / "2" / "SHA256SUMS").write_text(f"{sha256(mlp_dir / '2' / 'mlp.mindir')}  mlp.mindir\n")
    wait_until(lambda: rt.servable_status("mlp").default_version == 2)


@pytest.fixture
def swap_before_load(monkeypatch):
    """Rename a file over the model's path between its check and MindSpore's load (the
    time-of-check/time-of-use race, made deterministic): ``swap_before_load(path, other)``."""
    from mindserve._execution import mindspore as _mindspore

    real_load = _mindspore.load_mindir
    swaps = {}

    def swapping_load(path, *args, **kwargs):
        for target, other in swaps.items():
            os.replace(other, target)
        swaps.clear()
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(_mindspore, "load_mindir", swapping_load)
    return swaps.__setitem__


@pytest.mark.parametrize("checked_by", ["declared", "manifest"])
def test_the_bytes_loaded_are_the_bytes_checked_when_a_file_is_renamed_over_the_model(
    rt, mlp_dir, exported, swap_before_load, checked_by
):
    """A file renamed over the model after its SHA-256 was checked is not what serves: the
    model loads from the very bytes that were hashed."""
    from reference import run_net

    model = mlp_dir / "1" / "mlp.mindir"
    digest = sha256(model)
    options = {"sha256": digest} if checked_by == "declared" else {}
    if checked_by == "manifest":
        (mlp_dir / "1" / "SHA256SUMS").write_text(f"{digest}  mlp.mindir\n")
    other = mlp_dir / "other.mindir"
    shutil.copy(os.path.join(exported["root"], "mlp", "2", "mlp.mindir"), other)
    swap_before_load(str(model), str(other))
    rt.start(mlp_servable(mlp_dir, **options))
    assert sha256(model) != digest  # the swap happened
    x = np.linspace(-1, 1, 16, dtype=np.float32)
    got = rt.infer("mlp", "predict", [{"x": x}])[0]["output"]
    np.testing.assert_array_equal(got, run_net(exported["nets"]["mlp_v1"], x[None])[0])


@pytest.mark.parametrize("kind", ["directory", "dangling link", "link to /dev/zero"])
def test_a_manifest_that_is_not_a_readable_regular_file_is_a_load_error(rt, mlp_dir, kind):
    """A SHA256SUMS that exists but cannot be read as a file is not taken for an absent one."""
    manifest = mlp_dir / "1" / "SHA256SUMS"
    if kind == "directory":
        manifest.mkdir()
    elif kind == "dangling link":
        manifest.symlink_to(mlp_dir / "1" / "missing")
    else:
        manifest.symlink_to("/dev/zero")
    with pytest.raises(LoadError, match=r"SHA256SUMS.* is not a readable regular file"):
        rt.start(mlp_servable(mlp_dir))


def test_a_manifest_error_names_the_line_and_never_quotes_its_content(rt, mlp_dir):
    model = mlp_dir / "1" / "mlp.mindir"
    secret = "password=hunter2-do-not-log"
    (mlp_dir / "1" / "SHA256SUMS").write_text(f"{sha256(model)}  mlp.mindir\n{secret}\n")
    with pytest.raises(LoadError, match=r"SHA256SUMS line 2: expected '<sha256>  <file name>'") as caught:
        rt.start(mlp_servable(mlp_dir))
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("what", ["model file", "manifest", "version directory"])
def test_a_link_that_leads_outside_the_servable_directory_is_refused(rt, mlp_dir, tmp_path, what):
    """A publisher who may write the servable directory cannot make the serving account read
    files elsewhere through a symbolic link (see docs/versions.md)."""
    outside = tmp_path / "outside"
    shutil.copytree(mlp_dir / "1", outside)
    model = mlp_dir / "1" / "mlp.mindir"
    if what == "model file":
        model.unlink()
        model.symlink_to(outside / "mlp.mindir")
    elif what == "manifest":
        (outside / "SHA256SUMS").write_text(f"{sha256(model)}  mlp.mindir\n")
        (mlp_dir / "1" / "SHA256SUMS").symlink_to(outside / "SHA256SUMS")
    else:
        shutil.rmtree(mlp_dir / "1")
        (mlp_dir / "1").symlink_to(outside, target_is_directory=True)
    with pytest.raises(LoadError, match=r"symbolic link.* outside the servable directory"):
        rt.start(mlp_servable(mlp_dir))


def test_a_link_inside_the_servable_directory_is_followed(rt, mlp_dir):
    """Version 2 may link to version 1's file: it stays inside the servable directory."""
    (mlp_dir / "2").mkdir()
    (mlp_dir / "2" / "mlp.mindir").symlink_to(os.path.join("..", "1", "mlp.mindir"))
    assert rt.start(mlp_servable(mlp_dir)).version == 2
    assert rt.infer("mlp", "predict", [{"x": np.zeros(16, np.float32)}])[0]["output"].shape == (10,)
