""":class:`LabHost`: one lab host as data (names, address, files), and the plan of
a lab's hosts.  Nothing here touches the system."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Optional, Union

from . import naming, subnets
from .errors import LabError

__all__ = ["SSH_PORT", "HostRef", "LabHost", "plan_hosts"]

SSH_PORT = 22


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

    def _file(self, name: str) -> str:
        return os.path.join(self.dir, name)

    @property
    def config_file(self) -> str:
        return self._file("sshd_config")

    @property
    def pid_file(self) -> str:
        return self._file("sshd.pid")

    @property
    def log_file(self) -> str:
        return self._file("sshd.log")

    @property
    def host_key_file(self) -> str:
        return self._file("ssh_host_ed25519_key")

    @property
    def workdir(self) -> str:
        return self._file("work")

    @property
    def fs_dir(self) -> str:
        """Where this host's private /tmp, /var/tmp, /run and home live on the machine."""
        return self._file("fs")

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
        """The host as JSON data (the lab's record, ``status``, ``up --json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> LabHost:
        """A host from :meth:`to_dict` data; unknown keys (newer records) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


#: A host as callers name it: the LabHost, its 0-based index, or a name, address,
#: target, hostname or namespace.
HostRef = Union[LabHost, int, str]


def plan_hosts(
    lab: str,
    tag: str,
    net: ipaddress.IPv4Network,
    count: int,
    user: str,
    base_dir: str,
    private_fs: bool,
) -> List[LabHost]:
    """The ``count`` hosts of lab ``lab``: names, namespaces, addresses, directories."""
    hosts = []
    for i in range(count):
        addr = subnets.host_address(net, i)
        hname = f"h{i + 1}"
        hosts.append(
            LabHost(
                index=i,
                name=hname,
                netns=naming.netns_name(lab, i + 1),
                address=addr,
                user=user,
                target=f"{user}@{addr}",
                veth=naming.veth_name(tag, i),
                hostname=f"{lab}-{hname}"[:63],
                dir=os.path.join(base_dir, hname),
                private_fs=private_fs,
            )
        )
    return hosts
