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
