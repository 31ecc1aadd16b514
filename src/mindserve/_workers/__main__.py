"""``python -m mindserve._workers R W``: a worker process (see :mod:`.child`)."""

import sys

from mindserve._workers.child import main

main(sys.argv)
