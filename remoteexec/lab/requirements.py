"""Whether labs can be built on this machine, and if not, why."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from typing import Tuple

from . import naming, network
from .commands import run
from .errors import LabError
from .sshd import SSHD

__all__ = ["check"]


def check() -> Tuple[bool, str]:
    """``(True, note)`` if labs can be built here, else ``(False, why)``.

    Checks: Linux, root, ``ip``, ``ssh-keygen``, ``/usr/sbin/sshd``, and that a
    network namespace can actually be created (a probe namespace is added and
    deleted).  A missing ``nft`` only disables partitions and a missing ``unshare``
    per-host hostnames (said in the note).
    """
    if not sys.platform.startswith("linux"):
        return False, f"remoteexec.lab needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return False, "remoteexec.lab needs root (network namespaces, sshd)"
    for tool in ("ip", "ssh-keygen"):
        if shutil.which(tool) is None:
            return False, f"{tool} not found in PATH (install iproute2 / openssh-client)"
    if not os.access(SSHD, os.X_OK):
        return False, f"{SSHD} not found (install openssh-server)"
    probe = f"{naming.NETNS_PREFIX}_probe{secrets.token_hex(3)}-0"
    try:
        run("probe", ["ip", "netns", "add", probe], timeout=10)
    except LabError as exc:
        return False, f"cannot create a network namespace: {exc}"
    finally:
        if network.netns_exists(probe):
            run("probe", ["ip", "netns", "del", probe], check=False, timeout=10)
    notes = []
    if shutil.which("nft") is None:
        notes.append("nft not found: partition() unavailable")
    if shutil.which("unshare") is None:
        notes.append("unshare not found: hosts share the machine's hostname")
    return True, "; ".join(notes) or "ok"
