"""Low-level helpers for :mod:`remoteexec.lab`: bounded subprocess calls to ``ip``,
``nft``, ``ssh-keygen`` and ``sshd``, and inspection of ``/proc`` (through
:mod:`remoteexec.target.procs`), ``/sys/class/net`` and ``/run/netns``.

Every subprocess call here has a timeout and every loop is bounded in count and
time.  Nothing in this module talks to the network except :func:`tcp_ready`,
which connects to an address the caller made itself.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shlex
import signal
import socket
import subprocess
import time
from typing import Iterable, List, Optional, Sequence

from ..target import procs

NETNS_DIR = "/run/netns"
SYS_NET = "/sys/class/net"
SSHD = "/usr/sbin/sshd"
DEFAULT_TIMEOUT = 10.0


class LabError(RuntimeError):
    """A lab step failed.

    ``step`` names what the lab was doing, ``argv`` is the command that failed
    (if any), ``stderr`` its error output and ``returncode`` its exit status.
    """

    def __init__(
        self,
        message: str,
        *,
        step: Optional[str] = None,
        argv: Optional[Sequence[str]] = None,
        stderr: Optional[str] = None,
        returncode: Optional[int] = None,
    ) -> None:
        self.message = message
        self.step = step
        self.argv = list(argv) if argv is not None else None
        self.stderr = stderr
        self.returncode = returncode
        super().__init__(self._render())

    def _render(self) -> str:
        text = f"{self.step}: {self.message}" if self.step else self.message
        if self.argv is not None:
            text += f"\n  command: {shlex.join(self.argv)}"
        if self.returncode is not None:
            text += f"\n  exit status: {self.returncode}"
        if self.stderr:
            text += "\n  stderr: " + self.stderr.strip().replace("\n", "\n          ")
        return text


def run(
    step: str,
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    input: Optional[str] = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run ``argv`` with a timeout; raise :class:`LabError` naming ``step`` on failure."""
    argv = list(argv)
    try:
        proc = subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise LabError(f"command not found: {exc.filename}", step=step, argv=argv) from exc
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        raise LabError(f"timed out after {timeout:g} s", step=step, argv=argv, stderr=err) from exc
    if check and proc.returncode != 0:
        raise LabError(
            "command failed",
            step=step,
            argv=argv,
            stderr=(proc.stderr or proc.stdout),
            returncode=proc.returncode,
        )
    return proc


def ip_batch(
    step: str,
    commands: Iterable[str],
    *,
    netns: Optional[str] = None,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> subprocess.CompletedProcess:
    """Run several ``ip`` commands in one process (``ip [-n NS] -batch -``)."""
    argv = ["ip"]
    if netns:
        argv += ["-n", netns]
    if force:
        argv.append("-force")
    argv += ["-batch", "-"]
    script = "".join(c + "\n" for c in commands)
    try:
        return run(step, argv, input=script, timeout=timeout, check=not force)
    except LabError as exc:
        exc.stderr = (
            (exc.stderr or "") + "\n  batch:\n    " + script.strip().replace("\n", "\n    ")
        )
        exc.args = (exc._render(),)
        raise


def nft_apply(step: str, script: str, *, netns: Optional[str] = None) -> None:
    """Load an nftables script (atomically, one transaction) in ``netns`` or the root ns."""
    argv = ["nft", "-f", "-"]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    run(step, argv, input=script)


# --------------------------------------------------------------------------- inspection


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def list_netns() -> List[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except OSError:
        return []


def link_exists(name: str) -> bool:
    """Whether a link of this name exists in *our* (the root) network namespace."""
    return os.path.exists(os.path.join(SYS_NET, name))


def list_links() -> List[str]:
    try:
        return sorted(os.listdir(SYS_NET))
    except OSError:
        return []


def netns_pids(name: str, *, limit: int = 100000) -> List[int]:
    """Pids of processes whose network namespace is ``/run/netns/<name>``."""
    try:
        st = os.stat(os.path.join(NETNS_DIR, name))
    except OSError:
        return []
    key = (st.st_dev, st.st_ino)
    pids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries[:limit]:
        if not entry.isdigit():
            continue
        try:
            nst = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (nst.st_dev, nst.st_ino) == key:
            pids.append(int(entry))
    return pids


def proc_start_time(pid: int) -> Optional[int]:
    """Kernel start time (clock ticks since boot) of a live, non-zombie ``pid``, else None."""
    fields = procs._stat(pid)
    if not fields or fields[0] in (b"Z", b"X"):
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def proc_alive(pid: Optional[int]) -> bool:
    return bool(pid) and proc_start_time(pid) is not None  # type: ignore[arg-type]


def proc_cmdline(pid: int) -> List[str]:
    raw = procs._read(f"/proc/{pid}/cmdline") or b""
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def kill_pids(pids: Iterable[int], *, timeout: float = 3.0) -> List[int]:
    """SIGTERM ``pids``, wait up to ``timeout``, SIGKILL the rest; return pids still alive."""
    pids = [p for p in set(pids) if p > 1 and p != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 2.0)
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if proc_alive(p)]
            if pids:
                time.sleep(0.01)
        pids = [p for p in pids if proc_alive(p)]
        if not pids:
            break
    return pids


def read_pid_file(path: str) -> Optional[int]:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


_ROUTE_TYPES = frozenset(
    [
        "unicast",
        "local",
        "broadcast",
        "multicast",
        "anycast",
        "blackhole",
        "unreachable",
        "prohibit",
        "throw",
        "nat",
    ]
)


def used_ipv4_networks() -> List[ipaddress.IPv4Network]:
    """IPv4 networks in use in the root namespace: interface addresses and routes."""
    nets: List[ipaddress.IPv4Network] = []
    out = run("scan addresses", ["ip", "-o", "-4", "addr", "show"]).stdout
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            with contextlib.suppress(ValueError, IndexError):
                nets.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    out = run("scan routes", ["ip", "-4", "route", "show", "table", "all"]).stdout
    for line in out.splitlines():
        parts = line.split()
        if not parts:
            continue
        dst = parts[1] if parts[0] in _ROUTE_TYPES and len(parts) > 1 else parts[0]
        if dst == "default" or (len(parts) > 1 and parts[0] == "default"):
            continue
        try:
            net = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv4Network) and net.prefixlen > 0:
            nets.append(net)
    return nets


def tcp_ready(address: str, port: int, *, timeout: float = 0.25) -> bool:
    """Whether something accepts TCP connections on ``address:port`` right now."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
