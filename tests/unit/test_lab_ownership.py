"""remoteexec.lab.ownership: only the process that made a lab tears it down at exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

from remoteexec.lab.ownership import Owners


class Recorder:
    """Stands for a Lab: its down() writes which process called it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls: List[int] = []

    def down(self) -> None:
        self.calls.append(os.getpid())
        with open(self.path, "a") as f:
            f.write(f"{os.getpid()}\n")


def test_owned_labs_go_down_and_released_ones_stay(tmp_path: Path) -> None:
    owners = Owners()
    kept, dropped = Recorder(tmp_path / "kept"), Recorder(tmp_path / "dropped")
    owners.adopt(kept)
    owners.adopt(dropped)
    owners.release(dropped)
    assert owners.owns(kept) and not owners.owns(dropped)
    owners.down_all()
    assert kept.calls == [os.getpid()] and dropped.calls == []


def test_a_forked_child_leaves_its_parents_labs_alone(tmp_path: Path) -> None:
    owners = Owners()
    lab = Recorder(tmp_path / "calls")
    owners.adopt(lab)
    pid = os.fork()
    if pid == 0:  # the child: its exit hook must not touch the parent's lab
        try:
            owners.down_all()
            os._exit(0 if not owners.owns(lab) else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not (tmp_path / "calls").exists(), "the child tore down its parent's lab"
    assert owners.owns(lab)


def test_a_lab_goes_down_when_its_process_exits(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "from remoteexec.lab.ownership import OWNERS\n"
        "class Lab:\n"
        "    def down(self):\n"
        "        open(sys.argv[1], 'w').write('down')\n"
        "        raise RuntimeError('swallowed: exit goes on')\n"
        "OWNERS.adopt(Lab())\n"
    )
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert out.read_text() == "down"
