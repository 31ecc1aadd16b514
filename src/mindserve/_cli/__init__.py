"""The ``mindserve`` command line: ``doctor``, ``info`` and ``check`` (see docs/cli.md).

Nothing here is imported by ``import mindserve``. The command line never imports MindSpore
itself: whatever could crash inside MindSpore runs in a child process (:mod:`.probe`), and
a crash there is reported, not inherited.
"""
