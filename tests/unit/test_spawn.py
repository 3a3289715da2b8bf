"""remoteexec.target.spawn: argument lists, log names, spawn errors."""

from __future__ import annotations

import pytest

from remoteexec.target import spawn


@pytest.mark.parametrize(
    ("command", "shell", "argv"),
    [
        (["echo", "a b", 3], False, ["echo", "a b", "3"]),
        ("echo 'a b'", False, ["echo", "a b"]),
        (["echo", "a b"], True, "echo 'a b'"),
        ("echo $HOME", True, "echo $HOME"),
    ],
)
def test_argv_of(command: object, shell: bool, argv: object) -> None:
    assert spawn.argv_of(command, shell) == argv  # type: ignore[arg-type]


def test_safe_name_keeps_a_short_file_name() -> None:
    assert spawn.safe_name("my app/../x y") == "my_app_.._x_y"
    assert spawn.safe_name("") == "proc"
    assert len(spawn.safe_name("x" * 100)) == 40


def test_popen_error_types(tmp_path) -> None:
    missing = spawn.popen_error(FileNotFoundError(2, "nope"), "nothere", None, ["nothere"])
    assert missing["error"]["type"] == "CommandNotFound"
    assert "command not found: nothere" in missing["error"]["message"]
    denied = spawn.popen_error(PermissionError(13, "denied"), "./x", None, ["./x", "a b"])
    assert denied["error"]["type"] == "CommandNotFound"
    assert denied["error"]["command"] == "./x 'a b'"
    no_dir = spawn.popen_error(OSError(2, "x"), "ls", str(tmp_path / "gone"), ["ls"])
    assert no_dir["error"]["type"] == "ExecutorError"
    assert "working directory" in no_dir["error"]["message"]
