"""remoteexec.target.protocol: the one error shape and the shared wordings."""

from __future__ import annotations

import signal

from remoteexec.errors import from_remote
from remoteexec.target import protocol


def test_error_drops_none_fields_and_round_trips_to_the_named_exception() -> None:
    reply = protocol.error("TimeoutExpired", "slow", command="sleep 1", exit_code=None, timeout=2)
    assert reply == {
        "ok": False,
        "error": {"type": "TimeoutExpired", "message": "slow", "command": "sleep 1", "timeout": 2},
    }
    error = from_remote(reply["error"], "h1")
    assert type(error).__name__ == "TimeoutExpired" and error.host == "h1"


def test_error_takes_a_type_name_field_as_well() -> None:
    # RemoteCallError carries the remote exception's own type name as a field.
    reply = protocol.error("RemoteCallError", "boom", type_name="KeyError")
    assert reply["error"]["type"] == "RemoteCallError"
    assert reply["error"]["type_name"] == "KeyError"


def test_command_text_quotes_a_list_and_keeps_a_string() -> None:
    assert protocol.command_text(["echo", "a b"]) == "echo 'a b'"
    assert protocol.command_text("echo a b") == "echo a b"
    assert protocol.command_text(None) is None


def test_exit_words_are_mirakurus() -> None:
    assert protocol.exited_text(3) == "exited with a non-zero code: 3 (exit code 3)"
    assert protocol.exit_text(-signal.SIGKILL) == "killed by SIGKILL"
    assert protocol.signame(99) == "signal 99"
    assert protocol.timed_out_text(1.5) == "timed out after 1.5 seconds"
