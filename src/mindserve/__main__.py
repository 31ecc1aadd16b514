"""``python -m mindserve``: the same command line as the ``mindserve`` console script."""

from mindserve._cli.main import main

raise SystemExit(main())
