"""The target-side supervisor's RPC plumbing: install, and the calls the master makes.

One supervisor lives in each context (one per host per Master). The master
calls :func:`install` once, right after connecting; from then on its calls
are served by :class:`Supervisor`, a mitogen Service on the context's thread
pool, so ``running()``, ``output()`` and stops never queue behind a long
``Host.call`` on the main thread. The work is done elsewhere, one job per
module:

- :mod:`.spawn`: spawning and signalling process trees;
- :mod:`.runstate`: the run's state, its cleanup and the heartbeat watchdog;
- :mod:`.lifecycle`: one executor's tree from start to forget;
- :mod:`.restarts`: the restart policy;
- :mod:`.run`: one-shot commands (``Host.run``);
- :mod:`.guardlink`: the guard that outlives a killed context.

Functions return ``{"ok": True, ...}`` (the replies of :mod:`.protocol`) or
its one error shape, :func:`.protocol.error`. The master calls them through
typed stubs, :mod:`remoteexec.supervisor_client`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import queue
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import mitogen.core
import mitogen.service

from . import procs, protocol, quick, runstate
from .guardlink import GUARD
from .lifecycle import (
    forget,
    kill,
    output,
    probe,
    read_log,
    signal_proc,
    start,
    status,
    stop,
    wait,
    wait_exit,
)
from .run import run
from .runstate import FINISHED_KEPT, STATE, finish_run, kill_all


@mitogen.core.takes_econtext  # type: ignore[untyped-decorator]  # mitogen is untyped
def install(
    run_id: str,
    context_token: str = "c0",
    heartbeat_timeout: float = 10.0,
    base_dir: Optional[str] = None,
    pool_size: int = 16,
    keep_logs: bool = False,
    econtext: Any = None,
) -> protocol.InstallReply:
    """Set this context up as the run's supervisor; call once after connect.

    Creates the 0700 run directory, becomes a child subreaper, starts the
    guard and the service pool (so status calls never wait behind a long
    call on the main thread), hooks :func:`finish_run` to the broker's
    shutdown, and starts the heartbeat watchdog. Returns facts about the target.
    """
    with STATE.lock:
        if runstate.set_up(run_id, context_token, base_dir, keep_logs):
            # Before the pool: shutdown listeners run in order, and the pool's
            # joins its threads, which may be waiting on our processes.
            mitogen.core.listen(econtext.broker, "shutdown", finish_run)
            pool = mitogen.service.get_or_create_pool(size=pool_size, router=econtext.router)
            # Registered here, not by the pool on the first call (which would
            # wait for this main thread to build it): no warm-up round trip.
            pool.add(Supervisor(router=econtext.router))
            STATE.heartbeat_handle = runstate.start_watchdog(econtext.router, heartbeat_timeout)
            REQUESTS.install(econtext.router, econtext.broker)
    ssh = os.environ.get("SSH_CONNECTION", "").split()
    assert STATE.run_dir is not None and STATE.heartbeat_handle is not None
    return {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "address": ssh[2] if len(ssh) == 4 else None,
        "run_dir": STATE.run_dir,
        "heartbeat_handle": STATE.heartbeat_handle,
        "psutil": procs.HAVE_PSUTIL,
        "subreaper": STATE.subreaper,  # False until the first spawn
        "guard_pid": GUARD.pid,
        "guard_error": GUARD.error,
        "python": sys.version.split()[0],
        "uid": os.getuid(),
        "quick_handle": quick.install(econtext.router),
        "request_handle": REQUESTS.handle or 0,
    }


def _resolve(module: str, qualname: str) -> Any:
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def call_function(
    module: str, qualname: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Dict[str, Any]:
    """Run ``module.qualname(*args, **kwargs)`` for ``Host.call``."""
    try:
        return {"ok": True, "result": _resolve(module, qualname)(*args, **kwargs)}
    except Exception as e:
        return protocol.raised("call %s()" % qualname, e)


def invoke(
    function: str, args: Sequence[Any] = (), kwargs: Optional[Mapping[str, Any]] = None
) -> Any:
    """Call a target-side function by dotted name, on a pool thread.

    Only functions under ``remoteexec.target`` may be named: the pool must
    not become a way around mitogen's own call policy.
    """
    module_name, _, attr = function.rpartition(".")
    if not module_name.startswith("remoteexec.target"):
        raise ValueError("only remoteexec.target functions may be invoked, not %s" % function)
    return _resolve(module_name, attr)(*args, **(kwargs or {}))


def ping() -> protocol.PingReply:
    """The context's pid and clock: a round trip through the pool."""
    return {"ok": True, "pid": os.getpid(), "time": time.time()}


_ALLOW = mitogen.service.AllowParents()

# Each returns at once: these may run on the broker thread (see .quick).
quick.SERVICES.update(ping=ping, status=status, output=output, signal=signal_proc)


def _method(fn: Callable[..., Any]) -> Any:
    """``fn`` as a Service method: keyword arguments only, exceptions as error replies."""

    def method(_service: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as e:
            return protocol.raised(fn.__name__, e)

    method.__name__ = fn.__name__
    method.__doc__ = fn.__doc__
    return mitogen.service.expose(_ALLOW)(method)


class Supervisor(mitogen.service.Service):  # type: ignore[misc]  # mitogen is untyped
    """The supervisor's calls, served by the context's thread pool.

    Served from the pool rather than the main thread, so ``running()``,
    ``output()`` and stops never queue behind a long ``Host.call``. The
    master calls them through :mod:`remoteexec.supervisor_client`.
    """

    start = _method(start)
    wait = _method(wait)
    stop = _method(stop)
    kill = _method(kill)
    signal = _method(signal_proc)
    forget = _method(forget)
    status = _method(status)
    output = _method(output)
    read = _method(read_log)
    wait_exit = _method(wait_exit)
    probe = _method(probe)
    run = _method(run)
    finish = _method(finish_run)
    kill_all = _method(kill_all)
    invoke = _method(invoke)
    ping = _method(ping)


#: Threads that serve :data:`REQUESTS` at most: the service pool's size.
REQUEST_THREADS = 16
#: The name of those threads.
REQUEST_THREAD = "remoteexec-request"


class Requests:
    """Supervisor calls sent to a handle of ours: ``(method, kwargs)``, any
    :class:`Supervisor` method, its reply the same as through the pool.

    Why not only mitogen's service pool: on its way to a pool thread a call
    crosses a Receiver, a Select and a Latch (a socketpair write and read to
    wake the thread) and the invoker's checks; measured on lab hosts, ~0.19 ms
    of the context's CPU a call, against ~0.10 ms here, where the broker
    thread queues the message (a SimpleQueue: a futex, no syscall when a
    thread is waiting) and a plain thread answers it.
    :func:`remoteexec.fanout.run_all` sends its commands here.

    Threads start on demand, up to ``size``, and stay: a call never waits for
    another while fewer than ``size`` run. Only a parent (the master) may call.
    """

    def __init__(self, size: int = REQUEST_THREADS) -> None:
        self.size = size
        #: The handle, once :meth:`install` ran.
        self.handle: Optional[int] = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: List[threading.Thread] = []
        #: Idle threads less queued calls: below 1, a new call needs a thread.
        self._free = 0
        self._methods = {
            name: method
            for name, method in vars(Supervisor).items()
            if getattr(method, "mitogen_service__policies", None)
        }

    def install(self, router: Any, broker: Any) -> None:
        """Register the handler (once); stop the threads when the broker stops."""
        if self.handle is None:
            self.handle = router.add_handler(
                self._on_message, policy=mitogen.core.has_parent_authority
            )
            mitogen.core.listen(broker, "shutdown", self.stop)

    def _on_message(self, msg: Any) -> None:
        """On the broker thread: queue the call, with a thread for it."""
        if msg.is_dead:
            return
        with self._lock:
            if self._free < 1 and len(self._threads) < self.size:
                thread = threading.Thread(
                    target=self._serve,
                    name="%s-%d" % (REQUEST_THREAD, len(self._threads)),
                    daemon=True,
                )
                try:
                    thread.start()
                except RuntimeError as e:
                    # Out of threads (a pids cgroup, ulimit -u): say so now.
                    # Queued, the call would wait for a thread that may never
                    # come free, its master with it.
                    with contextlib.suppress(Exception):  # the master is gone: nobody to tell
                        msg.reply(protocol.raised("starting a thread for the request", e))
                    return
                self._threads.append(thread)
                self._free += 1
            self._free -= 1
        self._queue.put(msg)

    def _serve(self) -> None:
        while True:
            msg = self._queue.get()
            if msg is None:
                return
            self._answer(msg)
            with self._lock:
                self._free += 1

    def _answer(self, msg: Any) -> None:
        name = "request"
        try:
            name, kwargs = msg.unpickle()
            method = self._methods.get(name)
            if method is None:
                reply = protocol.error("ValueError", "no supervisor method %r" % (name,))
            else:
                reply = method(None, **kwargs)
        except Exception as e:  # an unreadable request
            reply = protocol.raised(str(name), e)
        try:
            msg.reply(reply)
        except Exception as e:  # a reply that cannot be pickled: say so instead
            with contextlib.suppress(Exception):  # the master is gone: nobody to tell
                msg.reply(protocol.raised(str(name), e))

    def stop(self) -> None:
        """End the threads (each after its current call)."""
        with self._lock:
            for _ in self._threads:
                self._queue.put(None)


#: This context's request handler (see :class:`Requests`).
REQUESTS = Requests()


__all__ = [
    "FINISHED_KEPT",
    "REQUESTS",
    "Requests",
    "Supervisor",
    "call_function",
    "install",
    "invoke",
    "kill_all",
    "output",
    "run",
    "status",
    "stop",
]
