"""Tarantool on any host: single instances and replica sets across hosts.

::

    from remoteexec.tarantool import TarantoolInstance, ReplicaSet

    one = TarantoolInstance(on=host, listen="10.20.0.11:3301", app_lua=APP).start()
    one.eval("return box.info.status")            # 'running'
    rs = ReplicaSet("storage", members=[(a, 3301), (b, 3301), (c, 3301)])
    rs.start()

Everything that touches the processes runs on the targets (see
:mod:`remoteexec.target.tarantool`); this package is the master side.
"""

from remoteexec.errors import TarantoolError
from remoteexec.tarantool.instance import TarantoolInstance
from remoteexec.tarantool.replicaset import ReplicaSet

__all__ = ["ReplicaSet", "TarantoolError", "TarantoolInstance"]
