"""Target-side code: runs inside a mitogen context on the target's Python.

Everything in this package is imported on the *target* (a remote host, or a
local child interpreter), so it may use only the standard library, plus
psutil when the target happens to have it. Nothing here may import from the
master-side modules of remoteexec. Functions called from the master take and
return plain types only (None, bool, int, float, str, bytes, list, tuple,
dict) and report failures as error dicts, because mitogen cannot carry
exception types or custom classes across the wire.

- :mod:`.procs`: the process table (psutil, or /proc when psutil is missing).
- :mod:`.checks`: readiness checks (TCP, unix socket, HTTP, file, banner).
- :mod:`.supervisor`: spawns, watches and stops process trees; the watchdog
  that ends them when the master goes away.
- :mod:`.guard`: a separate small process that ends them when the context
  itself is killed.
"""
