"""The lane: Host.call and Host.run over a second session of the host's ssh
connection, served by one context thread (remoteexec/lane.py,
remoteexec/target/lane.py). Real lab hosts; one master for the module."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import threading
import time
from typing import Any, Iterator, List

import pytest
from conftest import connect_options, run_pids, spawn_master_script, wait_until
from helpers import lane_calls, oracle

import remoteexec as rx
from remoteexec.lane import OPEN_AFTER, SPIN_FOR, control_dir

pytestmark = pytest.mark.lab

LANE_THREAD = "remoteexec-lane"
#: Bound for things that take milliseconds when the machine is idle.
SETTLE = 15.0


def _alive(pid: Any) -> bool:
    return bool(pid) and oracle.identity(int(pid)) is not None


def _lane_pids(host: rx.Host) -> List[int]:
    lane = host.lane.current
    assert lane is not None, "the lane is open"
    assert lane.relay_pid, "the context saw its relay"
    return [lane.proc.pid, lane.relay_pid]


@pytest.fixture(scope="module")
def lane_master(lab: Any) -> Iterator[rx.Master]:  # noqa: ARG001 - lab hosts first
    with rx.Master(heartbeat_timeout=5) as m:
        yield m


@pytest.fixture(scope="module")
def host(lab: Any, lane_master: rx.Master) -> rx.Host:
    h = lane_master.connect(lab.targets[0], **connect_options(lab))
    assert h.open_lane(), "the lane opens"
    return h


def _raised(fn: Any, *args: Any, **kwargs: Any) -> rx.RemoteExecError:
    try:
        fn(*args, **kwargs)
    except rx.RemoteExecError as e:
        return e
    raise AssertionError("%s%r raised nothing" % (fn, args))


def _through_mitogen(host: rx.Host, pending: Any) -> Any:
    """A call sent with send_* (never on the lane), waited for."""
    return pending.finish(host.unpickle(pending.receiver.get, pending.what, pending.timeout))


def _fresh(host: rx.Host) -> rx.Host:
    """``host`` with its lane open again (a test before may have ended it)."""
    if not host.lane.is_open:
        assert host.open_lane()
    return host


def test_a_fast_reply_is_caught_spinning(host: rx.Host) -> None:
    """The caller polls without sleeping for its first SPIN_FOR: a quick
    reply finds it awake."""
    lane = _fresh(host).lane.current
    assert lane is not None
    caught = lane.caught_spinning
    for _ in range(50):  # one of 50 within 2 ms, even on a loaded machine
        assert host.call(lane_calls.where, 1)[1] == 1
    assert lane.caught_spinning > caught


def test_a_slow_reply_is_waited_for_asleep(host: rx.Host) -> None:
    """A reply that takes longer costs the caller at most SPIN_FOR of CPU:
    it then sleeps in poll."""
    lane = _fresh(host).lane.current
    assert lane is not None
    caught = lane.caught_spinning
    cpu = time.thread_time()
    assert host.call(lane_calls.late, 0.3, "late") == "late"
    spent = time.thread_time() - cpu
    assert lane.caught_spinning == caught, "a 0.3 s reply came while spinning"
    # The spin (2 ms at most) and the call's own work, far from 0.3 s.
    assert spent < SPIN_FOR + 0.05, "the caller used %.3f s of CPU waiting" % spent


def test_a_run_waits_asleep(host: rx.Host) -> None:
    """Host.run does not spin: its spawn takes most of a millisecond."""
    lane = _fresh(host).lane.current
    assert lane is not None
    caught, runs = lane.caught_spinning, host.lane.stats["runs"]
    for _ in range(20):
        host.run(["true"], check=True)
    assert host.lane.stats["runs"] == runs + 20, "all on the lane"
    assert lane.caught_spinning == caught


def test_call_and_run_take_the_lane_with_mitogens_results(host: rx.Host) -> None:
    _fresh(host)
    calls, runs = host.lane.stats["calls"], host.lane.stats["runs"]
    assert host.call(lane_calls.where, 7) == [LANE_THREAD, 7]
    result = host.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert host.lane.stats["calls"] == calls + 1 and host.lane.stats["runs"] == runs + 1
    # Through mitogen (send_*, which never takes the lane): the same values and errors.
    assert _through_mitogen(host, host.send_call(lane_calls.where, 7)) == ["MainThread", 7]
    # The same errors, word for word: a remote exception, a failed check,
    # an argument type mitogen's unpickler on the host refuses, a timeout.
    for fn, args, kwargs in (
        (host.call, (lane_calls.fails, "boom"), {}),
        (host.run, (["sh", "-c", "echo no >&2; exit 2"],), {"check": True}),
        (host.call, (lane_calls.where, {1, 2}), {}),
        (host.run, (["sleep", "5"],), {"timeout": 0.3}),
    ):
        on_lane = _raised(fn, *args, **kwargs)
        sender = host.send_call if fn == host.call else host.send_run
        on_mitogen = _raised(_through_mitogen, host, sender(*args, **kwargs))
        assert type(on_lane) is type(on_mitogen), (on_lane, on_mitogen)
        assert str(on_lane) == str(on_mitogen)
        # (the remote tracebacks differ: different frames call the function)
        assert {**on_lane.details, "remote_traceback": ""} == {
            **on_mitogen.details,
            "remote_traceback": "",
        }
    # A result no pickler takes: an error on the lane (mitogen's path would
    # lose the context's main thread to it, so it is not compared).
    with pytest.raises(rx.RemoteCallError, match="pickle"):
        host.call(threading.Lock)
    assert host.lane.stats["runs"] == runs + 3, "all on the lane"
    assert host.lane.is_open


def test_a_busy_lane_sends_the_other_call_through_mitogen(host: rx.Host) -> None:
    _fresh(host)
    fallbacks = host.lane.stats["fallbacks"]
    lane = host.lane.current
    assert lane is not None
    slow = threading.Thread(target=host.run, args=(["sleep", "1.5"],))
    slow.start()
    try:
        assert wait_until(lane.busy.locked, SETTLE), "the long run holds the lane"
        t0 = time.monotonic()
        assert host.call(lane_calls.where, 1) == ["MainThread", 1]
        assert time.monotonic() - t0 < 1.0, "it did not queue behind the run"
        assert host.lane.stats["fallbacks"] == fallbacks + 1
    finally:
        slow.join(SETTLE)
    assert host.call(lane_calls.where, 2) == [LANE_THREAD, 2], "the lane is free again"


def test_an_interrupted_call_never_leaves_its_reply_to_the_next(host: rx.Host) -> None:
    _fresh(host)

    class Interrupted(Exception):
        pass

    def interrupt(*_: Any) -> None:
        raise Interrupted()

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(Interrupted):
            host.call(lane_calls.late, 0.8, "late")  # interrupted while it waits
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # Its reply comes later; the next call gets its own value all the same.
    assert host.call(lane_calls.where, 9)[1] == 9
    assert host.call(lane_calls.where, 10)[1] == 10


def test_a_killed_relay_ends_the_lane_and_calls_go_on(host: rx.Host) -> None:
    _fresh(host)
    mux, relay = _lane_pids(host)
    failures = host.lane.stats["failures"]
    os.kill(relay, signal.SIGKILL)
    # The context sees its relay go, ends the lane; the session and our ssh client end.
    lane = host.lane.current
    assert lane is not None
    assert wait_until(lambda: lane.proc.poll() is not None, SETTLE), "our ssh client exits"
    assert host.call(lane_calls.where, 3) == ["MainThread", 3], "the next call answers"
    assert not host.lane.is_open and host.lane.stats["failures"] == failures + 1
    assert wait_until(lambda: not _alive(mux) and not _alive(relay), SETTLE)
    assert host.open_lane(), "it opens again"
    assert host.call(lane_calls.where, 4) == [LANE_THREAD, 4]


def test_a_wrong_token_is_refused(host: rx.Host) -> None:
    _fresh(host)
    listening = host.invoke("remoteexec.target.lane.listen", token=secrets.token_hex(32))
    before = host.invoke("remoteexec.target.lane.stats")
    assert host.call(lane_calls.knock, listening["path"], secrets.token_hex(32)) is True
    after = host.invoke("remoteexec.target.lane.stats")
    assert after["refused"] == before["refused"] + 1 and after["served"] == before["served"]
    assert not host.call(os.path.exists, listening["path"]), "single use: the socket is gone"
    assert host.call(lane_calls.where, 5) == [LANE_THREAD, 5], "our own lane is untouched"


def test_the_lane_opens_in_the_background_and_close_leaves_nothing(
    lab: Any, lane_master: rx.Master
) -> None:
    h = lane_master.connect(lab.targets[1], **connect_options(lab))
    for i in range(2):
        assert h.call(lane_calls.where, i) == ["MainThread", i]
    opening = [t for t in threading.enumerate() if t.name == "remoteexec-lane-open"]
    assert not opening and h.lane.stats["opens"] == 0, "a host used twice never opens it"
    for i in range(2, OPEN_AFTER):
        assert h.call(lane_calls.where, i) == ["MainThread", i], "mitogen's path meanwhile"
    assert wait_until(lambda: h.lane.is_open, SETTLE), "opened by the last call, in the background"
    assert h.call(lane_calls.where, 2) == [LANE_THREAD, 2]
    assert h.lane.stats["opens"] == 1
    pids = _lane_pids(h)
    control = h.connector.control_path
    assert control and os.path.exists(control)
    assert oct(os.stat(os.path.dirname(control)).st_mode & 0o777) == "0o700"
    ssh = h.transport_pid
    h.close()
    assert wait_until(lambda: not any(_alive(p) for p in [*pids, ssh]), SETTLE), pids
    assert not os.path.exists(control)


def test_local_and_hopped_hosts_take_mitogens_path(lab: Any, lane_master: rx.Master) -> None:
    local = lane_master.local(name="lane-local")
    assert not local.open_lane()
    assert [local.call(lane_calls.where, i)[0] for i in range(3)] == ["MainThread"] * 3
    hop = lane_master.connect(lab.targets[0], **connect_options(lab))
    hopped = lane_master.connect(lab.targets[1], via=hop, name="hopped", **connect_options(lab))
    assert not hopped.open_lane()
    assert [hopped.call(lane_calls.where, i)[0] for i in range(3)] == ["MainThread"] * 3
    assert hopped.run(["true"]).ok and hopped.lane.stats["runs"] == 0
    hopped.close()
    local.close()


def test_a_partition_fails_a_lane_call_with_host_lost_in_time(lab: Any) -> None:
    heartbeat = 3.0
    with rx.Master(heartbeat_timeout=heartbeat) as m:
        h = m.connect(lab.targets[2], **connect_options(lab))
        assert h.open_lane()
        pids = _lane_pids(h)
        lab.partition(lab.hosts[2])
        try:
            cut = time.monotonic()
            with pytest.raises(rx.HostLost) as info:
                h.call(time.sleep, 30)
            assert time.monotonic() - cut < heartbeat + 3
            assert "heartbeat" in str(info.value) and h.name in str(info.value)
            assert h.lane.stats["calls"] == 0 and not h.lane.is_open
            # Our ssh client of the lane is gone at once (the host's end goes with its context).
            assert wait_until(lambda: not _alive(pids[0]), SETTLE)
        finally:
            lab.heal()
        assert wait_until(lambda: not _alive(pids[1]), SETTLE), "the relay exits too"
        control_dir = os.path.dirname(h.connector.control_path)
        assert os.path.isdir(control_dir)
    assert not os.path.exists(control_dir), "the master removes its ControlMaster directory"


def test_nothing_outlives_a_sigkilled_master(lab: Any) -> None:
    proc, info = spawn_master_script(
        None, None, [repr_json(connect_options(lab)), lab.targets[2]], script="lane_master.py"
    )
    try:
        pids = [info["context"], info["ssh"], info["mux"], info["relay"]]
        assert all(_alive(p) for p in pids), pids
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        assert wait_until(lambda: not any(_alive(p) for p in pids), SETTLE), oracle.describe(
            [p for p in pids if _alive(p)]
        )
        assert wait_until(lambda: not run_pids(info["run_id"], []), SETTLE)
        # ssh removes its ControlMaster socket as it exits (not when it is
        # killed); either way the directory goes when the next master makes
        # its own.
        assert os.path.isdir(os.path.dirname(info["control_path"]))
        mine = control_dir()
        os.rmdir(mine)
        assert not os.path.exists(os.path.dirname(info["control_path"]))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        shutil.rmtree(os.path.dirname(info["control_path"]), ignore_errors=True)  # when red


def repr_json(value: Any) -> str:
    import json

    return json.dumps(value)


def test_a_main_thread_only_function_needs_the_lane_off(host: rx.Host) -> None:
    """As the commands guide says: on the lane a call runs on the lane's
    thread, so signal.signal fails there (Python's ValueError, as a
    RemoteCallError naming the host); with the lane off it runs on the
    context's main thread."""
    _fresh(host)
    error = _raised(host.call, lane_calls.set_sigusr2_handler)
    assert isinstance(error, rx.RemoteCallError) and error.host == host.name
    assert error.details["type_name"].endswith("ValueError"), error.details
    host.lane.enabled = False
    try:
        assert host.call(lane_calls.set_sigusr2_handler) == "MainThread"
    finally:
        host.lane.enabled = True


def test_no_child_of_the_context_holds_the_lanes_pipes(host: rx.Host) -> None:
    """The lane's session pipes arrive over SCM_RIGHTS: taken close-on-exec,
    so a process started even without close_fds (os.system in a call) never
    holds them (it would keep the session open), and neither does a command."""
    host = _fresh(host)
    lane = host.lane.current
    assert lane is not None
    seen = host.call(lane_calls.fds_a_shell_child_sees)
    assert host.lane.stats["calls"] > 0
    # fds 0-2 and the one ls opens; the temporary file is open in the context
    # only, close-on-exec (Python's default) like everything else there.
    assert seen == [0, 1, 2, 3], seen
    for result in (host.run(["ls", "/proc/self/fd"], check=True),):
        assert sorted(int(fd) for fd in result.stdout.split()) == [0, 1, 2, 3]
