"""``python -m remoteexec``: the command line (see :mod:`remoteexec.cli`)."""

import sys

from .cli import main

sys.exit(main())
