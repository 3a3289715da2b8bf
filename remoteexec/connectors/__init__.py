"""Connectors: how the master opens a context on a host, one module per way in.

- :mod:`.base`: the :class:`Connector` base (a cache key, opening a context
  on a router, error classification) and the registry that maps a target's
  scheme to its connector.
- :mod:`.local`: this machine, a child interpreter, no SSH (``local://``;
  the default host).
- :mod:`.ssh`: a remote host over the system ssh client (mitogen bootstraps
  itself over it; a target without a scheme); parses targets and turns
  ssh's failures into errors that say which host failed and what to do.

A new way in is one more module here that registers its class with
:func:`register`; :func:`lookup` imports it when its scheme is first used.
"""

from remoteexec.connectors.base import (
    DEFAULT_SCHEME,
    Connector,
    known,
    lookup,
    plan,
    register,
    split_scheme,
)
from remoteexec.connectors.local import LocalConnector
from remoteexec.connectors.ssh import SSHConnector

__all__ = [
    "DEFAULT_SCHEME",
    "Connector",
    "LocalConnector",
    "SSHConnector",
    "known",
    "lookup",
    "plan",
    "register",
    "split_scheme",
]
