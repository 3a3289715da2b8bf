"""Implementation of :class:`Lab`: sshd "hosts" in Linux network namespaces on one machine.

See :mod:`remoteexec.lab` for the overview and the choices made.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import socket
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Iterator, List, Optional, Sequence, Set, Tuple, Union

from . import _netns as sys_
from ._netns import LabError

__all__ = ["MASTER", "Lab", "LabError", "LabHost"]

#: Pseudo host name for the root namespace (where the master runs) in partition()/heal().
MASTER = "master"

STATE_DIR = "/run/remoteexec-lab"
DEFAULT_BASE = "/tmp/remoteexec-lab"
ETC_NETNS = "/etc/netns"
NETNS_PREFIX = "rxl-"
BRIDGE_PREFIX = "rxb"
VETH_PREFIX = "rxv"
NFT_ROOT_PREFIX = "rxl_"
NFT_HOST_TABLE = "rxl"
SSH_PORT = 22
MAX_HOSTS = 200
STATE_VERSION = 1

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
_TAG_RE = re.compile(r"^[0-9a-f]{6}$")
_NS_RE = re.compile(r"^rxl-(.+)-(\d+)$")
_AUTO_SUBNET_RANGE = (200, 250)  # second octet of auto-picked 10.X.Y.0/24

HostRef = Union["LabHost", int, str]

#: A private-fs host's own directories: (directory under fs_dir, mode, mount point;
#: None is the login user's home).  /tmp last: the lab's own directory is usually in it.
_PRIVATE_DIRS = (
    ("var_tmp", 0o1777, "/var/tmp"),
    ("run", 0o755, "/run"),
    ("home", 0o700, None),
    ("tmp", 0o1777, "/tmp"),
)

#: Runs in the host's namespaces right before sshd: set the hostname, then (private
#: fs) bind the host's own directories over /var/tmp, /run, home and /tmp.  Sources
#: are reached through a descriptor of the lab directory, which /tmp may cover, and
#: the shared directories (the lab's own: sshd reads its keys there; ``share=``) are
#: bound back at their paths, parents first.
_LAUNCHER = r"""
import ctypes, json, os, socket, sys
hostname, lab, fs, mounts = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
shares = sorted(set(json.loads(sys.argv[5])) | {lab}, key=len)
libc = ctypes.CDLL(None, use_errno=True)
def mount(src, dst, flags):
    if libc.mount(src.encode(), dst.encode(), None, flags, None) != 0:
        err = ctypes.get_errno()
        sys.exit("mount %s on %s: %s" % (src, dst, os.strerror(err)))
if hostname:
    socket.sethostname(hostname)
if fs:
    MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
    mount("none", "/", MS_REC | MS_PRIVATE)
    kept = [(path, os.open(path, os.O_RDONLY | os.O_DIRECTORY)) for path in shares]
    held = "/proc/self/fd/%d/" % dict(kept)[lab]
    for sub, dst in mounts:
        mount(held + fs + "/" + sub, dst, MS_BIND)
    for path, fd in kept:
        os.makedirs(path, exist_ok=True)
        mount("/proc/self/fd/%d" % fd, path, MS_BIND)
    for _, fd in kept:
        os.close(fd)
    os.makedirs("/run/sshd", 0o755, exist_ok=True)
os.execv(sys.argv[6], sys.argv[6:])
"""


def _home(user: str) -> str:
    import pwd

    try:
        return pwd.getpwnam(user).pw_dir or "/root"
    except KeyError:
        return "/root"


@dataclass
class LabHost:
    """One lab host: a network namespace with its own address and sshd.

    ``index`` is the 0-based position in :attr:`Lab.hosts`; ``name`` is ``"h<index+1>"``
    (so ``h1`` has address ``.11``).  ``hostname`` is what ``hostname`` prints in an ssh
    session on this host (each sshd runs in its own UTS namespace when ``unshare`` is
    available).  ``dir`` is the host's private directory (config, keys, pid file, log) and
    ``workdir`` a scratch directory for services run on the host; the ssh session
    environment has ``REMOTEEXEC_LAB``, ``REMOTEEXEC_LAB_HOST`` and ``REMOTEEXEC_LAB_DIR``
    (= ``workdir``).
    """

    index: int
    name: str
    netns: str
    address: str
    user: str
    target: str
    veth: str
    hostname: str
    dir: str
    port: int = SSH_PORT
    sshd_pid: Optional[int] = None
    private_fs: bool = False

    def __hash__(self) -> int:  # usable as a dict key; the namespace name is unique
        return hash(self.netns)

    @property
    def config_file(self) -> str:
        return os.path.join(self.dir, "sshd_config")

    @property
    def pid_file(self) -> str:
        return os.path.join(self.dir, "sshd.pid")

    @property
    def log_file(self) -> str:
        return os.path.join(self.dir, "sshd.log")

    @property
    def host_key_file(self) -> str:
        return os.path.join(self.dir, "ssh_host_ed25519_key")

    @property
    def workdir(self) -> str:
        return os.path.join(self.dir, "work")

    @property
    def fs_dir(self) -> str:
        """Where this host's private /tmp, /var/tmp, /run and home live on the machine."""
        return os.path.join(self.dir, "fs")

    def path(self, path: str) -> str:
        """``path`` as this host sees it, reachable from the master's machine.

        With a private filesystem (the default) a host's /tmp, /var/tmp, /run and home
        are its own: this goes through its sshd's mount namespace
        (``/proc/<sshd pid>/root``), so tests can check from outside what a service
        wrote on the host.  With ``shared_fs=True`` it is ``path`` itself.
        """
        if not self.private_fs:
            return path
        if not self.sshd_pid:
            raise LabError(f"sshd of {self.name} is not running", step="path")
        return f"/proc/{self.sshd_pid}/root/{path.lstrip('/')}"

    def nsexec(self, *argv: str) -> List[str]:
        """``argv`` prefixed with ``ip netns exec <netns>``: run a command on this host."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "netns": self.netns,
            "address": self.address,
            "user": self.user,
            "target": self.target,
            "veth": self.veth,
            "hostname": self.hostname,
            "dir": self.dir,
            "port": self.port,
            "sshd_pid": self.sshd_pid,
            "private_fs": self.private_fs,
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> LabHost:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


# --------------------------------------------------------------------------- state files


def _state_path(name: str) -> str:
    return os.path.join(STATE_DIR, f"{name}.json")


def _ensure_private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


@contextlib.contextmanager
def _state_lock(timeout: float = 30.0) -> Iterator[None]:
    """Machine-wide lock (flock) serialising name/subnet allocation between processes."""
    _ensure_private_dir(STATE_DIR)
    fd = os.open(os.path.join(STATE_DIR, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError(
                        f"could not lock {STATE_DIR}/.lock in {timeout:g} s", step="lock"
                    ) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)


def _write_private(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600."""
    tmp = f"{path}.tmp{os.getpid()}.{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_etc_netns(netns: str, files: Dict[str, str]) -> None:
    """Write /etc/netns/<netns>/<file> (bind-mounted over /etc/<file> by ip netns exec).

    Retried a few times: another lab's teardown may remove an empty /etc/netns at the
    same moment (see :func:`_remove_etc_netns`)."""
    d = os.path.join(ETC_NETNS, netns)
    for attempt in range(5):
        try:
            os.makedirs(d, mode=0o755, exist_ok=True)
            for fname, text in files.items():
                with open(os.path.join(d, fname), "w", encoding="ascii") as f:
                    f.write(text)
            return
        except FileNotFoundError:
            if attempt == 4:
                raise
            time.sleep(0.01)


def _remove_etc_netns(netns: str) -> None:
    shutil.rmtree(os.path.join(ETC_NETNS, netns), ignore_errors=True)
    with contextlib.suppress(OSError):  # only if empty: leave others' entries alone
        os.rmdir(ETC_NETNS)


def _save_state(state: Dict[str, Any]) -> None:
    _ensure_private_dir(STATE_DIR)
    _write_private(_state_path(state["name"]), json.dumps(state, indent=1, sort_keys=True))


def _load_states() -> Dict[str, Dict[str, Any]]:
    states: Dict[str, Dict[str, Any]] = {}
    try:
        entries = os.listdir(STATE_DIR)
    except OSError:
        return states
    for entry in sorted(entries)[:10000]:
        if not entry.endswith(".json"):
            continue
        try:
            with open(os.path.join(STATE_DIR, entry), encoding="utf-8") as f:
                st = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(st, dict) and st.get("name") == entry[: -len(".json")]:
            states[st["name"]] = st
    return states


def _owner_alive(state: Dict[str, Any]) -> bool:
    pid = state.get("owner_pid")
    return bool(pid) and sys_.proc_start_time(pid) == state.get("owner_start")


# --------------------------------------------------------------------------- teardown


def _is_our_sshd(pid: int, h: LabHost) -> bool:
    """Whether ``pid`` is the sshd started for ``h`` (sshd rewrites its argv into one
    string, "sshd: /usr/sbin/sshd -f CONFIG ...", so match the config path in it)."""
    return f"-f {h.config_file} " in " ".join(sys_.proc_cmdline(pid)) + " "


def _destroy(state: Dict[str, Any]) -> List[str]:
    """Remove everything ``state`` describes; missing parts are fine.  Returns leftovers."""
    hosts = [LabHost.from_dict(h) for h in state.get("hosts", [])]
    # 1. Processes: the sshds (from their pid files, checked against the command line so
    #    a recycled pid is never hit) and whatever else runs in the lab's namespaces
    #    (ssh sessions and the services they started).
    pids: Set[int] = set()
    for h in hosts:
        for pid in (sys_.read_pid_file(h.pid_file), h.sshd_pid):
            if pid and _is_our_sshd(pid, h):
                pids.add(pid)
        pids.update(sys_.netns_pids(h.netns))
    left = sys_.kill_pids(pids)
    problems = [f"process {p} did not exit" for p in left]
    # 2. Root-namespace nftables table used for cutting the master off.
    if state.get("root_nft"):
        table = NFT_ROOT_PREFIX + state["tag"]
        res = sys_.run(
            "down: nft", ["nft", "delete", "table", "inet", table], check=False, timeout=10
        )
        if res.returncode != 0 and "No such file" not in res.stderr:
            problems.append(f"nft table inet {table}: {res.stderr.strip()}")
    # 3. Links and namespaces (deleting the root end of a veth removes both ends at once;
    #    a namespace's own teardown in the kernel is asynchronous).
    cmds = [f"link del {h.veth}" for h in hosts if sys_.link_exists(h.veth)]
    cmds += [f"netns del {h.netns}" for h in hosts if sys_.netns_exists(h.netns)]
    bridge = state.get("bridge")
    if bridge and sys_.link_exists(bridge):
        cmds.append(f"link del {bridge}")
    if cmds:
        with contextlib.suppress(LabError):
            sys_.ip_batch("down: links and namespaces", cmds, force=True)
    # 4. Files.
    for h in hosts:
        _remove_etc_netns(h.netns)
    base = state.get("base_dir")
    if base and state.get("base_created"):
        shutil.rmtree(base, ignore_errors=True)
    elif base and state.get("base_used") and os.path.isdir(base):
        # A caller-supplied directory that was empty at up(): empty it again, keep it.
        for entry in os.listdir(base)[:10000]:
            path = os.path.join(base, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)
    # 5. Verify.
    for h in hosts:
        if sys_.netns_exists(h.netns):
            problems.append(f"netns {h.netns} still exists")
        if sys_.link_exists(h.veth):
            problems.append(f"link {h.veth} still exists")
    if bridge and sys_.link_exists(bridge):
        problems.append(f"bridge {bridge} still exists")
    if base and state.get("base_created") and os.path.exists(base):
        problems.append(f"directory {base} still exists")
    return problems


def _scan_debris() -> Dict[str, List[str]]:
    """Lab-made things in the system, by kind (names only; not matched to states)."""
    netns = [n for n in sys_.list_netns() if _NS_RE.match(n)]
    links = [
        n
        for n in sys_.list_links()
        if (n.startswith(BRIDGE_PREFIX) and _TAG_RE.match(n[len(BRIDGE_PREFIX) :]))
        or (n.startswith(VETH_PREFIX) and _TAG_RE.match(n[len(VETH_PREFIX) : len(VETH_PREFIX) + 6]))
    ]
    try:
        etc = [n for n in os.listdir(ETC_NETNS) if _NS_RE.match(n)]
    except OSError:
        etc = []
    try:
        bases = sorted(os.listdir(DEFAULT_BASE))
    except OSError:
        bases = []
    return {"netns": netns, "links": links, "etc": etc, "base": bases}


def _known(states: Dict[str, Dict[str, Any]]) -> Dict[str, Set[str]]:
    known: Dict[str, Set[str]] = {"netns": set(), "links": set(), "tags": set(), "base": set()}
    for name, st in states.items():
        known["tags"].add(st.get("tag", ""))
        known["links"].add(st.get("bridge", ""))
        base = st.get("base_dir") or ""
        if os.path.dirname(base) == DEFAULT_BASE:
            known["base"].add(os.path.basename(base))
        known["base"].add(name)
        for h in st.get("hosts", []):
            known["netns"].add(h.get("netns", ""))
            known["links"].add(h.get("veth", ""))
    return known


def _orphans(
    debris: Dict[str, List[str]], states: Dict[str, Dict[str, Any]]
) -> Dict[str, List[str]]:
    known = _known(states)
    return {
        "netns": [n for n in debris["netns"] if n not in known["netns"]],
        "etc": [n for n in debris["etc"] if n not in known["netns"]],
        "links": [n for n in debris["links"] if n not in known["links"]],
        "base": [n for n in debris["base"] if n not in known["base"]],
    }


# --------------------------------------------------------------------------- the lab


class Lab:
    """A multi-host lab on one Linux machine: each host is a network namespace running
    its own sshd, all attached to one bridge in the root namespace.

    Topology: bridge ``rxb<tag>`` with the gateway address ``10.A.B.1/24`` (the master,
    i.e. the root namespace, talks to the hosts through it); host *i* (0-based) is
    namespace ``rxl-<name>-<i+1>`` with ``eth0`` = ``10.A.B.(11+i)/24``, ``lo`` up and a
    default route via the gateway.  No NAT and no forwarding to the outside: hosts reach
    each other and the root namespace only (an nftables table ``inet rxl_<tag>`` in the
    root namespace rejects routing between the bridge and anything else, which matters
    on machines with ``ip_forward=1``).  IPv6 is not configured (no link-local
    addresses), so partitions cannot be bypassed over IPv6.  Each host gets
    ``/etc/netns/<netns>/hosts`` (all lab hosts by name, e.g. ``h2``) and an empty
    ``resolv.conf`` (DNS fails at once instead of timing out), which ``ip netns exec``
    bind-mounts over ``/etc`` for the sshd and everything started through it.

    Each sshd has its own ed25519 host key; clients use :attr:`identity_file` and
    :attr:`known_hosts_file` (strict host key checking stays on).  Keys, configs and
    state are 0600, directories 0700.

    Lifetime: :meth:`up` records the lab in ``/run/remoteexec-lab/<name>.json`` *before*
    creating anything and :meth:`down` removes that record last, so a crash at any point
    leaves something :meth:`stale` / :meth:`down_stale` can find.  A lab is torn down at
    interpreter exit (``atexit``) by the process that created it unless :meth:`detach`
    was called (``python -m remoteexec.lab up`` does that).  Deleting the Lab object does
    *not* tear the lab down.

    Partitions are silent: nftables ``drop`` rules on the *input* hook of the receiving
    side (never reject, never local-output drops, which would give the sender EPERM, and
    never blackhole routes, which make ``connect()`` fail at once with EINVAL).  So a new
    TCP connection times out, an established one (ssh, mitogen) just stalls, and after
    :meth:`heal` the same connection carries on once TCP retransmits.

    Needs root, Linux, iproute2, ``/usr/sbin/sshd``, ``ssh-keygen``; ``nft`` for
    partitions; ``unshare`` (optional) for per-host hostnames.  See :meth:`available`.
    """

    MASTER = MASTER

    _available: Optional[Tuple[bool, str]] = None
    _atexit_labs: Set[Lab] = set()
    _atexit_pid: Optional[int] = None
    _class_lock = threading.Lock()

    def __init__(
        self,
        hosts: int = 3,
        name: Optional[str] = None,
        subnet: Optional[str] = None,
        base_dir: Optional[str] = None,
        user: str = "root",
        *,
        ready_timeout: float = 10.0,
        shared_fs: bool = False,
        share: Sequence[str] = (),
    ) -> None:
        """Describe a lab; nothing is created until :meth:`up`.

        ``hosts``: 1..200.  ``name``: unique on the machine (letters, digits, ``_.-``, up
        to 40 chars); default a random 6-hex-digit name.  ``subnet``: an IPv4 network
        (e.g. ``"10.9.8.0/24"``) with room for the gateway (first address) and hosts
        (from the 11th address on); default: a free ``10.X.Y.0/24`` with X in 200..250,
        not overlapping any address or route on the machine nor another lab.
        ``base_dir``: where keys, configs and logs go; default
        ``/tmp/remoteexec-lab/<name>``; must not exist or be empty (:meth:`down`
        deletes it, or only empties it if it existed before).  ``user``: login user in
        :attr:`targets`.  ``ready_timeout``: seconds to wait for each sshd to accept TCP.
        ``shared_fs``: by default each host has its own /tmp, /var/tmp, /run and home
        directory (a mount namespace for its sshd, so for everything started through
        it), so a file a service writes on a host is not visible on the master at the
        same path (see :meth:`LabHost.path`); ``True`` shares the machine's, to hand
        files to hosts through the filesystem.  ``share``: directories that every host
        sees at the same path even where they lie under a private one (a project
        checkout under /tmp whose scripts the hosts run, as a machine installed
        alike would have them); they must exist.
        """
        if not isinstance(hosts, int) or not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"hosts must be an int in 1..{MAX_HOSTS}, got {hosts!r}")
        if name is not None and not _NAME_RE.match(name):
            raise ValueError(f"bad lab name {name!r}: use [A-Za-z0-9_.-], up to 40 chars")
        self._want_hosts = hosts
        self._want_name = name
        self._want_subnet = subnet
        self._want_base = base_dir
        self.user = user
        self.ready_timeout = float(ready_timeout)
        self.shared_fs = bool(shared_fs)
        self.share = [os.path.abspath(os.fspath(p)) for p in share]
        for path in self.share:
            if not os.path.isdir(path):
                raise ValueError(f"share: {path!r} is not a directory")
        self.name: Optional[str] = name
        self.tag: Optional[str] = None
        self.subnet: Optional[str] = None
        self.gateway: Optional[str] = None
        self.bridge: Optional[str] = None
        self.base_dir: Optional[str] = None
        self.hosts: List[LabHost] = []
        self.timings: Dict[str, float] = {}
        self._state: Optional[Dict[str, Any]] = None
        self._cuts: Set[FrozenSet[str]] = set()
        self._is_up = False
        self._owner_pid: Optional[int] = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ properties

    def __repr__(self) -> str:
        status = "up" if self._is_up else "down"
        return f"<Lab {self.name or '?'} {status} hosts={self._want_hosts} subnet={self.subnet}>"

    @property
    def is_up(self) -> bool:
        return self._is_up

    def _need_up(self) -> None:
        if not self._is_up:
            raise LabError("lab is not up; call up() first", step=f"lab {self.name}")

    def _path(self, name: str) -> str:
        if self.base_dir is None:
            raise LabError("lab is not up; call up() first", step=f"lab {self.name}")
        return os.path.join(self.base_dir, name)

    @property
    def targets(self) -> List[str]:
        """``["root@10.A.B.11", ...]``, one per host, in host order."""
        self._need_up()
        return [h.target for h in self.hosts]

    @property
    def identity_file(self) -> str:
        """The client's private ed25519 key (0600), authorized on every host."""
        return self._path("id_ed25519")

    @property
    def known_hosts_file(self) -> str:
        """known_hosts with every host's key, as ``ADDR KEY`` and ``[ADDR]:22 KEY``."""
        return self._path("known_hosts")

    @property
    def authorized_keys_file(self) -> str:
        return self._path("authorized_keys")

    @property
    def ssh_args(self) -> List[str]:
        """Extra ssh options a client should use (host keys from this lab only)."""
        return [
            "-o",
            f"UserKnownHostsFile={self.known_hosts_file}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ]

    def ssh_command(self, host: HostRef, *command: str, connect_timeout: int = 5) -> List[str]:
        """Full ``ssh`` argv to run ``command`` on ``host`` with the system client
        (key auth only, ``BatchMode=yes``, ``StrictHostKeyChecking=yes``)."""
        h = self.host(host)
        return [
            "ssh",
            "-i",
            self.identity_file,
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"ConnectTimeout={connect_timeout}",
            *self.ssh_args,
            "-p",
            str(h.port),
            h.target,
            *command,
        ]

    def host(self, ref: HostRef) -> LabHost:
        """Find a host by LabHost, 0-based index, address, target, name (``h1``),
        hostname or netns name."""
        if isinstance(ref, LabHost):
            for h in self.hosts:
                if h.netns == ref.netns:
                    return h
            raise LabError(f"host {ref.name} ({ref.netns}) is not in lab {self.name}")
        if isinstance(ref, int) and not isinstance(ref, bool):
            if 0 <= ref < len(self.hosts):
                return self.hosts[ref]
            raise LabError(f"host index {ref} out of range (lab {self.name} has {len(self.hosts)})")
        if isinstance(ref, str):
            for h in self.hosts:
                if ref in (h.address, h.target, h.name, h.hostname, h.netns):
                    return h
        raise LabError(f"no host {ref!r} in lab {self.name}")

    # ------------------------------------------------------------------ requirements

    @classmethod
    def available(cls, refresh: bool = False) -> Tuple[bool, str]:
        """``(True, note)`` if labs can be built here, else ``(False, why)``.

        Checks: Linux, root, ``ip``, ``ssh-keygen``, ``/usr/sbin/sshd``, and that a
        network namespace can actually be created (a probe namespace is added and
        deleted).  A missing ``nft`` only disables :meth:`partition` (said in the note).
        The result is cached per process unless ``refresh``.
        """
        with cls._class_lock:
            if cls._available is None or refresh:
                cls._available = cls._check_available()
            return cls._available

    @staticmethod
    def _check_available() -> Tuple[bool, str]:
        if not sys.platform.startswith("linux"):
            return False, f"remoteexec.lab needs Linux (this is {sys.platform})"
        if os.geteuid() != 0:
            return False, "remoteexec.lab needs root (network namespaces, sshd)"
        for tool in ("ip", "ssh-keygen"):
            if shutil.which(tool) is None:
                return False, f"{tool} not found in PATH (install iproute2 / openssh-client)"
        if not os.access(sys_.SSHD, os.X_OK):
            return False, f"{sys_.SSHD} not found (install openssh-server)"
        probe = f"{NETNS_PREFIX}_probe{secrets.token_hex(3)}-0"
        try:
            sys_.run("probe", ["ip", "netns", "add", probe], timeout=10)
        except LabError as exc:
            return False, f"cannot create a network namespace: {exc}"
        finally:
            if sys_.netns_exists(probe):
                sys_.run("probe", ["ip", "netns", "del", probe], check=False, timeout=10)
        notes = []
        if shutil.which("nft") is None:
            notes.append("nft not found: partition() unavailable")
        if shutil.which("unshare") is None:
            notes.append("unshare not found: hosts share the machine's hostname")
        return True, "; ".join(notes) or "ok"

    # ------------------------------------------------------------------ up

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.down()
            return
        try:
            self.down()
        except LabError as err:  # don't hide the exception that is propagating
            warnings.warn(f"lab teardown incomplete: {err}", RuntimeWarning, stacklevel=2)

    def up(self) -> Lab:
        """Create the lab and start every sshd; return ``self``.

        Does nothing if already up.  On any failure it tears down what it created and
        raises :class:`LabError` naming the step, the command and its stderr.
        """
        with self._lock:
            if self._is_up:
                return self
            ok, why = Lab.available()
            if not ok:
                raise LabError(why, step="check requirements")
            t0 = time.monotonic()
            self.timings = {}
            state = self._allocate()
            self.timings["allocate"] = time.monotonic() - t0
            try:
                self._create(state)
            except BaseException as exc:
                self._fail_cleanup(state, exc)
                if isinstance(exc, LabError) or not isinstance(exc, Exception):
                    raise
                raise LabError(f"{type(exc).__name__}: {exc}", step="up") from exc
            self._is_up = True
            state["status"] = "up"
            _save_state(state)
            self._register_atexit()
            self.timings["total"] = time.monotonic() - t0
            return self

    def _fail_cleanup(self, state: Dict[str, Any], exc: BaseException) -> None:
        """Undo a failed up(); keep the state record only if something is left."""
        try:
            problems = _destroy(state)
        except Exception as err:
            problems = [f"{type(err).__name__}: {err}"]
        if not problems:
            with contextlib.suppress(OSError):
                os.unlink(_state_path(state["name"]))
            self._state = None
        elif isinstance(exc, LabError):
            exc.message += f" (cleanup left: {'; '.join(problems)})"
            exc.args = (exc._render(),)

    def _allocate(self) -> Dict[str, Any]:
        """Pick name, tag and subnet under the machine-wide lock and record the plan."""
        with _state_lock():
            states = _load_states()
            links = set(sys_.list_links())
            tags = {s.get("tag") for s in states.values()}
            tag = ""
            for _ in range(1000):
                tag = secrets.token_hex(3)
                if tag not in tags and BRIDGE_PREFIX + tag not in links:
                    break
            name = self._want_name or tag
            if name in states or os.path.exists(_state_path(name)):
                raise LabError(f"a lab named {name!r} already exists", step="allocate")
            if any((m := _NS_RE.match(ns)) and m.group(1) == name for ns in sys_.list_netns()):
                raise LabError(f"namespaces of a lab named {name!r} exist", step="allocate")
            net = self._pick_subnet(states)
            base = self._want_base or os.path.join(DEFAULT_BASE, name)
            base = os.path.abspath(base)
            if os.path.isdir(base) and os.listdir(base):
                raise LabError(f"base_dir {base} exists and is not empty", step="allocate")
            gateway = str(net.network_address + 1)
            hosts = []
            for i in range(self._want_hosts):
                addr = str(net.network_address + 11 + i)
                hname = f"h{i + 1}"
                hosts.append(
                    LabHost(
                        index=i,
                        name=hname,
                        netns=f"{NETNS_PREFIX}{name}-{i + 1}",
                        address=addr,
                        user=self.user,
                        target=f"{self.user}@{addr}",
                        veth=f"{VETH_PREFIX}{tag}{i}",
                        hostname=f"{name}-{hname}"[:63],
                        dir=os.path.join(base, hname),
                        private_fs=not self.shared_fs,
                    )
                )
            state = {
                "version": STATE_VERSION,
                "name": name,
                "tag": tag,
                "subnet": str(net),
                "gateway": gateway,
                "bridge": BRIDGE_PREFIX + tag,
                "base_dir": base,
                "base_created": False,
                "root_nft": shutil.which("nft") is not None,
                "user": self.user,
                "owner_pid": os.getpid(),
                "owner_start": sys_.proc_start_time(os.getpid()),
                "owner_argv": sys.argv[:8],
                "created": time.time(),
                "detached": False,
                "status": "creating",
                "shared_fs": self.shared_fs,
                "cuts": [],
                "hosts": [h.to_dict() for h in hosts],
            }
            _save_state(state)
        self._adopt(state)
        return state

    def _pick_subnet(self, states: Dict[str, Dict[str, Any]]) -> ipaddress.IPv4Network:
        used = sys_.used_ipv4_networks()
        for st in states.values():
            with contextlib.suppress(KeyError, ValueError):
                used.append(ipaddress.IPv4Network(st["subnet"]))
        if self._want_subnet is not None:
            try:
                net = ipaddress.IPv4Network(str(self._want_subnet), strict=False)
            except ValueError as exc:
                raise LabError(f"bad subnet {self._want_subnet!r}: {exc}", step="allocate") from exc
            if net.num_addresses < 11 + self._want_hosts + 1:
                raise LabError(
                    f"subnet {net} too small for {self._want_hosts} hosts", step="allocate"
                )
            clash = [str(u) for u in used if u.overlaps(net)]
            if clash:
                raise LabError(f"subnet {net} overlaps {', '.join(clash)}", step="allocate")
            return net
        lo, hi = _AUTO_SUBNET_RANGE
        candidates = (hi - lo + 1) * 256
        start = random.randrange(candidates)
        for k in range(candidates):
            n = (start + k) % candidates
            net = ipaddress.IPv4Network(f"10.{lo + n // 256}.{n % 256}.0/24")
            if not any(u.overlaps(net) for u in used):
                return net
        raise LabError("no free 10.X.Y.0/24 subnet left", step="allocate")

    def _adopt(self, state: Dict[str, Any]) -> None:
        """Set this object's attributes from a state record."""
        self._state = state
        self.name = state["name"]
        self.tag = state["tag"]
        self.subnet = state["subnet"]
        self.gateway = state["gateway"]
        self.bridge = state["bridge"]
        self.base_dir = state["base_dir"]
        self.user = state.get("user", self.user)
        self.shared_fs = bool(state.get("shared_fs", False))
        self.hosts = [LabHost.from_dict(h) for h in state["hosts"]]
        self._cuts = {frozenset(c) for c in state.get("cuts", [])}

    def _create(self, state: Dict[str, Any]) -> None:
        t = time.monotonic()
        base = state["base_dir"]
        parent = os.path.dirname(base)
        if parent == DEFAULT_BASE:
            _ensure_private_dir(parent)
        else:
            os.makedirs(parent, exist_ok=True)
        existed = os.path.isdir(base)
        _ensure_private_dir(base)
        state["base_created" if not existed else "base_used"] = True
        _save_state(state)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        for h in self.hosts:
            _ensure_private_dir(h.dir)
            _ensure_private_dir(h.workdir)
            if h.private_fs:
                for sub, mode, _ in _PRIVATE_DIRS:
                    path = os.path.join(h.fs_dir, sub)
                    os.makedirs(path, exist_ok=True)
                    os.chmod(path, mode)
        workers = min(16, len(self.hosts) + 1)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rxlab") as pool:
            # Key generation does not depend on the network: start it first.
            key = os.path.join(base, "id_ed25519")
            client_key = pool.submit(self._keygen, "client key", key, f"remoteexec-lab-{self.name}")
            host_keys = [
                pool.submit(self._keygen, f"host key {h.name}", h.host_key_file, h.hostname)
                for h in self.hosts
            ]
            self._create_network(state)
            self.timings["network"] = time.monotonic() - t
            pub = client_key.result()
            _write_private(os.path.join(base, "authorized_keys"), pub + "\n")
            for f in host_keys:
                f.result()
            starts = [pool.submit(self._start_host, h) for h in self.hosts]
            errors = []
            for f in starts:
                try:
                    f.result()
                except BaseException as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]
        self.timings["sshd"] = time.monotonic() - t - self.timings["network"]
        lines = []
        for h in self.hosts:
            with open(h.host_key_file + ".pub", encoding="ascii") as f:
                key_type, key_b64 = f.read().split()[:2]
            lines.append(f"{h.address} {key_type} {key_b64}")
            lines.append(f"[{h.address}]:{h.port} {key_type} {key_b64}")
        _write_private(os.path.join(base, "known_hosts"), "\n".join(lines) + "\n")
        state["hosts"] = [h.to_dict() for h in self.hosts]

    @staticmethod
    def _keygen(step: str, path: str, comment: str) -> str:
        for p in (path, path + ".pub"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        sys_.run(step, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
        os.chmod(path, 0o600)
        os.chmod(path + ".pub", 0o600)
        with open(path + ".pub", encoding="ascii") as f:
            return f.read().strip()

    def _create_network(self, state: Dict[str, Any]) -> None:
        net = ipaddress.IPv4Network(state["subnet"])
        bridge = state["bridge"]
        cmds = [f"netns add {h.netns}" for h in self.hosts]
        cmds += [
            f"link add {bridge} type bridge",
            f"link set {bridge} addrgenmode none",
            f"addr add {state['gateway']}/{net.prefixlen} dev {bridge}",
            f"link set {bridge} up",
        ]
        for h in self.hosts:
            cmds.append(f"link add {h.veth} type veth peer name eth0 netns {h.netns}")
            cmds.append(f"link set {h.veth} addrgenmode none master {bridge} up")
        sys_.ip_batch("create namespaces and bridge", cmds)
        for h in self.hosts:
            sys_.ip_batch(
                f"configure {h.name} network",
                [
                    "link set lo up",
                    "link set eth0 addrgenmode none",
                    f"addr add {h.address}/{net.prefixlen} dev eth0",
                    "link set eth0 up",
                    f"route add default via {state['gateway']}",
                ],
                netns=h.netns,
            )
        # Per-host /etc/hosts (ip netns exec bind-mounts /etc/netns/<ns>/hosts).
        hosts_text = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        hosts_text += f"127.0.1.1\t{socket.gethostname()}\n"
        hosts_text += f"{state['gateway']}\t{self.name}-gw\n"
        hosts_text += "".join(f"{h.address}\t{h.hostname} {h.name}\n" for h in self.hosts)
        # No DNS inside: with no nameserver line glibc asks 127.0.0.1, which refuses at
        # once (instead of a 10 s timeout on the machine's unreachable resolver).
        resolv_text = "# remoteexec.lab: no DNS inside lab hosts; names are in /etc/hosts\n"
        resolv_text += "options timeout:1 attempts:1\n"
        for h in self.hosts:
            _write_etc_netns(h.netns, {"hosts": hosts_text, "resolv.conf": resolv_text})
        if state.get("root_nft"):
            sys_.nft_apply("nft table in the root namespace", self._root_nft_script([]))

    def _root_nft_script(self, cut_addrs: List[str]) -> str:
        """The lab's table in the root namespace: no routing between the lab and the
        outside (matters where ip_forward=1; bridged host-to-host traffic has the bridge
        as both in- and out-interface and passes), plus the master's side of cuts."""
        table = NFT_ROOT_PREFIX + (self.tag or "")
        br = self.bridge
        forward = [
            f'iifname "{br}" oifname != "{br}" reject with icmpx type admin-prohibited',
            f'oifname "{br}" iifname != "{br}" drop',
        ]
        chains = {"forward": forward}
        if cut_addrs:
            chains["input"] = [f"ip saddr {{ {', '.join(cut_addrs)} }} drop"]
        return _nft(table, chains)

    def _sshd_config(self, h: LabHost) -> str:
        def q(s: str) -> str:
            return '"' + s.replace('"', "") + '"'

        return "\n".join(
            [
                "# written by remoteexec.lab",
                f"ListenAddress {h.address}:{h.port}",
                f"HostKey {q(h.host_key_file)}",
                f"PidFile {q(h.pid_file)}",
                f"AuthorizedKeysFile {q(self.authorized_keys_file)}",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UseDNS no",
                "PrintMotd no",
                "PrintLastLog no",
                "MaxStartups 200:30:400",
                "MaxSessions 200",
                "AcceptEnv LANG LC_*",
                "Subsystem sftp internal-sftp",
                f"SetEnv REMOTEEXEC_LAB={q(self.name or '')} REMOTEEXEC_LAB_HOST={h.name} "
                f"REMOTEEXEC_LAB_DIR={q(h.workdir)}",
                "LogLevel INFO",
                "",
            ]
        )

    def _start_host(self, h: LabHost) -> None:
        _write_private(h.config_file, self._sshd_config(h))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(h.pid_file)
        sshd = [sys_.SSHD, "-f", h.config_file, "-E", h.log_file]
        # `ip netns exec` already gives the sshd a mount namespace of its own; the
        # launcher makes its mounts private there, then execs sshd (which daemonizes).
        launch = [
            sys.executable,
            "-I",
            "-S",
            "-c",
            _LAUNCHER,
            h.hostname if shutil.which("unshare") else "",
            self.base_dir or "",
            os.path.relpath(h.fs_dir, self.base_dir or "/") if h.private_fs else "",
            json.dumps([[sub, dst or _home(self.user)] for sub, _, dst in _PRIVATE_DIRS]),
            json.dumps(self.share),
            *sshd,
        ]
        if shutil.which("unshare"):
            # Own UTS namespace so `hostname` differs per host.
            argv = h.nsexec("unshare", "--uts", "--", *launch)
        else:
            argv = h.nsexec(*launch)
        try:
            sys_.run(f"start sshd on {h.name}", argv, timeout=10)
        except LabError as exc:
            exc.stderr = (exc.stderr or "") + self._log_tail(h)
            exc.args = (exc._render(),)
            raise
        deadline = time.monotonic() + self.ready_timeout
        pid = None
        for _ in range(100000):
            pid = pid or sys_.read_pid_file(h.pid_file)
            if pid is not None:
                if not sys_.proc_alive(pid):
                    raise LabError(
                        f"sshd (pid {pid}) exited",
                        step=f"wait for sshd on {h.name}",
                        stderr=self._log_tail(h),
                    )
                if sys_.tcp_ready(h.address, h.port, timeout=0.25):
                    break
            if time.monotonic() > deadline:
                raise LabError(
                    f"sshd not accepting on {h.address}:{h.port} after {self.ready_timeout:g} s",
                    step=f"wait for sshd on {h.name}",
                    stderr=self._log_tail(h),
                )
            time.sleep(0.005)
        h.sshd_pid = pid

    @staticmethod
    def _log_tail(h: LabHost, limit: int = 2000) -> str:
        try:
            with open(h.log_file, encoding="utf-8", errors="replace") as f:
                text = f.read()[-limit:]
        except OSError:
            return ""
        return f"\n--- {h.log_file} ---\n{text}" if text else ""

    # ------------------------------------------------------------------ down

    def down(self) -> None:
        """Tear the lab down: kill its sshds and every process inside its namespaces,
        delete namespaces, veths, bridge, nftables table, ``/etc/netns`` entries,
        ``base_dir`` (only if the lab created it) and finally the state record.

        Missing parts are fine (never raises for those); calling it twice is fine.  If
        something could not be removed, the state record is kept (so
        :meth:`down_stale` can retry) and :class:`LabError` lists the leftovers.
        """
        with self._lock:
            state = self._state
            self._unregister_atexit()
            if state is None:
                return
            t0 = time.monotonic()
            problems = _destroy(state)
            self._is_up = False
            self._cuts = set()
            self.timings["down"] = time.monotonic() - t0
            if problems:
                raise LabError("teardown incomplete: " + "; ".join(problems), step="down")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_state_path(state["name"]))
            self._state = None

    def detach(self) -> Lab:
        """Let the lab outlive this process (no teardown at interpreter exit).

        It then counts as stale once this process exits; remove it with
        ``Lab.attach(name).down()``, ``python -m remoteexec.lab down NAME`` or
        :meth:`down_stale`.
        """
        with self._lock:
            self._need_up()
            self._unregister_atexit()
            assert self._state is not None
            self._state["detached"] = True
            _save_state(self._state)
        return self

    def _register_atexit(self) -> None:
        with Lab._class_lock:
            self._owner_pid = os.getpid()
            Lab._atexit_labs.add(self)
            if Lab._atexit_pid != os.getpid():  # once per process (also after a fork)
                atexit.register(Lab._atexit_down)
                Lab._atexit_pid = os.getpid()

    def _unregister_atexit(self) -> None:
        with Lab._class_lock:
            Lab._atexit_labs.discard(self)

    @staticmethod
    def _atexit_down() -> None:
        for lab in list(Lab._atexit_labs):
            if lab._owner_pid == os.getpid():  # a forked child leaves its parent's labs
                with contextlib.suppress(Exception):
                    lab.down()

    # ------------------------------------------------------------------ partitions

    @property
    def cuts(self) -> List[Tuple[str, str]]:
        """Current cuts as sorted pairs of host names (or ``"master"``)."""
        return sorted(tuple(sorted(c)) for c in self._cuts)  # type: ignore[misc]

    def _node(self, ref: Any) -> str:
        if ref == MASTER:
            return MASTER
        return self.host(ref).name

    def partition(self, a: HostRef, b: Optional[HostRef] = None) -> None:
        """Silently cut traffic both ways between ``a`` and ``b``.

        ``a``/``b``: a LabHost, 0-based index, address, target or name; ``b`` may be
        ``Lab.MASTER`` (``"master"``) for the root namespace, where the master runs.
        ``b=None`` cuts ``a`` from every other host *and* the master.  Cuts add up
        until :meth:`heal`.  Packets are dropped (nftables, input hook, on both sides),
        so peers see timeouts, never resets or ICMP errors.
        """
        with self._lock:
            self._need_up()
            self._reload_cuts()
            na = self._node(a)
            if na == MASTER:
                raise LabError("partition(a, b): a must be a host", step="partition")
            if b is None:
                peers = [h.name for h in self.hosts if h.name != na] + [MASTER]
            else:
                nb = self._node(b)
                if nb == na:
                    raise LabError(f"cannot partition {na} from itself", step="partition")
                peers = [nb]
            new = {frozenset((na, p)) for p in peers}
            self._apply(self._cuts | new)

    def heal(self, a: Optional[HostRef] = None, b: Optional[HostRef] = None) -> None:
        """Remove cuts: all of them (no arguments), those involving ``a`` (only ``a``),
        or the one between ``a`` and ``b``.  Established connections resume once TCP
        retransmits (its backoff may add up to a few seconds)."""
        with self._lock:
            self._need_up()
            self._reload_cuts()
            if a is None:  # everything, also re-applied where we think nothing is cut
                self._apply(set(), force=True)
                return
            if b is None:
                na = self._node(a)
                keep = {c for c in self._cuts if na not in c}
            else:
                pair = frozenset((self._node(a), self._node(b)))
                keep = {c for c in self._cuts if c != pair}
            self._apply(keep)

    def _reload_cuts(self) -> None:
        """Pick up cuts made through another Lab object (e.g. the CLI) on this lab."""
        try:
            with open(_state_path(self.name or ""), encoding="utf-8") as f:
                cuts = json.load(f).get("cuts", [])
            self._cuts = {frozenset(c) for c in cuts}
        except (OSError, ValueError, TypeError, AttributeError):
            pass

    def _apply(self, cuts: Set[FrozenSet[str]], force: bool = False) -> None:
        assert self._state is not None
        changed = cuts ^ self._cuts
        affected = {n for c in changed for n in c}
        if force:
            affected = {h.name for h in self.hosts}
            if self._state.get("root_nft"):
                affected.add(MASTER)
        if not affected:
            return
        if shutil.which("nft") is None:
            raise LabError("nft not found; partitions need nftables", step="partition")
        by_name = {h.name: h for h in self.hosts}
        net = self.subnet
        for node in sorted(affected):
            peers = sorted(p for c in cuts if node in c for p in c if p != node)
            if node == MASTER:
                addrs = [by_name[p].address for p in peers]
                sys_.nft_apply("partition: nft in the root namespace", self._root_nft_script(addrs))
            else:
                rules = ['iifname "lo" accept']
                if MASTER in peers:
                    rules.append(f"ip saddr != {net} drop")
                    rules.append(f"ip saddr {self.gateway} drop")
                addrs = [by_name[p].address for p in peers if p != MASTER]
                if addrs:
                    rules.append(f"ip saddr {{ {', '.join(addrs)} }} drop")
                if len(rules) == 1:
                    rules = []
                h = by_name[node]
                sys_.nft_apply(
                    f"partition: nft in {h.name} ({h.netns})",
                    _nft(NFT_HOST_TABLE, {"input": rules} if rules else {}),
                    netns=h.netns,
                )
        self._cuts = set(cuts)
        self._state["cuts"] = [sorted(c) for c in self._cuts]
        _save_state(self._state)

    # ------------------------------------------------------------------ machine-wide

    @classmethod
    def attach(cls, name: str) -> Lab:
        """A Lab object for an existing lab (e.g. one started by ``python -m
        remoteexec.lab up``), from its state record.  It can partition/heal/down it; it
        does not become its owner (no teardown at exit)."""
        try:
            with open(_state_path(name), encoding="utf-8") as f:
                state = json.load(f)
        except (OSError, ValueError) as exc:
            raise LabError(f"no lab named {name!r} ({exc})", step="attach") from exc
        lab = cls(hosts=max(1, len(state.get("hosts", [])) or 1), name=state["name"])
        lab._adopt(state)
        lab._is_up = state.get("status") == "up"
        return lab

    @classmethod
    def status(cls) -> List[Dict[str, Any]]:
        """Every lab recorded on the machine, with liveness: ``owner_alive``, ``stale``,
        and per host whether its sshd is running."""
        out = []
        for name, st in sorted(_load_states().items()):
            alive = _owner_alive(st)
            hosts = []
            for h in st.get("hosts", []):
                lh = LabHost.from_dict(h)
                pid = sys_.read_pid_file(lh.pid_file)
                running = bool(pid) and _is_our_sshd(pid or 0, lh)
                hosts.append({**lh.to_dict(), "sshd_running": running})
            out.append(
                {
                    "name": name,
                    "status": st.get("status"),
                    "subnet": st.get("subnet"),
                    "bridge": st.get("bridge"),
                    "base_dir": st.get("base_dir"),
                    "owner_pid": st.get("owner_pid"),
                    "owner_alive": alive,
                    "detached": st.get("detached", False),
                    "stale": not alive,
                    "created": st.get("created"),
                    "cuts": st.get("cuts", []),
                    "identity_file": os.path.join(st.get("base_dir", ""), "id_ed25519"),
                    "known_hosts_file": os.path.join(st.get("base_dir", ""), "known_hosts"),
                    "targets": [h["target"] for h in hosts],
                    "hosts": hosts,
                }
            )
        return out

    @classmethod
    def stale(cls) -> List[str]:
        """Names of stale labs: recorded labs whose creating process is gone (it crashed,
        was killed, exited without down(), or was ``python -m remoteexec.lab up``, which
        detaches on purpose) plus leftovers with no record (namespaces ``rxl-<name>-<n>``
        reported by their lab name; bridges/veths ``rxb<tag>``/``rxv<tag>…`` and
        ``/tmp/remoteexec-lab/<dir>`` reported by their own name)."""
        debris = _scan_debris()  # scan first: a lab records itself before creating things
        states = _load_states()
        names = [n for n, st in sorted(states.items()) if not _owner_alive(st)]
        orphans = _orphans(debris, states)
        for ns in orphans["netns"] + orphans["etc"]:
            m = _NS_RE.match(ns)
            if m and m.group(1) not in names:
                names.append(m.group(1))
        for extra in orphans["links"] + orphans["base"]:
            if extra not in names:
                names.append(extra)
        return names

    @classmethod
    def down_stale(cls, all: bool = False) -> List[str]:
        """Remove stale labs (see :meth:`stale`) and unrecorded leftovers; with
        ``all=True`` remove *every* lab on the machine, including those whose creating
        process is still running.  Returns the names removed.  Raises LabError if
        something could not be removed (after trying everything)."""
        debris = _scan_debris()
        states = _load_states()
        removed: List[str] = []
        problems: List[str] = []
        for name, st in sorted(states.items()):
            if not all and _owner_alive(st):
                continue
            left = _destroy(st)
            if left:
                problems += [f"{name}: {p}" for p in left]
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(_state_path(name))
            removed.append(name)
        orphans = _orphans(debris, states)
        for ns in orphans["netns"]:
            left = sys_.kill_pids(sys_.netns_pids(ns))
            problems += [f"{ns}: process {p} did not exit" for p in left]
            sys_.run("down_stale", ["ip", "netns", "del", ns], check=False)
        for ns in orphans["etc"]:
            _remove_etc_netns(ns)
        for link in orphans["links"]:
            sys_.run("down_stale", ["ip", "link", "del", link], check=False)
        for d in orphans["base"]:
            shutil.rmtree(os.path.join(DEFAULT_BASE, d), ignore_errors=True)
        for ns in orphans["netns"] + orphans["etc"]:
            m = _NS_RE.match(ns)
            if m and m.group(1) not in removed:
                removed.append(m.group(1))
        for extra in orphans["links"] + orphans["base"]:
            if extra not in removed:
                removed.append(extra)
        # Root-namespace nftables tables of labs that no longer have a record.
        if shutil.which("nft"):
            live_tags = {st.get("tag") for st in _load_states().values()}
            res = sys_.run("down_stale", ["nft", "list", "tables"], check=False)
            for line in res.stdout.splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[1] == "inet" and parts[2].startswith(NFT_ROOT_PREFIX):
                    tag = parts[2][len(NFT_ROOT_PREFIX) :]
                    if _TAG_RE.match(tag) and tag not in live_tags:
                        sys_.run(
                            "down_stale", ["nft", "delete", "table", "inet", parts[2]], check=False
                        )
        for ns in orphans["netns"]:
            if sys_.netns_exists(ns):
                problems.append(f"netns {ns} still exists")
        for link in orphans["links"]:
            if sys_.link_exists(link):
                problems.append(f"link {link} still exists")
        if problems:
            raise LabError("; ".join(problems), step="down_stale")
        return removed

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> Dict[str, Any]:
        """What a client needs (JSON-serialisable)."""
        self._need_up()
        return {
            "name": self.name,
            "subnet": self.subnet,
            "gateway": self.gateway,
            "bridge": self.bridge,
            "base_dir": self.base_dir,
            "targets": self.targets,
            "identity_file": self.identity_file,
            "known_hosts_file": self.known_hosts_file,
            "ssh_args": self.ssh_args,
            "hosts": [h.to_dict() for h in self.hosts],
        }


def _nft(table: str, chains: Dict[str, List[str]]) -> str:
    """nft script that atomically replaces ``inet <table>`` with filter chains hooked at
    the chain's name (``input``/``forward``), or just removes the table if no chains."""
    script = f"table inet {table}\ndelete table inet {table}\n"
    if chains:
        script += f"table inet {table} {{\n"
        for hook, rules in chains.items():
            body = "".join(f"    {r}\n" for r in rules)
            script += (
                f"  chain {hook} {{\n"
                f"    type filter hook {hook} priority -50; policy accept;\n{body}  }}\n"
            )
        script += "}\n"
    return script
