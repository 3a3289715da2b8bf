"""Tarantool on any host: single instances and replica sets across hosts.

::

    from remoteexec.tarantool import TarantoolInstance, ReplicaSet

    one = TarantoolInstance(on=host, listen="10.20.0.11:3301", app_lua=APP).start()
    one.eval("return box.info.status")            # 'running'
    rs = ReplicaSet("storage", members=[(a, 3301), (b, 3301), (c, 3301)])
    rs.start()

Both are :class:`~remoteexec.services.Service` objects. Everything that
touches the processes runs on the targets (see
:mod:`remoteexec.target.tarantool`); this package is the master side:

- :mod:`.instance`: TarantoolInstance (its process is an executor, its
  readiness layered: process, running, app, ro, mesh);
- :mod:`.replicaset`: ReplicaSet, members started at once, full mesh;
- :mod:`.config`: ``box.cfg`` defaults and the generated ``init.lua``;
- :mod:`.version`: version parsing and :class:`~.version.Features`;
- :mod:`.scripts`: the Lua in ``lua/`` (package data, sent as text);
- :mod:`.remote`: typed stubs of the target functions;
- :mod:`.lua`: Python values as Lua literals; :mod:`.shared`: small helpers.
"""

from remoteexec.errors import TarantoolError
from remoteexec.tarantool.instance import TarantoolInstance
from remoteexec.tarantool.replicaset import ReplicaSet

__all__ = ["ReplicaSet", "TarantoolError", "TarantoolInstance"]
