"""The Stack's checks before anything starts, on real executor objects never started.

Nothing here opens a context: every refusal must come from ``add()``,
``dependencies()`` or ``up()`` before a host is touched.
"""

from __future__ import annotations

import pickle
from typing import Any, List

import pytest

import remoteexec as rx
from remoteexec.errors import RemoteExecError
from remoteexec.stack import EVENTS, Stack, StackError, StackEvent


def tcp(port: int = 0, *args: Any) -> rx.TCPExecutor:
    return rx.TCPExecutor(["server", *args], host="0.0.0.0", port=port)


def test_add_refuses_bad_arguments_naming_them() -> None:
    stack = Stack("s")
    with pytest.raises(ValueError, match="give add\\(\\) a name="):
        stack.add(rx.SimpleExecutor(["sh", "-c", "true"], name="has space"))
    with pytest.raises(ValueError, match="no dots"):
        stack.add(tcp(), name="api.1")
    with pytest.raises(ValueError, match="restart must be one of no, on-failure"):
        stack.add(tcp(), name="a", restart="always")
    with pytest.raises(ValueError, match="a job runs once"):
        stack.add(tcp(), name="a", job=True, restart="on-failure")
    with pytest.raises(ValueError, match="max_restarts must be a whole number"):
        stack.add(tcp(), name="a", max_restarts=-1)
    with pytest.raises(ValueError, match="restart_backoff"):
        stack.add(tcp(), name="a", restart_backoff=float("nan"))
    with pytest.raises(TypeError, match="is not a Service"):
        stack.add(object(), name="a")

    class StartStopOnly:
        def start(self) -> None: ...

        def stop(self) -> None: ...

    # The stack reads the whole Service interface: a part missing is named now.
    with pytest.raises(TypeError, match=r"it has no name, hosts, kill, running, status, log_tail"):
        stack.add(StartStopOnly(), name="a")
    with pytest.raises(TypeError, match="depends_on must be"):
        stack.add(tcp(), name="a", depends_on=5)
    with pytest.raises(ValueError, match="condition 'ready' is not one of"):
        stack.add(tcp(), name="a", depends_on={"b": "ready"})
    other = Stack("other").add(tcp(), name="x")
    with pytest.raises(ValueError, match="belongs to another stack"):
        stack.add(tcp(), name="a", depends_on=[other])
    with pytest.raises(ValueError, match="needs name="):
        stack.add(lambda _host: tcp(), on=[None])
    with pytest.raises(TypeError, match="must be a callable\\(host\\)"):
        stack.add(tcp(), name="g", on=[None])
    # None of the refused calls left anything behind.
    assert stack.services == []
    service = tcp()
    stack.add(service, name="a")
    with pytest.raises(ValueError, match="already has a service named 'a'"):
        stack.add(tcp(), name="a")
    with pytest.raises(ValueError, match="is in stack s already"):
        stack.add(service, name="b")
    # A factory on one host (not a list) makes one service, not a group.
    single = stack.add(lambda _host: tcp(), name="single", on="one host")
    assert single.members == [] and single.service is not None
    # The executor's own name is the default.
    assert stack.add(rx.SimpleExecutor(["sh"], name="shell")).name == "shell"


def test_references_are_dependencies_and_groups_expand() -> None:
    stack = Stack("s")
    db = stack.add(tcp(), name="db")
    seed = stack.add(rx.SimpleExecutor(["seed", db.ref("uri")]), name="seed", job=True)
    api = stack.add(lambda _host: tcp(0, "--db=" + db.ref("uri")), name="api", on=[None, None])
    web = stack.add(tcp(0, api.ref("uri")), name="web", depends_on=[seed, "db"])
    deps = stack.dependencies()
    assert deps["seed"] == {"db": "healthy"}
    assert deps["api.1"] == deps["api.2"] == {"db": "healthy"}
    assert deps["web"] == {
        "seed": "completed",
        "db": "healthy",
        "api.1": "healthy",
        "api.2": "healthy",
    }
    assert stack.waves() == [["db"], ["seed", "api.1", "api.2"], ["web"]]
    assert [m.name for m in api.members] == ["api.1", "api.2"]
    assert stack["api"] is api and stack.get("nope") is None and "api.2" in stack
    assert web.endpoint("uri") is None  # not started: not known
    with pytest.raises(ValueError, match="has no 'uri' yet"):
        api.ref("uri").resolve()
    with pytest.raises(ValueError, match="has no endpoint 'url'"):
        db.ref("url")


def test_refusals_before_anything_starts() -> None:
    """up() refuses with ValueError and emits no event; nothing has a host, so
    anything that tried to start would fail differently."""

    def refused(stack: Stack, match: str) -> None:
        seen: List[StackEvent] = []
        stack.subscribe(seen.append)
        with pytest.raises(ValueError, match=match):
            stack.up()
        assert seen == []

    s = Stack("cycle")
    s.add(tcp(), name="a", depends_on=["b"])
    s.add(tcp(), name="b", depends_on=["a"])
    refused(s, "dependency cycle: a -> b -> a")
    s = Stack("unknown")
    s.add(tcp(), name="a", depends_on=["ghost"])
    refused(s, "no service named 'ghost'")
    s = Stack("ref")
    s.add(tcp(0, s.ref("ghost.uri")), name="a")
    refused(s, "no service named 'ghost'")
    s = Stack("endpoint")
    s.add(tcp(0, s.ref("b.nope")), name="a")
    s.add(tcp(), name="b")
    refused(s, "service 'b' has no endpoint 'nope'")
    s = Stack("self")
    a = s.add(tcp(), name="a")
    s.add(tcp(0, a.ref("uri")), name="b", depends_on=["b"])
    refused(s, "'b' depends on itself")
    s = Stack("completed")
    s.add(tcp(), name="a")
    s.add(tcp(), name="b", depends_on={"a": "completed"})
    refused(s, "'a' is not a job")


def test_stack_error_pickles_with_its_fields() -> None:
    error = StackError(
        "stack s: service b failed",
        host="h2",
        output_tail="boom\n",
        exit_code=3,
        stack="s",
        service="b",
        layer="process",
        started=["a"],
        stopped=["a", "b"],
        never_started=["c"],
        errors=[],
    )
    assert isinstance(error, RemoteExecError) and isinstance(rx.RemoteExecError, type)
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is StackError and str(clone) == str(error)
    assert (clone.service, clone.layer, clone.started, clone.never_started) == (
        "b",
        "process",
        ["a"],
        ["c"],
    )
    assert "[h2]" in str(error) and "boom" in str(error)


def test_events_as_data_and_subscribers() -> None:
    event = StackEvent(kind="ready", service="a", host="h", time=1.0, seconds=0.5)
    assert event.as_dict() == {
        "kind": "ready",
        "service": "a",
        "host": "h",
        "time": 1.0,
        "seconds": 0.5,
        "job": False,
    }
    assert EVENTS == ("starting", "ready", "failed", "exited", "restarting", "stopping", "stopped")
    stack = Stack("s")
    with pytest.raises(TypeError, match="needs a callable"):
        stack.subscribe(5)  # type: ignore[arg-type]
    unsubscribe = stack.subscribe(lambda _event: None)
    unsubscribe()
    unsubscribe()  # twice is fine


def test_down_restart_and_logs_when_nothing_runs() -> None:
    stack = Stack("s")
    stack.add(tcp(), name="a")
    assert stack.down() == {}
    with pytest.raises(StackError, match="is not up"):
        stack.restart("a")
    with pytest.raises(ValueError, match="no service named 'b'"):
        stack.logs("b")
    assert [row["state"] for row in stack.status()] == ["stopped"]
