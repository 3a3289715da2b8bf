"""``remoteexec up | config | exec`` run as a user runs them: a subprocess,
with a terminal (a pty) and without one.

Leftovers are checked by the tests' own /proc oracle (``left_nothing``),
from the run id and context pids that ``up --json`` prints.
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import textwrap
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
from conftest import PY, REPO, left_nothing, need_lab, need_tarantool, wait_until
from helpers import oracle

EXAMPLE = os.path.join(REPO, "examples", "shop.toml")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
#: Bound of a local stack's start under the load of other suites.
START = 90.0


class Cli:
    """``python -m remoteexec ARGS`` in the background, its output collected by line."""

    def __init__(self, *args: str, tty: bool = False, cwd: Optional[str] = None) -> None:
        env = dict(os.environ, COLUMNS="120", LINES="40", PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "remoteexec", *args]
        self.lines: List[str] = []
        self.errors: List[str] = []
        self.tty = tty
        if tty:
            master, slave = pty.openpty()
            self.proc = subprocess.Popen(
                command, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd
            )
            os.close(slave)
            self.readers = [threading.Thread(target=self._read_pty, args=(master,), daemon=True)]
        else:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=cwd,
            )
            self.readers = [
                threading.Thread(target=self._read, args=(self.proc.stdout, self.lines)),
                threading.Thread(target=self._read, args=(self.proc.stderr, self.errors)),
            ]
        for reader in self.readers:
            reader.daemon = True
            reader.start()

    @staticmethod
    def _read(stream: Any, into: List[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def _read_pty(self, fd: int) -> None:
        buffer = b""
        for _ in range(10**7):  # bounded: ends at EOF (EIO) long before
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buffer += chunk
            *done, buffer = buffer.split(b"\n")
            self.lines.extend(ANSI.sub("", d.decode("utf-8", "replace")) for d in done)
        self.lines.append(ANSI.sub("", buffer.decode("utf-8", "replace")))
        os.close(fd)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = START) -> str:
        """The first line matching ``predicate``, waiting for it (bounded)."""
        found: List[str] = []

        def seen() -> bool:
            found[:] = [line for line in list(self.lines) if predicate(line)][:1]
            return bool(found) or self.proc.poll() is not None

        wait_until(seen, timeout, interval=0.05)
        assert found, "no such line within %.0f s (exit %s):\n%s\n%s" % (
            timeout,
            self.proc.poll(),
            "\n".join(self.lines[-60:]),
            "\n".join(self.errors[-30:]),
        )
        return found[0]

    def event(self, **want: Any) -> Dict[str, Any]:
        """The first ``--json`` line whose fields include ``want``."""

        def match(line: str) -> bool:
            try:
                data = json.loads(line)
            except ValueError:
                return False
            return all(data.get(k) == v for k, v in want.items())

        return json.loads(self.wait_for(match))  # type: ignore[no-any-return]

    def events(self) -> List[Dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def interrupt(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.finish(timeout)

    def finish(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        for reader in self.readers:
            reader.join(10)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def text(self) -> str:
        return "\n".join(self.lines + self.errors)


@pytest.fixture
def cli() -> Iterator[Callable[..., Cli]]:
    started: List[Cli] = []

    def start(*args: str, tty: bool = False) -> Cli:
        started.append(Cli(*args, tty=tty))
        return started[-1]

    yield start
    for one in started:
        one.close()


def cli_run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "remoteexec", *args], capture_output=True, text=True, timeout=timeout
    )


def stack_file(tmp_path: Any, text: str) -> str:
    path = os.path.join(str(tmp_path), "stack.toml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text))
    return path


def local_stack(tmp_path: Any, extra: str = "") -> str:
    """Two local hosts: an HTTP server (http and tcp checks), a job, a ticker after both."""
    port = free_port()
    return stack_file(
        tmp_path,
        """\
        [hosts]
        a = { target = "local" }
        b = { target = "local" }

        [services.web]
        on = "a"
        command = ["%s", "-m", "http.server", "%d", "--bind", "127.0.0.1"]
        ready = { http = "http://127.0.0.1:%d/", tcp = "127.0.0.1:%d" }

        [services.prep]
        on = "b"
        command = ["sh", "-c", "echo preparing; echo prepared"]
        job = true

        [services.ticker]
        on = "b"
        command = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"]
        ready = { banner = "tick 1" }
        depends_on = { web = "healthy", prep = "completed" }
        """
        % (PY, port, port, port)
        + textwrap.dedent(extra),
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_of(proc: Cli) -> Dict[str, Any]:
    """The run id and the context pids ``up --json`` printed."""
    run = proc.event(type="run")
    hosts = proc.event(type="hosts")["hosts"]
    return {"run_id": run["run_id"], "contexts": [h["context_pid"] for h in hosts.values()]}


# -- config ----------------------------------------------------------------


def test_config_prints_the_topology_and_the_waves() -> None:
    r = cli_run("config", EXAMPLE)
    assert r.returncode == 0, r.stderr
    assert "wave 1: storage, sessions\n  wave 2: router\n  wave 3: api" in r.stdout
    assert "members a:3301 b:3301 c:3301" in r.stdout
    data = json.loads(cli_run("config", EXAMPLE, "--json").stdout)
    assert data["waves"] == [["storage", "sessions"], ["router"], ["api"]]
    assert data["services"]["api"]["depends_on"] == {"router": "healthy"}


def test_config_reports_every_problem_with_file_line_and_key(tmp_path: Any) -> None:
    path = stack_file(
        tmp_path,
        """\
        [hosts]
        a = { target = "local", pyhton = "/usr/bin/python3" }
        [services.api]
        on = "b"
        command = ["true"]
        ready = { http = "localhost:80" }
        """,
    )
    r = cli_run("config", path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        "remoteexec: 3 problems in %s" % path,
        "  %s:2: hosts.a.pyhton: unknown key (did you mean 'python'?)" % path,
        "  %s:4: services.api.on: unknown host 'b' (hosts: a)" % path,
        "  %s:6: services.api.ready.http: not a URL: url localhost:80: the scheme must be"
        " http or https, got 'localhost'" % path,
    ], r.stderr


def test_usage_errors_exit_2(tmp_path: Any) -> None:
    path = local_stack(tmp_path)
    for args in (
        ["up", os.path.join(str(tmp_path), "missing.toml")],
        ["up", path, "--lab", "0"],
        ["exec", path, "a"],
        ["exec", path, "a,c", "--", "true"],
        ["up"],
    ):
        r = cli_run(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr
    assert "unknown host 'c'" in cli_run("exec", path, "a,c", "--", "true").stderr
    # What only the stack can check (the endpoints a service has) is a file error too.
    bad_ref = local_stack(
        tmp_path,
        """
        [services.user]
        on = "a"
        command = ["echo", "${web.no_such_endpoint}"]
        job = true
        """,
    )
    r = cli_run("up", bad_ref)
    assert r.returncode == 2 and "has no endpoint 'no_such_endpoint'" in r.stderr, r.stderr
    help_text = cli_run("up", "--help").stdout
    assert "0 ok; 1 a service failed" in help_text and "130 interrupted" in help_text


# -- up ----------------------------------------------------------------------


def test_up_follows_logs_until_sigint_and_leaves_nothing(tmp_path: Any, cli: Any) -> None:
    """Without a terminal, --json: events in dependency order, then the log
    lines of each service, then SIGINT brings everything down: exit 130."""
    proc = cli("up", local_stack(tmp_path), "--json")
    run = run_of(proc)
    up = proc.event(type="result", result="up")
    assert set(up["timings"]) == {"web", "prep", "ticker"}
    proc.event(type="log", service="ticker", line="tick 3")
    proc.event(type="log", service="prep", line="prepared")
    events = [e for e in proc.events() if e.get("type") == "event"]
    at = {(e["service"], e["kind"]): e["time"] for e in events}
    # The ticker started only after the web server was ready and the job had exited.
    assert at[("ticker", "starting")] >= max(at[("web", "ready")], at[("prep", "exited")])
    with left_nothing(run["run_id"], run["contexts"], at_least=2, timeout=15):
        assert proc.interrupt() == 130, proc.text()
    down = proc.events()[-1]
    assert down == {"type": "result", "result": "down", "exit_code": 130}
    stopped = [e["service"] for e in proc.events() if e.get("kind") == "stopped"]
    assert stopped.index("ticker") < stopped.index("web"), stopped


def test_sigint_during_start_leaves_nothing(tmp_path: Any, cli: Any) -> None:
    path = local_stack(
        tmp_path,
        """
        [services.slow]
        on = "a"
        command = ["sh", "-c", "echo waiting; sleep 600"]
        ready = { banner = "never printed" }
        depends_on = ["web"]
        timeout = 300
        """,
    )
    proc = cli("up", path, "--json")
    run = run_of(proc)
    proc.event(type="event", service="slow", kind="starting")
    # The slow service's processes (sh, sleep) run next to the web server's: not ready yet.
    assert wait_until(lambda: len(oracle.run_processes(run["run_id"], run["contexts"])) >= 3, 30)
    with left_nothing(run["run_id"], run["contexts"], at_least=2, timeout=15):
        assert proc.interrupt() == 130, proc.text()
    assert not [e for e in proc.events() if e.get("result") == "up"]


def test_up_on_a_terminal_shows_a_progress_table_and_prefixed_logs(tmp_path: Any, cli: Any) -> None:
    proc = cli("up", local_stack(tmp_path), tty=True)
    run_line = proc.wait_for(
        lambda line: re.search(r"stack stack: run [0-9a-f]+", line) is not None
    )
    run_id = run_line.split()[-1]
    # rich's live table: its header, then every service ready with its time.
    proc.wait_for(lambda line: "service" in line and "state" in line and "elapsed" in line)
    proc.wait_for(lambda line: re.search(r"ticker\b.*\bready\b.*\b[0-9.]+ s", line) is not None)
    proc.wait_for(lambda line: line.startswith("ticker@b | tick "))
    proc.wait_for(lambda line: line.startswith("web@a | "))
    with left_nothing(run_id, at_least=2, timeout=15):
        assert proc.interrupt() == 130, proc.text()
    assert any("stack stack down (exit 130)" in line for line in proc.lines), proc.text()


def test_up_without_a_terminal_prints_plain_lines(tmp_path: Any, cli: Any) -> None:
    proc = cli("up", local_stack(tmp_path))
    run_id = proc.wait_for(lambda line: line.startswith("stack stack: run ")).split()[-1]
    proc.wait_for(lambda line: re.search(r"\] ticker@b ready \([0-9.]+ s\)$", line) is not None)
    proc.wait_for(lambda line: line.startswith("ticker@b | tick "))
    with left_nothing(run_id, at_least=2, timeout=15):
        assert proc.interrupt() == 130, proc.text()
    assert not [line for line in proc.lines if "\x1b[" in line]


def test_a_service_that_exits_brings_the_rest_down_and_exits_1(tmp_path: Any, cli: Any) -> None:
    crash = """
        [services.crash]
        on = "a"
        command = ["sh", "-c", "echo up; sleep 1; echo dying; exit 3"]
        ready = { banner = "^up$" }
        depends_on = ["ticker"]
        """
    proc = cli("up", local_stack(tmp_path, crash), "--json")
    run = run_of(proc)
    proc.event(type="result", result="up")
    with left_nothing(run["run_id"], run["contexts"], at_least=2, timeout=30):
        assert proc.finish(60) == 1, proc.text()
    exited = proc.event(type="event", service="crash", kind="exited")
    assert exited["exit_code"] == 3 and exited["final"] is True


def test_keep_going_keeps_the_others_running(tmp_path: Any, cli: Any) -> None:
    crash = """
        [services.crash]
        on = "a"
        command = ["sh", "-c", "echo up; sleep 0.5; exit 3"]
        ready = { banner = "^up$" }
        depends_on = ["ticker"]
        """
    proc = cli("up", local_stack(tmp_path, crash), "--json", "--keep-going")
    run = run_of(proc)
    proc.event(type="event", service="crash", kind="exited")
    count = len([e for e in proc.events() if e.get("service") == "ticker" and "line" in e])
    # Still up, still following the ticker's log after the exit.
    assert wait_until(
        lambda: (
            len([e for e in proc.events() if e.get("service") == "ticker" and "line" in e])
            > count + 2
        ),
        30,
    ), proc.text()
    assert proc.proc.poll() is None
    with left_nothing(run["run_id"], run["contexts"], at_least=2, timeout=15):
        assert proc.interrupt() == 130, proc.text()


def test_restarts_on_failure_then_exit_1_once_they_are_used_up(tmp_path: Any, cli: Any) -> None:
    flaky = """
        [services.flaky]
        on = "a"
        command = ["sh", "-c", "echo up; sleep 0.3; exit 5"]
        ready = { banner = "^up$" }
        restart = "on-failure"
        max_restarts = 2
        restart_backoff = 0.1
        depends_on = ["ticker"]
        """
    proc = cli("up", local_stack(tmp_path, flaky), "--json")
    run = run_of(proc)
    # The services run (the contexts' guards, which start with them, are not counted).
    proc.event(type="result", result="up")
    with left_nothing(run["run_id"], run["contexts"], at_least=2, timeout=30):
        assert proc.finish(START) == 1, proc.text()
    flaky_events = [e for e in proc.events() if e.get("service") == "flaky" and "kind" in e]
    exits = [e["final"] for e in flaky_events if e["kind"] == "exited"]
    assert exits == [False, False, True], flaky_events
    assert len([e for e in flaky_events if e["kind"] == "restarting"]) == 2


def test_a_service_that_fails_to_start_exits_1_with_its_output(tmp_path: Any, cli: Any) -> None:
    bad = """
        [services.broken]
        on = "a"
        command = ["sh", "-c", "echo config is wrong; exit 7"]
        ready = { tcp = 1 }
        depends_on = ["web"]
        """
    proc = cli("up", local_stack(tmp_path, bad))
    assert proc.finish(START) == 1, proc.text()
    text = proc.text()
    assert "broken" in text and "config is wrong" in text, text


# -- exec --------------------------------------------------------------------


@pytest.mark.parametrize("tty", [False, True])
def test_exec_runs_on_the_named_hosts_in_parallel(tmp_path: Any, cli: Any, tty: bool) -> None:
    path = local_stack(tmp_path)
    command = ["sh", "-c", "date +%s.%N; sleep 1; date +%s.%N"]
    proc = cli("exec", path, "a,b", "--", *command, tty=tty)
    assert proc.finish(START) == 0, proc.text()
    spans = {}
    for host in ("a", "b"):
        times = [
            float(line.split("| ")[1]) for line in proc.lines if re.match(host + r" \| \d", line)
        ]
        assert len(times) == 2, proc.text()
        spans[host] = times
        assert "%s: exit 0" % host in proc.lines, proc.text()
    # The two ran at the same time: each started before the other ended.
    assert spans["a"][0] < spans["b"][1] and spans["b"][0] < spans["a"][1], spans


def test_exec_exits_1_when_a_host_fails_and_prints_each_result(tmp_path: Any) -> None:
    path = local_stack(tmp_path)
    r = cli_run("exec", path, "all", "--json", "--", "sh", "-c", "echo out; echo err >&2; exit 4")
    assert r.returncode == 1, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows == [
        {"host": h, "exit_code": 4, "stdout": "out\n", "stderr": "err\n"} for h in ("a", "b")
    ]
    r = cli_run("exec", path, "b", "--", "true")
    assert (r.returncode, r.stdout) == (0, "b: exit 0\n")


# -- the example on a lab ----------------------------------------------------


@pytest.mark.lab
def test_the_example_runs_on_a_lab_and_sigint_leaves_nothing(cli: Any) -> None:
    """examples/shop.toml on 3 lab hosts: the api is ready only when its
    /health answered 200 through the router's net.box connection to the
    replica set; SIGINT then leaves no process and no lab behind."""
    need_lab()
    need_tarantool()
    proc = cli("up", EXAMPLE, "--lab", "3", "--json")
    run = run_of(proc)
    up = proc.event(type="result", result="up")
    assert set(up["timings"]) == {"storage", "sessions", "router", "api.1", "api.2", "api.3"}
    for api in ("api.1", "api.2", "api.3"):
        proc.event(type="log", service=api, line='api: "HEAD /health HTTP/1.1" 200 -')
    lab = proc.event(type="message")["text"].split()[1].rstrip(":")
    with left_nothing(run["run_id"], run["contexts"], at_least=4, timeout=20):
        assert proc.interrupt(120) == 130, proc.text()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "rxl-%s-" % lab not in netns


@pytest.mark.lab
def test_exec_on_a_lab_maps_the_files_hosts_onto_its_hosts() -> None:
    """--lab 3: the file's hosts a, b, c are the lab's three hosts, in order."""
    need_lab()
    r = cli_run(
        "exec", EXAMPLE, "all", "--lab", "3", "--", "ip", "-o", "-4", "addr", "show", "eth0"
    )
    assert r.returncode == 0, r.stderr
    found = dict(re.findall(r"^(\w) \| .* inet (\d+\.\d+\.\d+\.\d+)/", r.stdout, re.M))
    assert sorted(found) == ["a", "b", "c"], r.stdout
    assert [found[h].rsplit(".", 1)[1] for h in "abc"] == ["11", "12", "13"], found


def test_a_password_from_the_environment_reaches_no_command_line_log_or_service(
    tmp_path: Any,
) -> None:
    """``password_env``: the replica set gets the password, but no process of
    the run has it in its command line or environment (local contexts and
    their services inherit ``up``'s environment: it is dropped from there
    first), and neither ``up`` nor ``config`` prints it."""
    need_tarantool()
    password = "Rx-%d-pw" % os.getpid()
    path = stack_file(
        tmp_path,
        """\
        [hosts]
        a = { target = "local" }
        b = { target = "local" }

        [tarantool.store]
        members = ["a:%d", "b:%d"]
        user = "rep"
        password_env = "RX_TEST_STORE_PASSWORD"

        [services.client]
        on = "a"
        command = ["sh", "-c", "echo store at $0; sleep 600", "${store.leader.uri}"]
        """
        % (free_port(), free_port()),
    )
    env = dict(os.environ, RX_TEST_STORE_PASSWORD=password)
    missing = cli_run("config", path)
    assert missing.returncode == 2 and "RX_TEST_STORE_PASSWORD is not set" in missing.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "remoteexec", "config", path, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert shown.returncode == 0 and "RX_TEST_STORE_PASSWORD" in shown.stdout
    proc = subprocess.Popen(
        [sys.executable, "-m", "remoteexec", "up", path, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: List[str] = []
    try:
        for line in proc.stdout:  # bounded by the start's own bounds
            lines.append(line)
            if '"result": "up"' in line or '"result": "down"' in line:
                break
        assert '"result": "up"' in lines[-1], "".join(lines)
        run_id = json.loads(lines[0])["run_id"]
        contexts = [h["context_pid"] for h in json.loads(lines[1])["hosts"].values()]
        # 2 tarantools, the client's sh and its sleep (which sh forks a moment
        # after the client counts as started).
        assert wait_until(lambda: len(oracle.run_processes(run_id, contexts)) >= 4, 15), (
            oracle.describe(oracle.run_processes(run_id, contexts))
        )
        leaks = []
        for pid in oracle.table():
            if pid in (os.getpid(), proc.pid):
                continue
            for part in ("cmdline", "environ"):
                try:
                    with open("/proc/%d/%s" % (pid, part), "rb") as f:
                        if password.encode() in f.read():
                            leaks.append("%d %s (%s)" % (pid, part, oracle.describe([pid])))
                except OSError:
                    continue
        assert leaks == [], leaks
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert password not in "".join(lines) + out


def test_a_stack_of_jobs_only_exits_0_once_they_are_done(tmp_path: Any) -> None:
    path = stack_file(
        tmp_path,
        """\
        [hosts]
        a = { target = "local" }
        [services.first]
        on = "a"
        command = ["echo", "first done"]
        job = true
        [services.second]
        on = "a"
        command = ["echo", "second done"]
        job = true
        depends_on = ["first"]
        """,
    )
    r = cli_run("up", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "first@a | first done\nsecond@a | second done\n" in r.stdout, r.stdout


@pytest.mark.lab
def test_exec_connects_as_the_file_says_with_defaults_and_a_hop(lab: Any, tmp_path: Any) -> None:
    """Real targets in the file: [defaults] gives every host its key, known
    hosts and python; b, cut from this machine, is reached through a (``via``)."""
    from remoteexec.lab import MASTER

    path = stack_file(
        tmp_path,
        """\
        [defaults]
        identity_file = "%s"
        known_hosts_file = "%s"
        python = "%s"
        connect_timeout = 10

        [hosts]
        a = { target = "%s" }
        b = { target = "%s", via = "a" }
        c = { target = "%s" }
        """
        % (lab.identity_file, lab.known_hosts_file, PY, *lab.targets)
        + '[services.x]\non = "a"\ncommand = ["true"]\n',
    )
    # b is cut from this machine: only the hop through a reaches it.
    lab.partition(1, MASTER)
    try:
        r = cli_run("exec", path, "b,c", "--json", "--", "hostname")
    finally:
        lab.heal()
    assert r.returncode == 0, r.stderr
    rows = {row["host"]: row for row in map(json.loads, r.stdout.splitlines())}
    assert rows["b"]["stdout"].strip() == lab.hosts[1].hostname, rows
    assert rows["c"]["stdout"].strip() == lab.hosts[2].hostname, rows
