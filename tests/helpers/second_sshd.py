"""A second sshd in a lab host's namespaces, listening on another port than 22,
started and stopped by the test that asks for it (the lab's own sshds stay on
22). It is the lab host's twin: the same namespace, address, login key and
private directories' layout, but its own directory, host key, config, pid file
and log, so the lab's known_hosts does not know it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from typing import Any, Dict, Iterator, List, Set

from helpers import oracle
from remoteexec.lab import sshd
from remoteexec.lab.hosts import LabHost
from remoteexec.lab.processes import kill_pids
from remoteexec.target.files import write_private


@contextlib.contextmanager
def second_sshd(lab: Any, index: int, port: int) -> Iterator[LabHost]:
    """Run an sshd for lab host ``index`` on ``port``; yield its LabHost (its
    ``port``, ``host_key_file``, ``pid_file``...). Killed (by its pid, checked
    against its config path) and its directory removed on exit."""
    base = lab.hosts[index]
    twin = dataclasses.replace(
        base, dir=os.path.join(lab.base_dir, "%s-port%d" % (base.name, port)), port=port
    )
    twin.sshd_pid = None
    for path in (twin.dir, twin.workdir):
        os.makedirs(path, mode=0o700)
    try:
        if twin.private_fs:
            sshd.make_private_dirs(twin)
        sshd.keygen("host key %s:%d" % (twin.name, port), twin.host_key_file, twin.hostname)
        write_private(twin.config_file, lab.sshd_config(twin))
        argv = sshd.launch_argv(twin, lab.base_dir, lab.user, lab.share)
        twin.sshd_pid = sshd.start(twin, argv, lab.ready_timeout)
        yield twin
    finally:
        # The listener and its sessions (a test's failure may leave one open).
        left = kill_pids(_with_descendants(sshd.pids(twin)))
        assert not left, "sshd processes %s still alive" % left
        shutil.rmtree(twin.dir, ignore_errors=True)


def _with_descendants(pids: Set[int]) -> Set[int]:
    """``pids`` and every process below them, by the tests' own /proc oracle."""
    children: Dict[int, List[int]] = {}
    for st in oracle.table().values():
        children.setdefault(st.ppid, []).append(st.pid)
    found, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def host_key(h: LabHost) -> str:
    """``TYPE BASE64`` of ``h``'s public host key."""
    with open(h.host_key_file + ".pub", encoding="ascii") as f:
        return " ".join(f.read().split()[:2])
