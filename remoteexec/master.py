"""Master: the one mitogen Broker + Router of a script, and its hosts."""

from __future__ import annotations

import atexit
import concurrent.futures
import concurrent.futures.thread
import contextlib
import inspect
import itertools
import os
import signal
import sys
import threading
import time
import uuid
import weakref
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import mitogen.core
import mitogen.master
import mitogen.parent

from . import arguments
from .connectors.ssh import Target, connection_error, ssh_options
from .errors import ConnectionFailed, RemoteExecError
from .host import Host

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
    """

    def __init__(
        self,
        *,
        heartbeat_timeout: float = 10.0,
        keep_logs: bool = False,
        name: Optional[str] = None,
    ) -> None:
        timeout = arguments.seconds("heartbeat_timeout", heartbeat_timeout)
        self.run_id = uuid.uuid4().hex[:12]
        self.name = name or "remoteexec-%s" % self.run_id
        self.heartbeat_timeout = float(timeout)  # type: ignore[arg-type]
        self.heartbeat_interval = min(1.0, self.heartbeat_timeout / 4)
        self.keep_logs = keep_logs
        self._hosts: Dict[Tuple[Any, ...], Host] = {}
        self._key_locks: Dict[Tuple[Any, ...], threading.Lock] = {}
        self._tokens = itertools.count(1)
        self._lock = threading.RLock()
        self._closed = False
        mitogen.parent._preexec_hook = _own_process_group
        self.broker = mitogen.master.Broker(install_watcher=False)
        self.router = mitogen.master.Router(self.broker)
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(
            target=self._heartbeat_loop, name="remoteexec-heartbeat", daemon=True
        )
        self._heartbeat.start()
        _live.add(self)
        _install_exit_hook()

    def __enter__(self) -> Master:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<Master %s hosts=%d>" % (self.run_id, len(self._hosts))

    def _next_token(self) -> str:
        return "c%d" % next(self._tokens)

    @property
    def hosts(self) -> List[Host]:
        """Every host opened and not closed, in the order they were opened."""
        with self._lock:
            return [h for h in self._hosts.values() if not h._closed]

    # -- opening hosts -----------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RemoteExecError("the Master is closed")

    def local(self, *, python: Optional[str] = None, name: str = "local") -> Host:
        """This machine, in a child interpreter (no SSH). Cached per name."""

        def open_context() -> Any:
            try:
                return self.router.local(
                    python_path=python or sys.executable,
                    remote_name="%s:%s" % (self.name, name),
                )
            except mitogen.core.Error as e:
                raise ConnectionFailed("cannot start a local context: %s" % e, host=name) from None

        return self._open(("local", name), open_context, name, "local", 30.0)

    def _open(
        self, key: Tuple[Any, ...], open_context: Any, name: str, kind: str, timeout: float
    ) -> Host:
        """Return the cached Host for ``key``, or open it (once, even if
        several threads ask at the same time)."""
        with self._lock:
            self._check_open()
            host = self._hosts.get(key)
            if host is not None and not host._closed:
                return host
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                host = self._hosts.get(key)
                if host is not None and not host._closed:
                    return host
            return self._register(key, open_context(), name, kind, timeout)

    def connect(
        self,
        target: str,
        *,
        identity_file: Optional[str] = None,
        port: Optional[int] = None,
        python: str = "python3",
        via: Optional[Host] = None,
        connect_timeout: float = 10.0,
        check_host_keys: str = "enforce",
        known_hosts_file: Optional[str] = None,
        ssh_args: Sequence[str] = (),
        name: Optional[str] = None,
    ) -> Host:
        """Open a context on ``target`` ("[user@]host[:port]") over SSH.

        Connections are cached: connecting to the same user, host, port and
        hop again returns the same Host. ``via`` hops through another Host.
        Failures raise a :class:`ConnectionFailed` subclass naming the host,
        the cause and what to do, within ``connect_timeout`` (plus the time
        the interpreter takes to boot).
        """
        key, label, options = self._ssh_plan(
            target,
            identity_file=identity_file,
            port=port,
            python=python,
            via=via,
            connect_timeout=connect_timeout,
            check_host_keys=check_host_keys,
            known_hosts_file=known_hosts_file,
            ssh_args=ssh_args,
            name=name,
        )

        def open_context() -> Any:
            try:
                return self.router.ssh(**options)
            except FileNotFoundError as e:
                raise ConnectionFailed(
                    "cannot connect: the ssh client is missing on this machine (%s);"
                    " install openssh-client" % e,
                    host=label,
                ) from None
            except (mitogen.core.StreamError, mitogen.core.Error, EOFError, OSError) as e:
                raise connection_error(e, label, python, connect_timeout) from None

        return self._open(key, open_context, label, "ssh", connect_timeout + 20.0)

    def _ssh_plan(
        self,
        target: str,
        *,
        identity_file: Optional[str],
        port: Optional[int],
        python: str,
        via: Optional[Host],
        connect_timeout: float,
        check_host_keys: str,
        known_hosts_file: Optional[str],
        ssh_args: Sequence[str],
        name: Optional[str],
    ) -> Tuple[Tuple[Any, ...], str, Dict[str, Any]]:
        """Check :meth:`connect`'s arguments; return the cache key, the
        host's label and the ``router.ssh()`` options. Nothing is opened."""
        parsed = Target.parse(target, port)
        label = name or str(parsed)
        key = (
            "ssh",
            parsed.user,
            parsed.hostname,
            parsed.port or 22,
            python,
            identity_file,
            via.name if via else None,
        )
        if via is not None:
            via._check()
        options = ssh_options(
            parsed,
            identity_file=identity_file,
            python=python,
            connect_timeout=connect_timeout,
            check_host_keys=check_host_keys,
            known_hosts_file=known_hosts_file,
            ssh_args=ssh_args,
            name="%s:%s" % (self.name, label),
        )
        if via is not None:
            options["via"] = via.context
        return key, label, options

    def connect_all(self, targets: Iterable[str], **options: Any) -> List[Host]:
        """Connect to every target in parallel; same options as :meth:`connect`.

        Bad input (a port out of range, a NaN timeout, an unknown option)
        raises ValueError/TypeError for the first bad target before any
        connection starts. Then every target is tried. If any failed, one
        ConnectionFailed lists each failed host and why (``.failures`` has
        the individual errors); the hosts that did connect stay open on this
        master.
        """
        targets = list(targets)
        if not targets:
            return []
        signature = inspect.signature(self.connect)
        for target in targets:
            bound = signature.bind(target, **options)
            bound.apply_defaults()
            self._ssh_plan(**bound.arguments)
        results: Dict[int, Host] = {}
        failures: List[ConnectionFailed] = []
        workers = min(len(targets), 16)
        with concurrent.futures.ThreadPoolExecutor(workers, "remoteexec-connect") as pool:
            futures = {pool.submit(self.connect, t, **options): i for i, t in enumerate(targets)}
            for future in concurrent.futures.as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except ConnectionFailed as e:
                    failures.append(e)
                except (RemoteExecError, ValueError) as e:
                    failures.append(ConnectionFailed(str(e), host=targets[i]))
        if failures:
            lines = "; ".join(str(f) for f in failures)
            raise ConnectionFailed(
                "%d of %d hosts failed to connect: %s" % (len(failures), len(targets), lines),
                host=",".join(str(f.host) for f in failures),
                failures=failures,
            )
        return [results[i] for i in range(len(targets))]

    def _register(
        self, key: Tuple[Any, ...], context: Any, name: str, kind: str, timeout: float
    ) -> Host:
        host = Host(self, context, name, kind)
        try:
            host._install(self.heartbeat_timeout, timeout)
        except RemoteExecError as e:
            self._drop_stream(host)
            raise ConnectionFailed(
                "connected, but setting up the supervisor failed: %s" % e.message,
                host=name,
                **e.details,
            ) from None
        with self._lock:
            if self._closed:
                self._drop_stream(host)
                raise RemoteExecError("the Master was closed while connecting", host=name)
            self._hosts[key] = host
        return host

    # -- heartbeats --------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_interval):
            now = time.monotonic()
            for host in self.hosts:
                host.beat(now, self.heartbeat_timeout)

    def _drop_stream(self, host: Host) -> None:
        """Cut a host's connection without talking to it (it may be gone)."""

        def drop() -> None:
            with contextlib.suppress(Exception):
                self.router.disconnect(host.context)

        # A stalled ssh client may sit out ServerAlive* for a minute: end it
        # (it is our own child) so its stream closes now.
        pid = host.transport_pid if host.kind == "ssh" else None
        if pid and getattr(host.context, "via", None) is None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        # router.disconnect() waits for the broker; never block the caller on it.
        threading.Thread(target=drop, name="remoteexec-drop", daemon=True).start()

    # -- closing -----------------------------------------------------------

    def _close_host(self, host: Host, timeout: float = 15.0) -> None:
        if host._closed:
            return
        try:
            if not host.lost:
                # One round trip: kill the run's processes, drop its logs
                # unless keep_logs (the supervisor knows which).
                host.service("finish", reply_timeout=timeout)
        except RemoteExecError:
            pass
        finally:
            host._closed = True
            with self._lock:
                for key, value in list(self._hosts.items()):
                    if value is host:
                        del self._hosts[key]
            with contextlib.suppress(Exception):
                host.context.shutdown(wait=False)

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
            threads = [
                threading.Thread(target=self._close_host, args=(h,), daemon=True) for h in group
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30.0)
        self._stop.set()
        self.broker.shutdown()
        self.broker.join()
        others_open = any(m is not self and not m._closed for m in list(_live))
        if not others_open and mitogen.parent._preexec_hook is _own_process_group:
            mitogen.parent._preexec_hook = _ORIGINAL_PREEXEC


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
        if _default is None or _default._closed:
            _default = Master()
        return _default


def default_host() -> Host:
    """This machine, through :func:`default_master` (the embedded default)."""
    return default_master().local()


__all__ = ["Master", "default_host", "default_master"]
