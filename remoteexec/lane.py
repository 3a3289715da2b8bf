"""The lane: ``Host.call`` and ``Host.run`` over a second session of the host's ssh connection.

A call through mitogen crosses its broker thread and its framing layers on
both ends (about 0.35 ms of a 0.39 ms round trip on a lab host). The lane
carries one request at a time over a second ssh session *on the same
connection* (OpenSSH multiplexing: the context's ssh runs as a ControlMaster,
so a new session costs one channel, no handshake), with blocking reads on
both ends: length-prefixed pickles (protocol 3, read with mitogen's own
restricted ``find_class`` on both ends), read on the host by one context
thread (:mod:`remoteexec.target.lane`), which runs the call or the command
itself.

When it runs (see docs/guides/commands.md):

- only for a host connected directly over ssh (no ``via`` hop; a local host
  has no ssh), and only for blocking ``Host.call`` (an importable function)
  and ``Host.run``; fan-out (``send_*``, ``call_all``, ``run_all``) and every
  other call keep mitogen's path;
- opened lazily: the :data:`OPEN_AFTER`-th such call on the host starts
  opening it on a thread of its own (calls take mitogen's path until it is
  open; a host used once or twice never pays for it), or
  :meth:`HostLane.open` (``Host.open_lane()``) opens it and waits. Never at
  connect;
- one request at a time: a call that finds the lane busy takes mitogen's
  path at once rather than queue;
- a ``Host.call`` waits for its reply awake for the first :data:`SPIN_FOR`
  (polling, yielding its CPU at each turn), then asleep in poll: a sleeping
  CPU is slow to wake. One thread of the master spins at a time. A
  ``Host.run`` sleeps at once: a spawn takes most of a millisecond, and
  spinning through it gained nothing measurable, at a CPU's cost;
- any failure to open falls back to mitogen's path silently (logged at
  debug); opening is retried at most :data:`MAX_FAILURES` times, each after
  a longer pause (:data:`RETRY_AFTER`, doubled each time).

A request that could not be sent (the lane had already ended) takes
mitogen's path. A lane that ends while a call is in flight fails that call
with :class:`HostLost` (it may have run: it is never sent twice); the host
itself is not marked lost and the next call takes the other path.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import secrets
import select
import shutil
import subprocess
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

import mitogen.core

from remoteexec.connectors.base import Connector
from remoteexec.connectors.ssh import SSHConnector
from remoteexec.errors import HostLost, TimeoutExpired
from remoteexec.target import files
from remoteexec.target import lane as target_lane

if TYPE_CHECKING:  # annotations only: host imports this module
    from remoteexec.host import Host

LOG = logging.getLogger(__name__)
#: The blocking call on a host that starts opening its lane (in the
#: background: that call and the next ones take mitogen's path until it is
#: open). A host used for a call or two never pays for a lane.
OPEN_AFTER = 3
#: Failed opens (or lanes that broke) after which a host stops trying.
MAX_FAILURES = 3
#: Seconds after a failure before the next open is tried; doubled each time.
RETRY_AFTER = 5.0
#: Seconds opening may take (the session, the remote shell, the relay's boot).
OPEN_TIMEOUT = 15.0
#: Seconds a waiting call sleeps at most between checks of the host's state:
#: the same bound as mitogen's path (``Host._wait``).
CHECK_EVERY = 0.25
#: Seconds the lane's ssh client may take to exit once its session ended.
EXIT_WAIT = 2.0
#: Bytes read from the lane at once.
READ_SIZE = 256 * 1024
#: Seconds a caller waits for its reply without sleeping (polling, and
#: yielding its CPU to any other runnable task) before it sleeps in poll: a
#: sleeping CPU is slow to wake, on a VM most (0.05-0.1 ms of a 0.2 ms call
#: on a lab host). 0: always sleep at once.
SPIN_FOR = 0.002

#: Held by the one caller of this process that spins: waiting threads do not
#: take a CPU each.
_SPINNER = threading.Lock()

_NAMES = itertools.count(1)


class LaneUnavailable(Exception):
    """No lane for this request, and nothing was sent: take mitogen's path."""


def control_dir() -> str:
    """A fresh private (0700) directory for a master's ControlMaster sockets.

    Under ``rxl-<uid>`` (0700, ours) in the temporary directory when its path
    is short, else in /tmp: a unix socket path has at most 107 bytes, and
    ssh adds 17 while it binds. Named after this process: the directories of
    masters that died without closing (SIGKILL) are removed here.
    """
    root = tempfile.gettempdir()
    if len(root) > 40:
        root = "/tmp"
    parent = files.own_dir(os.path.join(root, "rxl-%d" % os.getuid()))
    for name in os.listdir(parent):
        pid = name.partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    return tempfile.mkdtemp(prefix="%d-" % os.getpid(), dir=parent)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process: alive
        return True
    return True


def attach(connector: Connector, directory: Callable[[], str]) -> None:
    """Give a directly connected ssh ``connector`` a ControlMaster socket path
    in ``directory()`` (made on first use): its lane needs one. Other
    connectors are left alone."""
    if isinstance(connector, SSHConnector) and connector.control_path is None:
        connector.control_path = os.path.join(directory(), "s%d" % next(_NAMES))


class Reply:
    """A frame read from the lane: :meth:`unpickle` gives its value as a
    mitogen message's ``unpickle`` does (the same errors), for
    ``Host.unpickle``."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def unpickle(self) -> Any:
        """The frame's value; a remote CallError raised
        (:func:`remoteexec.target.lane.unpickle`)."""
        return target_lane.unpickle(self.data)


class Lane:
    """One open lane: the ssh session's client process and its two pipes.

    One request at a time (:attr:`busy`); whoever holds it ends the lane
    when it broke (:meth:`end`).
    """

    def __init__(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.name = name
        self.proc = proc
        self.wfd = proc.stdin.fileno()
        self.rfd = proc.stdout.fileno()
        os.set_blocking(self.wfd, False)  # writes wait in poll, with the host's checks
        #: Held by the one request in flight.
        self.busy = threading.Lock()
        #: The lane can carry no more requests: end it on release.
        self.broken = False
        #: The host is closing: a waiting request gives up.
        self.closing = False
        #: The relay's pid on the host (from the context's socket peer).
        self.relay_pid: Optional[int] = None
        #: Replies that arrived while their caller spun (:data:`SPIN_FOR`).
        self.caught_spinning = 0
        self._buffer = bytearray()
        self._poller = select.poll()
        self._poller.register(self.rfd, select.POLLIN)

    def request(
        self, value: Any, timeout: Optional[float], what: str, host: Host, spin: bool = False
    ) -> Reply:
        """Send ``value``, return the reply (a :class:`Reply`). Hold
        :attr:`busy`. With ``spin``, wait awake first (:meth:`_spin`).
        Raises LaneUnavailable when nothing was sent, HostLost or
        TimeoutExpired (the lane is then broken) otherwise."""
        if self.broken or self._buffer or self._poller.poll(0):
            self.broken = True  # EOF (the session ended) or stray bytes: not ours
            raise LaneUnavailable("the lane ended")
        deadline = None if timeout is None else time.monotonic() + timeout
        data = target_lane.frame(value)
        try:
            self._send(data, deadline, timeout, what, host)
            if spin:
                self._spin()
            return self.receive(deadline, timeout, what, host)
        except BaseException:
            # Whatever stopped it (an error, a timeout, a KeyboardInterrupt),
            # a reply may still come: the next request must not read it.
            self.broken = True
            raise

    def _send(
        self,
        data: bytes,
        deadline: Optional[float],
        timeout: Optional[float],
        what: str,
        host: Host,
    ) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.wfd, view) :]
                continue
            except BlockingIOError:
                pass
            except OSError as e:
                self.broken = True
                if len(view) == len(data):
                    raise LaneUnavailable("the lane ended: %s" % e) from None
                raise self._broke(what, host) from None
            out = select.poll()
            out.register(self.wfd, select.POLLOUT)
            while not out.poll(self._wait_ms(deadline, timeout, what, host)):
                pass

    def _spin(self) -> None:
        """Wait up to :data:`SPIN_FOR` for the reply's first bytes without
        sleeping. One caller of the process spins at a time; the others (and
        every reply that takes longer) sleep in :meth:`receive`."""
        if SPIN_FOR <= 0 or not _SPINNER.acquire(blocking=False):
            return
        try:
            end = time.perf_counter() + SPIN_FOR
            poll = self._poller.poll
            while not poll(0):
                if time.perf_counter() >= end:
                    return
                os.sched_yield()
            self.caught_spinning += 1
        finally:
            _SPINNER.release()

    def receive(
        self, deadline: Optional[float], timeout: Optional[float], what: str, host: Host
    ) -> Reply:
        """The next frame, as a :class:`Reply`; waits with the host's checks."""
        header = target_lane.HEADER
        buffer = self._buffer
        while True:
            if len(buffer) >= header.size:
                (size,) = header.unpack_from(buffer)
                if size > target_lane.MAX_FRAME:
                    self.broken = True
                    raise self._broke(what, host)
                end = header.size + size
                if len(buffer) >= end:
                    data = bytes(buffer[header.size : end])
                    del buffer[:end]
                    return Reply(data)
            if not self._poller.poll(self._wait_ms(deadline, timeout, what, host)):
                continue
            chunk = os.read(self.rfd, READ_SIZE)
            if not chunk:
                self.broken = True
                raise self._broke(what, host)
            # A bytearray: a large reply (many reads) is not copied again on each.
            buffer += chunk

    def _wait_ms(
        self, deadline: Optional[float], timeout: Optional[float], what: str, host: Host
    ) -> int:
        """Milliseconds to wait before checking again; raises (and breaks the
        lane) when the host is lost or closing, or the deadline passed."""
        reason: Optional[Exception] = None
        if host.lost:
            reason = HostLost("host lost during %s: %s" % (what, host.lost), host=host.name)
        elif self.closing or host.closed:
            reason = HostLost("host was closed during %s" % what, host=host.name)
        left = None if deadline is None else deadline - time.monotonic()
        if reason is None and left is not None and left <= 0:
            reason = TimeoutExpired(
                "no reply to %s within %.1fs" % (what, timeout or 0.0), host=host.name
            )
        if reason is not None:
            self.broken = True
            raise reason
        wait = CHECK_EVERY if left is None else min(CHECK_EVERY, left)
        return max(1, int(wait * 1000))

    @staticmethod
    def _broke(what: str, host: Host) -> HostLost:
        """The error of a lane that ended mid-request: the host's loss (the
        heartbeat cut the connection) when that is the cause."""
        if host.lost:
            return HostLost("host lost during %s: %s" % (what, host.lost), host=host.name)
        return HostLost(
            "the lane to the host ended during %s (it may have run)" % what, host=host.name
        )

    def send_raw(self, data: bytes) -> None:
        """Write ``data`` as it is (the handshake, before any frame), within
        :data:`OPEN_TIMEOUT`."""
        view = memoryview(data)
        deadline = time.monotonic() + OPEN_TIMEOUT
        out = select.poll()
        out.register(self.wfd, select.POLLOUT)
        while view:
            try:
                view = view[os.write(self.wfd, view) :]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OSError(errno.ETIMEDOUT, "the lane's session takes no input") from None
                out.poll(int(CHECK_EVERY * 1000))

    def stderr(self) -> str:
        """What the session printed on stderr so far (for the debug log)."""
        err = self.proc.stderr
        if err is None:
            return ""
        os.set_blocking(err.fileno(), False)
        with contextlib.suppress(OSError, TypeError):
            return (err.read(4000) or b"").decode("utf-8", "replace").strip()
        return ""

    def end(self, graceful: bool = True) -> None:
        """Close the pipes (the context ends the lane, the relay and the
        session exit) and reap the ssh client; killed if it lingers."""
        self.broken = True
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        try:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                if graceful:
                    self.proc.wait(EXIT_WAIT)
        finally:  # interrupted (a second Ctrl-C) or not: the client goes
            if self.proc.poll() is None:
                with contextlib.suppress(OSError):
                    self.proc.kill()
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    self.proc.wait(EXIT_WAIT)


class HostLane:
    """A host's lane: opened lazily, used by one request at a time, dropped
    when it breaks, reopened within bounds (see the module's rules)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        #: What happened so far: ``opens``, ``calls`` and ``runs`` carried,
        #: ``fallbacks`` (busy, or ended before sending) and ``failures``.
        self.stats: Dict[str, int] = dict(opens=0, calls=0, runs=0, fallbacks=0, failures=0)
        #: False: every call takes mitogen's path, the lane stays as it is
        #: (to compare the two paths, or to rule the lane out).
        self.enabled = True
        self._lane: Optional[Lane] = None
        self._opening = threading.Lock()
        self._uses = 0
        self._next_try = 0.0
        self._closed = False

    @property
    def possible(self) -> bool:
        """The host is reached directly over ssh with a ControlMaster socket."""
        connector = self.host.connector
        return isinstance(connector, SSHConnector) and connector.control_path is not None

    @property
    def closed(self) -> bool:
        """The host closed: no lane any more."""
        return self._closed

    @property
    def is_open(self) -> bool:
        """A lane is open (it may be busy)."""
        lane = self._lane
        return lane is not None and not lane.broken

    @property
    def current(self) -> Optional[Lane]:
        """The open lane, if any (its ssh client's ``proc``, its ``relay_pid``)."""
        return self._lane

    def take(self) -> Optional[Lane]:
        """The lane, held for one request, or None: take mitogen's path."""
        if not self.enabled:
            return None
        lane = self._lane
        if lane is None:
            self._uses += 1
            if self._uses >= OPEN_AFTER and self._may_try():
                self._open_in_background()
            return None
        if not lane.busy.acquire(blocking=False):
            self.stats["fallbacks"] += 1
            return None
        if lane.broken:
            self.release(lane)
            return None
        return lane

    def release(self, lane: Lane) -> None:
        """Done with ``lane``: a broken one is ended and forgotten."""
        try:
            if lane.broken or lane.closing:
                self._drop(lane, graceful=not self.host.lost, failed=not lane.closing)
        finally:
            lane.busy.release()

    def unavailable(self) -> None:
        """A request found the lane ended before sending: count the fallback."""
        self.stats["fallbacks"] += 1

    def open(self) -> bool:
        """Open the lane now, if the host can have one (``Host.open_lane``).
        False when it cannot or opening failed (logged at debug)."""
        return self._open_once(wait=True) is not None

    def _open_in_background(self) -> None:
        """Open the lane on a thread of its own: no call waits for it."""
        # No other attempt until this one is over (it sets the next one).
        self._next_try = time.monotonic() + OPEN_TIMEOUT + CHECK_EVERY * 8
        threading.Thread(
            target=self._open_once, args=(False,), name="remoteexec-lane-open", daemon=True
        ).start()

    def _may_try(self) -> bool:
        return (
            not self._closed
            and self.stats["failures"] < MAX_FAILURES
            and time.monotonic() >= self._next_try
            and self.possible
        )

    def _open_once(self, wait: bool) -> Optional[Lane]:
        """The open lane, opened now if need be; None if it cannot be. With
        ``wait``, an open in progress on another thread is waited for."""
        timeout = OPEN_TIMEOUT + EXIT_WAIT if wait else -1
        if not self._opening.acquire(blocking=wait, timeout=timeout):
            return None  # another thread is opening it
        try:
            if self._lane is not None and not self._lane.broken:
                return self._lane
            if self._closed or not self.possible:
                return None
            try:
                lane = self._start()
            except (LaneUnavailable, OSError, mitogen.core.Error) as e:
                self._failed("cannot open the lane: %s" % e)
                return None
            except HostLost:
                return None
            self._lane = lane
            self.stats["opens"] += 1
            if self.closed:  # closed meanwhile
                self._drop(lane, graceful=True, failed=False)
                return None
            return lane
        finally:
            self._opening.release()

    def _failed(self, why: str) -> None:
        self.stats["failures"] += 1
        self._next_try = time.monotonic() + RETRY_AFTER * 2 ** (self.stats["failures"] - 1)
        LOG.debug("%s: %s; mitogen's path instead", self.host.name, why)

    def _start(self) -> Lane:
        """Start a lane: the context listens, the session's relay connects."""
        from remoteexec.errors import RemoteExecError

        host = self.host
        connector = host.connector
        assert isinstance(connector, SSHConnector) and connector.control_path is not None
        if not os.path.exists(connector.control_path):
            raise LaneUnavailable("no ControlMaster socket")
        token = secrets.token_hex(target_lane.TOKEN_BYTES)
        try:
            listening = host.invoke(
                "remoteexec.target.lane.listen", token=mitogen.core.Secret(token)
            )
        except RemoteExecError as e:
            raise LaneUnavailable(str(e)) from None
        command = target_lane.relay_command(connector.options["python_path"])
        proc = subprocess.Popen(
            connector.mux_argv(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C for the script is not for it
        )
        lane = Lane(host.name, proc)
        try:
            lane.send_raw(target_lane.handshake(listening["path"], bytes.fromhex(token)))
            deadline = time.monotonic() + OPEN_TIMEOUT
            hello = lane.receive(deadline, OPEN_TIMEOUT, "opening the lane", host).unpickle()
            if not (isinstance(hello, dict) and hello.get("ok")):
                raise LaneUnavailable("unexpected hello %r" % (hello,))
            lane.relay_pid = int(hello.get("relay_pid") or 0) or None
        except (LaneUnavailable, HostLost, TimeoutExpired, OSError, mitogen.core.Error) as e:
            detail = lane.stderr()
            lane.end(graceful=False)
            raise LaneUnavailable("%s%s" % (e, "; ssh: " + detail if detail else "")) from None
        except BaseException:
            # Anything else (a KeyboardInterrupt) goes on as it is, but not
            # with the session left to the garbage collector: a traceback
            # kept (a REPL's last one) would keep it, and its relay, alive.
            lane.end(graceful=False)
            raise
        return lane

    def _drop(self, lane: Lane, graceful: bool, failed: bool) -> None:
        if self._lane is lane:
            self._lane = None
        if failed:
            self._failed("the lane ended")
        lane.end(graceful=graceful)

    def close(self) -> None:
        """The host closes or is dropped: end the lane (a request in flight
        gives up within :data:`CHECK_EVERY` and ends it) and open no other."""
        self._closed = True
        lane = self._lane
        if lane is None:
            return
        lane.closing = True
        if lane.busy.acquire(blocking=False):
            try:
                self._drop(lane, graceful=not self.host.lost, failed=False)
            finally:
                lane.busy.release()


__all__ = [
    "CHECK_EVERY",
    "EXIT_WAIT",
    "MAX_FAILURES",
    "OPEN_AFTER",
    "OPEN_TIMEOUT",
    "RETRY_AFTER",
    "SPIN_FOR",
    "HostLane",
    "Lane",
    "LaneUnavailable",
    "Reply",
    "attach",
    "control_dir",
]
