"""remoteexec.lab.commands and errors: bounded commands that fail with a LabError
naming the step, the command, its status and its error output."""

from __future__ import annotations

import time

import pytest

from remoteexec.lab import LabError
from remoteexec.lab.commands import run


def test_a_failed_command_names_step_command_status_and_stderr() -> None:
    with pytest.raises(LabError) as err:
        run("my step", ["sh", "-c", "echo oops >&2; exit 3"])
    e = err.value
    assert (e.step, e.argv, e.returncode) == ("my step", ["sh", "-c", "echo oops >&2; exit 3"], 3)
    text = str(e)
    assert text.startswith("my step: command failed")
    assert "command: sh -c 'echo oops >&2; exit 3'" in text
    assert "exit status: 3" in text and "stderr: oops" in text


def test_unchecked_commands_return_their_result() -> None:
    res = run("step", ["sh", "-c", "echo out; exit 1"], check=False)
    assert res.returncode == 1 and res.stdout == "out\n"
    assert run("step", ["cat"], input="fed\n").stdout == "fed\n"


def test_a_missing_command_and_a_hung_one_are_lab_errors() -> None:
    with pytest.raises(LabError, match="command not found: /nonexistent/tool"):
        run("step", ["/nonexistent/tool"])
    t0 = time.monotonic()
    with pytest.raises(LabError, match=r"timed out after 0.3 s"):
        run("step", ["sleep", "30"], timeout=0.3)
    assert time.monotonic() - t0 < 5


def test_extend_adds_to_an_error_on_its_way_up() -> None:
    err = LabError("sshd exited", step="start", stderr="first")
    err.extend(note=" (cleanup left: netns x)", stderr="\n--- log ---\nbad option")
    assert err.message == "sshd exited (cleanup left: netns x)"
    assert str(err).startswith("start: sshd exited (cleanup left: netns x)")
    assert "first" in str(err) and "bad option" in str(err)
