"""Running a snippet in a fresh interpreter where an optional extra's package is missing."""

import subprocess
import sys


def without_package(tmp_path, package, code):
    """Run ``code`` where importing ``package`` raises ImportError; return its stdout."""
    shadow = tmp_path / "shadow" / package
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    script = f"import sys; sys.path.insert(0, {str(shadow.parent)!r})\n{code}"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout


def install_hint_when_missing(tmp_path, package, module):
    """The message of the error importing ``module`` raises when ``package`` is missing."""
    return without_package(
        tmp_path,
        package,
        f"import mindserve\ntry:\n    import {module}\nexcept mindserve.ExtraUnavailableError as exc:\n    print(exc)\n",
    )
