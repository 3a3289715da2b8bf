"""One-shot commands at their limits (remoteexec/target/run.py and
Host.run's argument checks in remoteexec/host.py): a command that cannot be
spawned leaves no fd behind in the context, and bad input is refused on the
master, naming the argument. Real lab host, one master for the module."""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytest
from conftest import connect_options

import remoteexec as rx

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def host(lab: Any) -> Iterator[rx.Host]:
    with rx.Master(heartbeat_timeout=5) as m:
        h = m.connect(lab.targets[0], **connect_options(lab))
        # Open now: opened by a later call (in the background), its fds
        # would show up in a test's count.
        assert h.open_lane()
        yield h


def _fds(host: rx.Host) -> int:
    return len(host.call(os.listdir, "/proc/self/fd"))


@pytest.mark.parametrize("bad", [{"command": ["echo", "a\0b"]}, {"cwd": "/tmp\0x"}])
def test_a_spawn_that_raises_leaves_no_pipe_open(host: rx.Host, bad: Any) -> None:
    """Popen refuses a NUL byte with ValueError (not OSError): the command's
    pipes, made before the spawn, must be closed all the same."""
    kwargs = {"command": ["true"], "input": b"x", **bad}
    before = _fds(host)
    for _ in range(10):
        with pytest.raises(rx.RemoteExecError, match="null byte"):
            host.invoke("remoteexec.target.run.run", **kwargs)
    assert _fds(host) <= before + 1, "the context kept fds of spawns that failed"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"command": ["echo", "a\0b"]}, r"command\[1\]"),
        ({"command": "echo a\0b", "shell": True}, "command"),
        ({"command": ["true"], "cwd": "/tmp\0x"}, "cwd"),
    ],
)
def test_a_nul_byte_is_refused_before_anything_is_sent(
    host: rx.Host, kwargs: Any, field: str
) -> None:
    runs = host.lane.stats["runs"]
    with pytest.raises(ValueError, match=field + ".*NUL"):
        host.run(**kwargs)
    with pytest.raises(ValueError, match=field + ".*NUL"):
        rx.run_all([host], **kwargs)
    assert host.lane.stats["runs"] == runs


def test_an_executor_spawn_that_raises_leaves_no_pipe_open(host: rx.Host) -> None:
    """The same for a process tree with a stdin pipe (an executor's): the
    write end the supervisor would have held is closed too."""
    spec = {"command": ["cat", "a\0b"], "stdin": "pipe"}
    before = _fds(host)
    for _ in range(10):
        with pytest.raises(rx.RemoteExecError, match="null byte"):
            host.invoke("remoteexec.target.runstate.spawn_tree", spec)
    assert _fds(host) <= before + 1, "the context kept fds of spawns that failed"


#: Past the 128 MiB a mitogen message (and a lane frame) may carry.
HUGE = ["head", "-c", str(130 * 1024 * 1024), "/dev/zero"]


def _too_large(host: rx.Host) -> None:
    with pytest.raises(rx.RemoteExecError) as caught:
        host.run(HUGE)
    error = caught.value
    assert not isinstance(error, rx.HostLost), error
    assert "too large" in str(error) and error.host == host.name, error
    assert not host.lost, "a large reply is no lost host"
    assert host.run(["echo", "on"]).stdout == "on\n", "the host goes on"


def test_a_reply_too_large_for_mitogen_is_an_error_not_a_lost_host(host: rx.Host) -> None:
    host.lane.enabled = False  # mitogen's path: the supervisor's request handler
    try:
        _too_large(host)
    finally:
        host.lane.enabled = True


def test_a_reply_too_large_for_the_lane_is_an_error_not_an_ended_lane(host: rx.Host) -> None:
    assert host.open_lane()
    runs = host.lane.stats["runs"]
    _too_large(host)
    assert host.lane.stats["runs"] > runs, "both ran on the lane"
    assert host.lane.is_open, "the lane carries on"


def test_a_call_result_too_large_for_mitogen_is_an_error_not_a_lost_host(host: rx.Host) -> None:
    host.lane.enabled = False  # mitogen's path: its own dispatcher answers
    try:
        for _ in range(2):  # a quick one would answer it the same
            with pytest.raises(rx.RemoteExecError) as caught:
                host.call(bytes, 130 * 1024 * 1024)
            assert not isinstance(caught.value, rx.HostLost), caught.value
            assert "too large" in str(caught.value) and caught.value.host == host.name
        assert not host.lost
        assert host.call(len, "four") == 4
    finally:
        host.lane.enabled = True


def test_a_call_result_too_large_for_the_lane_is_an_error(host: rx.Host) -> None:
    assert host.open_lane()
    with pytest.raises(rx.RemoteExecError, match="too large") as caught:
        host.call(bytes, 130 * 1024 * 1024)
    assert not isinstance(caught.value, rx.HostLost), caught.value
    assert host.lane.is_open and host.call(len, "four") == 4
