"""Host: one open context on one machine, as the master sees it."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
    cast,
)

import mitogen.core

from remoteexec import arguments
from remoteexec.connectors.base import Connector
from remoteexec.errors import (
    CommandFailed,
    HostLost,
    RemoteCallError,
    RemoteExecError,
    TimeoutExpired,
    from_dict,
)
from remoteexec.heartbeat import Heartbeat
from remoteexec.lane import HostLane, Lane, LaneUnavailable
from remoteexec.target.quick import MARK as QUICK_MARK

if TYPE_CHECKING:  # for annotations only: master imports this module, not the reverse
    from remoteexec.master import Master

T = TypeVar("T")

SUPERVISOR = "remoteexec.target.supervisor.Supervisor"
#: Supervisor methods served on the context's broker thread (see :mod:`remoteexec.target.quick`).
QUICK_SERVICES = frozenset({"ping", "status", "output", "signal"})
#: The name of mitogen's broker thread (mitogen.core.Broker).
BROKER_THREAD = "mitogen.broker"
LOG = logging.getLogger(__name__)
#: Extra seconds a service reply may take beyond the remote operation's own timeout.
REPLY_SLACK = 30.0
#: Seconds the closing round trip (kill the run's processes, drop its logs) may take.
FINISH_TIMEOUT = 15.0


@dataclass
class RunResult:
    """What ``Host.run`` returns."""

    host: str
    command: Union[str, Sequence[str]]
    returncode: int
    stdout: Union[str, bytes]
    stderr: Union[str, bytes]
    duration: float = field(default=0.0)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


#: The types mitogen's unpickler on the target accepts, with list, tuple and dict.
_PLAIN = (type(None), bool, int, float, str, bytes)
#: mitogen's own str/bytes wrappers (masked in logs) unpickle fine too.
_WRAPPERS = (mitogen.core.Secret, mitogen.core.Blob)


def check_plain(value: Any, where: str) -> None:
    """Only plain types unpickle on the target: mitogen's unpickler there
    refuses anything else (a set, a Path, a custom class) with an error that
    names neither the call nor the argument. Fail here, by name."""
    if type(value) in _PLAIN or type(value) in _WRAPPERS:
        return
    if type(value) in (list, tuple):
        for item in value:
            check_plain(item, where)
        return
    if type(value) is dict:
        for key, item in value.items():
            check_plain(key, where)
            check_plain(item, "%s.%s" % (where, key))
        return
    shown = arguments.bounded(repr(value), 100)
    raise TypeError(
        "%s: %s is a %s; only None, bool, int, float, str, bytes, list, tuple and dict"
        " can be sent to a host" % (where, shown, type(value).__name__)
    )


def call_error_details(exc: mitogen.core.CallError) -> Dict[str, str]:
    """The remote type name, message and (last 4000 characters of the)
    traceback in a mitogen CallError, whose text is
    ``"module.Type: message\\n<traceback>"``: mitogen sends no type."""
    text = str(exc)
    head, _, tb = text.partition("\n")
    qualname, _, message = head.partition(": ")
    return {
        "type_name": qualname.rpartition(".")[2] or "Exception",
        "remote_message": message,
        "remote_traceback": tb[-4000:],
    }


_MANIFEST_LOCK = threading.Lock()
_MANIFEST: List[Tuple[str, str, str, bool]] = []
#: Target modules imported only where their feature runs: never pushed at install.
LAZY_PREFIXES = (
    "remoteexec.target.tarantool.",
    # Detached stacks only: a context that never detaches never imports them.
    "remoteexec.target.project",
    "remoteexec.target.keeper",
    # The lane's side: imported when a lane opens, never at connect.
    "remoteexec.target.lane",
)
#: The mitogen modules the supervisor imports on the target, cached with ours.
MITOGEN_TARGET_MODULES = ("mitogen.select", "mitogen.service")


def bootstrap_manifest() -> List[Tuple[str, str, str, bool]]:
    """(module, path, SHA-256 of its file, whether mitogen ships the file as
    it is) of every module the target
    side may import and the bytecode cache may serve: each non-package
    module under :mod:`remoteexec.target` (Tarantool's included, imported
    only where used) and the mitogen modules the supervisor needs. Read
    once per process: these are the sources mitogen ships from here."""
    import hashlib
    import importlib.util

    import remoteexec.target

    with _MANIFEST_LOCK:
        if _MANIFEST:
            return list(_MANIFEST)
        found: List[Tuple[str, str]] = []
        for name in MITOGEN_TARGET_MODULES:
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.origin:
                found.append((name, spec.origin))
        root = os.path.dirname(os.path.abspath(remoteexec.target.__file__))
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(
                d for d in dirs if os.path.exists(os.path.join(folder, d, "__init__.py"))
            )
            relative = os.path.relpath(folder, root)
            package = "remoteexec.target"
            if relative != os.curdir:
                package += "." + relative.replace(os.sep, ".")
            for file in sorted(files):
                # bytecache itself is what loads the others: it comes from mitogen.
                if file.endswith(".py") and file not in ("__init__.py", "bytecache.py"):
                    found.append(("%s.%s" % (package, file[:-3]), os.path.join(folder, file)))
        for name, path in found:
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            # mitogen ships its own modules minified: the source the target gets
            # is not this file's bytes, so it cannot be checked against them.
            exact = not name.startswith("mitogen.")
            _MANIFEST.append((name, path, digest, exact))
        return list(_MANIFEST)


_EAGER: List[str] = []
_COMPILED: Dict[str, Optional[bytes]] = {}


def compiled_module(name: str) -> Optional[bytes]:
    """The bytecode cache file of manifest module ``name`` compiled by this
    Python, zlib-compressed (None if unknown, or if its file changed since
    the manifest read it): what a cold target would otherwise compile itself.
    Compiled once per process."""
    from remoteexec.target import bytecache

    with _MANIFEST_LOCK:
        if name in _COMPILED:
            return _COMPILED[name]
    entry = next((e for e in bootstrap_manifest() if e[0] == name), None)
    blob = None
    if entry is not None:
        with open(entry[1], "rb") as f:
            raw = f.read()
        if bytecache.sha256(raw).hexdigest() == entry[2]:
            source = raw.decode("utf-8")
            # The file name the target's finder gives the module it loads.
            code = compile(source, "master:" + entry[1], "exec", flags=0, dont_inherit=True)
            blob = zlib.compress(bytecache.encode(entry[2], code, source), 6)
    with _MANIFEST_LOCK:
        _COMPILED[name] = blob
    return blob


#: One thread at a time computes the order: ast.parse in two threads at once
#: fails in CPython 3.11 ("SystemError: AST constructor recursion depth
#: mismatch"), as connect_all's first connects did.
_EAGER_LOCK = threading.Lock()


def eager_modules() -> List[str]:
    """The manifest's modules that install imports (all but the lazy ones),
    each after the modules it imports by ``from .x import``: mitogen sends
    those along with it, and a request for a module it already sent is a
    wasted message and a warning in its log."""
    with _EAGER_LOCK:
        return _eager_order()


def _eager_order() -> List[str]:
    with _MANIFEST_LOCK:
        if _EAGER:
            return list(_EAGER)
    import ast

    paths = {e[0]: e[1] for e in bootstrap_manifest() if not e[0].startswith(LAZY_PREFIXES)}
    deps: Dict[str, List[str]] = {}
    for name, path in paths.items():
        with open(path, "rb") as f:
            tree = ast.parse(f.read())
        package = name.rpartition(".")[0]
        deps[name] = sorted(
            "%s.%s" % (package, node.module)
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        )
    order: List[str] = []

    def visit(name: str, seen: set[str]) -> None:
        if name in seen or name not in paths:
            return
        seen.add(name)
        for dep in deps[name]:
            visit(dep, seen)
        order.append(name)

    seen: set[str] = set()
    for name in sorted(paths):
        visit(name, seen)
    with _MANIFEST_LOCK:
        _EAGER[:] = order
    return order


class Host:
    """A context on one machine: local (no SSH) or over SSH.

    Made by :meth:`Master.local` / :meth:`Master.connect`; do not construct it
    yourself. ``call`` runs on the context's main thread (one at a time, as in
    mitogen) or, once the host's lane is open, on the context's lane thread
    (see :meth:`open_lane`: so two calls from two threads may run at once, one
    on each); the supervisor's calls (``run``, executor start/stop/status) run
    on the context's thread pool, so a status never waits behind a long call.
    Once the host is lost, every call raises :class:`HostLost` at once.
    """

    def __init__(
        self,
        master: Master,
        context: Any,
        connector: Connector,
        *,
        token: str,
        on_close: Optional[Callable[[Host], None]] = None,
    ) -> None:
        self.master = master
        self.context = context
        #: How the context was opened (see :mod:`remoteexec.connectors`).
        self.connector = connector
        self.name = connector.name
        #: The connector's scheme: ``"local"``, ``"ssh"``...
        self.kind = connector.kind
        #: Unique per context within the run: contexts may share a machine
        #: (several local() ones, or lab hosts), so it keeps their marker
        #: prefixes and run directories apart.
        self.token = token
        self.info: Dict[str, Any] = {}
        self.lost: Optional[str] = None
        #: The beats and acks of this host; set by :meth:`install`.
        self.heartbeat: Optional[Heartbeat] = None
        self._on_close = on_close
        self._lock = threading.Lock()
        self._closed = False
        #: The lane of blocking calls (see :mod:`remoteexec.lane`): its
        #: ``stats`` say how many calls and runs it carried.
        self.lane = HostLane(self)

    def __repr__(self) -> str:
        state = "lost" if self.lost else ("closed" if self._closed else "up")
        return "<Host %s (%s, %s)>" % (self.name, self.kind, state)

    @property
    def is_local(self) -> bool:
        """The context runs on the master's machine: an address it binds on
        127.0.0.1 is the master's 127.0.0.1 too."""
        return self.connector.is_local

    @property
    def closed(self) -> bool:
        """:meth:`close` ran (or the master closed): no call works any more."""
        return self._closed

    @property
    def last_ack(self) -> float:
        """time.monotonic() of the last heartbeat ack (of the connection,
        before the first beat)."""
        return self.heartbeat.last_ack if self.heartbeat is not None else 0.0

    @property
    def transport_pid(self) -> Optional[int]:
        """Pid of the process carrying the connection (the ssh client, or the
        local interpreter), on the master's machine."""
        stream = self.context.router.stream_by_id(self.context.context_id)
        proc = getattr(getattr(stream, "conn", None), "proc", None)
        return getattr(proc, "pid", None)

    # -- lifecycle -------------------------------------------------------

    def install(
        self,
        *,
        run_id: str,
        heartbeat_timeout: float,
        keep_logs: bool,
        timeout: float,
        bytecode_cache: Optional[str] = None,
    ) -> Heartbeat:
        """Install the supervisor in the fresh context and start listening for
        its acks; return the host's :class:`Heartbeat`, for the master's
        monitor to drive. Called once, by the master, right after opening.

        With ``bytecode_cache`` (a directory on the host), the target modules
        are loaded from that cache when a master put them there before (see
        :mod:`remoteexec.target.bytecache`): the manifest goes first, the
        context asks for the modules its cache lacks all at once (mitogen
        would otherwise fetch them one import at a time), and the install
        call follows without waiting: one round trip in all.
        """
        from remoteexec.target import bytecache, supervisor

        eager = eager_modules()
        primed = code_handle = None
        if bytecode_cache:
            # bytecache and its packages, pushed: no import round trips. prime
            # asks for what the cache lacks at once, all in flight together;
            # install is sent without waiting for prime's reply (the context
            # runs both in order): no round trip between them.
            self.context.router.responder.forward_modules(self.context, [bytecache.__name__])
            code_handle = self.context.router.add_handler(
                self._serve_compiled,
                persist=False,
                policy=self._from_context,
                respondent=self.context,
            )
            primed = self.context.call_async(
                bytecache.prime, bytecode_cache, bootstrap_manifest(), eager, code_handle
            )
        else:
            # What the supervisor imports, in one batch, before the install
            # call asks for it module by module (a round trip each).
            self.context.router.responder.forward_modules(self.context, eager)
        recv = self.context.call_async(
            supervisor.install,
            run_id,
            context_token=self.token,
            heartbeat_timeout=heartbeat_timeout,
            keep_logs=keep_logs,
        )
        if primed is not None:
            cache_info = self._get(primed, timeout, "priming the bytecode cache")
            with contextlib.suppress(Exception):  # a warm cache asked for nothing
                self.context.router.del_handler(code_handle)
        self.info = self._get(recv, timeout, "installing the supervisor")
        if primed is not None:
            self.info["bytecode_cache"] = cache_info
        mitogen.core.listen(self.context, "disconnect", self._on_disconnect)
        self.heartbeat = Heartbeat(self.context, self.info["heartbeat_handle"], self._on_silence)
        return self.heartbeat

    def _from_context(self, msg: mitogen.core.Message, _stream: Any) -> bool:
        """mitogen's handler policy: only this host's context may ask."""
        return bool(msg.src_id == self.context.context_id)

    def _serve_compiled(self, msg: mitogen.core.Message) -> None:
        """Answer the context's ``bytecache.prime``: the modules it names,
        compiled here (on mitogen's broker thread; compiled once per process)."""
        if msg.is_dead:
            return
        try:
            names = msg.unpickle()
            reply = {n: compiled_module(n) for n in names if isinstance(n, str)}
        except Exception:  # the context falls back to mitogen's source
            LOG.debug("%s: compiled modules not served", self.name, exc_info=True)
            reply = {}
        msg.reply({n: blob for n, blob in reply.items() if blob is not None})

    def _on_silence(self, reason: str, cut: bool) -> None:
        self._mark_lost(reason)
        if cut:
            self.drop()

    def _on_disconnect(self) -> None:
        if not self._closed:
            self._mark_lost("the connection closed (context or ssh client died)")

    def _mark_lost(self, reason: str) -> None:
        with self._lock:
            if self.lost or self._closed:
                return
            self.lost = reason
        if self.heartbeat is not None:
            self.heartbeat.stop()
        self.lane.close()

    def drop(self) -> None:
        """Cut the connection without talking to the host (it may be gone).

        Never blocks: for a host found lost, and for one whose setup failed.
        The context, cut off, ends the run by itself (as on a dead master).
        """
        self.lane.close()
        # A stalled ssh client may sit out ServerAlive* for a minute: end it
        # (it is our own child) so its stream closes now.
        pid = self.transport_pid if self.connector.kill_transport_on_drop else None
        if pid and getattr(self.context, "via", None) is None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        # Not router.disconnect(context): mitogen 0.3 looks the stream up by
        # the Context object there, finds none and does nothing. Only a
        # directly connected context's own stream is cut; a hopped context is
        # routed over its parent's stream, which other hosts still use.
        router = self.context.router
        with contextlib.suppress(Exception):
            stream = router.stream_by_id(self.context.context_id)
            if stream is not None and stream.protocol.remote_id == self.context.context_id:
                router.disconnect_stream(stream)  # deferred to the broker: never blocks

    def close(self) -> None:
        """Stop every process started here and close the context.

        One round trip kills the run's processes and drops its logs (unless
        the master keeps them); a lost host is only let go of.
        """
        if self._closed:
            return
        self.lane.close()
        try:
            if not self.lost:
                self.service("finish", reply_timeout=FINISH_TIMEOUT)
        except RemoteExecError:
            pass
        finally:
            self._closed = True
            if self.heartbeat is not None:
                self.heartbeat.stop()
            if self._on_close is not None:
                self._on_close(self)
            with contextlib.suppress(Exception):
                self.context.shutdown(wait=False)

    def ensure_open(self) -> None:
        """Raise :class:`HostLost` if the host is lost or closed."""
        if self.lost:
            raise HostLost("host lost: %s" % self.lost, host=self.name)
        if self._closed:
            raise HostLost("host was closed", host=self.name)

    # -- calls -----------------------------------------------------------

    def _get(self, recv: mitogen.core.Receiver, timeout: Optional[float], what: str) -> Any:
        return self.unpickle(lambda: self._wait(recv, timeout, what), what, timeout)

    def unpickle(
        self,
        fetch: Callable[[], mitogen.core.Message],
        what: str,
        timeout: Optional[float] = None,
    ) -> Any:
        """The value of the reply ``fetch()`` returns, mitogen's errors turned
        into ours (RemoteCallError, TimeoutExpired, HostLost) naming this host
        and ``what``. For :mod:`remoteexec.fanout`, which waits on many replies."""
        try:
            return fetch().unpickle()
        except mitogen.core.CallError as e:
            details: Dict[str, Any] = dict(call_error_details(e))
            raise RemoteCallError(
                "%s raised %s: %s" % (what, details["type_name"], details["remote_message"]),
                host=self.name,
                **details,
            ) from None
        except mitogen.core.TimeoutError:
            # Heartbeats still arrive (or the host would be marked lost and
            # _wait would have said so): it is slow, not lost.
            reason = "no reply to %s within %.1fs" % (what, timeout or 0.0)
            raise TimeoutExpired(reason, host=self.name) from None
        except mitogen.core.ChannelError as e:
            if str(e).startswith(_TOO_LARGE):  # dropped by a router: the host is fine
                raise RemoteCallError(
                    "the reply to %s is too large: %s" % (what, e),
                    host=self.name,
                    type_name="ReplyTooLarge",
                    remote_message=str(e),
                ) from None
            reason = self.lost or "the connection closed"
            self._mark_lost(reason)
            raise HostLost("host lost during %s: %s" % (what, reason), host=self.name) from None

    def _wait(
        self, recv: mitogen.core.Receiver, timeout: Optional[float], what: str
    ) -> mitogen.core.Message:
        """recv.get(), but give up as soon as the host is declared lost.

        A silent partition never closes the stream by itself; the heartbeat
        thread notices and marks the host lost, and waiters see that here.

        Never sleeps inside mitogen's Latch with a timeout: a put() that
        races the timeout writes its wake-up byte into a socketpair that is
        already back in mitogen's shared pool, and a later, unrelated wait
        then dies of "AssertionError: Cookie incorrect" (mitogen 0.3.x).
        The receiver's notify hook releases a lock instead, and the message is
        taken with a non-blocking get.
        """
        # A bare lock as a one-slot wake-up: cheaper than an Event (whose
        # wait builds a Condition and a lock each time) on every call.
        arrived = threading.Lock()
        arrived.acquire()

        def wake(_recv: Any) -> None:
            with contextlib.suppress(RuntimeError):  # released already: one wake-up is enough
                arrived.release()

        recv.notify = wake
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return recv.get(block=False)
            except mitogen.core.TimeoutError:
                pass
            if self.lost:
                raise HostLost("host lost during %s: %s" % (what, self.lost), host=self.name)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise mitogen.core.TimeoutError("no reply within %ss" % timeout)
            # put() happens before notify: a message that lands between the
            # get above and this wait releases the lock, so nothing is missed.
            arrived.acquire(timeout=0.25 if left is None else min(0.25, left))

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the host and return its result.

        ``fn`` must be importable (a module-level function); arguments and the
        result must be plain data. A remote exception becomes
        :class:`RemoteCallError` with the remote type name and message. A
        function marked with :func:`remoteexec.quick` runs on the context's
        broker thread (two thread hand-offs fewer; see its rule). Once the
        host's lane is open (see :meth:`open_lane`), an importable function
        runs on the context's lane thread instead, with no broker at all.
        """
        module = getattr(fn, "__module__", None)
        qualname = getattr(fn, "__qualname__", None)
        if module and qualname and module != "__main__" and "<" not in qualname:
            lane = self.lane.take()
            if lane is not None:
                try:
                    request = ("call", module, qualname, args, kwargs)
                    reply = self._on_lane(lane, request, None, "call %s()" % qualname, spin=True)
                    if reply is not _NOT_SENT:
                        self.lane.stats["calls"] += 1
                        return cast(T, self._call_result(reply))
                finally:
                    self.lane.release(lane)
        pending = self.send_call(fn, *args, **kwargs)
        return cast(T, pending.finish(self._get(pending.receiver, None, pending.what)))

    def open_lane(self) -> bool:
        """Open the host's lane now rather than at its second blocking call:
        ``call`` and ``run`` then skip mitogen's broker threads on both
        ends (see :mod:`remoteexec.lane`). Returns whether a lane is open:
        False for a local host, a host reached ``via`` another, or when
        opening failed (logged at debug); calls then take mitogen's path."""
        self.ensure_open()
        return self.lane.open()

    def _on_lane(
        self,
        lane: Lane,
        request: Tuple[Any, ...],
        timeout: Optional[float],
        what: str,
        spin: bool = False,
    ) -> Any:
        """The unpickled reply to ``request`` over ``lane`` (held), mitogen's
        errors turned into ours; :data:`_NOT_SENT` when the lane had ended
        before sending (the caller takes mitogen's path)."""
        try:
            message = lane.request(request, timeout, what, self, spin=spin)
        except LaneUnavailable:
            self.lane.unavailable()
            return _NOT_SENT
        return self.unpickle(lambda: message, what, timeout)

    def send_call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Pending:
        """Send ``Host.call(fn, ...)`` without waiting: the :class:`Pending`
        reply (for :func:`remoteexec.fanout.call_all`)."""
        return self._send_call(fn, args, kwargs, quick_ok=True)

    def prepare_call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Pending:
        """:meth:`send_call`, built but not sent (see :meth:`prepare_run`)."""
        return self._prepare_call(fn, args, kwargs, quick_ok=True)

    def _send_call(
        self, fn: Callable[..., Any], args: Any, kwargs: Dict[str, Any], quick_ok: bool
    ) -> Pending:
        pending = self._prepare_call(fn, args, kwargs, quick_ok)
        send_together([pending])
        return pending

    def _prepare_call(
        self, fn: Callable[..., Any], args: Any, kwargs: Dict[str, Any], quick_ok: bool
    ) -> Pending:
        self.ensure_open()
        module = getattr(fn, "__module__", None)
        qualname = str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn)))
        what = "call %s()" % qualname
        if not module or module == "__main__" or "<" in qualname:
            # mitogen serves __main__ itself; other unimportables fail there.
            # Sent at once (its message is mitogen's own business).
            recv = self.context.call_async(fn, *args, **kwargs)
            return Pending(self, recv, what, None, _as_is)
        quick = self.info.get("quick_handle")
        if quick and quick_ok and getattr(fn, QUICK_MARK, False):
            name = "%s:%s" % (module, qualname)
            request = ("call", name, list(args), kwargs)

            def retry_or_finish(result: Any) -> Any:
                if result.get("ok") is None:  # its module is not imported there yet
                    again = self._send_call(fn, args, kwargs, quick_ok=False)
                    return again.finish(self._get(again.receiver, None, what))
                return self._call_result(result)

            message = mitogen.core.Message.pickled(request, handle=quick)
            return self._prepare(message, what, None, retry_or_finish)
        from remoteexec.target import supervisor

        # Through a target-side wrapper: a remote exception comes back as a
        # bounded error dict, never as a CallError too large for mitogen.
        chain = self.context.default_call_chain
        message = chain.make_msg(supervisor.call_function, module, qualname, args, kwargs)
        return self._prepare(message, what, None, self._call_result)

    def _call_result(self, result: Any) -> Any:
        if not result["ok"]:
            raise from_dict(result, self.name)
        return result["result"]

    def _send_quick(self, handle: int, request: Tuple[Any, ...]) -> mitogen.core.Receiver:
        """Send ``request`` to the quick handler: served on the host's broker thread."""
        msg = mitogen.core.Message.pickled(request, handle=handle)
        return self.context.send_async(msg)

    def service(
        self, method: str, reply_timeout: Optional[float] = REPLY_SLACK, **kwargs: Any
    ) -> Any:
        """Call a supervisor method on the context's thread pool (the quick
        ones, :data:`QUICK_SERVICES`, on its broker thread).

        Raises the remoteexec exception a target-side error dict names.
        ``reply_timeout=None`` waits as long as the host is alive.
        """
        pending = self.send_service(method, reply_timeout, **kwargs)
        return pending.finish(self._get(pending.receiver, pending.timeout, pending.what))

    def send_service(
        self, method: str, reply_timeout: Optional[float] = REPLY_SLACK, **kwargs: Any
    ) -> Pending:
        """Send a supervisor call without waiting: the :class:`Pending` reply."""
        arguments.seconds("reply_timeout", reply_timeout, allow_none=True)
        self.ensure_open()
        check_plain(kwargs, method)
        quick = self.info.get("quick_handle")
        if quick and method in QUICK_SERVICES:
            recv = self._send_quick(quick, ("service", method, (), kwargs))
        else:
            recv = self.context.call_service_async(SUPERVISOR, method, **kwargs)
        return Pending(self, recv, method, reply_timeout, self._service_result)

    def _service_result(self, result: Any) -> Any:
        if isinstance(result, dict) and result.get("ok") is False:
            raise from_dict(result, self.name)
        return result

    def service_nowait(self, method: str, **kwargs: Any) -> bool:
        """Send a supervisor call and do not wait for (or get) its reply.

        For cleanup that may run anywhere (``__del__``: any thread, mitogen's
        broker thread included, interpreter exit, a closed or lost host): it
        never blocks and never raises. Returns whether the call was sent;
        when the host is closed or lost it sends nothing (the host's
        processes were killed with it).
        """
        if self.lost or self._closed:
            return False
        try:
            check_plain(kwargs, method)
            call = (SUPERVISOR, method, mitogen.core.Kwargs(kwargs))
            msg = mitogen.core.Message.pickled(call, handle=mitogen.core.CALL_SERVICE)
            if threading.current_thread().name == BROKER_THREAD:
                # On its own thread mitogen routes inline, and a finalizer may
                # interrupt it mid-write: hand the send to another thread.
                threading.Thread(target=self.context.send, args=(msg,), daemon=True).start()
            else:
                self.context.send(msg)
        except Exception:
            LOG.debug("%s: service_nowait(%s) not sent", self.name, method, exc_info=True)
            return False
        return True

    def invoke(
        self, function: str, *args: Any, reply_timeout: Optional[float] = REPLY_SLACK, **kwargs: Any
    ) -> Any:
        """Call a ``remoteexec.target`` function by dotted name on the pool."""
        return self.service(
            "invoke", reply_timeout=reply_timeout, function=function, args=list(args), kwargs=kwargs
        )

    def run(
        self,
        command: Union[str, Sequence[str]],
        *,
        check: bool = False,
        shell: bool = False,
        cwd: Union[str, os.PathLike[str], None] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        input: Union[str, bytes, None] = None,
        text: bool = True,
    ) -> RunResult:
        """Run a command on the host and wait for it.

        ``command`` is an argument list; a string is split with shlex, and a
        shell is used only with ``shell=True``. With ``check=True`` a
        non-zero exit raises :class:`CommandFailed` with the output tail.
        ``timeout`` kills the command's process group and raises
        TimeoutExpired. Bad arguments (an empty command, a NaN or
        non-positive timeout, an ``env`` value that is not a str) raise
        ValueError/TypeError here, before anything runs on the host. Once
        the host's lane is open (see :meth:`open_lane`), the command is
        spawned and waited for on the context's lane thread.
        """
        self.ensure_open()
        request = RunRequest(
            command,
            check=check,
            shell=shell,
            cwd=cwd,
            env=env,
            timeout=timeout,
            input=input,
            text=text,
        )
        lane = self.lane.take()
        if lane is not None:
            try:
                result = self._run_on_lane(lane, request)
                if result is not None:
                    return result
            finally:
                self.lane.release(lane)
        pending = self.prepare_run(request)
        send_together([pending])
        return cast(
            RunResult, pending.finish(self._get(pending.receiver, pending.timeout, pending.what))
        )

    def send_run(
        self,
        command: Union[str, Sequence[str]],
        *,
        check: bool = False,
        shell: bool = False,
        cwd: Union[str, os.PathLike[str], None] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        input: Union[str, bytes, None] = None,
        text: bool = True,
    ) -> Pending:
        """Send :meth:`run` without waiting: the :class:`Pending` reply, whose
        ``finish`` gives the RunResult (for :func:`remoteexec.fanout.run_all`).
        Arguments are checked here, before anything is sent."""
        self.ensure_open()
        request = RunRequest(
            command,
            check=check,
            shell=shell,
            cwd=cwd,
            env=env,
            timeout=timeout,
            input=input,
            text=text,
        )
        pending = self.prepare_run(request)
        send_together([pending])
        return pending

    def prepare_run(self, request: RunRequest) -> Pending:
        """:meth:`send_run` of ``request``, built but not sent: a Pending whose
        ``message`` :func:`send_together` sends along with other hosts' (for
        :func:`remoteexec.fanout.run_all`). HostLost if the host is lost or closed."""
        self.ensure_open()
        # To the supervisor's request handler: no service pool hand-off there.
        message = mitogen.core.Message(data=request.body, handle=self.info["request_handle"])
        pending = self._prepare(message, "run", request.reply_timeout)
        pending.finish = lambda reply: self._run_result(
            request.command, self._service_result(reply), request.check, request.text
        )
        return pending

    def _prepare(
        self,
        message: mitogen.core.Message,
        what: str,
        timeout: Optional[float],
        finish: Optional[Callable[[Any], Any]] = None,
    ) -> Pending:
        """``message`` addressed to this host's context with a fresh receiver
        for its reply (what mitogen's ``Context.send_async`` does), not routed."""
        receiver = mitogen.core.Receiver(
            self.context.router, persist=False, respondent=self.context
        )
        message.dst_id = self.context.context_id
        message.reply_to = receiver.handle
        return Pending(self, receiver, what, timeout, finish or self._service_result, message)

    def _run_on_lane(self, lane: Lane, request: RunRequest) -> Optional[RunResult]:
        """:meth:`run` over ``lane`` (held); None when nothing was sent."""
        reply = self._on_lane(lane, ("run", request.kwargs), request.reply_timeout, "run")
        if reply is _NOT_SENT:
            return None
        self.lane.stats["runs"] += 1
        return self._run_result(
            request.command, self._service_result(reply), request.check, request.text
        )

    def _run_result(
        self, command: Union[str, Sequence[str]], res: Any, check: bool, text: bool
    ) -> RunResult:
        out, err = res["stdout"], res["stderr"]
        if text:
            out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        result = RunResult(self.name, command, res["returncode"], out, err, res["duration"])
        if check and result.returncode != 0:
            tail = (err or out) if text else (err or out).decode("utf-8", "replace")
            tail = tail[-2000:]
            raise CommandFailed(
                "command exited with code %d" % result.returncode,
                host=self.name,
                command=command,
                exit_code=result.returncode,
                output_tail=tail,
            )
        return result


@dataclass
class Pending:
    """A call sent to a host and not yet answered.

    ``receiver`` gets the reply; ``finish`` turns its unpickled value into
    what the blocking method returns (or raises its error); ``timeout`` is
    the reply's bound in seconds (None: as long as the host lives).
    :mod:`remoteexec.fanout` waits on many at once, with no thread per host.
    """

    host: Host
    receiver: Any
    what: str
    timeout: Optional[float]
    finish: Callable[[Any], Any]
    #: The request while it is built but not sent yet (:meth:`Host.prepare_run`);
    #: None once :func:`send_together` sent it.
    message: Optional[mitogen.core.Message] = None


def run_arguments(
    command: Union[str, Sequence[str]],
    shell: bool,
    cwd: Union[str, os.PathLike[str], None],
    env: Optional[Mapping[str, str]],
    timeout: Optional[float],
    input: Union[str, bytes, None],
) -> Dict[str, Any]:
    """The supervisor's ``run`` arguments, checked (ValueError/TypeError)."""
    checked = arguments.command(command)
    path = os.fspath(cwd) if cwd is not None else None
    if isinstance(path, str):
        arguments.no_nul("cwd", path)
    return dict(
        command=checked,
        shell=shell,
        cwd=path,
        env=arguments.environment("env", env) or None,
        timeout=arguments.seconds("timeout", timeout, allow_none=True),
        input=input.encode() if isinstance(input, str) else input,
    )


class RunRequest:
    """:meth:`Host.run`'s arguments, checked and pickled into the supervisor's
    request once, for any number of hosts (:func:`remoteexec.fanout.run_all`):
    each host then only adds its address and reply handle. ValueError or
    TypeError here, before anything is sent."""

    def __init__(
        self,
        command: Union[str, Sequence[str]],
        *,
        check: bool = False,
        shell: bool = False,
        cwd: Union[str, os.PathLike[str], None] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        input: Union[str, bytes, None] = None,
        text: bool = True,
    ) -> None:
        #: The supervisor's ``run`` arguments, checked.
        self.kwargs = run_arguments(command, shell, cwd, env, timeout, input)
        check_plain(self.kwargs, "run")
        self.command = command
        self.check = check
        self.text = text
        seconds = self.kwargs["timeout"]
        #: The reply's bound: the command's timeout and some slack (None: none).
        self.reply_timeout = None if seconds is None else seconds + REPLY_SLACK
        self._body: Optional[bytes] = None

    @property
    def body(self) -> bytes:
        """The pickled call, as the supervisor's request handler takes it
        (pickled on first use: a run that takes the lane never needs it)."""
        if self._body is None:
            self._body = mitogen.core.Message.pickled(("run", self.kwargs)).data
        return self._body


def send_together(pendings: Sequence[Pending]) -> None:
    """Send the built requests of ``pendings`` (those whose ``message`` is
    set), all those of one master in one turn of its broker thread.

    mitogen wakes the broker once per message sent from another thread (a
    pipe write, then a GIL hand-off to the broker and back): at N=32 that
    was most of the master's time in a fan-out. Routed from the broker
    thread itself, each message is written at once: one wake-up in all.
    """
    batches: Dict[int, Tuple[Any, List[mitogen.core.Message]]] = {}
    for pending in pendings:
        if pending.message is not None:
            router = pending.host.context.router
            batches.setdefault(id(router), (router, []))[1].append(pending.message)
            pending.message = None
    for router, messages in batches.values():
        if len(messages) == 1:
            router.route(messages[0])
        else:
            router.broker.defer(_route_each, router, messages)


def _route_each(router: Any, messages: List[mitogen.core.Message]) -> None:
    """On the broker thread (where ``route`` runs inline): route every message,
    then raise the first error, as one route would have (mitogen then stops
    the broker)."""
    error: Optional[BaseException] = None
    for message in messages:
        try:
            router.route(message)
        except Exception as e:  # the others still go out
            error = error or e
    if error is not None:
        raise error


def _as_is(value: Any) -> Any:
    return value


#: What a lane request returns when it was not sent: take mitogen's path.
_NOT_SENT = object()
#: How mitogen's dead message starts when a router dropped a message over
#: its max_message_size.
_TOO_LARGE = mitogen.core.Router.too_large_msg.partition("%")[0]
