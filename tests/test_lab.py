"""Real tests of remoteexec.lab: network namespaces, bridge, sshd, nftables. No mocks.

They need root, iproute2, openssh-server and nftables; elsewhere they skip, except under
CI=true, where a missing requirement is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import need_lab

from remoteexec.lab import Lab, LabError, LabHost

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"
CUT_TIMEOUT = 1.0  # seconds a TCP connect may take before we call the path cut
#: up() of 3 hosts takes about 1 s alone; 15 s leaves room for a loaded
#: 2-core machine where other suites build labs at the same time.
UP_BOUND = 15.0


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# A probe run inside a namespace: connect to every address in parallel, print JSON.
_PROBE = r"""
import json, socket, sys, threading
timeout = float(sys.argv[1]); out = {}
def one(addr):
    s = socket.socket(); s.settimeout(timeout)
    try:
        s.connect((addr, 22)); out[addr] = "ok:" + s.recv(64).decode(errors="replace")[:7]
    except Exception as e:
        out[addr] = type(e).__name__
    finally:
        s.close()
ts = [threading.Thread(target=one, args=(a,)) for a in sys.argv[2:]]
[t.start() for t in ts]; [t.join(timeout + 2) for t in ts]
print(json.dumps(out))
"""


def _probe_root(addr: str, timeout: float) -> str:
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((addr, 22))
        return "ok:" + s.recv(64).decode(errors="replace")[:7]
    except OSError as exc:
        return type(exc).__name__
    finally:
        s.close()


def reach(pairs, timeout: float = CUT_TIMEOUT) -> dict:
    """{(src, dst_address): "ok:SSH-2.0" | "TimeoutError" | ...} for (LabHost|None, addr)
    pairs; src None = the root namespace. All probes run concurrently."""
    by_src: dict = {}
    for src, dst in pairs:
        by_src.setdefault(src.netns if src else None, (src, []))[1].append(dst)
    procs = {}
    result = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        root_futs = {}
        for key, (src, dsts) in by_src.items():
            if src is None:
                root_futs = {d: pool.submit(_probe_root, d, timeout) for d in dsts}
            else:
                argv = src.nsexec(sys.executable, "-I", "-S", "-c", _PROBE, str(timeout), *dsts)
                procs[key] = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        for d, fut in root_futs.items():
            result[(None, d)] = fut.result(timeout=timeout + 5)
        for key, proc in procs.items():
            out, _ = proc.communicate(timeout=timeout + 10)
            for d, r in json.loads(out).items():
                result[(key, d)] = r
    return {(src, d): result[(src.netns if src else None, d)] for src, d in pairs}


def _ok(r: str) -> bool:
    return r.startswith("ok:SSH-2.0")


def _cut(r: str) -> bool:
    return r in ("TimeoutError", "timeout")


def _ssh(lab: Lab, host, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        lab.ssh_command(host, *cmd), capture_output=True, text=True, timeout=timeout
    )


def _leftovers(state: dict) -> list:
    """What of a lab (by its Lab.to_dict()) still exists on the machine."""
    left = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = os.listdir("/sys/class/net")
    for h in state["hosts"]:
        if h["netns"] in netns:
            left.append(h["netns"])
        if h["veth"] in links:
            left.append(h["veth"])
        if h.get("sshd_pid") and os.path.exists(f"/proc/{h['sshd_pid']}"):
            try:
                with open(f"/proc/{h['sshd_pid']}/cmdline", "rb") as f:
                    if state["base_dir"].encode() in f.read():
                        left.append(f"pid {h['sshd_pid']}")
            except OSError:
                pass
        if os.path.exists(f"/etc/netns/{h['netns']}"):
            left.append(f"/etc/netns/{h['netns']}")
    if state["bridge"] in links:
        left.append(state["bridge"])
    if os.path.exists(state["base_dir"]):
        left.append(state["base_dir"])
    if os.path.exists(f"/run/remoteexec-lab/{state['name']}.json"):
        left.append("state file")
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    if f"rxl_{state['bridge'][3:]}" in tables:
        left.append("nft table")
    return left


@pytest.fixture(scope="module")
def lab():
    need_lab()
    t0 = time.monotonic()
    lab = Lab(hosts=3)
    lab.up()
    lab.up_seconds = time.monotonic() - t0
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture
def healed(lab):
    yield lab
    lab.heal()


# --------------------------------------------------------------------------- basics


def test_up_three_hosts(lab):
    assert lab.is_up and len(lab.hosts) == 3
    prefix = lab.gateway.rsplit(".", 1)[0]
    assert lab.subnet == f"{prefix}.0/24" and lab.gateway.endswith(".1")
    assert lab.targets == [f"root@{prefix}.{11 + i}" for i in range(3)]
    assert all(isinstance(h, LabHost) for h in lab.hosts)
    assert [h.name for h in lab.hosts] == ["h1", "h2", "h3"]
    assert lab.host(1) is lab.host("h2") is lab.host(lab.hosts[1].address) is lab.hosts[1]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for h in lab.hosts:
        assert h.netns in netns
        assert h.netns == f"rxl-{lab.name}-{h.index + 1}"
        assert h.sshd_pid and os.path.exists(f"/proc/{h.sshd_pid}")
    assert len(lab.bridge) <= 15 and os.path.exists(f"/sys/class/net/{lab.bridge}")
    # Modes: keys, configs, state 0600; directories 0700.
    for path in [lab.identity_file, lab.known_hosts_file, f"/run/remoteexec-lab/{lab.name}.json"]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    for h in lab.hosts:
        for path in (h.host_key_file, h.config_file):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        assert stat.S_IMODE(os.stat(h.dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(lab.base_dir).st_mode) == 0o700
    known = Path(lab.known_hosts_file).read_text().splitlines()
    for h in lab.hosts:
        assert any(line.startswith(f"{h.address} ssh-ed25519 ") for line in known)
        assert any(line.startswith(f"[{h.address}]:22 ssh-ed25519 ") for line in known)
    assert lab.ssh_args == [
        "-o",
        f"UserKnownHostsFile={lab.known_hosts_file}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
    ]
    assert lab.up() is lab  # idempotent
    print(f"\nup(3 hosts) took {lab.up_seconds:.3f} s: {lab.timings}")
    # Speed is for bench/; this catches a hang or a retry loop.
    assert lab.up_seconds < UP_BOUND, lab.timings


def test_ssh_into_each_host(lab):
    cmd = 'hostname; ip -o -4 addr show dev eth0; echo "lab=$REMOTEEXEC_LAB_HOST"'
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda h: _ssh(lab, h, cmd), lab.hosts))
    for h, r in zip(lab.hosts, results):
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == h.hostname  # own UTS namespace per host
        assert f"inet {h.address}/24" in r.stdout  # we are inside the host's namespace
        assert lines[-1] == f"lab={h.name}"
        for other in lab.hosts:
            if other is not h:
                assert other.address not in r.stdout
    # Strict host key checking is really on: an empty known_hosts must fail.
    empty = Path(lab.base_dir) / "empty_known_hosts"
    empty.write_text("")
    argv = lab.ssh_command(0, "true")
    argv[argv.index(f"UserKnownHostsFile={lab.known_hosts_file}")] = f"UserKnownHostsFile={empty}"
    r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "Host key verification failed" in r.stderr


def test_host_to_host(lab):
    h1, h2, h3 = lab.hosts
    pairs = [(h1, h2.address), (h2, h3.address), (h3, h1.address), (None, h2.address)]
    res = reach(pairs, timeout=5)
    assert all(_ok(r) for r in res.values()), res


# --------------------------------------------------------------------------- filesystems


_WRITE = (
    'for d in /tmp /var/tmp /run "$HOME"; do echo "$1" > "$d/rxlab-probe-$1"; done; '
    'cat "/tmp/rxlab-probe-$1"'
)
_DIRS = ("/tmp", "/var/tmp", "/run", "/root")


def test_private_filesystems_by_default(lab):
    """What a host writes to /tmp, /var/tmp, /run and home stays on that host."""
    h1, h2, _ = lab.hosts
    tag = f"{lab.name}-{os.getpid()}"
    try:
        r = _ssh(lab, h1, f"sh -c '{_WRITE}' sh {tag}")
        assert r.returncode == 0 and r.stdout.strip() == tag, r.stderr
        for d in _DIRS:
            name = f"{d}/rxlab-probe-{tag}"
            # Written on h1 (seen through its mount namespace) ...
            assert Path(h1.path(name)).read_text().strip() == tag, name
            # ... but not on the master at the same path, nor on h2.
            assert not os.path.exists(name), name
            assert not os.path.exists(h2.path(name)), name
        r = _ssh(lab, h2, f"cat /tmp/rxlab-probe-{tag}")
        assert r.returncode != 0
        # The lab's own files (keys, the work dir) stay reachable on the host.
        r = _ssh(lab, h1, f"test -r {lab.authorized_keys_file} && test -d {h1.workdir}")
        assert r.returncode == 0, r.stderr
    finally:
        for d in _DIRS:
            with contextlib.suppress(OSError):
                os.unlink(f"{d}/rxlab-probe-{tag}")


def test_share_exposes_a_directory_under_a_private_one(tmp_path):
    """A checkout under /tmp (a CI clone) stays visible to the hosts with share=."""
    need_lab()
    (tmp_path / "script.sh").write_text("echo shared-ok\n")
    with Lab(hosts=1, share=[str(tmp_path)]) as lab:
        r = _ssh(lab, lab.hosts[0], f"sh {tmp_path}/script.sh; ls /tmp")
        assert r.returncode == 0 and r.stdout.startswith("shared-ok"), r.stderr
    with Lab(hosts=1) as lab:
        r = _ssh(lab, lab.hosts[0], f"test -e {tmp_path}/script.sh")
        assert r.returncode != 0, "without share= the host's /tmp is its own"
    with pytest.raises(ValueError, match="not a directory"):
        Lab(hosts=1, share=[str(tmp_path / "missing")])


def test_shared_fs_option():
    need_lab()
    tag = f"shared-{os.getpid()}-{time.monotonic_ns()}"
    try:
        with Lab(hosts=1, shared_fs=True) as shared:
            h = shared.hosts[0]
            assert h.path("/tmp/x") == "/tmp/x"
            r = _ssh(shared, h, f"echo {tag} > /tmp/rxlab-probe-{tag}")
            assert r.returncode == 0, r.stderr
            assert Path(f"/tmp/rxlab-probe-{tag}").read_text().strip() == tag
    finally:
        with contextlib.suppress(OSError):
            os.unlink(f"/tmp/rxlab-probe-{tag}")


# --------------------------------------------------------------------------- partitions


def test_partition_pair_and_heal(healed):
    lab = healed
    h1, h2, h3 = lab.hosts
    lab.partition(h1, 1)
    assert lab.cuts == [("h1", "h2")]
    res = reach([(h1, h2.address), (h2, h1.address), (h1, h3.address), (None, h1.address)])
    assert _cut(res[(h1, h2.address)]) and _cut(res[(h2, h1.address)]), res
    assert _ok(res[(h1, h3.address)]) and _ok(res[(None, h1.address)]), res
    lab.heal()
    assert lab.cuts == []
    res = reach([(h1, h2.address), (h2, h1.address)], timeout=5)
    assert all(_ok(r) for r in res.values()), res


def test_partition_from_everyone_stalls_established_ssh(healed):
    lab = healed
    h1, h2, h3 = lab.hosts
    echo = subprocess.Popen(
        lab.ssh_command(h3, "while read l; do echo got $l; done"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def ask(msg: str, wait: float):
            echo.stdin.write(msg + "\n")
            echo.stdin.flush()
            return read(wait)

        def read(wait: float):
            ready, _, _ = select.select([echo.stdout], [], [], wait)
            return echo.stdout.readline().strip() if ready else None

        assert ask("one", 15) == "got one"
        lab.partition(h3)  # from h1, h2 and the master
        assert lab.cuts == [("h1", "h3"), ("h2", "h3"), ("h3", "master")]
        res = reach([(None, h3.address), (h3, h1.address), (h1, h3.address), (h1, h2.address)])
        assert _cut(res[(None, h3.address)]), res
        assert _cut(res[(h3, h1.address)]) and _cut(res[(h1, h3.address)]), res
        assert _ok(res[(h1, h2.address)]), res
        # The established ssh connection notices nothing: it just stalls (silent drop).
        assert ask("two", 1.0) is None
        assert echo.poll() is None
        lab.heal()
        # ... and the same connection carries on once TCP retransmits.
        assert read(15) == "got two"
        assert ask("three", 5) == "got three"
    finally:
        echo.kill()
        echo.wait(5)


def test_partition_errors(healed):
    lab = healed
    with pytest.raises(LabError):
        lab.partition(0, 0)
    with pytest.raises(LabError):
        lab.partition(7)
    with pytest.raises(LabError):
        lab.partition("10.9.9.9")
    lab.partition(0, Lab.MASTER)
    assert lab.cuts == [("h1", "master")]
    lab.heal(0)
    assert lab.cuts == []


# --------------------------------------------------------------------------- many labs


def test_two_labs_at_once(lab):
    with Lab(hosts=1) as a, Lab(hosts=1) as b:
        assert len({a.name, b.name, lab.name}) == 3
        assert len({a.subnet, b.subnet, lab.subnet}) == 3
        assert len({a.bridge, b.bridge, lab.bridge}) == 3
        res = reach([(None, a.hosts[0].address), (None, b.hosts[0].address)], timeout=5)
        assert all(_ok(r) for r in res.values()), res
        # Labs are isolated from each other (different bridges, no forwarding).
        res = reach([(a.hosts[0], b.hosts[0].address)])
        assert not _ok(res[(a.hosts[0], b.hosts[0].address)]), res
    assert not a.is_up and not b.is_up


def test_allocation_conflicts(lab):
    with pytest.raises(LabError, match="overlaps"):
        Lab(hosts=1, subnet=lab.subnet).up()
    with pytest.raises(LabError, match="already exists"):
        Lab(hosts=1, name=lab.name).up()
    with pytest.raises(ValueError, match=r"hosts must be an int in 1\.\.200, got 0"):
        Lab(hosts=0)
    with pytest.raises(ValueError, match="bad lab name 'bad name'"):
        Lab(name="bad name")
    with pytest.raises(LabError, match="not up"):
        _ = Lab(hosts=1).targets


def test_down_leaves_nothing():
    need_lab()
    lab = Lab(hosts=2)
    try:
        lab.up()
        info = lab.to_dict()
        # Something started over ssh, detached, must die with the lab too.
        r = _ssh(lab, 0, "nohup sleep 300 >/dev/null 2>&1 & echo $!")
        assert r.returncode == 0, r.stderr
        sleeper = int(r.stdout.strip())
        assert os.path.exists(f"/proc/{sleeper}")
        t0 = time.monotonic()
        lab.down()
        took = time.monotonic() - t0
        print(f"\ndown(2 hosts) took {took:.3f} s")
        assert _leftovers(info) == []
        assert (
            not os.path.exists(f"/proc/{sleeper}")
            or "Z" in Path(f"/proc/{sleeper}/stat").read_text().split(")")[-1][:3]
        )
        lab.down()  # again: fine
        assert not lab.is_up
    finally:
        lab.down()


def test_failed_up_cleans_up():
    need_lab()

    class BrokenLab(Lab):
        def sshd_config(self, h):
            return super().sshd_config(h) + "NoSuchOption yes\n"

    lab = BrokenLab(hosts=2)
    with pytest.raises(LabError) as err:
        lab.up()
    assert "start sshd on h" in str(err.value) and "NoSuchOption" in str(err.value)
    assert "command:" in str(err.value)
    state = {
        "name": lab.name,
        "bridge": lab.bridge,
        "base_dir": lab.base_dir,
        "hosts": [{"netns": f"rxl-{lab.name}-{i}", "veth": f"rxv{lab.tag}{i}"} for i in (1, 2)],
    }
    assert _leftovers(state) == []


def test_a_callers_base_dir_is_emptied_and_kept(tmp_path):
    """An existing empty base_dir is the caller's: down() empties it, keeps it."""
    need_lab()
    base = tmp_path / "base"
    base.mkdir()
    with Lab(hosts=1, base_dir=str(base)) as lab:
        assert lab.base_dir == str(base)
        assert (base / "id_ed25519").exists() and (base / "h1" / "sshd_config").exists()
    assert base.is_dir() and list(base.iterdir()) == []
    (base / "something").write_text("x")
    with pytest.raises(LabError, match="exists and is not empty"):
        Lab(hosts=1, base_dir=str(base)).up()


# --------------------------------------------------------------------------- stale labs


def test_crashed_lab_is_stale_and_removed(lab):
    code = (
        "import os, signal\n"
        "from remoteexec.lab import Lab\n"
        "lab = Lab(hosts=1).up()\n"
        "print(lab.name, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_env()
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    name = r.stdout.strip()
    try:
        crashed = Lab.attach(name)
        info = crashed.to_dict()
        assert _ok(
            reach([(None, crashed.hosts[0].address)], timeout=5)[
                (None, info["hosts"][0]["address"])
            ]
        )
        stale = Lab.stale()
        assert name in stale
        assert lab.name not in stale  # its owner (this process) is alive
        removed = Lab.down_stale()
        assert name in removed
        assert _leftovers(info) == []
        assert lab.name in {s["name"] for s in Lab.status()}
        res = reach([(None, lab.hosts[0].address)], timeout=5)
        assert _ok(res[(None, lab.hosts[0].address)]), res
    finally:
        if os.path.exists(f"/run/remoteexec-lab/{name}.json"):
            Lab.attach(name).down()


def test_unrecorded_leftovers_are_stale_and_removed():
    """A lab whose record is lost is still found, by its names, and removed."""
    need_lab()
    lost = Lab(hosts=1).up()
    info = lost.to_dict()
    try:
        os.unlink(f"/run/remoteexec-lab/{lost.name}.json")
        stale = Lab.stale()
        assert lost.name in stale and lost.bridge in stale, stale
        removed = Lab.down_stale()
        assert lost.name in removed and lost.bridge in removed, removed
        assert _leftovers(info) == []
    finally:
        lost.down()


def test_cli_up_status_down(lab):
    cli = [sys.executable, "-m", "remoteexec.lab"]
    r = subprocess.run(
        [*cli, "up", "--hosts", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    name = info["name"]
    try:
        # The lab outlives the CLI process, with its keys usable by the system ssh.
        argv = [
            "ssh",
            "-i",
            info["identity_file"],
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            *info["ssh_args"],
            info["targets"][0],
            "ip -o -4 addr show dev eth0",
        ]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        assert r.returncode == 0 and info["hosts"][0]["address"] in r.stdout, r.stderr
        # partition / heal through the CLI (state shared via the state record).
        addr = info["hosts"][0]["address"]
        r = subprocess.run(
            [*cli, "partition", name, "0", "master"],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
        )
        assert r.returncode == 0 and "h1-master" in r.stdout, r.stderr
        assert _cut(reach([(None, addr)])[(None, addr)])
        r = subprocess.run(
            [*cli, "heal", name], capture_output=True, text=True, timeout=60, env=_env()
        )
        assert r.returncode == 0 and "cuts: none" in r.stdout, r.stderr
        assert _ok(reach([(None, addr)], timeout=5)[(None, addr)])
        r = subprocess.run(
            [*cli, "status", "--json"], capture_output=True, text=True, timeout=60, env=_env()
        )
        status = {s["name"]: s for s in json.loads(r.stdout)}
        assert status[name]["stale"] and status[name]["detached"]
        assert status[name]["hosts"][0]["sshd_running"]
        assert not status[lab.name]["stale"]
        assert name in Lab.stale()
        r = subprocess.run(
            [*cli, "down", "--stale"], capture_output=True, text=True, timeout=60, env=_env()
        )
        assert r.returncode == 0 and name in r.stdout, r.stderr
        assert _leftovers(info) == []
        assert lab.name not in r.stdout and lab.host(0).sshd_pid
    finally:
        if os.path.exists(f"/run/remoteexec-lab/{name}.json"):
            subprocess.run([*cli, "down", name], timeout=60, env=_env())


# ------------------------------------------------------------- the CLI, down --all

#: Run by unshare in new mount, network and pid namespaces. Everything a lab
#: leaves on the machine is made private (/run: records and netns; /tmp: base
#: directories; /etc/netns; /sys: links of this network namespace), then a
#: guard checks that no lab of the machine is visible before the driver runs:
#: `down --all` there can only see, and remove, the labs made there. Without
#: /tmp and the pid namespace, `down --all` would take other runs' base
#: directories for orphans (learned the hard way); the guard makes any such
#: gap stop the test instead.
_SANDBOX = r"""
set -eu
mount -t tmpfs -o mode=0755 rx-sandbox /run
# The repository (perhaps a copy under /tmp) stays reachable at /run/rx-src.
mkdir /run/rx-src
mount --bind "$1" /run/rx-src
mount -t tmpfs -o mode=1777 rx-sandbox /tmp
mkdir -p /etc/netns
mount -t tmpfs -o mode=0755 rx-sandbox /etc/netns
mount -t sysfs rx-sandbox /sys
ip link set lo up
if [ -n "$(ls -A /tmp; ls -A /etc/netns; ls -A /run | grep -vx -e mount -e rx-src)" ] \
   || [ "$(ls /sys/class/net)" != "lo" ] || [ -n "$(ip netns list)" ] \
   || [ "$(ls /proc | grep -c '^[0-9]')" -gt 5 ]; then
    echo "NOT ISOLATED"; exit 3
fi
export PYTHONPATH=/run/rx-src
exec "$0" /run/rx-src/tests/helpers/lab_cli_sandbox.py
"""


def test_cli_lab_commands_and_down_all_in_a_sandbox(lab):
    """``python -m remoteexec lab up|status|partition|heal|down --stale|--all``
    as a user runs them; ``--all`` also removes a lab whose creator still
    runs, which ``--stale`` keeps."""
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is needed to give down --all a world of its own")
    unshare = ["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc"]
    r = subprocess.run(
        # The machine's python (the lab and its CLI are stdlib only): a venv under
        # /tmp (a CI clone's) is hidden by the sandbox's own /tmp.
        [*unshare, "--propagation", "private", "sh", "-c", _SANDBOX, SYSTEM_PYTHON, str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert "NOT ISOLATED" not in r.stdout, "the sandbox sees the machine's labs: nothing was run"
    lines = [line for line in r.stdout.splitlines() if line.startswith("REPORT ")]
    assert r.returncode == 0 and lines, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(lines[0][len("REPORT ") :])
    steps = report["steps"]
    assert all(s["rc"] == 0 for s in steps.values()), steps
    stale, in_use, stale2 = report["stale"], report["in_use"], report["stale2"]
    status = {s["name"]: s for s in report["status"]}
    assert set(status) == {stale, in_use}, status
    assert status[stale]["stale"] and not status[in_use]["stale"]
    assert len(status[stale]["hosts"]) == 2 and status[stale]["hosts"][0]["sshd_running"]
    assert (report["reach_before"], report["reach_cut"], report["reach_healed"]) == (
        True,
        False,
        True,
    )
    assert report["after_stale"] == [in_use], "--stale keeps a lab in use"
    assert stale in steps["down_stale"]["out"] and in_use not in steps["down_stale"]["out"]
    assert report["before_all"] == sorted([in_use, stale2])
    assert in_use in steps["down_all"]["out"] and stale2 in steps["down_all"]["out"]
    assert report["after_all"] == [], "--all removes every lab, in use or not"
    assert report["netns"] == "" and report["links"] == ["lo"] and report["base_dirs"] == []
    # The machine's own lab (this module's) was out of reach and still works.
    assert os.path.exists("/run/netns/" + lab.hosts[0].netns)
    assert _ok(reach([(None, lab.hosts[0].address)], timeout=5)[(None, lab.hosts[0].address)])
