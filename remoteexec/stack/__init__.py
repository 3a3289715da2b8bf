"""The Stack: services that depend on each other, started across hosts as one.

::

    stack = rx.Stack("shop")
    storage = stack.add(ReplicaSet("storage", members=[(a, 3301), (b, 3301), (c, 3301)]))
    router = stack.add(TarantoolInstance(on=b, listen="0.0.0.0:0",
                                         env={"STORAGE_URI": storage.ref("leader.uri")}),
                       name="router", depends_on=[storage])
    seed = stack.add(rx.SimpleExecutor(["python3", "seed.py", storage.ref("leader.uri")], on=a),
                     name="seed", depends_on=[storage], job=True)
    api = stack.add(rx.HTTPExecutor(["python3", "api.py", "--router", router.ref("uri")],
                                    url="http://127.0.0.1:8080/health", on=c),
                    name="api", depends_on={router: "healthy", seed: "completed"})
    with stack:                   # up(), then down() at the end of the block
        stack.status()            # one row per service
        stack.logs("api", lines=50)
        stack.restart("router", restart_dependents=True)

Any object with the :class:`~remoteexec.services.Service` interface can be
added: executors, Tarantool instances, replica sets.

**Dependencies** (``depends_on``): a list of handles or names, or a dict
of them to a condition: ``"started"`` (its process runs), ``"healthy"`` (its
readiness checks passed: the default) or ``"completed"`` (a job that exited
0: the default for a job). A name may be added after the service naming it.

**References**: ``handle.ref("uri")`` is a value known once that service has
started (a port picked at start, ``listen=":0"``, included); the dependent
resolves it when it starts. It goes wherever the service accepts deferred
values (command arguments, environment, URLs, ``box_cfg``, app parameters),
alone or joined with strings: ``"--uri=" + ref``, :func:`template`, or
:func:`interpolate` for ``"${router.uri}"`` text (the topology file's
syntax). A reference is a dependency (``"healthy"``) unless declared. An
unknown service or endpoint in a reference is a ValueError before anything
starts.

**One definition on several hosts**: ``stack.add(factory, name="api",
on=[a, b, c])``, where ``factory(host)`` makes the service for one host,
adds ``api.1``, ``api.2``, ``api.3``. The handle is the group: depending on
it waits for every member, ``api.ref("uri")`` resolves to the members'
values joined by commas, and each member is a service of its own
(``"api.2"`` in ``depends_on``, ``logs()``, ``restart()``, references).

**up()** starts every service as soon as its dependencies are met (in
parallel across hosts, and on one host), each health-gated, and returns
{service: seconds}. A cycle, an unknown dependency or reference, a
duplicate name or ``"completed"`` on a service that is not a job is a
ValueError before anything starts. On the first failure nothing new
starts, what started is stopped in reverse dependency order, and
:class:`StackError` names the failing service, its host, the readiness
layer it reached, its output tail and what was started, stopped and never
started. A job (``job=True``) that exits non-zero is such a failure.

**down()** stops dependents before what they depend on, independent
services in parallel, each bounded by ``stop_timeout`` (then killed);
every failure is collected into one StackError. It is idempotent.

**Exits**: a service that exits after it was ready is reported within
``poll`` seconds: an ``exited`` event (exit code, output tail, ``final``)
and its row in ``status()``. With ``restart="on-failure"`` it is started
again (``max_restarts`` times, ``restart_backoff`` apart): by its host's
supervisor when the service takes the policy (``set_restart()``), else
from the master. A service given its own policy (an executor made with
``restart="on-failure"``) is restarted by its host, and the stack follows
that: ``exited`` (not final), ``restarting``, ``ready``, and a final
``exited`` when the supervisor gives up.

**Events** (``stack.subscribe(callback)``): :class:`StackEvent` with
``kind`` in :data:`EVENTS` (starting, ready, failed, exited, restarting,
stopping, stopped), the service, its host(s) and the time.

**Detached** (``up(detach=True)``): the services outlive the process as a
named project; :meth:`Stack.attach` gives a :class:`DetachedStack` from any
later process (status, logs, follow, restart, down). See
:mod:`remoteexec.stack.project`.
"""

from typing import TYPE_CHECKING, Any

from remoteexec.stack.error import StackError
from remoteexec.stack.events import EVENTS, StackEvent
from remoteexec.stack.graph import CONDITIONS
from remoteexec.stack.refs import Ref, Template, interpolate, template
from remoteexec.stack.runner import Handle, Stack

if TYPE_CHECKING:
    from remoteexec.stack.project import DetachedStack

__all__ = [
    "CONDITIONS",
    "EVENTS",
    "DetachedStack",
    "Handle",
    "Ref",
    "Stack",
    "StackError",
    "StackEvent",
    "Template",
    "interpolate",
    "template",
]


def __getattr__(name: str) -> Any:
    # DetachedStack on first use: its module brings the target side (and
    # mitogen), which the stdlib-only lab CLI must not need.
    if name == "DetachedStack":
        from remoteexec.stack.project import DetachedStack

        return DetachedStack
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
