"""The lane's opening and ending (remoteexec/lane.py): whatever
stops an open midway (here an exception from a signal handler, as a Ctrl-C
would be) ends the ssh session it started, with no help from the garbage
collector. Real lab host; the relay is delayed by a wrapper of the host's
python, so the interruption lands while the master waits for the hello."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, Iterator, List, Optional

import pytest
from conftest import PY, connect_options, wait_until
from helpers import lane_calls

import remoteexec as rx

pytestmark = pytest.mark.lab

#: How long the wrapper holds the relay back (a value no other test uses:
#: the test finds the wrapper's sleep by it).
DELAY = "7.77"
WRAPPER = """#!/bin/sh
case "$*" in *"-I -S -c import base64"*) sleep %s;; esac
exec %s "$@"
""" % (DELAY, PY)


class Interrupted(Exception):
    pass


def _cmdline(pid: int) -> List[str]:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return []


def _pids_with(argv: List[str]) -> List[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _cmdline(int(p))[:2] == argv]


def _mux_clients() -> List[int]:
    """Our ssh children running a lane session (not a ControlMaster)."""
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            argv = _cmdline(int(p))
            if argv and argv[0] == "ssh" and "ControlMaster=no" in argv:
                with open("/proc/%s/stat" % p) as f:
                    if int(f.read().rpartition(")")[2].split()[1]) == os.getpid():
                        found.append(int(p))
    return found


@pytest.fixture(scope="module")
def master() -> Iterator[rx.Master]:
    with rx.Master(heartbeat_timeout=10) as m:
        yield m


@pytest.fixture(scope="module")
def slow_relay_host(lab: Any, master: rx.Master) -> Iterator[rx.Host]:
    """A host whose python is a wrapper that holds the lane's relay back."""
    plain = master.connect(lab.targets[1], **connect_options(lab))
    scratch = plain.run(["mktemp", "-d", "/tmp/rxreview-XXXXXX"], check=True).stdout.strip()
    wrapper = scratch + "/python"
    plain.run(["sh", "-c", 'cat > "$0" && chmod 755 "$0"', wrapper], input=WRAPPER, check=True)
    options = dict(connect_options(lab), python=wrapper)
    yield master.connect(lab.targets[1], name="slow-relay", **options)
    plain.run(["rm", "-rf", scratch])


def test_an_open_interrupted_midway_ends_its_ssh_session(slow_relay_host: rx.Host) -> None:
    host = slow_relay_host
    assert not _mux_clients()
    seen: List[int] = []
    main = threading.get_ident()

    def interrupt_once_the_relay_waits() -> None:
        # The wrapper's sleep runs: the session is up and the master waits for the hello.
        if wait_until(lambda: _pids_with(["sleep", DELAY]), 15.0):
            seen.extend(_mux_clients())
        signal.pthread_kill(main, signal.SIGALRM)

    def raise_interrupted(*_: Any) -> None:
        raise Interrupted()

    previous = signal.signal(signal.SIGALRM, raise_interrupted)
    watcher = threading.Thread(target=interrupt_once_the_relay_waits, daemon=True)
    error: Optional[BaseException] = None
    try:
        watcher.start()
        with pytest.raises(Interrupted) as caught:
            host.open_lane()
        error = caught.value  # held, as a REPL's last traceback holds it
    finally:
        watcher.join(20)
        signal.signal(signal.SIGALRM, previous)
    assert seen, "the lane's ssh client ran while the relay was held back"
    started = time.monotonic()
    assert wait_until(lambda: not _mux_clients(), 5.0), (
        "the lane's ssh client %s outlived the interrupted open (%.1f s)"
        % (seen, time.monotonic() - started)
    )
    assert error is not None
    assert host.run(["true"]).returncode == 0, "the host goes on"
    for pid in _pids_with(["sleep", DELAY]):  # our relay's wrapper: its session ends now
        os.kill(pid, signal.SIGKILL)


def test_a_second_interrupt_while_the_lane_ends_still_ends_it(lab: Any, master: rx.Master) -> None:
    """Ctrl-C twice: the first stops a call on the lane, the second the
    graceful wait for the lane's ssh client (EXIT_WAIT: the context is still
    in the call, so its relay and session live on). The client is killed all
    the same, and the lane let go of."""
    host = master.connect(lab.targets[2], **connect_options(lab))
    assert host.open_lane()
    lane = host.lane.current
    assert lane is not None
    raised: List[int] = []

    def raise_interrupted(*_: Any) -> None:
        raised.append(1)
        if len(raised) == 2:
            signal.setitimer(signal.ITIMER_REAL, 0)
        raise Interrupted()

    previous = signal.signal(signal.SIGALRM, raise_interrupted)
    try:
        # The first in the call's wait, the second 0.5 s into the 2 s one for the client.
        signal.setitimer(signal.ITIMER_REAL, 0.3, 0.5)
        with pytest.raises(Interrupted):
            host.call(lane_calls.late, 6.0, "late")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert len(raised) == 2, "both interrupts landed"
    assert wait_until(lambda: lane.proc.poll() is not None, 1.0), "the lane's ssh client lives on"
    assert not lane.busy.locked(), "the ended lane is still held"
    assert host.call(lane_calls.where, 1)[1] == 1, "the host goes on"
    host.close()
