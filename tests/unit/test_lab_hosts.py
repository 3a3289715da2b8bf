"""remoteexec.lab.hosts, sshd and network: a lab's hosts as data, their sshd config
and /etc/hosts (pure; real sshds are started in tests/test_lab.py)."""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path

import pytest

from remoteexec.lab import LabError, LabHost, free_port, network, sshd
from remoteexec.lab.hosts import plan_hosts


def plan(count: int = 2, private_fs: bool = True) -> list:
    net = ipaddress.IPv4Network("10.9.8.0/24")
    return plan_hosts("mylab", "0a1b2c", net, count, "root", "/tmp/x/mylab", private_fs)


def test_the_plan_names_every_host_alike() -> None:
    h1, h2 = plan()
    assert (h1.index, h1.name, h1.address, h1.target) == (0, "h1", "10.9.8.11", "root@10.9.8.11")
    assert (h2.netns, h2.veth, h2.hostname) == ("rxl-mylab-2", "rxv0a1b2c1", "mylab-h2")
    assert h2.dir == "/tmp/x/mylab/h2" and h2.config_file == "/tmp/x/mylab/h2/sshd_config"
    assert h2.fs_dir == "/tmp/x/mylab/h2/fs" and h2.workdir == "/tmp/x/mylab/h2/work"
    assert h1.port == 22 and h1.sshd_pid is None and h1.private_fs


def test_a_host_survives_its_record_and_ignores_unknown_keys() -> None:
    h = plan()[1]
    h.sshd_pid = 4242
    data = json.loads(json.dumps(h.to_dict()))
    assert LabHost.from_dict({**data, "added_later": 1}) == h
    assert {h: 1}[LabHost.from_dict(data)] == 1  # hashable by its namespace


def test_path_goes_through_the_sshds_root_only_for_a_private_fs() -> None:
    h = plan()[0]
    with pytest.raises(LabError, match="sshd of h1 is not running"):
        h.path("/tmp/x")
    h.sshd_pid = 99
    assert h.path("/tmp/x") == "/proc/99/root/tmp/x"
    shared = plan(private_fs=False)[0]
    assert shared.path("/tmp/x") == "/tmp/x"
    assert shared.nsexec("true") == ["ip", "netns", "exec", "rxl-mylab-1", "true"]


def test_the_sshd_config_allows_keys_only_and_sets_the_lab_environment() -> None:
    h = plan()[0]
    text = sshd.config(h, "mylab", "/tmp/x/mylab/authorized_keys")
    lines = text.splitlines()
    assert "ListenAddress 10.9.8.11:22" in lines
    assert 'AuthorizedKeysFile "/tmp/x/mylab/authorized_keys"' in lines
    assert "PasswordAuthentication no" in lines and "KbdInteractiveAuthentication no" in lines
    env = next(line for line in lines if line.startswith("SetEnv "))
    assert env == (
        'SetEnv REMOTEEXEC_LAB="mylab" REMOTEEXEC_LAB_HOST=h1 '
        'REMOTEEXEC_LAB_DIR="/tmp/x/mylab/h1/work"'
    )


def test_known_hosts_name_each_host_with_and_without_its_port(tmp_path: Path) -> None:
    hosts = plan_hosts(
        "k", "0a1b2c", ipaddress.IPv4Network("10.9.8.0/24"), 2, "root", str(tmp_path), True
    )
    for h in hosts:
        Path(h.dir).mkdir()
        Path(h.host_key_file + ".pub").write_text(f"ssh-ed25519 KEY{h.index} k-{h.name}\n")
    assert sshd.known_hosts(hosts) == (
        "10.9.8.11 ssh-ed25519 KEY0\n[10.9.8.11]:22 ssh-ed25519 KEY0\n"
        "10.9.8.12 ssh-ed25519 KEY1\n[10.9.8.12]:22 ssh-ed25519 KEY1\n"
    )


def test_the_launch_binds_private_dirs_and_shares_and_ends_in_sshd() -> None:
    h = plan()[0]
    argv = sshd.launch_argv(h, "/tmp/x/mylab", "root", ["/src"])
    assert argv[:4] == ["ip", "netns", "exec", "rxl-mylab-1"]
    tail = argv[argv.index(sshd.SSHD) :]
    assert tail == [sshd.SSHD, "-f", h.config_file, "-E", h.log_file]
    assert "h1/fs" in argv and json.dumps(["/src"]) in argv
    mounts = json.loads(next(a for a in argv if a.startswith('[["var_tmp"')))
    assert [m[1] for m in mounts] == ["/var/tmp", "/run", sshd.home("root"), "/tmp"]
    shared = plan(private_fs=False)[0]
    assert "" in sshd.launch_argv(shared, "/tmp/x/mylab", "root", [])  # no fs to bind


def test_the_hosts_file_names_every_host_and_the_gateway() -> None:
    text = network.hosts_file("mylab", "10.9.8.1", plan(), "machine")
    assert text.splitlines()[2:] == [
        "127.0.1.1\tmachine",
        "10.9.8.1\tmylab-gw",
        "10.9.8.11\tmylab-h1 h1",
        "10.9.8.12\tmylab-h2 h2",
    ]


def test_free_port_is_bindable_right_away() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    assert 0 < port < 65536
