"""Ray Serve, or a clear error saying how to install it."""

from __future__ import annotations

from mindserve._errors import ExtraUnavailableError

try:
    import ray
    from ray import serve
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ExtraUnavailableError(
        f"mindserve.ray needs Ray Serve, which is not installed ({exc}). Hint: pip install 'mindserve[ray]'"
    ) from exc

__all__ = ["ray", "serve"]
