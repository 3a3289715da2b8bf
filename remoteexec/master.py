"""Master: the one mitogen Broker + Router of a script, and its hosts."""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import itertools
import os
import shutil
import threading
import time
import uuid
import weakref
from typing import Any, Dict, Hashable, Iterable, List, Optional, Tuple

import mitogen.master
import mitogen.parent

from remoteexec import arguments, connectors, lane
from remoteexec.errors import ConnectionFailed, RemoteExecError
from remoteexec.heartbeat import HeartbeatMonitor
from remoteexec.host import Host

#: Where the hosts keep the bytecode cache unless the Master says otherwise.
DEFAULT_BYTECODE_CACHE = "~/.cache/remoteexec/bytecode"

# mitogen has no public hook for this: its own preexec function is saved to
# be put back when the last Master closes.
_ORIGINAL_PREEXEC = mitogen.parent._preexec_hook


def _own_process_group() -> None:
    """Run in each child mitogen spawns (ssh, local python), before exec.

    Puts it in its own process group, so a Ctrl-C meant for the script does
    not kill the ssh clients before the cleanup calls in ``close()`` ran.
    Skipped when stderr is a fresh pty of mitogen's (password/accept modes),
    whose own setsid() would fail in a group leader.
    """
    try:
        if os.isatty(2):
            fd = os.open("/dev/tty", os.O_RDONLY)
            try:
                same = os.fstat(fd).st_rdev == os.fstat(2).st_rdev
            finally:
                os.close(fd)
            if not same:
                return
    except OSError:
        return
    os.setpgrp()


class Master:
    """Holds the mitogen Broker and Router, and every host opened through it.

    Closing the master (or leaving its ``with`` block) stops every process it
    started on every host, removes the run's directories and closes the
    contexts. If the master dies instead, each host's supervisor does the
    same by itself: on disconnect at once, and after ``heartbeat_timeout``
    seconds without heartbeats on a silent partition.

    :param heartbeat_timeout: seconds without heartbeats after which a host
        kills the run's processes and exits, and after which the master
        declares the host lost (HostLost).
    :param keep_logs: keep the run directories (process logs) on the hosts.
    :param bytecode_cache: the directory, on each host, of the bytecode cache
        of our target modules (``~`` is the remote user's home): a second
        master's contexts load them from there instead of receiving and
        compiling them (see :mod:`remoteexec.target.bytecache`). None: no
        cache.
    """

    def __init__(
        self,
        *,
        heartbeat_timeout: float = 10.0,
        keep_logs: bool = False,
        name: Optional[str] = None,
        bytecode_cache: Optional[str] = DEFAULT_BYTECODE_CACHE,
    ) -> None:
        timeout = arguments.seconds("heartbeat_timeout", heartbeat_timeout)
        self.run_id = uuid.uuid4().hex[:12]
        self.name = name or "remoteexec-%s" % self.run_id
        self.heartbeat_timeout = timeout
        self.heartbeat_interval = min(1.0, self.heartbeat_timeout / 4)
        self.keep_logs = keep_logs
        if bytecode_cache is not None and (
            not isinstance(bytecode_cache, str) or not bytecode_cache
        ):
            raise ValueError(
                "bytecode_cache must be a directory path on the hosts or None, got %r"
                % (bytecode_cache,)
            )
        self.bytecode_cache = bytecode_cache
        self._hosts: Dict[Tuple[Hashable, ...], Host] = {}
        self._key_locks: Dict[Tuple[Hashable, ...], threading.Lock] = {}
        self._tokens = itertools.count(1)
        self._lock = threading.RLock()
        self._closed = False
        #: The private directory of this master's ControlMaster sockets, made
        #: at the first direct ssh connection (see :mod:`remoteexec.lane`).
        self._lane_dir: Optional[str] = None
        mitogen.parent._preexec_hook = _own_process_group
        self.broker = mitogen.master.Broker(install_watcher=False)
        self.router = mitogen.master.Router(self.broker)
        # mitogen scans the imports of the modules it sends (compiling each,
        # mitogen.core included: ~50 ms of CPU) once per router: share one
        # scanner per process, as the bytecode manifest is (no public way).
        self.router.responder._finder = module_finder()
        #: Beats every host this master opened (see :mod:`remoteexec.heartbeat`).
        self.heartbeats = HeartbeatMonitor(self.heartbeat_timeout, self.heartbeat_interval)
        _live.add(self)
        _install_exit_hook()

    def __enter__(self) -> Master:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<Master %s hosts=%d>" % (self.run_id, len(self._hosts))

    @property
    def closed(self) -> bool:
        """:meth:`close` ran: no host can be opened any more."""
        return self._closed

    @property
    def hosts(self) -> List[Host]:
        """Every host opened and not closed, in the order they were opened."""
        with self._lock:
            return [h for h in self._hosts.values() if not h.closed]

    # -- opening hosts -----------------------------------------------------

    def local(self, *, python: Optional[str] = None, name: str = "local") -> Host:
        """This machine, in a child interpreter (no SSH). Cached per name."""
        return self.connect("local://", python=python, name=name)

    def connect(
        self, target: str, *, via: Optional[Host] = None, name: Optional[str] = None, **options: Any
    ) -> Host:
        """Open a context on ``target`` and return its Host.

        ``target`` is ``[scheme://]address``; the scheme picks the connector
        (:mod:`remoteexec.connectors`): none or ``ssh://`` is
        ``[user@]host[:port]`` over SSH, ``local://[name]`` is this machine.
        ``options`` are the connector's; for SSH: ``identity_file``,
        ``port``, ``python`` (default "python3"), ``connect_timeout``
        (default 10 s), ``check_host_keys`` ("enforce" or "ignore"),
        ``known_hosts_file``, ``ssh_args`` and ``kex_algorithms`` (default:
        curve25519 first, see docs/more/security.md) (see
        :meth:`remoteexec.connectors.ssh.SSHConnector.from_target`).
        ``via`` hops through another Host; ``name`` labels the host.

        Connections are cached: connecting to the same user, host, port and
        hop, with the same interpreter, key, host-key checking and ssh
        options (see :attr:`remoteexec.connectors.ssh.SSHConnector.key`),
        returns the same Host. Failures raise a
        :class:`ConnectionFailed` subclass naming the host, the cause and what
        to do, within ``connect_timeout`` (plus the time the interpreter takes
        to boot).
        """
        return self.open(self._plan(target, via=via, name=name, **options), via=via)

    def _plan(
        self, target: str, *, via: Optional[Host] = None, name: Optional[str] = None, **options: Any
    ) -> connectors.Connector:
        """Check :meth:`connect`'s arguments and return the connector. Nothing
        is opened."""
        if via is not None:
            via.ensure_open()
        if name is not None:
            options["name"] = name
        return connectors.plan(target, **options)

    def open(self, connector: connectors.Connector, *, via: Optional[Host] = None) -> Host:
        """The Host that ``connector`` reaches (through ``via``), opened once.

        Cached under the connector's key and the hop: asking again (from any
        thread, even at the same time) returns the same Host until it is
        closed. :meth:`connect` and :meth:`local` build the connector from a
        target; a caller that holds connection settings of its own builds it
        directly (see :mod:`remoteexec.connectors`).
        """
        if via is not None:
            via.ensure_open()
        key = (*connector.key, via.name if via else None)
        with self._lock:
            self._check_open()
            host = self._hosts.get(key)
            if host is not None and not host.closed:
                return host
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                host = self._hosts.get(key)
                if host is not None and not host.closed:
                    return host
            connector.core_cache = self.bytecode_cache
            if via is None:
                lane.attach(connector, self._control_dir)
            context = connector.open(
                self.router,
                remote_name="%s:%s" % (self.name, connector.name),
                via=via.context if via is not None else None,
            )
            return self._register(key, context, connector)

    def _control_dir(self) -> str:
        with self._lock:
            if self._lane_dir is None:
                self._lane_dir = lane.control_dir()
            return self._lane_dir

    def _check_open(self) -> None:
        if self._closed:
            raise RemoteExecError("the Master is closed")

    def connect_all(
        self, targets: Iterable[str], *, max_parallel: Optional[int] = None, **options: Any
    ) -> List[Host]:
        """Connect to every target in parallel; same options as :meth:`connect`.

        Bad input (a port out of range, a NaN timeout, an unknown option)
        raises ValueError/TypeError for the first bad target before any
        connection starts. Then every target is tried. If any failed, one
        ConnectionFailed lists each failed host and why (``.failures`` has
        the individual errors); the hosts that did connect stay open on this
        master.

        How many connect at once adapts (see :class:`ConnectPacer`): 16 (or
        four per CPU) to start, more while the machine's CPUs sit idle (the
        hosts are far away), never more than ``max_parallel`` (default
        :data:`MAX_CONNECTING`) nor what the open-file limit allows.
        """
        targets = list(targets)
        if not targets:
            return []
        if max_parallel is not None and (
            isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1
        ):
            raise ValueError("max_parallel must be a positive int, got %r" % (max_parallel,))
        for target in targets:
            self._plan(target, **options)
        pacer = ConnectPacer(len(targets), ceiling=max_parallel)
        idle = IdleSampler()
        idle.sample()  # the start of the first window
        results: Dict[int, Host] = {}
        failures: List[ConnectionFailed] = []
        todo = list(enumerate(targets))
        todo.reverse()
        with concurrent.futures.ThreadPoolExecutor(pacer.high, "remoteexec-connect") as pool:
            running: Dict[concurrent.futures.Future[Host], int] = {}
            while todo or running:
                while todo and len(running) < pacer.limit:
                    i, target = todo.pop()
                    running[pool.submit(self.connect, target, **options)] = i
                done, _ = concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in done:
                    i = running.pop(future)
                    try:
                        results[i] = future.result()
                    except ConnectionFailed as e:
                        failures.append(e)
                    except (RemoteExecError, ValueError) as e:
                        failures.append(ConnectionFailed(str(e), host=targets[i]))
                pacer.adjust(idle.sample())
        if failures:
            lines = "; ".join(str(f) for f in failures)
            raise ConnectionFailed(
                "%d of %d hosts failed to connect: %s" % (len(failures), len(targets), lines),
                host=",".join(str(f.host) for f in failures),
                failures=failures,
            )
        return [results[i] for i in range(len(targets))]

    def _register(
        self, key: Tuple[Hashable, ...], context: Any, connector: connectors.Connector
    ) -> Host:
        host = Host(
            self, context, connector, token="c%d" % next(self._tokens), on_close=self._forget
        )
        try:
            heartbeat = host.install(
                run_id=self.run_id,
                heartbeat_timeout=self.heartbeat_timeout,
                keep_logs=self.keep_logs,
                timeout=connector.setup_timeout,
                bytecode_cache=self.bytecode_cache,
            )
        except RemoteExecError as e:
            host.drop()
            raise ConnectionFailed(
                "connected, but setting up the supervisor failed: %s" % e.message,
                host=host.name,
                **e.details,
            ) from None
        with self._lock:
            if self._closed:
                host.drop()
                raise RemoteExecError("the Master was closed while connecting", host=host.name)
            self._hosts[key] = host
        self.heartbeats.watch(heartbeat)
        return host

    def _forget(self, host: Host) -> None:
        """A host closed: drop it from the cache and stop beating it."""
        with self._lock:
            for key, value in list(self._hosts.items()):
                if value is host:
                    del self._hosts[key]
        if host.heartbeat is not None:
            self.heartbeats.unwatch(host.heartbeat)

    # -- closing -----------------------------------------------------------

    def close(self) -> None:
        """Stop everything this master started, on every host, then shut down."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            hosts = list(self._hosts.values())
        # Hops last: a host reached via another must be closed first.
        direct = [h for h in hosts if getattr(h.context, "via", None) is None]
        hopped = [h for h in hosts if getattr(h.context, "via", None) is not None]
        # Plain threads: this also runs at interpreter exit, when
        # concurrent.futures no longer accepts work.
        for group in (hopped, direct):
            threads = [threading.Thread(target=h.close, daemon=True) for h in group]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30.0)
        self.heartbeats.stop()
        self.broker.shutdown()
        self.broker.join()
        if self._lane_dir is not None:
            shutil.rmtree(self._lane_dir, ignore_errors=True)
        others_open = any(m is not self and not m.closed for m in list(_live))
        if not others_open and mitogen.parent._preexec_hook is _own_process_group:
            mitogen.parent._preexec_hook = _ORIGINAL_PREEXEC


_finder_lock = threading.Lock()
_finder: Optional[mitogen.master.ModuleFinder] = None


def module_finder() -> mitogen.master.ModuleFinder:
    """The process's one mitogen ModuleFinder: it caches what it found out
    about each module (source, the modules it imports), so the second
    Master of a process does not scan them again."""
    global _finder
    with _finder_lock:
        if _finder is None:
            _finder = mitogen.master.ModuleFinder()
        return _finder


#: The most connections :meth:`Master.connect_all` opens at once by default.
MAX_CONNECTING = 64
#: The fewest connections connect_all keeps in flight (while targets are
#: left): a connection spends most of its time waiting on round trips and on
#: processes starting on the host, so even a CPU-bound master wants many.
LOW_CONNECTING = 16
#: Open files one connection in progress may hold on the master (the ssh
#: client's pipes and its stderr, mitogen's socketpair, the latches).
FDS_PER_CONNECTING = 8


class ConnectPacer:
    """How many connections :meth:`Master.connect_all` has in flight at once.

    Opening a context costs CPU on the master's machine (ssh, and the lab's
    sshd and interpreters when the hosts are local) and round trips. When
    CPU is the limit, more connections at once only add contention; when
    latency is (hosts far away), they are what makes it fast. So the pacer
    starts at :attr:`low` (four per CPU, at least :data:`LOW_CONNECTING`)
    and, after each finished connection, grows by half while the machine's
    CPUs were more than :data:`IDLE_GROW` idle, and shrinks by one (never
    below :attr:`low`) when they were less than :data:`IDLE_SHRINK` idle. It never
    exceeds :attr:`high`: the ``ceiling`` (default :data:`MAX_CONNECTING`),
    the number of targets, and what the open-file limit leaves.
    """

    #: Idle CPU fraction above which the pacer opens more connections at once.
    IDLE_GROW = 0.4
    #: Idle CPU fraction below which it opens fewer (down to :attr:`low`).
    IDLE_SHRINK = 0.1

    def __init__(
        self,
        total: int,
        *,
        cpus: Optional[int] = None,
        ceiling: Optional[int] = None,
        free_fds: Optional[int] = None,
    ) -> None:
        cpus = max(1, cpus or os.cpu_count() or 1)
        fds = open_file_budget() if free_fds is None else free_fds
        #: The most connections in flight: bounded by ceiling, targets and fds.
        self.high = max(1, min(total, ceiling or MAX_CONNECTING, fds // FDS_PER_CONNECTING))
        #: Where the pacer starts and the least it goes down to.
        self.low = min(self.high, max(LOW_CONNECTING, 4 * cpus))
        #: The current number of connections allowed in flight.
        self.limit = self.low

    def adjust(self, idle: Optional[float]) -> int:
        """Update :attr:`limit` from the machine's idle CPU fraction since the
        last call (None: unknown, no change); return the new limit."""
        if idle is None:
            return self.limit
        if idle > self.IDLE_GROW:
            self.limit = min(self.high, self.limit + max(1, self.limit // 2))
        elif idle < self.IDLE_SHRINK:
            self.limit = max(self.low, self.limit - 1)
        return self.limit


def open_file_budget() -> int:
    """File descriptors this process may still open (soft RLIMIT_NOFILE minus
    those open now); a large number when unknown."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        used = len(os.listdir("/proc/self/fd"))
    except (ImportError, OSError, ValueError):
        return 1 << 16
    if soft == resource.RLIM_INFINITY:
        return 1 << 16
    return max(0, soft - used)


class IdleSampler:
    """The machine's idle CPU fraction between two :meth:`sample` calls, from
    /proc/stat (None where there is none, or when less than ``window``
    seconds passed: a few jiffies say nothing)."""

    def __init__(self, window: float = 0.2) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._last: Optional[Tuple[float, int, int]] = None

    @staticmethod
    def read() -> Optional[Tuple[int, int]]:
        """(idle, total) jiffies of all CPUs since boot, or None."""
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        if len(fields) < 5:
            return None
        return fields[3] + fields[4], sum(fields)

    def sample(self) -> Optional[float]:
        """Idle fraction since the previous sample that returned a value."""
        now = time.monotonic()
        jiffies = self.read()
        if jiffies is None:
            return None
        with self._lock:
            last = self._last
            if last is not None and now - last[0] < self.window:
                return None
            self._last = (now, jiffies[0], jiffies[1])
        if last is None:
            return None
        total = jiffies[1] - last[2]
        return (jiffies[0] - last[1]) / total if total > 0 else None


_live: weakref.WeakSet[Master] = weakref.WeakSet()
_exit_hook_lock = threading.Lock()
_exit_hook_installed = False


def _close_all() -> None:
    for master in list(_live):
        with contextlib.suppress(Exception):
            master.close()


def _install_exit_hook() -> None:
    """Close masters left open when the interpreter exits.

    threading._register_atexit runs before non-daemon threads are joined
    (plain atexit runs after), and mitogen's broker thread is non-daemon:
    without this, a forgotten Master would hang the interpreter's exit.
    """
    global _exit_hook_installed
    with _exit_hook_lock:
        if _exit_hook_installed:
            return
        register = getattr(threading, "_register_atexit", None)
        try:
            (register or atexit.register)(_close_all)
        except RuntimeError:  # interpreter already shutting down
            atexit.register(_close_all)
        _exit_hook_installed = True


_default_lock = threading.Lock()
_default: Optional[Master] = None


def default_master() -> Master:
    """The lazily created master behind ``on=None``; closed at interpreter exit."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            _default = Master()
        return _default


def default_host() -> Host:
    """This machine, through :func:`default_master` (the embedded default)."""
    return default_master().local()


def host_or_default(on: Optional[Host]) -> Host:
    """``on``, or this machine's default host when it is None: what a service's
    lazy ``on`` property returns (the local context opens on first use)."""
    return default_host() if on is None else on


__all__ = [
    "DEFAULT_BYTECODE_CACHE",
    "FDS_PER_CONNECTING",
    "LOW_CONNECTING",
    "MAX_CONNECTING",
    "ConnectPacer",
    "IdleSampler",
    "Master",
    "default_host",
    "default_master",
    "host_or_default",
    "module_finder",
    "open_file_budget",
]
