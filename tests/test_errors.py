"""Errors from real hosts carry what they promise: a remote exception brings
its traceback back, a timeout says when the process exited 0 leaving nothing
behind. (The pure logic of remoteexec.errors: tests/unit/test_errors.py.)"""

from __future__ import annotations

import inspect
import pickle

import pytest
from conftest import PY, Place, context_pids, seen_then_gone
from helpers import raising

import remoteexec as rx

#: The timeout hint for a launcher that exited 0 and left nothing running.
EXITED_HINT = "the process exited 0 and nothing it started is running"


def test_remote_traceback_names_the_raising_function_and_line(place: Place) -> None:
    """A real Host.call of a function that raises, on a local context and a lab host."""
    source, first = inspect.getsourcelines(raising.fail_here)
    line = first + next(i for i, text in enumerate(source) if "raise ValueError" in text)
    with pytest.raises(rx.RemoteCallError) as info:
        place.host.call(raising.fail_here, "the answer is not 41")
    err = info.value
    assert err.type_name == "ValueError"
    assert err.remote_message == "the answer is not 41"
    assert err.host == place.host.name
    tb = err.remote_traceback
    assert 'raising.py", line %d, in fail_here' % line in tb, tb
    assert "ValueError: the answer is not 41" in tb, tb
    back = pickle.loads(pickle.dumps(err))
    assert back.remote_traceback == tb and back.type_name == "ValueError"


def test_timeout_says_the_process_exited_0_leaving_nothing(place: Place) -> None:
    """A launcher that exits 0 at once and starts nothing: the timeout says so."""
    port = place.free_port()
    ex = rx.TCPExecutor([PY, "-c", "pass"], host="127.0.0.1", port=port, on=place.host, timeout=1)
    with pytest.raises(rx.TimeoutExpired) as info:
        ex.start()
    text = str(info.value)
    assert EXITED_HINT in text, text
    assert "tcp 127.0.0.1:%d" % port in text, text
    back = pickle.loads(pickle.dumps(info.value))
    assert str(back) == text and back.details["timeout"] == 1


def test_timeout_hint_only_when_nothing_runs(place: Place) -> None:
    """The hint is specific: a process that still runs, or a daemonizer whose
    child still runs, times out without it."""
    port = place.free_port()
    daemon = place.cmd("after", 0, "daemon", "127.0.0.2", port)  # listens elsewhere
    run_id = place.host.master.run_id
    for command in (["sleep", "30"], daemon):
        ex = rx.TCPExecutor(command, host="127.0.0.1", port=port, on=place.host, timeout=1.5)
        # What it started is seen while start() waits, and gone after.
        contexts = context_pids(place.host.master)
        with seen_then_gone(run_id, contexts), pytest.raises(rx.TimeoutExpired) as info:
            ex.start()
        assert "not ready after 1.5s: tcp 127.0.0.1:%d" % port in str(info.value)
        assert EXITED_HINT not in str(info.value), command
