"""Model file integrity: MindIR has no checksum, so a damaged file can load and serve wrong
weights. A model may declare its SHA-256 (``svc.model(..., sha256=...)``), and a version
directory may carry a manifest, ``SHA256SUMS``, in the format ``sha256sum`` writes
(``<64 hex digits>  <file name>`` per line). When either is present, a file that does not
match fails its load with a :class:`~mindserve.LoadError`.
"""

from __future__ import annotations

import hashlib
import os
import re

from mindserve._errors import LoadError

#: The manifest's file name inside a version directory.
MANIFEST = "SHA256SUMS"

_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


def check_model_file(path: str, declared: str | None, version_dir: str | None, where: str) -> None:
    """Check ``path`` against its declared SHA-256 and its version's manifest, if any."""
    manifest = os.path.join(version_dir, MANIFEST) if version_dir is not None else None
    listed: str | None = None
    if manifest is not None and os.path.isfile(manifest):
        entries = read_manifest(manifest, where)
        name = os.path.relpath(path, version_dir).replace(os.sep, "/")  # type: ignore[arg-type]
        if name not in entries:
            raise LoadError(
                f"{where}: {name} is not listed in {manifest}; when a version has a manifest, it lists "
                f"every model file. Hint: add it with sha256sum {name} >> {MANIFEST}"
            )
        listed = entries[name]
    else:
        manifest = None
    if declared is None and listed is None:
        return
    digest = file_sha256(path)
    if declared is not None and digest != declared.lower():
        raise LoadError(
            f"{where}: the SHA-256 of {path} is {digest}; it does not match the declared sha256={declared}. "
            f"Hint: the file is damaged or not the one meant"
        )
    if listed is not None and digest != listed.lower():
        raise LoadError(
            f"{where}: {os.path.basename(path)} (SHA-256 {digest}) does not match the SHA-256 in {manifest} "
            f"({listed}). Hint: the file is damaged, or still being copied"
        )


def read_manifest(manifest: str, where: str) -> dict[str, str]:
    """File name -> SHA-256 from a ``sha256sum``-style manifest."""
    entries: dict[str, str] = {}
    with open(manifest, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.rstrip("\n")
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            match = _LINE.match(text)
            if match is None:
                raise LoadError(
                    f"{where}: {manifest} line {number}: expected '<sha256>  <file name>' (as sha256sum "
                    f"writes it); got {text[:80]!r}"
                )
            entries[match.group(2).removeprefix("./")] = match.group(1)
    return entries


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
