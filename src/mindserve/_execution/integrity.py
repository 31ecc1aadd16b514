"""Model file integrity: MindIR has no checksum, so a damaged file can load and serve wrong
weights. A model may declare its SHA-256 (``svc.model(..., sha256=...)``), and a version
directory may carry a manifest, ``SHA256SUMS``, in the format ``sha256sum`` writes
(``<64 hex digits>  <file name>`` per line). When either is present, a file that does not
match fails its load with a :class:`~mindserve.LoadError`.

What is checked is what loads: a checked file is read once, hashed as it is copied into a
directory only this process may enter, and MindSpore loads that copy (:func:`checked_file`),
so a file renamed over the model between the check and the load is never served.

Files of a version are not read through symbolic links that lead outside the servable
directory (a publisher who may write it must not make the serving account read files
elsewhere): such a model file or manifest is a :class:`~mindserve.LoadError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from typing import Any, BinaryIO

from mindserve._errors import LoadError

#: The manifest's file name inside a version directory.
MANIFEST = "SHA256SUMS"

_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")
_CHUNK = 1 << 20


def check_model_file(path: str, declared: str | None, version_dir: str | None, where: str) -> None:
    """Check ``path`` against its declared SHA-256 and its version's manifest, if any."""
    with _opened_checked(path, declared, version_dir, where) as (handle, wanted):
        if handle is not None:
            _compare(path, _copy_hashing(handle, None), wanted, where)


@contextlib.contextmanager
def checked_file(path: str, declared: str | None, version_dir: str | None, where: str) -> Iterator[str]:
    """The path to load ``path`` from, once checked against its declared SHA-256 and its
    version's manifest: ``path`` itself when neither applies, else a private copy of the
    very bytes that were hashed (removed when the ``with`` block ends)."""
    with _opened_checked(path, declared, version_dir, where) as (handle, wanted):
        if handle is None:
            yield path
            return
        private = tempfile.mkdtemp(prefix="mindserve-model-")  # mode 0700: this account only
        try:
            copy = os.path.join(private, os.path.basename(path))
            with open(copy, "xb") as target:
                digest = _copy_hashing(handle, target)
            _compare(path, digest, wanted, where)
            _link_external_weights(path, private)
            yield copy
        finally:
            shutil.rmtree(private, ignore_errors=True)


@contextlib.contextmanager
def _opened_checked(
    path: str, declared: str | None, version_dir: str | None, where: str
) -> Iterator[tuple[BinaryIO | None, list[tuple[str, str, str | None]]]]:
    """The model file opened (``None`` when there is nothing to check) and the digests it
    must have, as ``(digest, what, manifest)``; links out of the servable directory refused."""
    root = _servable_root(path, version_dir)
    if root is not None:
        _refuse_outside(path, os.path.realpath(path), root, where)
    wanted: list[tuple[str, str, str | None]] = []
    if declared is not None:
        wanted.append((declared.lower(), "declared", None))
    manifest = os.path.join(version_dir, MANIFEST) if version_dir is not None else None
    if manifest is not None and os.path.lexists(manifest):
        entries = read_manifest(manifest, where, root)
        name = os.path.relpath(path, version_dir).replace(os.sep, "/")  # type: ignore[arg-type]
        if name not in entries:
            raise LoadError(
                f"{where}: {name} is not listed in {manifest}; when a version has a manifest, it lists "
                f"every model file. Hint: add it with sha256sum {name} >> {MANIFEST}"
            )
        wanted.append((entries[name].lower(), "manifest", manifest))
    if not wanted:
        yield None, wanted
        return
    with open(path, "rb") as handle:
        if root is not None:
            _refuse_outside(path, _opened_path(handle, path), root, where)
        yield handle, wanted


def _servable_root(path: str, version_dir: str | None) -> str | None:
    """The servable directory's real path when ``path`` lies in the version directory
    (a model declared with an absolute path elsewhere is its definer's choice)."""
    if version_dir is None:
        return None
    version = os.path.abspath(version_dir)
    if not os.path.abspath(path).startswith(version + os.sep):
        return None
    return os.path.realpath(os.path.dirname(version))


def _refuse_outside(path: str, real: str, root: str, where: str) -> None:
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        raise LoadError(
            f"{where}: {path} is, or lies under, a symbolic link that leads outside the servable "
            f"directory {root}; mindserve does not follow links out of it. Hint: publish by copying "
            f"or renaming files into the servable directory, not by linking (a model may also be "
            f"declared with its absolute path)"
        )


def _opened_path(handle: BinaryIO | Any, path: str) -> str:
    """The real path of the file ``handle`` has open (Linux: from /proc, race-free)."""
    try:
        return os.readlink(f"/proc/self/fd/{handle.fileno()}")
    except OSError:
        real = os.path.realpath(path)
        try:
            same = os.path.samestat(os.fstat(handle.fileno()), os.stat(real))
        except OSError:
            same = False
        return real if same else os.sep + "\0unknown"


def _copy_hashing(handle: BinaryIO, target: BinaryIO | None) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(_CHUNK), b""):
        digest.update(chunk)
        if target is not None:
            target.write(chunk)
    return digest.hexdigest()


def _compare(path: str, digest: str, wanted: list[tuple[str, str, str | None]], where: str) -> None:
    for expected, what, manifest in wanted:
        if digest == expected:
            continue
        if what == "declared":
            raise LoadError(
                f"{where}: the SHA-256 of {path} is {digest}; it does not match the declared "
                f"sha256={expected}. Hint: the file is damaged or not the one meant"
            )
        raise LoadError(
            f"{where}: {os.path.basename(path)} (SHA-256 {digest}) does not match the SHA-256 in "
            f"{manifest} ({expected}). Hint: the file is damaged, or still being copied"
        )


def _link_external_weights(path: str, private: str) -> None:
    """A large MindIR keeps its weights beside it (``<name>_variables/``, not covered by a
    checksum): the private copy sees them where MindSpore looks."""
    stem = os.path.splitext(os.path.basename(path))[0]
    weights = os.path.join(os.path.dirname(path), f"{stem}_variables")
    if os.path.isdir(weights):
        os.symlink(os.path.realpath(weights), os.path.join(private, f"{stem}_variables"))


def read_manifest(manifest: str, where: str, root: str | None = None) -> dict[str, str]:
    """File name -> SHA-256 from a ``sha256sum``-style manifest.

    A manifest that exists but is no readable regular file (a directory, a dangling link, a
    device) is a :class:`LoadError`, never taken for an absent one; so is a link out of the
    servable directory ``root``. An error names the line, never its content (a manifest may
    be a link to any file the serving account can read).
    """
    try:
        descriptor = os.open(manifest, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise LoadError(
            f"{where}: {manifest} is not a readable regular file ({exc.strerror}); a version's "
            f"manifest must be one. Hint: remove it, or write it with sha256sum"
        ) from exc
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise LoadError(
            f"{where}: {manifest} is not a readable regular file; a version's manifest must be "
            f"one. Hint: remove it, or write it with sha256sum"
        )
    with open(descriptor, "rb") as handle:
        if root is not None:
            _refuse_outside(manifest, _opened_path(handle, manifest), root, where)
        data = handle.read()
    entries: dict[str, str] = {}
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise LoadError(
                f"{where}: {manifest} line {number}: expected '<sha256>  <file name>' (as sha256sum "
                f"writes it); that line is not (its content is not shown: the manifest may be any file)"
            )
        entries[match.group(2).removeprefix("./")] = match.group(1)
    return entries


def file_sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return _copy_hashing(handle, None)
