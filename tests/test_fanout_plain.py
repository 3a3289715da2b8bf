"""The plain-SSH fast path (remoteexec.fanout.run_plain, ``remoteexec exec``)
against the session's lab hosts: known_hosts read once per run, matched as
paramiko matches it, stricter where paramiko gave up on the whole file; the
bound on hosts served at a time."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import threading
import time
from typing import Any, Iterator, List

import pytest
from conftest import wait_until
from helpers import oracle
from helpers.exec_cli import run_exec, stack_file

from remoteexec.errors import HostKeyMismatch, HostLost
from remoteexec.fanout import PlainHost, run_plain
from remoteexec.host import RunResult

pytestmark = pytest.mark.lab

#: Bound for things that take milliseconds when the machine is idle.
SETTLE = 15.0
#: Slack over heartbeat_timeout for a loaded 2-core machine.
LOST_MARGIN = 3.0

#: Paths whose opens the audit hook counts ({path: count}); None: not counting.
_OPENED: dict = {}
_COUNTING = threading.Event()


def _audit(event: str, args: Any) -> None:
    if event == "open" and _COUNTING.is_set() and args and args[0] in _OPENED:
        _OPENED[args[0]] += 1


sys.addaudithook(_audit)  # stays for the process: it counts only while asked


@pytest.fixture
def count_opens() -> Iterator[Any]:
    def start(path: str) -> None:
        _OPENED[path] = 0
        _COUNTING.set()

    yield start
    _COUNTING.clear()
    _OPENED.clear()


def _key(host: Any) -> str:
    """``TYPE BASE64`` of a lab host's public host key."""
    with open(host.host_key_file + ".pub") as f:
        return " ".join(f.read().split()[:2])


def _hosts(lab: Any, known_hosts: str) -> List[PlainHost]:
    return [PlainHost(h.name, h.target, lab.identity_file, known_hosts) for h in lab.hosts]


def test_known_hosts_is_read_once_per_run_for_all_hosts(lab: Any, count_opens: Any) -> None:
    """paramiko's load_host_keys read (and parsed) the whole file for every
    host: most of the master's CPU at 32 hosts."""
    count_opens(lab.known_hosts_file)
    results = run_plain(_hosts(lab, lab.known_hosts_file), ["true"])
    assert all(isinstance(r, RunResult) and r.returncode == 0 for r in results.values()), results
    assert _OPENED[lab.known_hosts_file] == 1


def test_hashed_names_revoked_keys_and_bad_lines(lab: Any, tmp_path: Any) -> None:
    """h1 known by a hashed name only; h2's key listed, but also @revoked: refused;
    h3 after a line that does not parse (paramiko's loader raised on it, and every
    host failed): that line is skipped, as OpenSSH skips it."""
    from paramiko.hostkeys import HostKeys

    h1, h2, h3 = lab.hosts
    lines = [
        "# a comment, then an empty line",
        "",
        "%s %s" % (HostKeys.hash_host(h1.address), _key(h1)),
        "%s %s" % (h2.address, _key(h2)),
        "@revoked %s %s" % (h2.address, _key(h2)),
        "@cert-authority * %s" % _key(h3),
        "%s ssh-ed25519 not!base64" % h3.address,
        "%s %s comment" % (h3.address, _key(h3)),
    ]
    known = tmp_path / "known_hosts"
    known.write_text("\n".join(lines) + "\n")
    results = run_plain(_hosts(lab, str(known)), ["echo", "ran"])
    for h in (h1, h3):
        result = results[h.name]
        assert isinstance(result, RunResult) and result.stdout == "ran\n", (h.name, result)
    error = results[h2.name]
    assert isinstance(error, HostKeyMismatch), error
    assert "[h2]" in str(error)


def test_a_key_listed_for_another_port_is_not_this_hosts(lab: Any, tmp_path: Any) -> None:
    """Names are matched as OpenSSH writes them: ``[addr]:port`` is not ``addr``."""
    h1 = lab.hosts[0]
    known = tmp_path / "known_hosts_port"
    known.write_text("[%s]:2222 %s\n" % (h1.address, _key(h1)))
    error = run_plain([PlainHost("h1", h1.target, lab.identity_file, str(known))], "true")["h1"]
    assert isinstance(error, HostKeyMismatch), error
    assert "not in" in str(error)


def test_exec_workers_bounds_the_hosts_served_at_a_time(lab: Any, tmp_path: Any) -> None:
    """``--workers 1``: one host after the other (each starts after the one
    before has slept); a value out of range is a usage error before anything
    connects."""
    path = stack_file(tmp_path, lab)
    nap = 0.4
    r = run_exec(
        path, "all", "--workers", "1", "--json", "--", "sh", "-c", "date +%%s.%%N; sleep %g" % nap
    )
    assert r.returncode == 0, r.stderr
    starts = sorted(float(json.loads(line)["stdout"]) for line in r.stdout.splitlines())
    assert len(starts) == len(lab.hosts)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= nap, gaps
    for bad in ("0", "100000"):
        r = run_exec(path, "all", "--workers", bad, "--", "true")
        assert r.returncode == 2, (bad, r.stdout, r.stderr)
        assert "--workers must be in 1..256, got %s" % bad in r.stderr


def _pids_with(token: str) -> List[int]:
    """Live pids whose command line holds ``token`` (lab hosts share this pid space)."""
    token_bytes = b"\0" + token.encode() + b"\0"
    return [
        pid
        for pid, st in oracle.table().items()
        if st.alive and token_bytes in (oracle.proc_file(pid, "cmdline") or b"")
    ]


def test_a_silently_partitioned_host_is_lost_within_heartbeat_timeout(lab: Any) -> None:
    """No command timeout: the keepalives and TCP_USER_TIMEOUT still bound the
    wait for a host that went silent mid-command."""
    silence = 3.0
    # A sleep of its own length: found by its command line, ended by its pid.
    token = "59.%08d" % secrets.randbelow(10**8)
    twin = lab.hosts[2]
    host = PlainHost(twin.name, twin.target, lab.identity_file, lab.known_hosts_file)
    results: List[Any] = []
    worker = threading.Thread(
        target=lambda: results.append(
            run_plain([host], ["sleep", token], heartbeat_timeout=silence)
        )
    )
    worker.start()
    try:
        assert wait_until(lambda: _pids_with(token), SETTLE), "the command runs"
        lab.partition(twin)
        cut = time.monotonic()
        worker.join(silence + 1 + LOST_MARGIN)  # + a keepalive interval
        took = time.monotonic() - cut
    finally:
        lab.heal()
        for pid in _pids_with(token):  # sshd does not know yet: ours to end
            os.kill(pid, signal.SIGKILL)
        worker.join(60)
    assert results, "still waiting %.1f s after the partition" % took
    lost = results[0][twin.name]
    assert isinstance(lost, HostLost), lost
    assert lost.host == twin.name and "heartbeat_timeout 3 s" in str(lost), str(lost)
    print("\nlost %.2f s after the partition: %s" % (took, lost))


def test_heartbeat_timeout_is_checked_before_connecting(lab: Any) -> None:
    host = PlainHost("h", lab.targets[0], lab.identity_file, lab.known_hosts_file)
    with pytest.raises(ValueError, match="heartbeat_timeout"):
        run_plain([host], ["true"], heartbeat_timeout=0)
