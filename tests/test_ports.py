"""A host whose sshd listens off port 22: its known_hosts name is OpenSSH's
``[addr]:port`` on the plain-SSH fast path (remoteexec.fanout, ``remoteexec
exec``) and on the context path (the ssh client through
remoteexec.connectors.ssh), plain or hashed; a key known only under the bare
address (port 22's name) is refused with a typed error naming the host.

The sshd is a second one in lab host h1's namespace, on :data:`PORT`
(tests/helpers/second_sshd.py): h1's own sshd on 22 has another host key."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator

import pytest
from conftest import PY
from helpers.exec_cli import run_exec
from helpers.second_sshd import host_key, second_sshd

import remoteexec as rx
from remoteexec.errors import HostKeyMismatch
from remoteexec.fanout import PlainHost, run_plain
from remoteexec.host import RunResult
from remoteexec.lab.hosts import LabHost

pytestmark = pytest.mark.lab

PORT = 2222
#: Prints the server's port of the ssh session: which sshd ran the command.
SERVER_PORT = ["sh", "-c", 'set -- $SSH_CONNECTION; echo "$4"']


@pytest.fixture(scope="module")
def twin(lab: Any) -> Iterator[LabHost]:
    with second_sshd(lab, 0, PORT) as h:
        yield h


#: known_hosts lines for the twin on PORT whose key it is: OpenSSH's own name
#: ``[addr]:PORT`` (plain, hashed), and the bare address (port 22's name), which
#: OpenSSH falls back to for the same key ("checking without port identifier").
ACCEPTED = ("plain", "hashed", "bare_same")
#: ... and those that must be refused: (kind, what the error says).
REFUSED = (
    ("bare_port22_key", "unknown host"),
    ("bare_revoked", "unknown host"),
    ("other_key", "differs"),
)


@pytest.fixture(scope="module")
def known(lab: Any, twin: LabHost, tmp_path_factory: Any) -> Dict[str, str]:
    """known_hosts files for the twin, by kind (see :data:`ACCEPTED` and
    :data:`REFUSED`): h1's key (its sshd on 22, another key) under the bare
    address, as a known_hosts of h1 on 22 has it; the twin's key under the
    bare address but revoked there; h1's key under ``[addr]:PORT``."""
    from paramiko.hostkeys import HostKeys

    name = "[%s]:%d" % (twin.address, PORT)
    key, port22_key = host_key(twin), host_key(lab.hosts[0])
    lines = {
        "plain": ["%s %s" % (name, key)],
        "hashed": ["%s %s" % (HostKeys.hash_host(name), key)],
        "bare_same": ["%s %s" % (twin.address, key)],
        "bare_port22_key": ["%s %s" % (twin.address, port22_key)],
        "bare_revoked": ["%s %s" % (twin.address, key), "@revoked %s %s" % (twin.address, key)],
        "other_key": ["%s %s" % (name, port22_key)],
    }
    where = tmp_path_factory.mktemp("known_hosts")
    files = {}
    for kind, text in lines.items():
        path = where / kind
        path.write_text("\n".join(text) + "\n")
        files[kind] = str(path)
    return files


def _plain(lab: Any, twin: LabHost, known_hosts: str, **target: Any) -> Any:
    host = PlainHost(
        "p", target.pop("target", twin.target), lab.identity_file, known_hosts, **target
    )
    return run_plain([host], SERVER_PORT)["p"]


@pytest.mark.parametrize("kind", ACCEPTED)
def test_fast_path_finds_the_key_as_openssh_does(
    lab: Any, twin: LabHost, known: Dict[str, str], kind: str
) -> None:
    """``user@addr:PORT`` and ``user@addr`` with ``port=PORT`` both reach the
    sshd on PORT (not h1's on 22), its key found under ``[addr]:PORT``, or
    under ``addr`` when it is the very key there."""
    for target in ({"target": "%s:%d" % (twin.target, PORT)}, {"port": PORT}):
        result = _plain(lab, twin, known[kind], **target)
        assert isinstance(result, RunResult), (target, result)
        assert result.stdout == "%d\n" % PORT, (target, result)


@pytest.mark.parametrize(("kind", "why"), REFUSED)
def test_fast_path_refuses_other_keys(
    lab: Any, twin: LabHost, known: Dict[str, str], kind: str, why: str
) -> None:
    """Port 22's key under the bare address, the host's key revoked there, or
    another key under ``[addr]:PORT``: a HostKeyMismatch naming the host, its
    port, the file and why."""
    error = _plain(lab, twin, known[kind], port=PORT)
    assert isinstance(error, HostKeyMismatch), error
    assert error.host == "p"
    text = str(error)
    assert "%s (port %d)" % (twin.target, PORT) in text and known[kind] in text, text
    assert why in text, text
    if why == "unknown host":
        assert "[%s]:%d" % (twin.address, PORT) in text, text


def _stack_file(tmp_path: Any, lab: Any, twin: LabHost, known_hosts: str) -> str:
    path = tmp_path / "ports.toml"
    path.write_text(
        "\n".join(
            [
                "[defaults]",
                'identity_file = "%s"' % lab.identity_file,
                'known_hosts_file = "%s"' % known_hosts,
                'python = "%s"' % PY,
                "[hosts]",
                'p = { target = "%s:%d" }' % (twin.target, PORT),
                'q = { target = "%s", port = %d }' % (twin.target, PORT),
                "[services.idle]",
                'on = "p"',
                'command = ["true"]',
            ]
        )
        + "\n"
    )
    return str(path)


def test_exec_reaches_the_port_and_names_the_refused_host(
    lab: Any, twin: LabHost, known: Dict[str, str], tmp_path: Any
) -> None:
    """``remoteexec exec``: both spellings of the port run on the fast path,
    ``port =`` on the context path (``--context``) too; with port 22's key
    under the bare address only, each host's line says why, exit 1."""
    r = run_exec(
        _stack_file(tmp_path, lab, twin, known["hashed"]), "p,q", "--json", "--", *SERVER_PORT
    )
    assert r.returncode == 0, (r.stdout, r.stderr)
    rows = {row["host"]: row for row in map(json.loads, r.stdout.splitlines())}
    assert {n: row["stdout"] for n, row in rows.items()} == {"p": "2222\n", "q": "2222\n"}
    r = run_exec(
        _stack_file(tmp_path, lab, twin, known["plain"]),
        "q",
        "--context",
        "--json",
        "--",
        *SERVER_PORT,
    )
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert json.loads(r.stdout)["stdout"] == "%d\n" % PORT, r.stdout
    path = _stack_file(tmp_path, lab, twin, known["bare_port22_key"])
    r = run_exec(path, "p,q", "--json", "--", "true")
    assert r.returncode == 1, (r.stdout, r.stderr)
    rows = {row["host"]: row for row in map(json.loads, r.stdout.splitlines())}
    assert sorted(rows) == ["p", "q"], r.stdout
    for name, row in rows.items():
        error = row["error"]
        assert "[%s]" % name in error and "(unknown host)" in error, error
        assert "port %d" % PORT in error or ":%d" % PORT in error, error


@pytest.mark.parametrize("kind", ACCEPTED)
def test_context_path_connects_on_the_port(
    lab: Any, twin: LabHost, known: Dict[str, str], kind: str
) -> None:
    """``Master.connect("user@addr:PORT")``: the ssh client finds the key as
    the fast path does; Host.name is the target as given; the lane (ssh's
    ControlMaster, its sessions on the same port) runs commands there too."""
    options = dict(identity_file=lab.identity_file, known_hosts_file=known[kind], python=PY)
    target = "%s:%d" % (twin.target, PORT)
    with rx.Master(heartbeat_timeout=5) as m:
        h = m.connect(target, connect_timeout=15, **options)
        assert h.name == target
        assert h.run(SERVER_PORT, check=True).stdout == "%d\n" % PORT
        assert m.connect(twin.target, port=PORT, **options) is h, "one host, one context"
        if kind != "plain":
            return  # the lane is the same for every known_hosts
        assert h.open_lane(), "the lane opens on the port"
        runs = h.lane.stats["runs"]
        assert h.run(SERVER_PORT, check=True).stdout == "%d\n" % PORT
        assert h.lane.stats["runs"] == runs + 1, "ran over the lane"


def test_context_path_names_a_host_given_port_as_addr_port(
    lab: Any, twin: LabHost, known: Dict[str, str]
) -> None:
    """``connect("user@addr", port=PORT)``: Host.name carries the port, so
    two hosts on one address never share a name."""
    options = dict(identity_file=lab.identity_file, known_hosts_file=known["plain"], python=PY)
    with rx.Master(heartbeat_timeout=5) as m:
        h = m.connect(twin.target, port=PORT, connect_timeout=15, **options)
        assert h.name == "%s:%d" % (twin.target, PORT)
        assert h.run(SERVER_PORT, check=True).stdout == "%d\n" % PORT


@pytest.mark.parametrize(("kind", "why"), REFUSED)
def test_context_path_refuses_other_keys(
    lab: Any, twin: LabHost, known: Dict[str, str], kind: str, why: str
) -> None:
    """As the fast path: a HostKeyMismatch naming the host, with ssh's reason
    (it names ``[addr]:PORT``)."""
    del why  # ssh words its reasons its own way
    options = dict(identity_file=lab.identity_file, python=PY, connect_timeout=15)
    target = "%s:%d" % (twin.target, PORT)
    with rx.Master(heartbeat_timeout=5) as m:
        with pytest.raises(HostKeyMismatch) as info:
            m.connect(target, known_hosts_file=known[kind], **options)
        assert info.value.host == target
        assert "[%s]:%d" % (twin.address, PORT) in str(info.value), info.value
