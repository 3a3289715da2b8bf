"""remoteexec.errors: structured, picklable, bounded, and built from the
target's one error reply (remoteexec.target.protocol.error)."""

from __future__ import annotations

import inspect
import pickle
from typing import Any, Dict, List, Type

import pytest

import remoteexec as rx
from remoteexec import errors
from remoteexec.target import protocol

#: An error text is "a few kB", whatever went into it.
TEXT_BOUND = 8000


def _error_classes() -> List[Type[errors.RemoteExecError]]:
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
def test_pickle_round_trip_keeps_every_attribute(cls: Type[errors.RemoteExecError]) -> None:
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


def test_errors_pickle_round_trip() -> None:
    err = rx.ProcessExitedWithError(
        "process exited", host="h1", command=["a", "b c"], exit_code=3, output_tail="x", pid=5
    )
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is rx.ProcessExitedWithError
    assert (back.host, back.command, back.exit_code, back.output_tail) == (
        "h1",
        ["a", "b c"],
        3,
        "x",
    )
    assert back.details == {"pid": 5}
    assert str(back) == str(err)
    assert "[h1]" in str(err) and "'b c'" in str(err)


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_every_error_text_is_bounded_and_keeps_full_attributes(
    cls: Type[errors.RemoteExecError],
) -> None:
    big = "x" * (1 << 20)
    err = cls(
        "failed " + big,
        host="h1",
        command=["prog", big, "tail-arg"],
        exit_code=3,
        output_tail=big + "\nlast line",
        blob=big,
    )
    text = str(err)
    assert len(text) < TEXT_BOUND, len(text)
    assert "characters elided" in text
    assert text.startswith("[h1] failed xxx") and "last line" in text
    assert "tail-arg" in text, "both ends of the command are kept"
    assert err.command_text is not None and len(err.command_text) < TEXT_BOUND
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls and str(back) == text
    assert back.command == ["prog", big, "tail-arg"]
    assert back.message == "failed " + big
    assert back.output_tail == big + "\nlast line"
    assert back.details["blob"] == big


def test_messages_built_on_a_host_are_bounded_here() -> None:
    big = "y" * (1 << 20)
    fields = {"type": "AlreadyRunning", "message": "port busy " + big, "command": big}
    err = errors.from_remote(fields, "h2")
    assert type(err) is rx.AlreadyRunning
    assert len(str(err)) < TEXT_BOUND
    assert err.message == "port busy " + big and err.command == big


# -- from_dict: the protocol's one error reply ----------------------------------


def test_from_dict_takes_the_protocol_error_reply() -> None:
    """The reply exactly as the target builds it, ``kind`` and fields included."""
    reply = protocol.error(
        "ProcessExitedWithError",
        "exited with a non-zero code: 3",
        kind="exited",
        command="app --serve",
        exit_code=3,
        output_tail="bad config\n",
        pid=None,  # None fields are left out by the target
        log_path="/tmp/remoteexec-0/r/app-1.log",
    )
    err = errors.from_dict(reply, "db1")
    assert type(err) is rx.ProcessExitedWithError
    assert (err.host, err.command, err.exit_code) == ("db1", "app --serve", 3)
    assert err.details == {"kind": "exited", "log_path": "/tmp/remoteexec-0/r/app-1.log"}
    assert str(err).startswith("[db1] exited with a non-zero code: 3 (command: app --serve)")
    back = pickle.loads(pickle.dumps(err))
    assert _attributes(back) == _attributes(err)


def test_from_dict_keeps_a_target_host_field_apart() -> None:
    """A field named ``host`` (an address the target probed) used to collide
    with the master's host name: TypeError instead of the error."""
    reply = protocol.error("AlreadyRunning", "port 80 is taken", host="127.0.0.1", port=80)
    err = errors.from_dict(reply, "web1")
    assert type(err) is rx.AlreadyRunning
    assert err.host == "web1"
    assert err.details == {"remote_host": "127.0.0.1", "port": 80}


def test_from_dict_unknown_type_is_the_base_class() -> None:
    err = errors.from_dict(protocol.error("SomethingNew", "odd", kind="new"), "h")
    assert type(err) is errors.RemoteExecError
    assert err.message == "odd" and err.details == {"kind": "new"}


@pytest.mark.parametrize(
    "reply",
    [{"ok": True, "result": 1}, {"ok": False}, {"ok": False, "error": "text"}, None, [1]],
    ids=["ok", "no-error", "error-not-a-dict", "none", "list"],
)
def test_from_dict_refuses_what_is_not_an_error_reply(reply: Any) -> None:
    with pytest.raises(ValueError, match="not an error reply"):
        errors.from_dict(reply, "h")
