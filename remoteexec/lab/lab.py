""":class:`Lab`: sshd "hosts" in Linux network namespaces on one machine.

The class ties the parts together (see :mod:`remoteexec.lab` for the overview):
:mod:`registry` records it, :mod:`subnets` and :mod:`hosts` plan it,
:mod:`network` and :mod:`sshd` build it, :mod:`partitions` cuts it,
:mod:`teardown` removes it, :mod:`ownership` removes it at exit and
:mod:`machine` sees every lab on the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

from remoteexec.target.files import write_private

from . import machine, naming, network, partitions, requirements, sshd, subnets, teardown
from .errors import LabError
from .hosts import HostRef, LabHost, plan_hosts
from .ownership import OWNERS
from .partitions import MASTER
from .processes import proc_start_time
from .registry import REGISTRY, STATE_VERSION, State, ensure_private_dir

__all__ = ["MASTER", "MAX_HOSTS", "Lab"]

MAX_HOSTS = 200


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
        shell_init: str = "host",
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
        alike would have them); they must exist.  ``shell_init``: ``"host"`` (default)
        leaves the login user's shell start-up files as its home has them (a private
        home starts empty; with ``shared_fs`` it is the machine's, e.g. root's
        ``~/.bashrc``); ``"trivial"`` binds an empty file over each of them
        (``~/.bashrc``, ``~/.profile``...) in the sshds' private mount namespace, never
        touching the real files, so every ssh session's shell starts at once (to
        measure tools that start a shell per command without this machine's init).
        """
        if not isinstance(hosts, int) or not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"hosts must be an int in 1..{MAX_HOSTS}, got {hosts!r}")
        if name is not None and not naming.valid_name(name):
            raise ValueError(f"bad lab name {name!r}: use [A-Za-z0-9_.-], up to 40 chars")
        self._want_hosts = hosts
        self._want_name = name
        self._want_subnet = subnet
        self._want_base = base_dir
        self.user = user
        self.ready_timeout = float(ready_timeout)
        self.shared_fs = bool(shared_fs)
        if shell_init not in sshd.SHELL_INITS:
            raise ValueError(f"shell_init must be one of {sshd.SHELL_INITS}, got {shell_init!r}")
        self.shell_init = shell_init
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
        self._state: Optional[State] = None
        self._cuts: Set[FrozenSet[str]] = set()
        self._is_up = False
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ properties

    def __repr__(self) -> str:
        status = "up" if self._is_up else "down"
        return f"<Lab {self.name or '?'} {status} hosts={self._want_hosts} subnet={self.subnet}>"

    @property
    def is_up(self) -> bool:
        return self._is_up

    def _need_up(self) -> State:
        if not self._is_up or self._state is None:
            raise LabError("lab is not up; call up() first", step=f"lab {self.name}")
        return self._state

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

    def connect_options(self, **extra: Any) -> Dict[str, Any]:
        """Keyword arguments for ``Master.connect``/``connect_all`` to reach this lab's
        hosts: its key and known_hosts (strict host key checking stays on), plus
        ``extra`` (``python=``, ``connect_timeout=``...), so tests, benchmarks and
        scripts connect alike."""
        return {
            "identity_file": self.identity_file,
            "known_hosts_file": self.known_hosts_file,
            **extra,
        }

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
                cls._available = requirements.check()
            return cls._available

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
            REGISTRY.save(state)
            OWNERS.adopt(self)
            self.timings["total"] = time.monotonic() - t0
            return self

    def _fail_cleanup(self, state: State, exc: BaseException) -> None:
        """Undo a failed up(); keep the state record only if something is left."""
        try:
            problems = teardown.remove(state, REGISTRY)
        except Exception as err:
            problems = [f"{type(err).__name__}: {err}"]
        if not problems:
            self._state = None
        elif isinstance(exc, LabError):
            exc.extend(note=f" (cleanup left: {'; '.join(problems)})")

    def _allocate(self) -> State:
        """Pick name, tag and subnet under the machine-wide lock and record the plan."""
        with REGISTRY.lock():
            states = REGISTRY.load_all()
            bridges = [n for n in network.list_links() if n.startswith(naming.BRIDGE_PREFIX)]
            taken = {str(s.get("tag")) for s in states.values()}
            taken |= {n[len(naming.BRIDGE_PREFIX) :] for n in bridges}
            tag = naming.new_tag(taken)
            name = self._want_name or tag
            if name in states or REGISTRY.exists(name):
                raise LabError(f"a lab named {name!r} already exists", step="allocate")
            if any(naming.lab_of_netns(ns) == name for ns in network.list_netns()):
                raise LabError(f"namespaces of a lab named {name!r} exist", step="allocate")
            used = subnets.used_networks() + subnets.recorded_networks(states.values())
            net = subnets.pick_subnet(self._want_subnet, self._want_hosts, used)
            base = os.path.abspath(self._want_base or os.path.join(naming.DEFAULT_BASE, name))
            if os.path.isdir(base) and os.listdir(base):
                raise LabError(f"base_dir {base} exists and is not empty", step="allocate")
            hosts = plan_hosts(
                name, tag, net, self._want_hosts, self.user, base, private_fs=not self.shared_fs
            )
            state = {
                "version": STATE_VERSION,
                "name": name,
                "tag": tag,
                "subnet": str(net),
                "gateway": subnets.gateway(net),
                "bridge": naming.bridge_name(tag),
                "base_dir": base,
                "base_created": False,
                "root_nft": shutil.which("nft") is not None,
                "user": self.user,
                "owner_pid": os.getpid(),
                "owner_start": proc_start_time(os.getpid()),
                "owner_argv": sys.argv[:8],
                "created": time.time(),
                "detached": False,
                "status": "creating",
                "shared_fs": self.shared_fs,
                "cuts": [],
                "hosts": [h.to_dict() for h in hosts],
            }
            REGISTRY.save(state)
        self._adopt(state)
        return state

    def _adopt(self, state: State) -> None:
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

    def _make_dirs(self, state: State) -> None:
        """The lab's directory (0700; recorded as made or as the caller's) and each
        host's, with its private filesystem's directories."""
        base = state["base_dir"]
        parent = os.path.dirname(base)
        if parent == naming.DEFAULT_BASE:
            ensure_private_dir(parent)
        else:
            os.makedirs(parent, exist_ok=True)
        existed = os.path.isdir(base)
        ensure_private_dir(base)
        state["base_created" if not existed else "base_used"] = True
        REGISTRY.save(state)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        if self.shell_init == "trivial":
            write_private(self._path("empty_shell_init"), "")
        for h in self.hosts:
            ensure_private_dir(h.dir)
            ensure_private_dir(h.workdir)
            if h.private_fs:
                sshd.make_private_dirs(h)

    def _create(self, state: State) -> None:
        t = time.monotonic()
        self._make_dirs(state)
        workers = min(16, len(self.hosts) + 1)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rxlab") as pool:
            # Key generation does not depend on the network: start it first.
            comment = f"remoteexec-lab-{self.name}"
            client_key = pool.submit(sshd.keygen, "client key", self.identity_file, comment)
            host_keys = [
                pool.submit(sshd.keygen, f"host key {h.name}", h.host_key_file, h.hostname)
                for h in self.hosts
            ]
            network.create(
                state["name"], state["subnet"], state["gateway"], state["bridge"], self.hosts
            )
            self._firewall(state).install()
            self.timings["network"] = time.monotonic() - t
            write_private(self.authorized_keys_file, client_key.result() + "\n")
            for done in host_keys:
                done.result()
            _first_error([pool.submit(self._start_host, h) for h in self.hosts])
        self.timings["sshd"] = time.monotonic() - t - self.timings["network"]
        write_private(self.known_hosts_file, sshd.known_hosts(self.hosts))
        state["hosts"] = [h.to_dict() for h in self.hosts]

    def sshd_config(self, h: LabHost) -> str:
        """The sshd_config written for host ``h`` (see :func:`remoteexec.lab.sshd.config`);
        a subclass may add options to it."""
        return sshd.config(h, self.name or "", self.authorized_keys_file)

    def _start_host(self, h: LabHost) -> None:
        write_private(h.config_file, self.sshd_config(h))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(h.pid_file)
        empty = self._path("empty_shell_init") if self.shell_init == "trivial" else ""
        argv = sshd.launch_argv(h, self.base_dir or "", self.user, self.share, empty)
        h.sshd_pid = sshd.start(h, argv, self.ready_timeout)

    def _firewall(self, state: State) -> partitions.Firewall:
        return partitions.Firewall(
            tag=state["tag"],
            bridge=state["bridge"],
            subnet=state["subnet"],
            gateway=state["gateway"],
            hosts=self.hosts,
            root_nft=bool(state.get("root_nft")),
        )

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
            OWNERS.release(self)
            if state is None:
                return
            t0 = time.monotonic()
            problems = teardown.remove(state, REGISTRY)
            self._is_up = False
            self._cuts = set()
            self.timings["down"] = time.monotonic() - t0
            if problems:
                raise LabError("teardown incomplete: " + "; ".join(problems), step="down")
            self._state = None

    def detach(self) -> Lab:
        """Let the lab outlive this process (no teardown at interpreter exit).

        It then counts as stale once this process exits; remove it with
        ``Lab.attach(name).down()``, ``python -m remoteexec.lab down NAME`` or
        :meth:`down_stale`.
        """
        with self._lock:
            state = self._need_up()
            OWNERS.release(self)
            state["detached"] = True
            REGISTRY.save(state)
        return self

    # ------------------------------------------------------------------ partitions

    @property
    def cuts(self) -> List[Tuple[str, str]]:
        """Current cuts as sorted pairs of host names (or ``"master"``)."""
        pairs = [sorted(c) for c in self._cuts]
        return sorted((p[0], p[1]) for p in pairs)

    def _node(self, ref: HostRef) -> str:
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
            nb = None if b is None else self._node(b)
            self._apply(partitions.cut(self._cuts, [h.name for h in self.hosts], na, nb))

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
            nb = None if b is None else self._node(b)
            self._apply(partitions.heal(self._cuts, self._node(a), nb))

    def _reload_cuts(self) -> None:
        """Pick up cuts made through another Lab object (e.g. the CLI) on this lab."""
        try:
            cuts = REGISTRY.load(self.name or "").get("cuts", [])
            self._cuts = {frozenset(c) for c in cuts}
        except (OSError, ValueError, TypeError, AttributeError):
            pass

    def _apply(self, cuts: Set[FrozenSet[str]], force: bool = False) -> None:
        state = self._need_up()
        if not self._firewall(state).apply(self._cuts, cuts, force=force):
            return
        self._cuts = set(cuts)
        state["cuts"] = [sorted(c) for c in self._cuts]
        REGISTRY.save(state)

    # ------------------------------------------------------------------ machine-wide

    @classmethod
    def attach(cls, name: str) -> Lab:
        """A Lab object for an existing lab (e.g. one started by ``python -m
        remoteexec.lab up``), from its state record.  It can partition/heal/down it; it
        does not become its owner (no teardown at exit)."""
        try:
            state = REGISTRY.load(name)
        except (OSError, ValueError) as exc:
            raise LabError(f"no lab named {name!r} ({exc})", step="attach") from exc
        lab = cls(hosts=max(1, len(state.get("hosts", []))), name=state["name"])
        lab._adopt(state)
        lab._is_up = state.get("status") == "up"
        return lab

    @classmethod
    def status(cls) -> List[Dict[str, Any]]:
        """Every lab recorded on the machine, with liveness: ``owner_alive``, ``stale``,
        and per host whether its sshd is running."""
        return machine.status()

    @classmethod
    def stale(cls) -> List[str]:
        """Names of stale labs: recorded labs whose creating process is gone (it crashed,
        was killed, exited without down(), or was ``python -m remoteexec.lab up``, which
        detaches on purpose) plus leftovers with no record (namespaces ``rxl-<name>-<n>``
        reported by their lab name; bridges/veths ``rxb<tag>``/``rxv<tag>…`` and
        ``/tmp/remoteexec-lab/<dir>`` reported by their own name)."""
        return machine.stale()

    @classmethod
    def down_stale(cls, all: bool = False) -> List[str]:
        """Remove stale labs (see :meth:`stale`) and unrecorded leftovers; with
        ``all=True`` remove *every* lab on the machine, including those whose creating
        process is still running.  Returns the names removed.  Raises LabError if
        something could not be removed (after trying everything)."""
        return machine.down_stale(all=all)

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


def _first_error(futures: Sequence[Future[None]]) -> None:
    """Wait for every one of ``futures``, then raise the first one's error, if any
    (so no sshd start is still running when the caller cleans up)."""
    errors = []
    for f in futures:
        try:
            f.result()
        except BaseException as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
