"""The command line, run as a user would run it."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest
from conftest import need_lab
from helpers import oracle

#: The demo builds a lab, runs services and a replica set: about 10 s alone,
#: far more on this machine under other suites' load.
DEMO_TIMEOUT = 180.0


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "remoteexec", *args], capture_output=True, text=True, timeout=timeout
    )


def test_run_local_command() -> None:
    r = _cli("run", "local", "--", "sh", "-c", "echo out; echo err >&2; exit 4")
    assert (r.returncode, r.stdout, r.stderr) == (4, "out\n", "err\n")


def test_run_reports_a_missing_command_in_one_line() -> None:
    r = _cli("run", "local", "--", "no-such-command-xyz")
    assert r.returncode == 1
    assert r.stderr.startswith("remoteexec: [local] command not found: no-such-command-xyz")
    assert "Traceback" not in r.stderr


def _tree(root: int, procs: Dict[int, Any]) -> List[int]:
    """``root`` and its descendants in the process table ``procs``."""
    children: Dict[int, List[int]] = {}
    for st in procs.values():
        children.setdefault(st.ppid, []).append(st.pid)
    found, todo = [], [root]
    for _ in range(len(procs) + 1):  # bounded: a tree is no larger than the table
        if not todo:
            break
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _net(pid: int) -> Optional[str]:
    try:
        return os.readlink("/proc/%d/ns/net" % pid)
    except OSError:
        return None


def _exe(pid: int) -> str:
    try:
        return os.path.basename(os.readlink("/proc/%d/exe" % pid))
    except OSError:
        return "?"


@pytest.mark.lab
def test_demo_on_a_lab_leaves_nothing() -> None:
    """Checked by the test's own eyes, not by the demo's "torn down" line:
    while the demo runs, every process of its tree and of its lab's network
    namespaces is recorded from /proc; after it, none of them is alive, no
    process is left in those namespaces, and the namespaces are gone."""
    need_lab()
    proc = subprocess.Popen(
        [sys.executable, "-m", "remoteexec", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: List[str] = []
    stream = proc.stdout
    assert stream is not None
    reader = threading.Thread(target=lambda: lines.extend(stream), daemon=True)
    reader.start()
    seen: Dict[Tuple[int, int], str] = {}  # (pid, start time) -> executable
    netns: Dict[str, str] = {}  # the demo lab's namespace name -> "net:[inode]"
    deadline = time.monotonic() + DEMO_TIMEOUT
    try:
        for _ in range(int(DEMO_TIMEOUT / 0.05) + 1):  # bounded by count and time
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            names = [m.group(1) for m in map(re.compile(r"^lab (\S+):").match, list(lines)) if m]
            if names and os.path.isdir("/run/netns"):
                for n in os.listdir("/run/netns"):
                    if n.startswith("rxl-%s-" % names[0]) and n not in netns:
                        with contextlib.suppress(OSError):
                            netns[n] = "net:[%d]" % os.stat("/run/netns/" + n).st_ino
            table = oracle.table()
            pids = set(_tree(proc.pid, table)) - {proc.pid}
            pids |= {p for p in table if _net(p) in netns.values()}
            for pid in pids:
                ident = oracle.identity(pid)
                exe = _exe(pid)
                if ident is None or oracle.identity(pid) != ident:
                    continue  # gone (or its pid reused) while read
                # The latest sighting names it: a process caught between fork
                # and exec is still its parent's python the first time.
                if exe != "?" or ident not in seen:
                    seen[ident] = exe
            time.sleep(0.05)
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(10)
    out = "".join(lines)
    assert rc == 0, out
    assert re.search(r"GET +http://\S+/health +-> 200", out), out
    kinds = sorted(seen.values())
    print(
        "\nseen while the demo ran: %d processes in %d namespaces: %s"
        % (len(seen), len(netns), {k: kinds.count(k) for k in set(kinds)})
    )
    # The recording saw the demo's work: its lab and its services.
    assert len(netns) == 3, (netns, out)
    assert kinds.count("sshd") >= 3 and kinds.count("tarantool") >= 3, kinds
    assert any(k.startswith("python") for k in kinds), kinds
    # None of it is alive now...
    alive = [ident for ident in seen if oracle.identity(ident[0]) == ident]
    assert alive == [], oracle.describe(pid for pid, _start in alive)
    # ...nothing else is left in the lab's namespaces, and they are gone.
    inside = [p for p in oracle.table() if _net(p) in netns.values()]
    assert inside == [], oracle.describe(inside)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert not set(netns) & {line.split()[0] for line in listed.stdout.splitlines() if line}
    # And the demo's own report agrees.
    assert "torn down: 0 processes of this run left" in out


@pytest.mark.lab
def test_run_options_anywhere_before_the_command(lab: Any) -> None:
    """Options after TARGET used to be swallowed into the command, and the
    missing known_hosts file then looked like an unknown host key."""
    from conftest import PY

    target, address = lab.targets[1], lab.hosts[1].address
    key = ["-i", lab.identity_file]
    known = ["--known-hosts-file", lab.known_hosts_file, "--python", PY]
    command = ["--", "ip", "-o", "-4", "addr"]
    for args in (
        [target, *key, *known],
        [*key, target, *known],
        [*key, *known, target],
    ):
        r = _cli("run", *args, *command)
        assert r.returncode == 0, (args, r.stderr)
        assert address in r.stdout, "it ran on the lab host"
    # Options of the command itself stay the command's.
    r = _cli("run", target, *key, *known, "--timeout", "20", "--", "sh", "-c", "echo $0", "-i")
    assert (r.returncode, r.stdout) == (0, "-i\n"), r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["local", "--bogus", "--", "true"], "unrecognized arguments: --bogus"),
        (["local", "uname", "-n"], "unrecognized arguments: -n"),
        (["local", "echo", "--", "x"], "the command goes after --"),
        (["local", "--"], "no command given"),
        (["local", "--timeout", "-1", "--", "true"], "--timeout must be more than zero"),
    ],
)
def test_run_usage_errors_exit_2(args: List[str], message: str) -> None:
    r = _cli("run", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and "usage: remoteexec run" in r.stderr
    assert r.stdout == ""


def test_run_without_separator_still_takes_plain_words() -> None:
    r = _cli("run", "local", "echo", "hi")
    assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr


def test_commands_other_than_lab_do_not_import_the_lab() -> None:
    """``remoteexec exec`` starts cold on every call: the lab package (~85 ms
    of imports) is loaded by ``lab`` commands only; ``lab --help`` still
    lists its subcommands."""
    code = (
        "import sys\n"
        "from remoteexec.cli.main import main\n"
        "for argv in (['exec', '--help'], ['lab', 'partition', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    print('remoteexec.lab' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    loaded = [line for line in out.splitlines() if line in ("True", "False")]
    assert loaded == ["False", "False"], out
    assert "'master'" in out
