"""The keeper of a detached service, run as the host runs it: a bounded,
rotated log, and the service's exit code recorded and passed on. No lab
needed: it is a plain process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from remoteexec.target import keeper

SCRIPT = keeper.__file__
CAP = 4096
KEEP = 2


def keeper_argv(log: str, *command: str, restart: tuple[int, float] = (0, 0.0)) -> list[str]:
    return [
        sys.executable,
        "-I",
        "-S",
        SCRIPT,
        log,
        str(CAP),
        str(KEEP),
        log + ".exit",
        *(str(x) for x in restart),
        "--",
        *command,
    ]


def run_keeper(
    tmp_path: object, *command: str, restart: tuple[int, float] = (0, 0.0)
) -> tuple[subprocess.CompletedProcess[str], str]:
    log = os.path.join(str(tmp_path), "svc.log")
    done = subprocess.run(
        keeper_argv(log, *command, restart=restart), capture_output=True, text=True, timeout=60
    )
    return done, log


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_log_is_rotated_and_bounded(tmp_path: object) -> None:
    """2 MB of output: the log and KEEP rotated files, each at most CAP plus
    one read, the oldest dropped; the newest lines are kept."""
    line = "x" * 99
    code = "import sys\nfor i in range(20000): sys.stdout.write('%%06d %s\\n' %% i)" % line
    done, log = run_keeper(tmp_path, sys.executable, "-c", code)
    assert done.returncode == 0, done.stderr
    names = sorted(os.listdir(str(tmp_path)))
    assert names == ["svc.log", "svc.log.1", "svc.log.2", "svc.log.exit", "svc.log.exit.run"]
    total = 0
    for name in ("svc.log", "svc.log.1", "svc.log.2"):
        size = os.path.getsize(os.path.join(str(tmp_path), name))
        assert size <= CAP + keeper.CHUNK, (name, size)
        total += size
    assert total <= (KEEP + 1) * (CAP + keeper.CHUNK) < 2_000_000
    with open(log + ".1") as older, open(log) as newest:
        assert (older.read() + newest.read()).rstrip().endswith("019999 " + line)
    assert oct(os.stat(log).st_mode & 0o777) == "0o600"
    with open(log + ".exit") as f:
        assert f.read().strip() == "0"


def test_exit_code_and_signal_are_passed_on(tmp_path: object) -> None:
    """The service's exit code is recorded and becomes the keeper's; a
    service killed by a signal makes the keeper end by that signal too."""
    done, log = run_keeper(tmp_path, sys.executable, "-c", "import sys; print('bye'); sys.exit(3)")
    assert done.returncode == 3
    with open(log + ".exit") as f:
        assert f.read().strip() == "3"
    with open(log) as f:
        assert f.read() == "bye\n"
    done, log = run_keeper(tmp_path, "sh", "-c", "kill -TERM $$")
    assert done.returncode == -signal.SIGTERM
    with open(log + ".exit") as f:
        assert f.read().strip() == str(-signal.SIGTERM)
    done, log = run_keeper(tmp_path, "no-such-program-xyz")
    assert done.returncode == 127
    with open(log) as f:
        assert "cannot run no-such-program-xyz" in f.read()


#: A service that fails (exit 3) until it has run ``$1`` times, then exits 0;
#: each run appends a line to the file ``$2``.
FLAKY = 'echo run >> "$2"; [ "$(wc -l < "$2")" -ge "$1" ] && exit 0; echo failing; exit 3'


def test_restarts_on_failure_until_it_succeeds(tmp_path: object) -> None:
    """on-failure: started again after each non-zero exit (noted in the log),
    until it exits 0; EXIT.run counts the restarts."""
    runs = os.path.join(str(tmp_path), "runs")
    done, log = run_keeper(tmp_path, "sh", "-c", FLAKY, "flaky", "3", runs, restart=(5, 0.0))
    assert done.returncode == 0, done.stderr
    assert read(runs).count("run") == 3
    text = read(log)
    assert text.count("failing") == 2 and text.count("restarting in") == 2, text
    assert "(1 of 5)" in text and "(2 of 5)" in text
    assert read(log + ".exit").strip() == "0"
    assert read(log + ".exit.run").split() == ["0", "2"]


def test_restarts_stop_at_the_limit(tmp_path: object) -> None:
    runs = os.path.join(str(tmp_path), "runs")
    done, log = run_keeper(tmp_path, "sh", "-c", FLAKY, "flaky", "99", runs, restart=(2, 0.0))
    assert done.returncode == 3
    assert read(runs).count("run") == 3  # the first run and 2 restarts
    assert read(log + ".exit.run").split() == ["0", "2"]


def _wait(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("not within %.0f s: %s" % (timeout, what))
        time.sleep(0.01)


def _running_pid(log: str) -> int:
    _wait(lambda: os.path.exists(log + ".exit.run"), "the keeper to start its service")
    return int(read(log + ".exit.run").split()[0])


@pytest.mark.parametrize("how", ["signal", "stop file"])
def test_a_stop_is_not_restarted(tmp_path: object, how: str) -> None:
    """A stop (the stop signal to the session, or EXIT.stop then any end) is
    final, even with restarts left and the service ending first."""
    log = os.path.join(str(tmp_path), "svc.log")
    keeper_proc = subprocess.Popen(
        keeper_argv(log, "sleep", "60", restart=(5, 0.0)), start_new_session=True
    )
    try:
        service = _running_pid(log)
        if how == "signal":
            # The stop signal to the session: the keeper has it before it can
            # see the service end. (The stop paths write EXIT.stop first too;
            # with the signal alone, a keeper that sees the end first relies
            # on GRACE.)
            os.kill(keeper_proc.pid, signal.SIGTERM)
            os.killpg(service, signal.SIGTERM)
            expected = -signal.SIGTERM
        else:
            open(log + ".exit.stop", "w").close()
            os.kill(service, signal.SIGKILL)  # a kill, with the stop already written
            expected = -signal.SIGKILL
        # A restart shows at once (its count in EXIT.run): fail then, rather
        # than after the keeper's whole 20 s bound.
        _wait(
            lambda: keeper_proc.poll() is not None or read(log + ".exit.run").split()[1] != "0",
            "the keeper to exit",
        )
        assert read(log + ".exit.run").split() == ["0", "0"]
        assert keeper_proc.wait(20) == expected
        assert "restarting" not in read(log)
    finally:
        keeper_proc.kill()
        keeper_proc.wait(10)


def test_a_crash_is_restarted_while_nobody_watches(tmp_path: object) -> None:
    """The restart comes from the keeper alone: SIGKILL of the service (not a
    stop), and a new service runs, its pid in EXIT.run."""
    log = os.path.join(str(tmp_path), "svc.log")
    keeper_proc = subprocess.Popen(
        keeper_argv(log, "sleep", "60", restart=(1, 0.0)), start_new_session=True
    )
    try:
        first = _running_pid(log)
        os.kill(first, signal.SIGKILL)
        _wait(lambda: read(log + ".exit.run").split()[0] not in ("0", str(first)), "a restart")
        second, restarts = (int(x) for x in read(log + ".exit.run").split())
        assert restarts == 1 and second != first
        os.kill(second, signal.SIGKILL)  # no restarts left
        assert keeper_proc.wait(20) == -signal.SIGKILL
    finally:
        keeper_proc.kill()
        keeper_proc.wait(10)


#: Each run appends to ``$1`` and leaves a ``sleep`` (its pid in ``$2``)
#: holding stdout; the first run fails, the second exits 0.
LEAVES_A_CHILD = (
    'echo run >> "$1"; sleep 30 & echo $! >> "$2"; [ "$(wc -l < "$1")" -ge 2 ] && exit 0; exit 3'
)


def test_a_failure_is_restarted_while_a_child_holds_the_output(tmp_path: object) -> None:
    """The first run exits 3 but its child keeps stdout open (no EOF): the
    keeper still sees the failure, kills what is left of the run's process
    group (as systemd does) and restarts. The second run exits 0 and its
    child is followed to EOF, as a daemonizer's would be."""
    log = os.path.join(str(tmp_path), "svc.log")
    runs, pids = (os.path.join(str(tmp_path), n) for n in ("runs", "pids"))
    started = time.monotonic()
    keeper_proc = subprocess.Popen(
        keeper_argv(log, "sh", "-c", LEAVES_A_CHILD, "x", runs, pids, restart=(3, 0.0)),
        start_new_session=True,
    )
    try:
        _wait(lambda: os.path.exists(pids) and len(read(pids).split()) == 2, "a restart")
        assert time.monotonic() - started < 15  # not after the first child's 30 s
        assert read(runs).count("run") == 2
        first, second = (int(x) for x in read(pids).split())
        _wait(lambda: (procs_state(first) or "Z") == "Z", "the failed run's child killed")
        assert keeper_proc.poll() is None, "the exit 0 run is followed until its output ends"
        assert procs_state(second) not in (None, "Z")
        os.kill(second, signal.SIGKILL)
        assert keeper_proc.wait(20) == 0
        assert read(log + ".exit.run").split() == ["0", "1"]
    finally:
        keeper_proc.kill()
        keeper_proc.wait(10)
        # Only the sleeps of this keeper's session: a pid may be reused.
        for pid in (int(x) for x in (read(pids).split() if os.path.exists(pids) else [])):
            if session_of(pid) == keeper_proc.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _stat(pid: int) -> list[str] | None:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def procs_state(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[0] if fields else None


def session_of(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[3]) if fields else None
