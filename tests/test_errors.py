"""Errors carry what they promise: every attribute survives pickling, a remote
exception brings its traceback back, a timeout says when the process exited 0
leaving nothing behind."""

from __future__ import annotations

import inspect
import pickle
from typing import Any, Dict, List

import pytest
from conftest import PY, Place, context_pids, seen_then_gone
from helpers import raising

import remoteexec as rx
from remoteexec import errors

#: The timeout hint for a launcher that exited 0 and left nothing running.
EXITED_HINT = "the process exited 0 and nothing it started is running"


def _error_classes() -> List[type]:
    return [
        cls
        for _name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.RemoteExecError) and cls.__module__ == errors.__name__
    ]


def _attributes(err: errors.RemoteExecError) -> Dict[str, Any]:
    """Every public attribute and property of ``err`` as plain, comparable values."""
    out: Dict[str, Any] = {"type": type(err), "str": str(err), "args": err.args}
    for name in dir(err):
        if name.startswith("_") or name in ("args", "with_traceback", "add_note"):
            continue
        value = getattr(err, name)
        if name == "failures":
            value = [(type(f), str(f), f.host, f.details) for f in value]
        elif name == "details":
            value = {
                k: [(type(f), str(f), f.host) for f in v] if k == "failures" else v
                for k, v in value.items()
            }
        out[name] = value
    return out


def test_every_error_class_is_covered() -> None:
    names = {cls.__name__ for cls in _error_classes()}
    documented = {
        "ProcessExitedWithError",
        "ProcessFinishedWithError",
        "TimeoutExpired",
        "AlreadyRunning",
        "CommandNotFound",
        "CommandFailed",
        "ConnectionFailed",
        "HostUnreachable",
        "AuthenticationFailed",
        "HostKeyMismatch",
        "RemotePythonMissing",
        "HostLost",
        "RemoteCallError",
        "TarantoolError",
    }
    assert documented <= names, documented - names


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda cls: cls.__name__)
def test_pickle_round_trip_keeps_every_attribute(cls: type) -> None:
    failures = [
        errors.HostUnreachable("connection timed out", host="10.0.0.1", timeout=5.0),
        errors.AuthenticationFailed("permission denied (publickey)", host="10.0.0.2"),
    ]
    err = cls(
        "something went wrong: exit code 3",
        host="root@10.0.0.9:2222",
        command=["/usr/bin/python3", "-m", "http.server", "80 81"],
        exit_code=3,
        output_tail="line one\nline two: bad config\n",
        owner_pid=4242,
        escalated=True,
        timeout=1.5,
        pid=77,
        log_path="/tmp/remoteexec-0/x/app-1.log",
        type_name="KeyError",
        remote_message="'missing'",
        remote_traceback='Traceback (most recent call last):\n  File "x.py", line 3, in f\n',
        failures=failures,
    )
    back = pickle.loads(pickle.dumps(err))
    assert back is not err
    assert _attributes(back) == _attributes(err)
    # The values themselves, not only that they compare equal after the round trip.
    assert back.host == "root@10.0.0.9:2222" and back.exit_code == 3
    assert back.command_text == "/usr/bin/python3 -m http.server '80 81'"
    assert back.output_tail == "line one\nline two: bad config\n"
    assert back.details["owner_pid"] == 4242 and back.details["escalated"] is True
    assert "[root@10.0.0.9:2222] something went wrong" in str(back)
    assert "line two: bad config" in str(back)
    if isinstance(back, errors.ConnectionFailed):
        assert [type(f) for f in back.failures] == [
            errors.HostUnreachable,
            errors.AuthenticationFailed,
        ]
        assert back.failures[0].details["timeout"] == 5.0
    if isinstance(back, errors.RemoteCallError):
        assert back.type_name == "KeyError" and back.remote_message == "'missing'"
        assert "line 3, in f" in back.remote_traceback


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
