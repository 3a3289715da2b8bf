"""Each host's sshd: its keys, its config, its launch into the host's namespaces
(own hostname, private /tmp, /var/tmp, /run and home) and the wait until it accepts.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import sys
import time
from typing import Iterable, List, Optional, Sequence, Set, Tuple

from .commands import run
from .errors import LabError
from .hosts import LabHost
from .network import tcp_ready
from .processes import proc_alive, proc_cmdline, read_pid_file

__all__ = [
    "PRIVATE_DIRS",
    "SHELL_INITS",
    "SHELL_INIT_FILES",
    "SSHD",
    "config",
    "is_ours",
    "keygen",
    "known_hosts",
    "launch_argv",
    "log_tail",
    "make_private_dirs",
    "pids",
    "start",
]

SSHD = "/usr/sbin/sshd"

#: The ``Lab(shell_init=...)`` values: ``"host"`` leaves the login user's start-up
#: files as the home directory has them; ``"trivial"`` covers them with an empty file.
SHELL_INITS = ("host", "trivial")
#: The start-up files (under the login user's home) ``shell_init="trivial"`` covers:
#: bash reads ~/.bashrc for a command run by sshd, login shells the profiles.
SHELL_INIT_FILES = (".bashrc", ".bash_profile", ".bash_login", ".profile")

#: A private-fs host's own directories: (directory under fs_dir, mode, mount point;
#: None is the login user's home).  /tmp last: the lab's own directory is usually in it.
PRIVATE_DIRS: Tuple[Tuple[str, int, Optional[str]], ...] = (
    ("var_tmp", 0o1777, "/var/tmp"),
    ("run", 0o755, "/run"),
    ("home", 0o700, None),
    ("tmp", 0o1777, "/tmp"),
)

#: Runs in the host's namespaces right before sshd: set the hostname, then (private
#: fs) bind the host's own directories over /var/tmp, /run, home and /tmp, then
#: (``shell_init="trivial"``) bind an empty file over the shell's start-up files.  Sources
#: are reached through a descriptor of the lab directory, which /tmp may cover, and
#: the shared directories (the lab's own: sshd reads its keys there; ``share=``) are
#: bound back at their paths, parents first.
_LAUNCHER = r"""
import ctypes, json, os, socket, sys
hostname, lab, fs, mounts = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
shares = sorted(set(json.loads(sys.argv[5])) | {lab}, key=len)
empty, covered = json.loads(sys.argv[6])
libc = ctypes.CDLL(None, use_errno=True)
def mount(src, dst, flags):
    if libc.mount(src.encode(), dst.encode(), None, flags, None) != 0:
        err = ctypes.get_errno()
        sys.exit("mount %s on %s: %s" % (src, dst, os.strerror(err)))
if hostname:
    socket.sethostname(hostname)
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
if fs or covered:
    mount("none", "/", MS_REC | MS_PRIVATE)
if fs:
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
for path in covered:
    if os.path.isfile(path):
        mount(empty, path, MS_BIND)
os.execv(sys.argv[7], sys.argv[7:])
"""


def home(user: str) -> str:
    """``user``'s home directory (``/root`` if unknown): where its private home goes."""
    try:
        return pwd.getpwnam(user).pw_dir or "/root"
    except KeyError:
        return "/root"


def config(h: LabHost, lab: str, authorized_keys: str) -> str:
    """The sshd_config of host ``h`` of lab ``lab``: key auth only, its own host key,
    pid file and address, and the lab's variables in every session's environment."""

    def q(s: str) -> str:
        return '"' + s.replace('"', "") + '"'

    return "\n".join(
        [
            "# written by remoteexec.lab",
            f"ListenAddress {h.address}:{h.port}",
            f"HostKey {q(h.host_key_file)}",
            f"PidFile {q(h.pid_file)}",
            f"AuthorizedKeysFile {q(authorized_keys)}",
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
            f"SetEnv REMOTEEXEC_LAB={q(lab)} REMOTEEXEC_LAB_HOST={h.name} "
            f"REMOTEEXEC_LAB_DIR={q(h.workdir)}",
            "LogLevel INFO",
            "",
        ]
    )


def keygen(step: str, path: str, comment: str) -> str:
    """Make a fresh ed25519 key pair at ``path`` (0600 both); return the public key."""
    for p in (path, path + ".pub"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
    run(step, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    os.chmod(path, 0o600)
    os.chmod(path + ".pub", 0o600)
    with open(path + ".pub", encoding="ascii") as f:
        return f.read().strip()


def known_hosts(hosts: Iterable[LabHost]) -> str:
    """known_hosts text for ``hosts`` from their public host keys, each host as
    ``ADDR KEY`` and ``[ADDR]:PORT KEY``."""
    lines = []
    for h in hosts:
        with open(h.host_key_file + ".pub", encoding="ascii") as f:
            key_type, key_b64 = f.read().split()[:2]
        lines.append(f"{h.address} {key_type} {key_b64}")
        lines.append(f"[{h.address}]:{h.port} {key_type} {key_b64}")
    return "\n".join(lines) + "\n"


def make_private_dirs(h: LabHost) -> None:
    """Create a private-fs host's own /tmp, /var/tmp, /run and home under its fs_dir."""
    for sub, mode, _ in PRIVATE_DIRS:
        path = os.path.join(h.fs_dir, sub)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)


def launch_argv(
    h: LabHost, base_dir: str, user: str, share: Sequence[str], empty_file: str = ""
) -> List[str]:
    """The command that starts ``h``'s sshd inside its namespaces.

    ``ip netns exec`` already gives the sshd a mount namespace of its own; the
    launcher makes its mounts private there, then execs sshd (which daemonizes).
    With ``unshare``, sshd also gets its own UTS namespace, so ``hostname`` differs
    per host.  ``empty_file`` (``shell_init="trivial"``): an empty file bound, in
    that private namespace only, over each of ``user``'s :data:`SHELL_INIT_FILES`
    that exists, so a session's shell starts with no start-up file while the real
    files stay untouched."""
    unshare = shutil.which("unshare") is not None
    mounts = [[sub, dst or home(user)] for sub, _, dst in PRIVATE_DIRS]
    covered = [os.path.join(home(user), f) for f in SHELL_INIT_FILES] if empty_file else []
    launch = [
        sys.executable,
        "-I",
        "-S",
        "-c",
        _LAUNCHER,
        h.hostname if unshare else "",
        base_dir,
        os.path.relpath(h.fs_dir, base_dir or "/") if h.private_fs else "",
        json.dumps(mounts),
        json.dumps(list(share)),
        json.dumps([empty_file, covered]),
        SSHD,
        "-f",
        h.config_file,
        "-E",
        h.log_file,
    ]
    if unshare:
        return h.nsexec("unshare", "--uts", "--", *launch)
    return h.nsexec(*launch)


def log_tail(h: LabHost, limit: int = 2000) -> str:
    """The end of ``h``'s sshd log, headed by its path ("" if there is none)."""
    try:
        with open(h.log_file, encoding="utf-8", errors="replace") as f:
            text = f.read()[-limit:]
    except OSError:
        return ""
    return f"\n--- {h.log_file} ---\n{text}" if text else ""


def start(h: LabHost, argv: Sequence[str], ready_timeout: float) -> int:
    """Run ``argv`` (:func:`launch_argv`) and wait until ``h``'s sshd accepts TCP;
    return its pid.  :class:`LabError` with the sshd log's tail if it exits or is
    not ready within ``ready_timeout`` seconds."""
    try:
        run(f"start sshd on {h.name}", argv, timeout=10)
    except LabError as exc:
        exc.extend(stderr=log_tail(h))
        raise
    step = f"wait for sshd on {h.name}"
    deadline = time.monotonic() + ready_timeout
    pid = None
    for _ in range(100000):
        pid = pid or read_pid_file(h.pid_file)
        if pid is not None:
            if not proc_alive(pid):
                raise LabError(f"sshd (pid {pid}) exited", step=step, stderr=log_tail(h))
            if tcp_ready(h.address, h.port, timeout=0.25):
                return pid
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)
    raise LabError(
        f"sshd not accepting on {h.address}:{h.port} after {ready_timeout:g} s",
        step=step,
        stderr=log_tail(h),
    )


def is_ours(pid: int, h: LabHost) -> bool:
    """Whether ``pid`` is the sshd started for ``h`` (sshd rewrites its argv into one
    string, "sshd: /usr/sbin/sshd -f CONFIG ...", so match the config path in it)."""
    return f"-f {h.config_file} " in " ".join(proc_cmdline(pid)) + " "


def pids(h: LabHost) -> Set[int]:
    """``h``'s sshd pid (from its pid file or the record), checked against its command
    line so that a recycled pid is never taken for it."""
    found = set()
    for pid in (read_pid_file(h.pid_file), h.sshd_pid):
        if pid and is_ours(pid, h):
            found.add(pid)
    return found
