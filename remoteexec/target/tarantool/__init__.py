"""Target-side Tarantool helpers, one module per job; stdlib only.

Runs inside a mitogen context on the target: only plain values (None,
bool, int, float, str, bytes, list, tuple, dict) cross the functions the
master calls (through the typed stubs of :mod:`remoteexec.tarantool.remote`).
Failures a caller needs to explain come back in the one shape of
:func:`remoteexec.target.protocol.error`, with a ``kind``
(:mod:`.replies`).

- :mod:`.version`: ``tarantool --version``, run bounded; the host's facts.
- :mod:`.probe`: the probe client (Lua source over the instance's unix socket).
- :mod:`.boxinfo`: ``box.info`` as plain data.
- :mod:`.notify`: NOTIFY_SOCKET (sd_notify) listener.
- :mod:`.logs`: the F>/E> lines of tarantool's log.
- :mod:`.instance`: prepare an instance's files, wait for its readiness.
- :mod:`.vclock`: wait until a replica caught up with a vclock.
- :mod:`.files`: a file's tail for artifacts, private atomic writes.

Lua text (probe server, box status, init template) is package data of the
master side: mitogen ships only .py modules, so the master reads the .lua
files and passes their text in its calls.
"""

from remoteexec.target.tarantool.boxinfo import box_status
from remoteexec.target.tarantool.files import read_file
from remoteexec.target.tarantool.instance import link_problems, prepare_instance, wait_instance
from remoteexec.target.tarantool.logs import log_lines
from remoteexec.target.tarantool.notify import UNIX_PATH_MAX, NotifyListener
from remoteexec.target.tarantool.probe import probe
from remoteexec.target.tarantool.vclock import wait_vclock
from remoteexec.target.tarantool.version import VERSION_RE, host_facts, tarantool_version

__all__ = [
    "UNIX_PATH_MAX",
    "VERSION_RE",
    "NotifyListener",
    "box_status",
    "host_facts",
    "link_problems",
    "log_lines",
    "prepare_instance",
    "probe",
    "read_file",
    "tarantool_version",
    "wait_instance",
    "wait_vclock",
]
