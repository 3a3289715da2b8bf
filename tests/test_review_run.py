"""Reliability review of one-shot commands (remoteexec/target/run.py and
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
        yield m.connect(lab.targets[0], **connect_options(lab))


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
