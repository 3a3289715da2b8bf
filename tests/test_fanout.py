"""The plain-SSH fast path (remoteexec.fanout) and ``remoteexec exec`` on it,
against the session's real lab hosts (real sshd, real host keys)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, List

import pytest
from conftest import PY, REPO, need_lab

from remoteexec.errors import (
    AuthenticationFailed,
    HostKeyMismatch,
    HostUnreachable,
    TimeoutExpired,
)
from remoteexec.fanout import OUTPUT_LIMIT, PlainHost, plain_ssh_problem, run_plain
from remoteexec.host import RunResult


def plain_hosts(lab: Any, **options: Any) -> List[PlainHost]:
    options.setdefault("identity_file", lab.identity_file)
    options.setdefault("known_hosts_file", lab.known_hosts_file)
    return [PlainHost(h.name, h.target, **options) for h in lab.hosts]


def test_which_hosts_need_a_context() -> None:
    assert plain_ssh_problem("root@a", {"identity_file": "k", "python": "/usr/bin/python3"}) == ""
    assert "local" in plain_ssh_problem("local", {})
    assert "via gw" in plain_ssh_problem("root@a", {}, via="gw")
    assert "ssh_args" in plain_ssh_problem("root@a", {"ssh_args": ["-4"]})


def test_bad_arguments_name_the_host_and_the_field_before_anything_connects(tmp_path: Any) -> None:
    missing = str(tmp_path / "no-such-key")
    with pytest.raises(ValueError, match=r"host h2: identity_file .*no-such-key does not exist"):
        run_plain([PlainHost("h1", "a"), PlainHost("h2", "b", identity_file=missing)], ["true"])
    with pytest.raises(ValueError, match=r"host h1: .*port"):
        run_plain([PlainHost("h1", "a:99999")], ["true"])
    with pytest.raises(ValueError, match="'h1' given twice"):
        run_plain([PlainHost("h1", "a"), PlainHost("h1", "b")], ["true"])
    with pytest.raises(ValueError, match="workers"):
        run_plain([PlainHost("h1", "a")], ["true"], workers=0)
    with pytest.raises(ValueError, match="command is empty"):
        run_plain([PlainHost("h1", "a")], [])
    with pytest.raises(ValueError, match="host x: option ssh_args"):
        PlainHost.from_options("x", "root@a", {"ssh_args": ["-v"]})
    not_a_key = tmp_path / "not-a-key"
    not_a_key.write_text("hello\n")
    with pytest.raises(ValueError, match=r"host h1: identity_file .*not-a-key"):
        run_plain([PlainHost("h1", "a", identity_file=str(not_a_key))], ["true"])


@pytest.mark.lab
def test_output_and_exit_code_per_host_with_the_argv_kept(lab: Any) -> None:
    """Each host's own output (its hostname), its exit code, stderr apart; the
    arguments reach the command as given (no expansion, spaces kept)."""
    command = ["sh", "-c", 'hostname; echo "[$1]"; echo oops >&2; exit 3', "sh", "a b $HOME"]
    results = run_plain(plain_hosts(lab), command)
    assert list(results) == [h.name for h in lab.hosts]
    for h in lab.hosts:
        result = results[h.name]
        assert isinstance(result, RunResult), result
        assert result.returncode == 3
        assert result.stdout == "%s\n[a b $HOME]\n" % h.hostname
        assert result.stderr == "oops\n"
        assert result.host == h.name


@pytest.mark.lab
def test_output_past_the_limit_keeps_the_tail(lab: Any) -> None:
    big = OUTPUT_LIMIT * 2 + 12345
    command = ["sh", "-c", 'head -c "$1" /dev/zero; echo end; echo err >&2', "sh", str(big)]
    result = run_plain(plain_hosts(lab)[:1], command)["h1"]
    assert isinstance(result, RunResult), result
    dropped = big + 4 - OUTPUT_LIMIT
    note = "[remoteexec: %d bytes of output dropped]\n" % dropped
    assert result.stdout.startswith(note) and result.stdout.endswith("\x00end\n")
    assert len(result.stdout) == len(note) + OUTPUT_LIMIT
    assert result.stderr == "err\n"


@pytest.mark.lab
def test_an_unknown_or_changed_host_key_is_refused(lab: Any, tmp_path: Any) -> None:
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    results = run_plain(plain_hosts(lab, known_hosts_file=str(empty))[:1], ["true"])
    error = results[lab.hosts[0].name]
    assert isinstance(error, HostKeyMismatch), error
    assert "[h1]" in str(error) and "not in" in str(error)

    # h1's address with h2's key: a changed key, refused as well.
    h1, h2 = lab.hosts[0], lab.hosts[1]
    with open(h2.host_key_file + ".pub") as f:
        key = " ".join(f.read().split()[:2])
    swapped = tmp_path / "known_hosts_swapped"
    swapped.write_text("%s %s\n" % (h1.address, key))
    error = run_plain([PlainHost("h1", h1.target, lab.identity_file, str(swapped))], "true")["h1"]
    assert isinstance(error, HostKeyMismatch), error
    assert "differs" in str(error)


@pytest.mark.lab
def test_a_refused_key_is_an_authentication_failure(lab: Any, tmp_path: Any) -> None:
    other = str(tmp_path / "other_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    error = run_plain(plain_hosts(lab, identity_file=other)[:1], ["true"])["h1"]
    assert isinstance(error, AuthenticationFailed), error
    assert "[h1]" in str(error) and "refused the key" in str(error)


@pytest.mark.lab
def test_an_unreachable_host_is_reported_by_name_within_the_timeout(lab: Any) -> None:
    """h2 cut from the master (packets dropped): its error names it within
    connect_timeout; the other hosts answer as usual."""
    lab.partition(1, lab.MASTER)
    try:
        t0 = time.monotonic()
        results = run_plain(plain_hosts(lab, connect_timeout=1.0), ["echo", "hi"])
        took = time.monotonic() - t0
    finally:
        lab.heal()
    error = results["h2"]
    assert isinstance(error, HostUnreachable), error
    assert "[h2]" in str(error) and "within connect_timeout 1 s" in str(error)
    assert took < 6, took  # 1 s of timeout plus slack for a loaded machine
    for name in ("h1", "h3"):
        assert isinstance(results[name], RunResult) and results[name].stdout == "hi\n"


@pytest.mark.lab
def test_a_command_past_its_timeout_is_a_timeout_error(lab: Any) -> None:
    t0 = time.monotonic()
    results = run_plain(plain_hosts(lab)[:2], ["sleep", "30"], timeout=0.5)
    took = time.monotonic() - t0
    for name in ("h1", "h2"):
        assert isinstance(results[name], TimeoutExpired), results[name]
        assert "within 0.5 s" in str(results[name]) and "[%s]" % name in str(results[name])
    assert took < 10, took


def _stack(tmp_path: Any, lab: Any, known_hosts: str) -> str:
    lines = [
        "[defaults]",
        "identity_file = %s" % json.dumps(lab.identity_file),
        "known_hosts_file = %s" % json.dumps(known_hosts),
        "python = %s" % json.dumps(PY),
        "[hosts]",
        *['%s = { target = "%s" }' % (h.name, h.target) for h in lab.hosts],
        "[services.idle]",
        'on = "h1"',
        'command = ["true"]',
    ]
    path = tmp_path / "fanout.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _exec(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    argv = [sys.executable, "-m", "remoteexec", "exec", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.lab
def test_exec_takes_plain_ssh_unless_told_to_open_contexts(lab: Any, tmp_path: Any) -> None:
    """``remoteexec exec``: the command's parent is no Python (plain SSH); with
    ``--context`` it is the host's context. One JSON line per host either way."""
    need_lab()
    path = _stack(tmp_path, lab, lab.known_hosts_file)
    parent = ["sh", "-c", "cat /proc/$PPID/comm"]
    for extra, want in (((), "sshd|bash|sh"), (("--context",), "python")):
        r = _exec(path, "h1,h3", "--json", *extra, "--", *parent)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert [row["host"] for row in rows] == ["h1", "h3"]
        for row in rows:
            assert row["exit_code"] == 0
            assert any(w in row["stdout"] for w in want.split("|")), (extra, row)
            assert "python" not in row["stdout"] or extra, row


@pytest.mark.lab
def test_exec_reports_a_host_key_refusal_by_host_and_exits_1(lab: Any, tmp_path: Any) -> None:
    h1 = lab.hosts[0]
    known = tmp_path / "known_hosts_h1_only"
    with open(h1.host_key_file + ".pub") as f:
        known.write_text("%s %s\n" % (h1.address, " ".join(f.read().split()[:2])))
    r = _exec(_stack(tmp_path, lab, str(known)), "all", "--", "echo", "ran")
    assert r.returncode == 1, r.stderr
    assert "h1 | ran" in r.stdout and "h1: exit 0" in r.stdout, r.stdout
    for name in ("h2", "h3"):
        assert "%s: error: [%s] the host key" % (name, name) in r.stdout, r.stdout
