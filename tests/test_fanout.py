"""The plain-SSH fast path (remoteexec.fanout) and ``remoteexec exec`` on it,
against the session's real lab hosts (real sshd, real host keys)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from typing import Any, List

import pytest
from conftest import REPO, connect_options, need_lab
from helpers import quick_calls
from helpers.exec_cli import run_exec, stack_file

import remoteexec as rx
from remoteexec.errors import (
    AuthenticationFailed,
    CommandFailed,
    HostKeyMismatch,
    HostLost,
    HostUnreachable,
    RemoteCallError,
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


@pytest.mark.lab
def test_exec_takes_plain_ssh_unless_told_to_open_contexts(lab: Any, tmp_path: Any) -> None:
    """``remoteexec exec``: the command's parent is no Python (plain SSH); with
    ``--context`` it is the host's context. One JSON line per host either way."""
    need_lab()
    path = stack_file(tmp_path, lab, lab.known_hosts_file)
    parent = ["sh", "-c", "cat /proc/$PPID/comm"]
    for extra, want in (((), "sshd|bash|sh"), (("--context",), "python")):
        r = run_exec(path, "h1,h3", "--json", *extra, "--", *parent)
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
    r = run_exec(stack_file(tmp_path, lab, str(known)), "all", "--", "echo", "ran")
    assert r.returncode == 1, r.stderr
    assert "h1 | ran" in r.stdout and "h1: exit 0" in r.stdout, r.stdout
    for name in ("h2", "h3"):
        assert "%s: error: [%s] the host key" % (name, name) in r.stdout, r.stdout


# -- run_all / call_all: open hosts, no thread per host ------------------------


@pytest.fixture(scope="module")
def warm(lab: Any) -> Any:
    """A master with a context on each of the lab's hosts, for this module."""
    with rx.Master(heartbeat_timeout=5) as master:
        yield master, master.connect_all(lab.targets, **connect_options(lab))


def _max_threads_during(fn: Any) -> tuple:
    """(fn's result, the most threads this process had while fn ran)."""
    seen = [threading.active_count()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            seen.append(threading.active_count())

    sampler = threading.Thread(target=sample)
    before = threading.active_count()
    sampler.start()
    try:
        result = fn()
    finally:
        done.set()
        sampler.join(10)
    return result, max(seen) - before - 1  # less the sampler itself


@pytest.mark.lab
def test_run_all_runs_on_every_host_at_once_from_the_calling_thread(warm: Any) -> None:
    _, hosts = warm
    # A rendezvous in a directory the lab hosts share with us: each command
    # waits (bounded) until every host has arrived, so one at a time fails.
    script = (
        'touch "$1/$$"; i=0; while [ "$(ls "$1" | wc -l)" -lt "$2" ]; do '
        "i=$((i+1)); [ $i -gt 400 ] && exit 7; sleep 0.025; done; echo met"
    )
    with tempfile.TemporaryDirectory(dir=REPO, prefix=".rendezvous-") as meet:
        command = ["sh", "-c", script, "sh", meet, str(len(hosts))]
        results, extra = _max_threads_during(lambda: rx.run_all(hosts, command, timeout=30))
    assert [r.returncode for r in results] == [0] * len(hosts), results
    assert [r.host for r in results] == [h.name for h in hosts]
    assert [r.stdout for r in results] == ["met\n"] * len(hosts)
    assert extra <= 0, "run_all started %d threads" % extra


@pytest.mark.lab
def test_run_all_gives_each_host_its_own_error_and_the_others_their_results(
    warm: Any, tmp_path: Any
) -> None:
    master, hosts = warm
    results = rx.run_all(hosts, ["sh", "-c", "echo $1 >&2; exit 3", "sh", "err"], check=True)
    assert all(isinstance(r, CommandFailed) for r in results), results
    assert [r.host for r in results] == [h.name for h in hosts]
    assert all(r.exit_code == 3 and "err" in r.output_tail for r in results)
    timed = rx.run_all(hosts[:2], ["sleep", "30"], timeout=0.5)
    assert all(isinstance(r, TimeoutExpired) for r in timed), timed
    assert [r.host for r in timed] == [h.name for h in hosts[:2]]
    # Lost mid-call: only the local context finds the file (a lab host's
    # /tmp is its own), so only it sleeps, and it is cut while it does.
    slow = tmp_path / "slow"
    slow.write_text("")
    doomed = master.local(name="doomed")
    cut = threading.Timer(1.0, doomed.drop)
    cut.start()
    try:
        started = time.monotonic()
        command = ["sh", "-c", '[ -e "$1" ] && sleep 60; echo ok', "sh", str(slow)]
        mixed = rx.run_all([hosts[1], doomed, hosts[2]], command)
    finally:
        cut.cancel()
    assert time.monotonic() - started < 30
    assert isinstance(mixed[1], HostLost) and mixed[1].host == "doomed", mixed
    assert [mixed[0].stdout, mixed[2].stdout] == ["ok\n", "ok\n"]
    # Lost before: its HostLost at once, nothing sent to it.
    again = rx.run_all([doomed, hosts[0]], ["echo", "ok"])
    assert isinstance(again[0], HostLost) and again[1].stdout == "ok\n"


@pytest.mark.lab
def test_bad_arguments_to_run_all_raise_before_any_host_is_sent_anything(warm: Any) -> None:
    _, hosts = warm
    with pytest.raises(ValueError, match="command is empty"):
        rx.run_all(hosts, [])
    with pytest.raises(TypeError, match=r"hosts\[1\] is a str"):
        rx.run_all([hosts[0], "h2"], ["true"])
    with pytest.raises(ValueError, match="window"):
        rx.run_all(hosts, ["true"], window=0)
    with pytest.raises(ValueError, match="timeout"):
        rx.run_all(hosts, ["true"], timeout=-1)
    assert rx.run_all([], ["true"]) == []


@pytest.mark.lab
def test_call_all_returns_each_hosts_value_or_its_error(warm: Any) -> None:
    _, hosts = warm
    results = rx.call_all(hosts, quick_calls.pid_and, 7)
    assert [r for _, r in results] == [7] * len(hosts)
    assert [p for p, _ in results] == [h.info["pid"] for h in hosts]
    errors = rx.call_all(hosts[:2], quick_calls.fails, "nope")
    assert all(isinstance(e, RemoteCallError) and "KeyError" in str(e) for e in errors)
    assert [e.host for e in errors] == [h.name for h in hosts[:2]]


@pytest.mark.lab
def test_a_quick_function_runs_on_the_hosts_broker_thread_and_others_on_main(warm: Any) -> None:
    _, hosts = warm
    host = hosts[0]
    # The first call may find the module not yet imported there: it then
    # takes the normal path, which imports it; later calls are quick.
    assert host.call(quick_calls.where, 1)[1] == 1
    assert host.call(quick_calls.where, 2) == ["mitogen.broker", 2]
    assert host.call(quick_calls.where_unmarked, 3) == ["MainThread", 3]
    assert host.service("ping")["ok"] is True


@pytest.mark.lab
def test_run_all_gives_up_on_a_host_that_goes_silent(warm: Any) -> None:
    """A frozen context (SIGSTOP: its stream stays open, no reply, no ack)
    is declared lost by the heartbeat, and run_all returns its HostLost then,
    not never; the other host's result is there."""
    import signal

    _, hosts = warm
    with rx.Master(heartbeat_timeout=1.5) as master:
        frozen = master.local(name="frozen")
        pid = frozen.info["pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            results = rx.run_all([frozen, hosts[0]], ["echo", "ok"])
            took = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGKILL)  # our own context
        assert isinstance(results[0], HostLost) and results[0].host == "frozen", results
        assert "heartbeat" in str(results[0])
        assert results[1].stdout == "ok\n"
        assert took < 20, "waited %.1f s for a silent host" % took


@pytest.mark.lab
def test_run_all_keeps_at_most_window_requests_in_flight_and_results_in_order(
    warm: Any,
) -> None:
    """Each command counts the commands running with it (a directory each, in
    a directory the lab hosts share with us) while it sleeps: never more than
    ``window``. A host given twice runs twice; results come in the order given."""
    _, hosts = warm
    twice = list(hosts) + list(hosts)
    script = (
        'mine=$(mktemp -d "$1/run.XXXXXX"); n=$(ls "$1" | wc -l); sleep 0.5; rmdir "$mine"; echo $n'
    )
    with tempfile.TemporaryDirectory(dir=REPO, prefix=".window-") as shared:
        command = ["sh", "-c", script, "sh", shared]
        results = rx.run_all(twice, command, window=2, timeout=30)
        assert [r.host for r in results] == [h.name for h in twice], results
        counts = [int(r.stdout) for r in results]
        assert max(counts) <= 2, counts
        assert os.listdir(shared) == []
        # Unbounded (the default window), they overlap: the count can tell.
        together = rx.run_all(twice, command, timeout=30)
        assert max(int(r.stdout) for r in together) > 2, together
    values = rx.call_all(twice, quick_calls.pid_and, 5)
    assert [pid for pid, _ in values] == [h.info["pid"] for h in twice]


@pytest.mark.lab
def test_a_fan_out_leaves_no_receiver_behind(warm: Any) -> None:
    """Every request's reply handle is gone once run_all/call_all return:
    answered or timed out."""
    master, hosts = warm
    handles = master.router._handle_map  # mitogen's table of reply handles
    before = len(handles)
    assert all(r.returncode == 0 for r in rx.run_all(hosts, ["true"]))
    assert len(handles) == before
    timed = rx.run_all(hosts, ["sleep", "30"], timeout=0.3)
    assert all(isinstance(r, TimeoutExpired) for r in timed), timed
    assert len(handles) == before
    assert len(rx.call_all(hosts, quick_calls.pid_and, 1)) == len(hosts)
    assert len(handles) == before


@pytest.mark.lab
def test_run_all_gives_up_on_a_reply_past_its_deadline(warm: Any, monkeypatch: Any) -> None:
    """A frozen context that the heartbeat has not declared lost (yet): the
    reply's deadline (the command's timeout plus REPLY_SLACK, shortened here)
    ends the wait, a TimeoutExpired naming the host; the other's result is there."""
    import signal

    import remoteexec.host

    monkeypatch.setattr(remoteexec.host, "REPLY_SLACK", 0.5)
    _, hosts = warm
    with rx.Master(heartbeat_timeout=60) as master:
        frozen = master.local(name="frozen")
        pid = frozen.info["pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            results = rx.run_all([frozen, hosts[0]], ["echo", "ok"], timeout=0.5)
            took = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGKILL)  # our own context
    assert isinstance(results[0], TimeoutExpired) and results[0].host == "frozen", results
    assert results[1].stdout == "ok\n"
    assert took < 10, "waited %.1f s past a 1 s deadline" % took


@pytest.mark.lab
def test_run_all_commands_on_one_host_run_at_once_on_a_bounded_set_of_threads(
    warm: Any,
) -> None:
    """run_all's commands go to the supervisor's request handler: three on one
    host meet (none waits behind another), twenty run on its 16 threads, no
    more, and a name that is no supervisor method is an error reply."""
    import mitogen.core

    from remoteexec.target.supervisor import REQUEST_THREAD, REQUEST_THREADS

    _, hosts = warm
    host = hosts[0]
    script = (
        'touch "$1/$$"; i=0; while [ "$(ls "$1" | wc -l)" -lt 3 ]; do '
        "i=$((i+1)); [ $i -gt 200 ] && exit 7; sleep 0.025; done; echo met"
    )
    with tempfile.TemporaryDirectory(dir=REPO, prefix=".meet-") as meet:
        met = rx.run_all([host] * 3, ["sh", "-c", script, "sh", meet], timeout=30)
    assert [r.stdout for r in met] == ["met\n"] * 3, met
    many = rx.run_all([host] * (REQUEST_THREADS + 4), ["sleep", "0.3"], timeout=30)
    assert all(r.returncode == 0 for r in many), many
    names = host.call(quick_calls.thread_names)
    assert len([n for n in names if n.startswith(REQUEST_THREAD)]) == REQUEST_THREADS, names
    ask = mitogen.core.Message.pickled(("__module__", {}), handle=host.info["request_handle"])
    reply = host.context.send_async(ask).get(timeout=30).unpickle()
    assert reply["ok"] is False, reply
    assert "no supervisor method '__module__'" in reply["error"]["message"], reply


@pytest.mark.lab
def test_run_all_wakes_at_the_replies_not_at_its_poll(warm: Any) -> None:
    """The waiting thread is woken by the replies themselves: when all are in,
    and at each reply while hosts wait for a slot in the window. Its poll for
    lost hosts (every _POLL seconds) would take 0.25 s a wait."""
    import statistics

    from remoteexec.fanout import _POLL

    _, hosts = warm

    def median_of_3(**options: Any) -> float:
        took = []
        for _ in range(3):
            started = time.monotonic()
            results = rx.run_all(list(hosts) * 2, ["true"], **options)
            took.append(time.monotonic() - started)
            assert all(r.returncode == 0 for r in results), results
        return statistics.median(took)

    assert median_of_3() < _POLL
    assert median_of_3(window=1) < _POLL  # six waits, one after the other
