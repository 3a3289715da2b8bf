"""Connectors: how the master opens a context on a host.

- :mod:`.local`: this machine, a child interpreter, no SSH (the default).
- :mod:`.ssh`: a remote host over the system ssh client (mitogen bootstraps
  itself over it); parses targets and turns ssh's failures into errors that
  say which host failed and what to do.
"""
