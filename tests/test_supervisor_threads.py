"""The supervisor's request handler (Requests in
remoteexec/target/supervisor.py): a context that cannot start a thread for a
request (its pids cgroup full, ulimit -u) answers at once with the cause,
instead of dropping the request and leaving the master waiting. Real lab
host; the limit is a real pids cgroup holding only the context."""

from __future__ import annotations

import os
import time
from typing import Any, Iterator

import pytest
from conftest import connect_options

import remoteexec as rx

pytestmark = pytest.mark.lab

PIDS = "/sys/fs/cgroup/pids"
#: A request the context cannot serve is answered this soon (it was never).
ANSWER_WITHIN = 5.0


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


@pytest.fixture
def full_host(lab: Any) -> Iterator[rx.Host]:
    """A fresh host whose context may start no thread or process."""
    if not os.access(os.path.join(PIDS, "cgroup.procs"), os.W_OK):
        pytest.skip("no writable pids cgroup (v1) here")
    with rx.Master(heartbeat_timeout=10) as m:
        host = m.connect(lab.targets[0], **connect_options(lab))
        host.lane.enabled = False  # the supervisor's request handler, not the lane
        pid = host.call(os.getpid)
        with open("/proc/%d/cgroup" % pid) as f:
            was = next(line.split(":", 2)[2].strip() for line in f if ":pids:" in line)
        group = os.path.join(PIDS, "rxreview-%d" % os.getpid())
        os.mkdir(group)
        try:
            _write(os.path.join(group, "cgroup.procs"), str(pid))
            with open(os.path.join(group, "pids.current")) as f:
                _write(os.path.join(group, "pids.max"), f.read().strip())
            yield host
        finally:
            _write(os.path.join(group, "pids.max"), "max")
            _write(os.path.join(PIDS, was.lstrip("/"), "cgroup.procs"), str(pid))
            os.rmdir(group)
        assert host.run(["true"], timeout=2).returncode == 0, "the host goes on once it may"


def test_a_request_with_no_thread_to_serve_it_is_answered_at_once(full_host: rx.Host) -> None:
    started = time.monotonic()
    # send_run: the same request handler as Host.run off the lane, waited for
    # here with a bound of our own (Host.run would wait its timeout + 30 s).
    pending = full_host.send_run(["true"], timeout=5)
    reply = pending.receiver.get(timeout=ANSWER_WITHIN)
    assert time.monotonic() - started < ANSWER_WITHIN, "answered at once"
    with pytest.raises(rx.RemoteExecError, match="thread") as caught:
        pending.finish(full_host.unpickle(lambda: reply, pending.what, pending.timeout))
    assert not isinstance(caught.value, rx.TimeoutExpired), caught.value
    assert caught.value.host == full_host.name
