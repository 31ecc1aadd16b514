"""Run MindSpore Serving 2.0 servables unchanged, in-process.

* :func:`load_servable` imports ``<dir>/<name>/servable_config.py`` (written against
  ``mindspore_serving.server.register``) as a :class:`mindserve.Servable`.
* :mod:`mindserve.compat.server` keeps MindSpore Serving's server calls
  (``start_servables``, ``ServableStartConfig``, ``start_servable_in_master``, ``stop``).
* :mod:`mindserve.compat.client` keeps its client (``Client(...).infer``), talking to the
  in-process runtime.
"""

from mindserve.compat._loader import load_servable

__all__ = ["load_servable"]
