"""``python -m remoteexec.lab up|down|status|partition|heal`` (see :mod:`remoteexec.lab`)."""

from __future__ import annotations

import sys

from remoteexec.cli.lab import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
