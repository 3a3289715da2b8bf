"""One command (or call) on many hosts: over plain SSH, or on open hosts.

Two fan-outs live here. :func:`run_all` and :func:`call_all` run on hosts
whose contexts are already open (warm): every request is sent at once and the
replies are awaited together, with no thread per host (see their docstrings).
:func:`run_plain` is the plain-SSH fast path, below.

Opening a context (:meth:`remoteexec.master.Master.connect`) boots a Python
interpreter on the host and ships our modules to it: worth it for services,
executors, ``Host.call`` and many commands on the same host, but most of the
cost of a one-off command such as ``uptime`` on 64 hosts. This module runs such
a command over plain SSH instead: one SSH session per host, the command run by
the login user's shell, as ``ssh host CMD`` would, with host keys checked.

Why paramiko in a thread pool: measured on lab hosts (2 cores, N=32), it took
0.7 s against 2.7-3.8 s for a pool of OpenSSH ``ssh`` processes (each client
process costs ~80 ms of CPU) and 1.5 s for pyinfra (paramiko under gevent);
the key exchange and crypto run in C, so threads overlap well.

Bounds (so 64 or 200 hosts never exhaust the master):

- at most ``workers`` hosts at a time (default :data:`DEFAULT_WORKERS`); a host
  being served holds one socket and up to three threads (the worker, paramiko's
  transport thread, which the worker joins before it takes the next host, and
  the transport's handshake timer), so at most ``workers`` sockets and
  ``3 * workers`` threads, all gone on return;
- ``connect_timeout`` bounds each step of the connection (TCP connect, the SSH
  banner, authentication); ``timeout`` bounds the command: past it the session
  is closed and the host's result is :class:`~remoteexec.errors.TimeoutExpired`
  (the remote process is not killed by that: sshd hangs up its pipes);
- ``heartbeat_timeout`` bounds silence, as the Master's does for contexts: an
  SSH keepalive goes out after each quarter of it without traffic, and the
  kernel drops the connection when what it sent stays unacknowledged that
  long (``TCP_USER_TIMEOUT``), so a silently partitioned host is
  :class:`~remoteexec.errors.HostLost` even with no ``timeout``;
- output is kept up to :data:`OUTPUT_LIMIT` bytes per stream and host, the
  tail when there is more.

paramiko is imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import shlex
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union, cast

from remoteexec import arguments
from remoteexec.connectors.ssh import HOST_KEY_MODES, Target
from remoteexec.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    HostKeyMismatch,
    HostLost,
    HostUnreachable,
    RemoteExecError,
    TimeoutExpired,
)
from remoteexec.host import Host, Pending, RunRequest, RunResult, send_together

__all__ = [
    "DEFAULT_WINDOW",
    "DEFAULT_WORKERS",
    "HEARTBEAT_TIMEOUT",
    "MAX_WINDOW",
    "MAX_WORKERS",
    "OUTPUT_LIMIT",
    "PLAIN_OPTIONS",
    "PlainHost",
    "Result",
    "call_all",
    "plain_ssh_problem",
    "run_all",
    "run_plain",
]

#: Hosts served at a time by default. Measured on 32 and 64 lab hosts (2 cores):
#: with root's shell init as is (pyenv: every shell takes one lock, each waiter
#: polling it), 16 at a time took 0.8-0.95x the time of 32 and 140 ms of hosts'
#: CPU a host instead of 170; with a trivial init, 1.07x. Hosts far away (the
#: wall time is round trips, not CPU) may want more: ``workers``.
DEFAULT_WORKERS = 16
#: The most ``workers`` accepts.
MAX_WORKERS = 256
#: Bytes kept per stream (stdout, stderr) and host; past it, the tail is kept.
OUTPUT_LIMIT = 1 << 20
#: Requests :func:`run_all` / :func:`call_all` keep in flight by default (one
#: receiver each on the master, one pool or main thread each on its host).
DEFAULT_WINDOW = 256
#: The most ``window`` accepts.
MAX_WINDOW = 4096
#: Longest wait for a reply before the fan-out looks for lost hosts and deadlines.
_POLL = 0.25
#: Host options the fast path understands; a host with another one (``via``,
#: ``ssh_args``) needs the ssh client, so a context. ``python`` is ignored.
PLAIN_OPTIONS = frozenset(
    {"identity_file", "known_hosts_file", "port", "connect_timeout", "check_host_keys", "python"}
)
#: Seconds to wait for a closed connection's paramiko thread to end.
_JOIN_TIMEOUT = 5.0
#: Longest wait of one read, so the stderr stream is drained while stdout is idle.
_READ_SLICE = 0.2
#: Seconds of silence after which a host is lost (see the module's bounds).
HEARTBEAT_TIMEOUT = 10.0

_QUIET = logging.NullHandler()

#: One host's outcome: its RunResult (any exit code), or the error that kept the
#: command from finishing (connection, host key, authentication, timeout).
Result = Union[RunResult, RemoteExecError]


@dataclass(frozen=True)
class PlainHost:
    """A host reached by plain SSH: its name (for results and errors), its
    ``[user@]host[:port]`` target and the options of
    :meth:`remoteexec.master.Master.connect` that apply without a context."""

    name: str
    target: str
    identity_file: Optional[str] = None
    known_hosts_file: Optional[str] = None
    port: Optional[int] = None
    connect_timeout: float = 10.0
    check_host_keys: str = "enforce"

    @classmethod
    def from_options(cls, name: str, target: str, options: Mapping[str, Any]) -> PlainHost:
        """A PlainHost from a stack file's host options (see :data:`PLAIN_OPTIONS`);
        ValueError naming the host if one of them needs a context."""
        problem = plain_ssh_problem(target, options)
        if problem:
            raise ValueError("host %s: %s" % (name, problem))
        keep = {k: v for k, v in options.items() if k in PLAIN_OPTIONS and k != "python"}
        return cls(name, target, **keep)

    def check(self) -> Target:
        """The parsed target; ValueError naming the host and the bad field."""
        try:
            parsed = Target.parse(self.target, self.port)
            arguments.seconds("connect_timeout", self.connect_timeout)
            if self.check_host_keys not in HOST_KEY_MODES:
                raise ValueError(
                    "check_host_keys=%r: use 'enforce' or 'ignore'" % (self.check_host_keys,)
                )
            for field in ("identity_file", "known_hosts_file"):
                path = getattr(self, field)
                if path is not None and not os.path.isfile(path):
                    raise ValueError("%s %s does not exist" % (field, path))
        except (ValueError, TypeError) as e:
            raise ValueError("host %s: %s" % (self.name, e)) from None
        return parsed


def plain_ssh_problem(target: str, options: Mapping[str, Any], via: Optional[str] = None) -> str:
    """Why a host cannot take the fast path ("" when it can): a local target, a
    hop, or an option only the ssh client understands."""
    if target == "local" or target.startswith("local://"):
        return "'local' runs on this machine, not over SSH"
    if via:
        return "a hop (via %s) needs the ssh client" % via
    other = sorted(set(options) - PLAIN_OPTIONS)
    if other:
        return "option %s needs the ssh client" % ", ".join(other)
    return ""


def run_all(
    hosts: Sequence[Host],
    command: Union[str, Sequence[str]],
    *,
    check: bool = False,
    shell: bool = False,
    cwd: Union[str, os.PathLike[str], None] = None,
    env: Optional[Mapping[str, str]] = None,
    timeout: Optional[float] = None,
    input: Union[str, bytes, None] = None,
    text: bool = True,
    window: int = DEFAULT_WINDOW,
) -> List[Union[RunResult, RemoteExecError]]:
    """:meth:`Host.run <remoteexec.host.Host.run>` on every open host at once;
    one result per host, in the order given (a host given twice runs twice).

    Each result is the host's RunResult (any exit code; with ``check=True`` a
    non-zero exit is a :class:`~remoteexec.errors.CommandFailed`) or the
    error that kept it from finishing, naming the host: a lost or closed host
    (:class:`~remoteexec.errors.HostLost`), a command past ``timeout``
    (:class:`~remoteexec.errors.TimeoutExpired`). A failing host never stops
    the others. The arguments are Host.run's, checked before anything is
    sent (ValueError/TypeError). No thread is started: every request goes
    out at once (at most ``window`` in flight) and the calling thread waits
    for the replies together, so 64 hosts cost 64 receivers, not 64 threads.
    """
    _check_hosts(hosts)
    _check_window(window)
    if not hosts:
        return []
    # Checked and pickled once, before any host is sent anything.
    request = RunRequest(
        command, check=check, shell=shell, cwd=cwd, env=env, timeout=timeout, input=input, text=text
    )
    results: List[Union[RunResult, RemoteExecError]] = _gather(
        hosts, lambda h: h.prepare_run(request), window
    )
    return results


def call_all(hosts: Sequence[Host], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> List[Any]:
    """:meth:`Host.call <remoteexec.host.Host.call>` of ``fn(*args, **kwargs)``
    on every open host at once; one result per host, in the order given: the
    function's return value, or the error (naming the host) it raised there
    (:class:`~remoteexec.errors.RemoteCallError`) or that kept it from
    returning (:class:`~remoteexec.errors.HostLost`). An error is returned, not
    raised, so check each result with ``isinstance(r, RemoteExecError)``.
    Like :func:`run_all`, no thread per host; at most :data:`DEFAULT_WINDOW`
    calls in flight. Calls on one host run one at a time on its main thread,
    as Host.call's do (a :func:`remoteexec.quick` function: on its broker thread).
    """
    _check_hosts(hosts)
    return _gather(hosts, lambda h: h.prepare_call(fn, *args, **kwargs), DEFAULT_WINDOW)


def _check_hosts(hosts: Sequence[Host]) -> None:
    if isinstance(cast(object, hosts), (str, bytes)) or not isinstance(hosts, Sequence):
        raise TypeError("hosts must be a sequence of Host, got %r" % (type(hosts).__name__,))
    for i, h in enumerate(hosts):
        if not isinstance(h, Host):
            raise TypeError("hosts[%d] is a %s, not a Host" % (i, type(h).__name__))


def _check_window(window: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int):
        raise TypeError("window must be an int, got %r" % (window,))
    if not 1 <= window <= MAX_WINDOW:
        raise ValueError("window must be in 1..%d, got %d" % (MAX_WINDOW, window))


def _gather(hosts: Sequence[Host], prepare: Callable[[Host], Pending], window: int) -> List[Any]:
    """Send one request per host (``window`` in flight at most) and wait for all
    replies on this thread; each host's value or its RemoteExecError.

    The requests that can go out are built first, then sent together (one
    wake-up of the broker for all: :func:`remoteexec.host.send_together`).
    Not mitogen.select.Select: its get(timeout=) sleeps in mitogen's Latch,
    whose timed wait can poison the shared socketpair pool (see Host._wait).
    Each receiver's notify hook notes its index instead (:class:`_Arrivals`),
    and this thread wakes when every request in flight is answered, or at
    the first reply while hosts wait for a slot in the window. Lost hosts
    and deadlines are looked for every :data:`_POLL` seconds, not on every
    reply (that scan of all waiting hosts made a fan-out quadratic).
    """
    results: List[Any] = [None] * len(hosts)
    arrived = _Arrivals()
    waiting: Dict[int, Tuple[Pending, Optional[float]]] = {}
    sent = 0

    def launch(i: int) -> Optional[Pending]:
        try:
            pending = prepare(hosts[i])
        except RemoteExecError as e:  # lost or closed before: nothing sent
            results[i] = e
            return None
        deadline = None if pending.timeout is None else time.monotonic() + pending.timeout
        waiting[i] = (pending, deadline)
        pending.receiver.notify = lambda _recv: arrived.put(i)
        if not pending.receiver.empty():  # sent already, and the reply beat the hook
            arrived.put(i)
        return pending

    scan_at = time.monotonic() + _POLL
    while sent < len(hosts) or waiting:
        batch: List[Pending] = []
        try:
            while sent < len(hosts) and len(waiting) < window:
                pending = launch(sent)
                if pending is not None:
                    batch.append(pending)
                sent += 1
        except BaseException:  # a request that cannot be built: none of these goes
            for pending in batch:
                with contextlib.suppress(Exception):
                    pending.receiver.close()
            raise
        if batch:
            send_together(batch)
        if not waiting:
            continue
        enough = 1 if sent < len(hosts) else len(waiting)
        for i in arrived.take(enough, max(0.0, scan_at - time.monotonic())):
            if i in waiting:
                pending, _ = waiting.pop(i)
                results[i] = _finish(pending)
        now = time.monotonic()
        if now >= scan_at:
            scan_at = now + _POLL
            _give_up(waiting, results, now)
    return results


def _give_up(
    waiting: Dict[int, Tuple[Pending, Optional[float]]], results: List[Any], now: float
) -> None:
    """Abandon the unanswered requests whose host is lost or whose deadline passed."""
    for j, (pending, deadline) in list(waiting.items()):
        if pending.receiver.empty() and (pending.host.lost or (deadline or now + 1) <= now):
            waiting.pop(j)
            results[j] = _abandon(pending)


class _Arrivals:
    """The indexes of the requests whose reply came, noted by the receivers'
    notify hooks (on mitogen's broker thread). The waiting thread is woken
    once ``enough`` have come, not at every reply: each wake-up is a futex
    and a GIL hand-off with the broker thread, which reads the other replies
    meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Released (once) when ``enough`` indexes have come.
        self._wake = threading.Lock()
        self._wake.acquire()
        self._landed: List[int] = []
        self._enough = 1

    def put(self, index: int) -> None:
        with self._lock:
            self._landed.append(index)
            if len(self._landed) == self._enough:
                with contextlib.suppress(RuntimeError):  # released already
                    self._wake.release()

    def take(self, enough: int, timeout: float) -> List[int]:
        """Wait until ``enough`` indexes have come, ``timeout`` seconds at
        most; return all that came (maybe fewer, maybe none)."""
        with self._lock:
            self._enough = enough
            ready = len(self._landed) >= enough
        if not ready:
            self._wake.acquire(timeout=timeout)
        with self._lock:
            landed, self._landed = self._landed, []
            self._wake.acquire(blocking=False)  # a wake-up not waited for
        return landed


def _finish(pending: Pending) -> Any:
    """The value of a reply that has arrived, or the error it carries."""
    try:
        return pending.finish(
            pending.host.unpickle(lambda: pending.receiver.get(block=False), pending.what)
        )
    except RemoteExecError as e:
        return e


def _abandon(pending: Pending) -> RemoteExecError:
    """The error for a reply that will not come (host lost, or past its deadline)."""
    with contextlib.suppress(Exception):
        pending.receiver.close()
    host = pending.host
    if host.lost:
        return HostLost("host lost during %s: %s" % (pending.what, host.lost), host=host.name)
    return TimeoutExpired(
        "no reply to %s within %.1fs" % (pending.what, pending.timeout or 0.0), host=host.name
    )


def run_plain(
    hosts: Sequence[PlainHost],
    command: Union[str, Sequence[str]],
    *,
    timeout: Optional[float] = None,
    workers: int = DEFAULT_WORKERS,
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
) -> Dict[str, Result]:
    """Run ``command`` on every host over plain SSH, at most ``workers`` at a
    time; return each host's :data:`Result`, by name, in the order given.

    ``command``: an argument list, shell-quoted for the login shell (so it gets
    the same argv as ``Host.run``), or a string, given to the shell as is.
    ``timeout``: seconds for the command on each host (None: no limit).
    ``heartbeat_timeout``: seconds a connection may stay silent before its
    host is lost (:class:`~remoteexec.errors.HostLost`).
    Arguments are checked before anything connects: a ValueError/TypeError
    names the host and the field. A failing host never stops the others.
    """
    checked = arguments.command(command)
    line = checked if isinstance(checked, str) else shlex.join(checked)
    seconds = arguments.seconds("timeout", timeout, allow_none=True)
    silence = arguments.seconds("heartbeat_timeout", heartbeat_timeout)
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError("workers must be an int, got %r" % (workers,))
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError("workers must be in 1..%d, got %d" % (MAX_WORKERS, workers))
    seen: Set[str] = set()
    for h in hosts:
        if h.name in seen:
            raise ValueError("host name %r given twice" % h.name)
        seen.add(h.name)
    targets = [h.check() for h in hosts]
    if not hosts:
        return {}
    keys, known = _Keys(), _KnownHosts()
    for h in hosts:  # an unreadable key or known_hosts file: before anything connects
        keys.load(h)
        known.load(h)
    # paramiko logs each failed connection's traceback at ERROR; the error is
    # in the host's result, so keep it off stderr unless the app logs paramiko.
    logging.getLogger("paramiko.transport").addHandler(_QUIET)
    pool_size = min(workers, len(hosts))
    with ThreadPoolExecutor(pool_size, thread_name_prefix="remoteexec-plain") as pool:
        futures = [
            pool.submit(_one, h, t, checked, line, (seconds, silence), (keys, known))
            for h, t in zip(hosts, targets)
        ]
        return {h.name: f.result() for h, f in zip(hosts, futures)}


class _Keys:
    """Private keys loaded once per file for all hosts (parsing costs ~1 ms each)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: Dict[str, Any] = {}

    def load(self, host: PlainHost) -> Any:
        """``host``'s key (None without ``identity_file``); ValueError naming the
        host when the file is no usable private key (encrypted: use an agent)."""
        path = host.identity_file
        if path is None:
            return None
        with self._lock:
            if path not in self._keys:
                import paramiko

                try:
                    self._keys[path] = paramiko.PKey.from_path(path)
                except (paramiko.SSHException, OSError, ValueError) as e:
                    raise ValueError(
                        "host %s: identity_file %s: %s: %s" % (host.name, path, type(e).__name__, e)
                    ) from None
            return self._keys[path]


class _KnownHosts:
    """known_hosts files read once per run, for all hosts. paramiko's
    ``load_host_keys`` parses a whole file for every client, each line checked
    against all the lines before it (8 ms a host for a file of 128 lines, most
    of the master's CPU at N=32); here a file is read once and only the lines
    naming a host are parsed, when it connects. Matching is paramiko's: exact
    names and hashed (``|1|``) ones, no patterns; the first key of each type
    wins; a line that does not parse is skipped, as OpenSSH skips it; a key on a
    ``@revoked`` line naming the host is never trusted for it; other marker lines
    (``@cert-authority``: paramiko has no certificates) are ignored. Off port
    22, a host known under no ``[host]:port`` name may present the key listed
    under its bare name (OpenSSH's fallback, see :class:`_PortlessFallback`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: Dict[str, _KnownFile] = {}

    @staticmethod
    def _path(host: PlainHost) -> str:
        return host.known_hosts_file or os.path.expanduser("~/.ssh/known_hosts")

    def load(self, host: PlainHost) -> None:
        """Read ``host``'s known_hosts file (once per file); ValueError naming the
        host when its ``known_hosts_file`` cannot be read. The default
        ``~/.ssh/known_hosts`` may be missing (no host is known then)."""
        if host.check_host_keys != "enforce":
            return
        path = self._path(host)
        with self._lock:
            if path in self._files:
                return
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError as e:
                if host.known_hosts_file is not None:
                    raise ValueError(
                        "host %s: known_hosts_file %s: %s: %s"
                        % (host.name, path, type(e).__name__, e)
                    ) from None
                text = ""
            self._files[path] = _KnownFile(text)

    def keys(self, host: PlainHost, name: str) -> List[Any]:
        """The keys ``host``'s known_hosts file holds for ``name`` (paramiko's
        ``host`` or ``[host]:port``), the first of each key type, in file order."""
        with self._lock:
            return self._files[self._path(host)].keys(name)


class _KnownFile:
    """One known_hosts file: its lines indexed by the names they hold."""

    def __init__(self, text: str) -> None:
        self._lines: List[Tuple[str, List[str]]] = []  # (marker, fields)
        self._plain: Dict[str, List[int]] = {}
        self._hashed: List[Tuple[int, List[str]]] = []
        self._parsed: Dict[int, Any] = {}
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            marker = ""
            if line.startswith("@"):
                marker, _, line = line.replace("\t", " ").partition(" ")
            fields = line.split(None, 2)
            if len(fields) < 3:
                continue
            i = len(self._lines)
            self._lines.append((marker, fields))
            names = fields[0].split(",")
            hashed = [n for n in names if n.startswith("|1|")]
            if hashed:
                self._hashed.append((i, hashed))
            for n in names:
                self._plain.setdefault(n, []).append(i)

    def keys(self, name: str) -> List[Any]:
        """The keys for ``name``: the first of each type, none revoked."""
        found = set(self._plain.get(name, ()))
        if not name.startswith("|1|"):
            for i, hashed in self._hashed:
                if any(_hash_matches(name, h) for h in hashed):
                    found.add(i)
        revoked = [k.asbytes() for k in self._keys(found, "@revoked")]
        kept: Dict[str, Any] = {}
        for key in self._keys(found, ""):
            if key.get_name() not in kept and key.asbytes() not in revoked:
                kept[key.get_name()] = key
        return list(kept.values())

    def _keys(self, lines: Set[int], marker: str) -> List[Any]:
        """The keys of ``lines`` with ``marker``, in file order, skipping bad lines."""
        keys = []
        for i in sorted(lines):
            if self._lines[i][0] != marker:
                continue
            if i not in self._parsed:
                self._parsed[i] = _parse_key(*self._lines[i][1][1:3])
            if self._parsed[i] is not None:
                keys.append(self._parsed[i])
        return keys


def _parse_key(key_type: str, data: str) -> Any:
    """The public key of a known_hosts line (None when it does not parse)."""
    import base64

    import paramiko

    try:
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(data.split()[0]))
    except Exception:  # unknown type, bad base64, bad key bytes: the line is skipped
        return None


def _hash_matches(name: str, hashed: str) -> bool:
    """Whether a hashed known_hosts name (``|1|salt|hash``) is ``name``."""
    import hmac

    from paramiko.hostkeys import HostKeys

    try:
        mine = HostKeys.hash_host(name, hashed)
    except Exception:  # a bad salt (not base64, not 20 bytes): no match
        return False
    return hmac.compare_digest(mine.encode(), hashed.encode("utf-8", "replace"))


def _one(
    host: PlainHost,
    target: Target,
    command: Union[str, List[str]],
    line: str,
    bounds: Tuple[Optional[float], float],
    loaded: Tuple[_Keys, _KnownHosts],
) -> Result:
    """One host's result; every error becomes a typed one naming the host.
    ``bounds``: the command's timeout and the connection's heartbeat_timeout."""
    import paramiko

    timeout, silence = bounds
    client = paramiko.SSHClient()
    try:
        started = time.monotonic()
        try:
            _connect(client, host, target, loaded)
            _keep_alive(client, silence)
        except Exception as e:
            return _connection_error(e, host)
        try:
            code, out, err = _execute(client, line, timeout)
        except socket.timeout:
            return TimeoutExpired(
                "the command did not finish within %g s (its SSH session was closed)"
                % (timeout or 0),
                host=host.name,
                command=command,
                timeout=timeout,
            )
        except (paramiko.SSHException, OSError, EOFError) as e:
            return ConnectionFailed(
                "the SSH session failed: %s: %s" % (type(e).__name__, e),
                host=host.name,
                command=command,
            )
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            # The connection ended, not the command: the exit status is paramiko's
            # -1 (and paramiko reports a write that timed out as a bare EOFError).
            return HostLost(
                "host lost during the command (it may have run): its SSH connection "
                "ended (closed, or no answer within heartbeat_timeout %g s)" % silence,
                host=host.name,
                command=command,
            )
        text_out, text_err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        return RunResult(host.name, command, code, text_out, text_err, time.monotonic() - started)
    finally:
        transport = client.get_transport()
        client.close()
        if transport is not None:  # its thread ends within moments: keep the bound strict
            transport.join(_JOIN_TIMEOUT)


def _keep_alive(client: Any, silence: float) -> None:
    """Bound the connection's silence to ``silence`` seconds: an SSH keepalive
    after each quarter of it without traffic, and the kernel gives the
    connection up when what it sent stays unacknowledged that long."""
    transport = client.get_transport()
    transport.set_keepalive(max(1, int(silence / 4)))
    option = getattr(socket, "TCP_USER_TIMEOUT", None)  # Linux
    if option is not None:
        transport.sock.setsockopt(socket.IPPROTO_TCP, option, max(1, int(silence * 1000)))


def _connect(
    client: Any, host: PlainHost, target: Target, loaded: Tuple[_Keys, _KnownHosts]
) -> None:
    import paramiko

    keys, known = loaded
    port = target.port or 22
    if host.check_host_keys == "enforce":
        # paramiko's own name for the host in known_hosts, as SSHClient.connect looks it up
        name = target.hostname if port == 22 else "[%s]:%d" % (target.hostname, port)
        stored = client.get_host_keys()
        for key in known.keys(host, name):
            stored.add(name, key.get_name(), key)
        if port == 22:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            client.set_missing_host_key_policy(_PortlessFallback(known.keys(host, target.hostname)))
    else:  # 'ignore': throwaway hosts only, as for contexts
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    pkey = keys.load(host)
    client.connect(
        target.hostname,
        port=port,
        username=target.user or getpass.getuser(),
        pkey=pkey,
        look_for_keys=pkey is None,
        allow_agent=pkey is None,
        timeout=host.connect_timeout,
        banner_timeout=host.connect_timeout,
        auth_timeout=host.connect_timeout,
        channel_timeout=host.connect_timeout,
    )


class _PortlessFallback:
    """A paramiko missing-host-key policy for a host off port 22, known under
    no ``[host]:port`` name: OpenSSH's fallback ("checking without port
    identifier"), which the context path gets from the ssh client: the key
    the host presents is trusted if it is one of those under the bare name
    (not revoked there); any other key is refused as unknown. A key under
    ``[host]:port`` that differs never gets here (paramiko: a mismatch)."""

    def __init__(self, portless: List[Any]) -> None:
        self._portless = [key.asbytes() for key in portless]

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:  # noqa: ARG002
        """paramiko's hook: return to accept ``key`` for ``hostname``, raise to refuse."""
        if key.asbytes() not in self._portless:
            import paramiko

            raise paramiko.SSHException("Server %r not found in known_hosts" % (hostname,))


def _execute(client: Any, line: str, timeout: Optional[float]) -> Tuple[int, bytes, bytes]:
    """Run ``line`` in a session; (exit code, stdout, stderr). socket.timeout
    when ``timeout`` passes. An exit by signal is -1 (paramiko's value)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    channel = client.get_transport().open_session()
    try:
        channel.exec_command(line)
        channel.shutdown_write()  # stdin: EOF at once, as Host.run's /dev/null
        out, err = _Tail(), _Tail()
        stdout_open = True
        while stdout_open or not channel.exit_status_ready():
            left = _left(deadline)
            if stdout_open:
                channel.settimeout(min(_READ_SLICE, left))
                try:
                    data = channel.recv(65536)
                    stdout_open = bool(data)
                    out.add(data)
                except socket.timeout:
                    pass
            else:
                channel.status_event.wait(min(_READ_SLICE, left))
            while channel.recv_stderr_ready():
                err.add(channel.recv_stderr(65536))
        channel.settimeout(_left(deadline))
        for _ in range(OUTPUT_LIMIT):  # stderr after stdout's end, bounded
            data = channel.recv_stderr(65536)
            if not data:
                break
            err.add(data)
        return channel.recv_exit_status(), out.data(), err.data()
    finally:
        channel.close()


def _left(deadline: Optional[float]) -> float:
    """Seconds left before ``deadline`` (a day without one); socket.timeout past it."""
    if deadline is None:
        return 86400.0
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("command timeout")
    return left


class _Tail:
    """The last :data:`OUTPUT_LIMIT` bytes of a stream (and how many were dropped)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.dropped = 0

    def add(self, data: bytes) -> None:
        self._buf += data
        extra = len(self._buf) - OUTPUT_LIMIT
        if extra > OUTPUT_LIMIT:  # trim in big steps, not on every chunk
            del self._buf[:extra]
            self.dropped += extra

    def data(self) -> bytes:
        extra = max(0, len(self._buf) - OUTPUT_LIMIT)
        if not extra and not self.dropped:
            return bytes(self._buf)
        note = b"[remoteexec: %d bytes of output dropped]\n" % (self.dropped + extra)
        return note + bytes(self._buf[extra:])


def _connection_error(exc: Exception, host: PlainHost) -> ConnectionFailed:
    """The typed error for a failed connection, naming the host and the cause."""
    import paramiko

    where = host.target if host.port is None else "%s (port %d)" % (host.target, host.port)
    known = host.known_hosts_file or "~/.ssh/known_hosts"
    text = "%s: %s" % (type(exc).__name__, exc)
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyMismatch(
            "the host key of %s differs from the one in %s (%s)" % (where, known, exc),
            host=host.name,
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return AuthenticationFailed(
            "%s refused the key (%s); check identity_file and authorized_keys" % (where, text),
            host=host.name,
        )
    if isinstance(exc, paramiko.SSHException) and "known_hosts" in str(exc):
        target = host.check()
        names = ""
        if target.port not in (None, 22):  # the names OpenSSH looks up too
            names = " as [%s]:%d, nor as %s with this key" % (
                target.hostname,
                target.port,
                target.hostname,
            )
        return HostKeyMismatch(
            "the host key of %s is not in %s%s (unknown host)" % (where, known, names),
            host=host.name,
        )
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return HostUnreachable(
            "no answer from %s within connect_timeout %g s" % (where, host.connect_timeout),
            host=host.name,
        )
    if isinstance(exc, paramiko.SSHException):
        return ConnectionFailed("SSH to %s failed: %s" % (where, text), host=host.name)
    if isinstance(exc, OSError):
        return HostUnreachable("cannot reach %s: %s" % (where, text), host=host.name)
    return ConnectionFailed("cannot connect to %s: %s" % (where, text), host=host.name)
