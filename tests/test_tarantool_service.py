"""TarantoolInstance and ReplicaSet as Services: status, endpoints, log tail,
artifacts, Deferred inputs resolved at start. Real tarantool, local and lab hosts."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List, Optional

import pytest
from conftest import connect_options, need_tarantool, wait_until

import remoteexec as rx
from remoteexec.lab import free_port
from remoteexec.services import Service
from remoteexec.tarantool import ReplicaSet, TarantoolInstance

TIMEOUT = 20


class Later:
    """A Deferred: a value known only once ``value`` is set (as a stack reference is)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.value: Optional[str] = None
        self.resolved = 0

    def resolve(self) -> str:
        if self.value is None:
            raise ValueError("%s is not known yet" % self.what)
        self.resolved += 1
        return self.value


@pytest.fixture
def local(master: rx.Master) -> rx.Host:
    need_tarantool()
    return master.local()


def test_both_are_services(local: rx.Host) -> None:
    one = TarantoolInstance(on=local, listen="127.0.0.1:0")
    rs = ReplicaSet("svc", members=[(local, free_port()), (local, free_port())])
    assert isinstance(one, Service) and isinstance(rs, Service)
    assert one.hosts == [local] and rs.hosts == [local]


def test_instance_status_endpoints_log_tail_and_artifacts(local: rx.Host, tmp_path: Any) -> None:
    one = TarantoolInstance(on=local, listen="127.0.0.1:0", timeout=TIMEOUT)
    # Port 0: nothing is known before start, but the names are.
    assert one.endpoints == {"uri": None, "host": None, "port": None}
    before = one.status()
    assert before["state"] == "stopped" and before["pids"] == [] and not one.running()
    with one:
        status = one.status()
        assert status["state"] == "ready" and status["readiness"] == "ready"
        assert status["pids"] == [one.pid] and one.running()
        since, was = status["since"], before["since"]
        assert since is not None and was is not None and since >= was
        ends = one.endpoints
        assert ends["host"] == "127.0.0.1" and ends["port"] is not None
        assert ends["uri"] == "127.0.0.1:%s" % ends["port"] == one.uri
        assert status["endpoints"] == ends
        assert one.eval("return box.cfg.listen"), "listening"
        tail = one.log_tail(200)
        assert "ready to accept requests" in tail or "I>" in tail, tail
        assert len(one.log_tail(2).splitlines()) <= 2
        paths = one.artifacts(str(tmp_path / "a"))
        names = sorted(os.path.basename(p) for p in paths)
        assert names == ["box_info.json", "init.lua", "output.log", "tarantool.log"], names
        with open(tmp_path / "a" / "box_info.json") as f:
            assert json.load(f)["box_info"]["status"] == "running"
    after = one.status()
    assert after["state"] == "stopped" and after["pids"] == [] and not one.running()
    # The port stays known after stop: a restart reuses it.
    assert one.endpoints == ends


def test_instance_that_exits_shows_exited_with_its_code(local: rx.Host) -> None:
    one = TarantoolInstance(on=local, listen="127.0.0.1:0", timeout=TIMEOUT).start()
    try:
        one.eval("require('fiber').create(function() os.exit(3) end)")
        assert wait_until(lambda: one.status()["state"] == "exited", 5), one.status()
        status = one.status()
        assert status["exit_code"] == 3 and not one.running(), status
    finally:
        one.kill()


def test_failed_start_shows_the_layer_reached(local: rx.Host) -> None:
    one = TarantoolInstance(
        on=local, listen="127.0.0.1:0", box_cfg={"memtx_memory": "lots"}, timeout=TIMEOUT
    )
    with pytest.raises(rx.TarantoolError):
        one.start()
    status = one.status()
    assert status["state"] == "failed" and status["readiness"] == "process", status
    assert status["exit_code"] == 1 and status["pids"] == []


def test_deferred_inputs_are_resolved_at_start(local: rx.Host) -> None:
    greeting = Later("the greeting")
    port = Later("the port")
    one = TarantoolInstance(
        on=local,
        listen="127.0.0.1:0",
        env={"RX_GREETING": greeting},
        box_cfg={"custom_proc_title": port},
        app_params={"port": port, "fixed": 7},
        timeout=TIMEOUT,
    )
    assert greeting in resolve_all_deferred(one.inputs())
    # Unknown at start: the Deferred's own ValueError, before anything runs.
    with pytest.raises(ValueError, match="greeting is not known yet"):
        one.start()
    assert one.pid is None
    greeting.value, port.value = "hello", "3399"
    with one:
        assert one.eval("return os.getenv('RX_GREETING')") == "hello"
        assert one.eval("return params.port, params.fixed") == ("3399", 7)
        assert one.eval("return box.cfg.custom_proc_title") == "3399"
    # Resolved again at every start: a new value is seen by the next one.
    greeting.value = "again"
    with one:
        assert one.eval("return os.getenv('RX_GREETING')") == "again"


def test_deferred_env_that_resolves_to_a_non_str_is_refused_at_start(local: rx.Host) -> None:
    bad = Later("a number")
    one = TarantoolInstance(on=local, listen="127.0.0.1:0", env={"X": bad})
    bad.value = 5  # type: ignore[assignment]
    with pytest.raises(TypeError, match="env"):
        one.start()
    assert one.pid is None and one.status()["state"] == "failed"


def resolve_all_deferred(values: List[Any]) -> List[Any]:
    """Every Deferred among ``values`` (inputs() hands them out as they are)."""
    from remoteexec.services import deferred_in

    return deferred_in(values)


@pytest.fixture
def lab_set(lab: Any) -> Iterator[ReplicaSet]:
    need_tarantool()
    with rx.Master(heartbeat_timeout=5) as m:
        hosts = m.connect_all(lab.targets[:2], **connect_options(lab))
        rs = ReplicaSet("svc", members=[(hosts[0], 3401), (hosts[1], 3401)], timeout=TIMEOUT)
        try:
            yield rs
        finally:
            rs.stop()


def test_replicaset_as_a_service_on_lab_hosts(lab: Any, lab_set: ReplicaSet, tmp_path: Any) -> None:
    """On lab hosts (private /tmp): the Lua the master reads from package data
    reaches them in the calls, and the set reports itself as a Service."""
    rs = lab_set
    names = ["svc-1", "svc-2"]
    assert sorted(rs.endpoints) == sorted(
        ["leader.uri", "leader.host", "leader.port", "uris"] + [n + ".uri" for n in names]
    )
    rs.start()
    status = rs.status()
    assert status["state"] == "ready" and status["readiness"] == "ready", status
    rows: List[Dict[str, Any]] = [dict(m) for m in status["members"]]
    assert [m["member"] for m in rows] == names
    assert all(m["state"] == "ready" and m["status"] == "running" for m in rows)
    assert sorted(status["pids"]) == sorted(m.pid for m in rs.members if m.pid)
    addresses = [h.address for h in lab.hosts[:2]]
    ends = rs.endpoints
    assert ends["leader.uri"] == "%s:3401" % addresses[0] == ends["svc-1.uri"]
    assert ends["leader.host"] == addresses[0] and ends["leader.port"] == "3401"
    assert ends["uris"] == ",".join("%s:3401" % a for a in addresses)
    assert rs.running()
    tail = rs.log_tail(20)
    assert "== svc-1 (" in tail and "== svc-2 (" in tail
    written = rs.artifacts(str(tmp_path / "a"))
    assert {os.path.relpath(p, tmp_path / "a") for p in written} >= {
        "svc-1/tarantool.log",
        "svc-2/box_info.json",
    }
    assert rs.collect_artifacts(str(tmp_path / "b"))
    # kill() with no member: every member at once.
    rs.kill()
    assert all(m.pid is None for m in rs.members) and not rs.running()
    assert rs.status()["state"] == "stopped"
