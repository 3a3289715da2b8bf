"""remoteexec.host, the parts that need no context: what may be sent to a
host, how a remote exception's text is read, RunResult. (Calls on real
contexts: tests/test_host.py.)"""

from __future__ import annotations

import pathlib
from typing import Any

import mitogen.core
import pytest

from remoteexec.host import RunResult, call_error_details, check_plain


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        3,
        1.5,
        "s",
        b"b",
        [1, (2, "x")],
        {"a": {"b": [None]}},
        mitogen.core.Secret("pw"),
        mitogen.core.Blob(b"x"),
    ],
    ids=["none", "bool", "int", "float", "str", "bytes", "list", "dict", "secret", "blob"],
)
def test_plain_values_pass(value: Any) -> None:
    check_plain(value, "run")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({1, 2}, "run: {1, 2} is a set"),
        (pathlib.Path("/x"), "run: PosixPath('/x') is a PosixPath"),
        ({"env": {"A": object()}}, "run.env.A: <object object"),
        ([1, [2, frozenset()]], "run: frozenset() is a frozenset"),
        ({"k": bytearray(b"x")}, "run.k: bytearray(b'x') is a bytearray"),
    ],
    ids=["set", "path", "nested", "deep-list", "bytearray"],
)
def test_other_values_are_refused_by_path(value: Any, words: str) -> None:
    with pytest.raises(TypeError) as info:
        check_plain(value, "run")
    assert words in str(info.value)
    assert "only None, bool, int, float, str, bytes, list, tuple and dict" in str(info.value)


def test_a_huge_refused_value_is_not_echoed_whole() -> None:
    with pytest.raises(TypeError) as info:
        check_plain({"k": {"x" * (1 << 20)}}, "run")
    assert len(str(info.value)) < 400


def test_call_error_details_from_a_real_call_error() -> None:
    try:
        raise KeyError("missing")
    except KeyError as e:
        error = mitogen.core.CallError(e)
    details = call_error_details(error)
    assert details["type_name"] == "KeyError"
    assert details["remote_message"] == "'missing'"
    assert "test_host.py" in details["remote_traceback"]


def test_call_error_details_bounds_the_traceback() -> None:
    text = "pkg.mod.Oops: it broke: badly\n" + "x" * 10000 + "END"
    details = call_error_details(mitogen.core.CallError(text))
    assert details["type_name"] == "Oops" and details["remote_message"] == "it broke: badly"
    assert len(details["remote_traceback"]) == 4000 and details["remote_traceback"].endswith("END")


def test_run_result_ok_is_exit_code_zero() -> None:
    assert RunResult("h", ["true"], 0, "", "").ok
    assert not RunResult("h", ["false"], 1, "", "").ok
    assert not RunResult("h", "sleep 9", -9, "", "", 0.5).ok


def test_the_host_runs_only_marked_functions_and_quick_services_inline() -> None:
    """The quick handler's checks, on the host's side: an unmarked function or
    a slow service is refused by name, a module not imported yet is sent back
    to the normal path (an import there would stall the broker)."""
    from remoteexec.target import protocol, quick

    unmarked = quick.run("call", "os.path:join", ["a", "b"], {})
    assert unmarked["ok"] is False and "os.path.join is not marked quick" in str(unmarked)
    assert quick.run("call", "no_such_module_here:f", [], {}) == quick.NOT_HERE
    refused = quick.run("service", "run", (), {"command": ["true"]})
    assert refused == protocol.error("ValueError", "run is not a quick service")
    marked = quick.quick(lambda x: x + 1)
    assert getattr(marked, quick.MARK) is True
