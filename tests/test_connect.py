"""Connecting to real sshd hosts in the lab, and every way that can fail."""

from __future__ import annotations

import operator
import os
import socket
import subprocess
import time

import pytest
from conftest import PY, connect_options

import remoteexec as rx

pytestmark = pytest.mark.lab

#: How soon a failed connect must be reported (below connect_options()' bound).
CONNECT_TIMEOUT = 5
#: Connection errors must come within the connect timeout plus this much (ssh
#: and mitogen start-up, more under load from concurrent suites).
ERROR_MARGIN = 5.0
#: Allowance on top of a call's own timeout on this loaded 2-core machine.
LOAD_MARGIN = 1.5


def test_connect_all_three_hosts(lab, master: rx.Master) -> None:
    started = time.monotonic()
    hosts = master.connect_all(lab.targets, **connect_options(lab))
    elapsed = time.monotonic() - started
    assert [h.name for h in hosts] == lab.targets
    for host, lab_host in zip(hosts, lab.hosts):
        r = host.run(["ip", "-o", "-4", "addr"], check=True)
        assert lab_host.address in r.stdout, "each context runs inside its own namespace"
        assert host.info["psutil"] is False, "Debian's python has no psutil: /proc fallback"
    # Cached: the same target gives the same Host, with its scheme spelled out too.
    assert master.connect(lab.targets[0], **connect_options(lab)) is hosts[0]
    assert master.connect("ssh://" + lab.targets[0], **connect_options(lab)) is hosts[0]
    assert all(h.kind == "ssh" and not h.is_local for h in hosts)
    assert elapsed < CONNECT_TIMEOUT + ERROR_MARGIN, elapsed


def test_call_run_and_remote_errors(lab, master: rx.Master) -> None:
    host = master.connect(lab.targets[1], **connect_options(lab))
    assert host.call(socket.gethostname) == host.info["hostname"]
    assert host.call(os.getpid) == host.info["pid"]
    # A user function's own children keep their exit codes (the orphan
    # reaper only takes zombies from our sessions).
    assert host.call(subprocess.call, ["sh", "-c", "exit 3"]) == 3
    with pytest.raises(rx.RemoteCallError) as info:
        host.call(int, "not a number")
    assert info.value.type_name == "ValueError"
    assert "not a number" in info.value.remote_message
    assert host.name in str(info.value)

    # A huge remote exception (mitogen refuses CallErrors over 9999 chars)
    # still arrives as a typed, bounded RemoteCallError.
    with pytest.raises(rx.RemoteCallError) as big:
        host.call(operator.getitem, {}, "k" * 20000)
    assert big.value.type_name == "KeyError" and len(str(big.value)) < 3000

    r = host.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    with pytest.raises(rx.CommandFailed) as failed:
        host.run([PY, "-c", "import sys; sys.exit('broken input')"], check=True)
    assert failed.value.exit_code == 1 and "broken input" in failed.value.output_tail
    assert host.run("echo $((6*7))", shell=True).stdout == "42\n"
    assert host.run(["echo", "$HOME"]).stdout == "$HOME\n", "no shell unless asked"
    with pytest.raises(rx.CommandNotFound):
        host.run(["no-such-command-here"])
    started = time.monotonic()
    with pytest.raises(rx.TimeoutExpired):
        host.run(["sleep", "30"], timeout=0.5)
    assert time.monotonic() - started < 0.5 + LOAD_MARGIN


def test_via_hop(lab, master: rx.Master) -> None:
    first = master.connect(lab.targets[0], **connect_options(lab))
    second = master.connect(lab.targets[2], via=first, **connect_options(lab))
    r = second.run(["ip", "-o", "-4", "addr"], check=True)
    assert lab.hosts[2].address in r.stdout


def _expect(exc_type, started: float, limit: float, info) -> None:
    assert time.monotonic() - started < limit, "error must come within a bounded time"
    assert isinstance(info.value, exc_type), repr(info.value)


def test_unreachable_address(lab, master: rx.Master) -> None:
    lab.partition(lab.hosts[0])  # silent: packets from the master are dropped
    try:
        started = time.monotonic()
        opts = dict(connect_options(lab), connect_timeout=2)
        with pytest.raises(rx.HostUnreachable) as info:
            master.connect(lab.targets[0], **opts)
        _expect(rx.HostUnreachable, started, 2 + ERROR_MARGIN, info)
        assert lab.hosts[0].address in str(info.value)
        assert "timed out" in str(info.value).lower()
    finally:
        lab.heal()


def test_wrong_key(lab, master: rx.Master, tmp_path) -> None:
    key = str(tmp_path / "other_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    started = time.monotonic()
    with pytest.raises(rx.AuthenticationFailed) as info:
        master.connect(lab.targets[0], **dict(connect_options(lab), identity_file=key))
    _expect(rx.AuthenticationFailed, started, CONNECT_TIMEOUT + ERROR_MARGIN, info)
    assert "identity_file" in str(info.value)


def test_wrong_port(lab, master: rx.Master) -> None:
    started = time.monotonic()
    with pytest.raises(rx.HostUnreachable) as info:
        master.connect(lab.targets[0] + ":2222", **connect_options(lab))
    _expect(rx.HostUnreachable, started, CONNECT_TIMEOUT + ERROR_MARGIN, info)
    assert "refused" in str(info.value).lower()


def test_missing_remote_python(lab, master: rx.Master) -> None:
    started = time.monotonic()
    with pytest.raises(rx.RemotePythonMissing) as info:
        master.connect(lab.targets[0], **dict(connect_options(lab), python="/opt/nope/python3"))
    _expect(rx.RemotePythonMissing, started, CONNECT_TIMEOUT + ERROR_MARGIN, info)
    assert "/opt/nope/python3" in str(info.value)


def test_host_key_mismatch(lab, master: rx.Master, tmp_path) -> None:
    other = str(tmp_path / "hostkey")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    known = tmp_path / "known_hosts"
    with open(other + ".pub") as f:
        pub = f.read().split()
    known.write_text("%s %s %s\n" % (lab.hosts[0].address, pub[0], pub[1]))
    started = time.monotonic()
    with pytest.raises(rx.HostKeyMismatch) as info:
        master.connect(lab.targets[0], **dict(connect_options(lab), known_hosts_file=str(known)))
    _expect(rx.HostKeyMismatch, started, CONNECT_TIMEOUT + ERROR_MARGIN, info)
    # An unknown host is refused too: checking stays on by default.
    known.write_text("")
    with pytest.raises(rx.HostKeyMismatch):
        master.connect(lab.targets[0], **dict(connect_options(lab), known_hosts_file=str(known)))


def test_connect_all_reports_every_failure(lab, master: rx.Master) -> None:
    targets = [lab.targets[0], lab.targets[1] + ":2222", lab.targets[2] + ":2223"]
    started = time.monotonic()
    with pytest.raises(rx.ConnectionFailed) as info:
        master.connect_all(targets, **connect_options(lab))
    # All tried in parallel: one connect timeout, not one per target.
    assert time.monotonic() - started < CONNECT_TIMEOUT + ERROR_MARGIN
    err = info.value
    assert len(err.failures) == 2
    assert {f.host for f in err.failures} == {targets[1], targets[2]}
    assert all(isinstance(f, rx.HostUnreachable) for f in err.failures)
    assert "2 of 3 hosts failed" in str(err)
    # The good one was tried and stays usable.
    assert master.connect(lab.targets[0], **connect_options(lab)).run(["true"]).ok


def test_connect_all_refuses_bad_input_before_connecting(lab, master: rx.Master) -> None:
    """A bad target in the list used to be reported after the good ones had
    connected (as a ConnectionFailed): now nothing connects."""
    targets = [lab.targets[0], lab.targets[1] + ":70000"]
    started = time.monotonic()
    with pytest.raises(ValueError, match="port"):
        master.connect_all(targets, **connect_options(lab))
    with pytest.raises(ValueError, match="connect_timeout"):
        master.connect_all(lab.targets, **dict(connect_options(lab), connect_timeout=float("nan")))
    # Refused by the argument checks: nothing connected (below), nothing waited.
    assert time.monotonic() - started < LOAD_MARGIN
    assert master.hosts == []
    assert len(master.connect_all(lab.targets, **connect_options(lab))) == 3


def test_no_route_is_host_unreachable(lab, master: rx.Master) -> None:
    # An address in the lab's own subnet that no host has: ARP gets no answer,
    # and the kernel reports "No route to host" (EHOSTUNREACH).
    taken = {h.address for h in lab.hosts}
    prefix = lab.hosts[0].address.rsplit(".", 1)[0]
    address = next(
        "%s.%d" % (prefix, n) for n in range(250, 200, -1) if "%s.%d" % (prefix, n) not in taken
    )
    timeout = 10
    started = time.monotonic()
    with pytest.raises(rx.HostUnreachable) as info:
        master.connect("root@" + address, **dict(connect_options(lab), connect_timeout=timeout))
    _expect(rx.HostUnreachable, started, timeout + ERROR_MARGIN, info)
    first = str(info.value).splitlines()[0]
    print("\n" + first)
    assert address in first and "no route to host" in first.lower(), first


def test_check_host_keys_ignore_connects_to_an_unknown_key(
    lab, master: rx.Master, tmp_path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    options = dict(connect_options(lab), known_hosts_file=str(empty))
    # enforce (the default) refuses a host whose key is not in known_hosts...
    with pytest.raises(rx.HostKeyMismatch):
        master.connect(lab.targets[1], **options)
    with pytest.raises(rx.HostKeyMismatch):
        master.connect(lab.targets[1], check_host_keys="enforce", **options)
    # ...ignore connects, and it is really that host.
    host = master.connect(lab.targets[1], check_host_keys="ignore", **options)
    assert lab.hosts[1].address in host.run(["ip", "-o", "-4", "addr"], check=True).stdout
    assert empty.read_text() == "", "ignore records nothing in the user's known_hosts"
    # A connect that checks keys never gets the context opened without.
    with pytest.raises(rx.HostKeyMismatch):
        master.connect(lab.targets[1], **options)
    checked = master.connect(lab.targets[1], **connect_options(lab))
    assert checked is not host and checked.run(["true"]).ok
    assert master.connect(lab.targets[1], check_host_keys="ignore", **options) is host
