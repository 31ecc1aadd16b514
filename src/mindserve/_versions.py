"""Version directories: ``<directory>/1/``, ``<directory>/2/``, ... ; version 0 means the newest."""

from __future__ import annotations

import os

from mindserve._errors import LoadError, VersionNotFoundError
from mindserve._servable import ServableDefinition


def check_version_number(version: object) -> int:
    """A version number is an int >= 0 (0: the newest)."""
    if type(version) is not int or version < 0:
        raise VersionNotFoundError(f"a version must be an int >= 1, or 0 for the newest; got {version!r}")
    return version


def list_versions(directory: str) -> list[int]:
    """The numeric version directories under ``directory``, ascending."""
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    return sorted(
        int(entry)
        for entry in entries
        if entry.isdigit()
        and int(entry) > 0
        and str(int(entry)) == entry
        and os.path.isdir(os.path.join(directory, entry))
    )


def resolve_version(definition: ServableDefinition, version: int) -> tuple[int, str | None]:
    """Pick the version to load and its directory (``None`` when models are not files).

    A servable whose models are all in-memory (cells, callables) needs no version
    directory; it is version 1 unless its directory has version directories.
    """
    check_version_number(version)
    directory = definition.directory
    if directory is None:
        if version not in (0, 1):
            raise VersionNotFoundError(
                f"servable '{definition.name}' has no directory, so its only version is 1; "
                f"got version {version}"
            )
        return 1, None
    if definition.needs_files and not os.path.isdir(directory):
        raise LoadError(
            f"servable '{definition.name}': directory {directory!r} does not exist "
            f"(expected version directories 1/, 2/, ... holding the model files)"
        )
    versions = list_versions(directory)
    if not versions:
        if definition.needs_files:
            raise VersionNotFoundError(
                f"servable '{definition.name}': no version directory (1/, 2/, ...) in "
                f"{directory!r}, which its model files need"
            )
        if version not in (0, 1):
            raise VersionNotFoundError(
                f"servable '{definition.name}' has no version directories, so its only version "
                f"is 1; got version {version}"
            )
        return 1, None
    chosen = versions[-1] if version == 0 else version
    if chosen not in versions:
        raise VersionNotFoundError(
            f"servable '{definition.name}' has no version {version} in {directory!r}; available: {versions}"
        )
    return chosen, os.path.join(directory, str(chosen))
