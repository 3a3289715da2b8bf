"""The ``remoteexec`` command line, apart from the library: the library never imports it.

One module per command group: :mod:`.main` (parsing, ``run``), :mod:`.lab`,
:mod:`.demo`.
"""

from .main import main

__all__ = ["main"]
