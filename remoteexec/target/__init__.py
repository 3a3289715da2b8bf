"""Target-side code: runs inside a mitogen context on the target's Python.

Everything in this package is imported on the *target* (a remote host, or a
local child interpreter), so it may use only the standard library, plus
psutil when the target happens to have it. Nothing here may import from the
master-side modules of remoteexec. Functions called from the master take and
return plain types only (None, bool, int, float, str, bytes, list, tuple,
dict) and report failures as error dicts, because mitogen cannot carry
exception types or custom classes across the wire.

- :mod:`.protocol`: the reply shapes and the one error shape, imported by
  both sides.
- :mod:`.supervisor`: the RPC plumbing: ``install`` and the calls the master
  makes (a mitogen Service on the context's pool).
- :mod:`.spawn`: spawning and signalling process trees.
- :mod:`.runstate`: the run's state on this host, its cleanup, and the
  heartbeat watchdog that ends the run when the master goes away.
- :mod:`.lifecycle`: one executor's tree from start to forget.
- :mod:`.restarts`: the restart policy, applied next to the process.
- :mod:`.run`: one-shot commands (``Host.run``).
- :mod:`.checks`: readiness checks, one registry of kinds.
- :mod:`.procs`: the process table (psutil, or /proc when psutil is missing).
- :mod:`.files`: private atomic writes and log tails.
- :mod:`.guardlink` and :mod:`.guard`: a separate small process that ends
  the trees when the context itself is killed.
"""
