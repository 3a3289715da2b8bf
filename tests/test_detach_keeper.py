"""The keeper of a detached service, run as the host runs it: a bounded,
rotated log, and the service's exit code recorded and passed on. No lab
needed: it is a plain process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from remoteexec.target import keeper

SCRIPT = keeper.__file__
CAP = 4096
KEEP = 2


def run_keeper(tmp_path: object, *command: str) -> tuple[subprocess.CompletedProcess[str], str]:
    log = os.path.join(str(tmp_path), "svc.log")
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            SCRIPT,
            log,
            str(CAP),
            str(KEEP),
            log + ".exit",
            "--",
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, log


def test_log_is_rotated_and_bounded(tmp_path: object) -> None:
    """2 MB of output: the log and KEEP rotated files, each at most CAP plus
    one read, the oldest dropped; the newest lines are kept."""
    line = "x" * 99
    code = "import sys\nfor i in range(20000): sys.stdout.write('%%06d %s\\n' %% i)" % line
    done, log = run_keeper(tmp_path, sys.executable, "-c", code)
    assert done.returncode == 0, done.stderr
    names = sorted(os.listdir(str(tmp_path)))
    assert names == ["svc.log", "svc.log.1", "svc.log.2", "svc.log.exit"], names
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
