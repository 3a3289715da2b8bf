"""remoteexec.lab.machine: what is stale or orphaned among the machine's labs
(pure decisions; real stale labs are removed in tests/test_lab.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from remoteexec.lab.machine import Debris, orphans, owner_alive, stale_names
from remoteexec.lab.processes import proc_start_time


def record(name: str, tag: str, base_dir: str, hosts: int) -> dict:
    return {
        "name": name,
        "tag": tag,
        "bridge": f"rxb{tag}",
        "base_dir": base_dir,
        "hosts": [{"netns": f"rxl-{name}-{i + 1}", "veth": f"rxv{tag}{i}"} for i in range(hosts)],
    }


BASE = "/tmp/remoteexec-lab"
STATES = {
    "alpha": record("alpha", "aaaaaa", f"{BASE}/alpha", 2),
    "beta": record("beta", "bbbbbb", "/srv/beta-files", 1),
}


def test_recorded_things_are_not_orphans() -> None:
    debris = Debris(
        netns=["rxl-alpha-1", "rxl-alpha-2", "rxl-beta-1", "rxl-gone-1"],
        links=["rxbaaaaaa", "rxvaaaaaa0", "rxvbbbbbb0", "rxbcccccc", "rxvcccccc3"],
        etc=["rxl-alpha-1", "rxl-gone-1", "rxl-gone-2"],
        base=["alpha", "beta", "leftover"],
    )
    assert orphans(debris, STATES, BASE) == Debris(
        netns=["rxl-gone-1"],
        links=["rxbcccccc", "rxvcccccc3"],
        etc=["rxl-gone-1", "rxl-gone-2"],
        base=["leftover"],
    )


def test_orphans_are_named_by_their_lab_or_their_own_name_once() -> None:
    orphaned = Debris(
        netns=["rxl-gone-1", "rxl-gone-2"],
        links=["rxbcccccc"],
        etc=["rxl-gone-1", "rxl-other-1"],
        base=["gone", "leftover"],
    )
    assert orphaned.names() == ["gone", "other", "rxbcccccc", "leftover"]


def test_stale_names_are_dead_owners_first_then_orphans() -> None:
    def alive(state: dict) -> bool:
        return state["name"] == "beta"

    orphaned = Debris(netns=["rxl-alpha-3", "rxl-gone-1"], base=["gone"])
    assert stale_names(STATES, orphaned, alive) == ["alpha", "gone"]
    assert stale_names(STATES, Debris(), lambda _state: True) == []


def test_an_owner_is_alive_by_pid_and_start_time() -> None:
    me = os.getpid()
    assert owner_alive({"owner_pid": me, "owner_start": proc_start_time(me)})
    # A recycled pid: same number, another process (another start time).
    assert not owner_alive({"owner_pid": me, "owner_start": -1})
    assert not owner_alive({"owner_start": proc_start_time(me)})
    assert not owner_alive({"owner_pid": "1", "owner_start": proc_start_time(1)})


def test_an_exited_owner_is_not_alive() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    state = {"owner_pid": child.pid, "owner_start": proc_start_time(child.pid)}
    assert owner_alive(state)
    assert child.stdin is not None
    child.stdin.close()
    child.wait(10)
    assert not owner_alive(state)
