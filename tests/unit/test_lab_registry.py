"""remoteexec.lab.registry: the machine-wide lab records, in a scratch directory.

Real files, real flock; no root needed.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from remoteexec.lab import LabError
from remoteexec.lab.registry import Registry, ensure_private_dir
from remoteexec.target.files import write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_saved_record_is_0600_in_a_0700_directory_and_reads_back(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o755)  # made wider by someone else: tightened on save
    reg = Registry(str(directory))
    old = os.umask(0)
    try:
        reg.save({"name": "one", "tag": "abc123", "hosts": []})
    finally:
        os.umask(old)
    assert mode(directory) == 0o700
    assert mode(directory / "one.json") == 0o600
    assert reg.load("one") == {"name": "one", "tag": "abc123", "hosts": []}
    assert reg.exists("one") and not reg.exists("two")
    assert sorted(os.listdir(directory)) == ["one.json"], "no temporary file is left"


def test_saving_again_replaces_the_record(tmp_path: Path) -> None:
    reg = Registry(str(tmp_path))
    reg.save({"name": "one", "cuts": []})
    reg.save({"name": "one", "cuts": [["h1", "h2"]]})
    assert reg.load("one")["cuts"] == [["h1", "h2"]]


def test_load_all_keeps_only_readable_records_named_as_their_file(tmp_path: Path) -> None:
    reg = Registry(str(tmp_path))
    reg.save({"name": "good"})
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "misnamed.json").write_text(json.dumps({"name": "other"}))
    (tmp_path / "notes.txt").write_text(json.dumps({"name": "notes"}))
    assert list(reg.load_all()) == ["good"]
    assert Registry(str(tmp_path / "missing")).load_all() == {}


def test_load_of_a_missing_or_odd_record_raises(tmp_path: Path) -> None:
    reg = Registry(str(tmp_path))
    with pytest.raises(OSError):  # noqa: PT011 - FileNotFoundError is what callers catch
        reg.load("nope")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match="does not hold a JSON object"):
        reg.load("list")


def test_remove_is_fine_twice(tmp_path: Path) -> None:
    reg = Registry(str(tmp_path))
    reg.save({"name": "one"})
    reg.remove("one")
    reg.remove("one")
    assert reg.load_all() == {}


def test_write_private_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "key"
    old = os.umask(0)
    try:
        write_private(str(path), "secret\n")
    finally:
        os.umask(old)
    assert path.read_text() == "secret\n" and mode(path) == 0o600


def test_ensure_private_dir_makes_parents_and_tightens(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b"
    ensure_private_dir(str(path))
    assert mode(path) == 0o700
    path.chmod(0o777)
    ensure_private_dir(str(path))
    assert mode(path) == 0o700


_HOLD = """
import sys, time
from remoteexec.lab.registry import Registry
with Registry(sys.argv[1]).lock():
    print("held", flush=True)
    sys.stdin.read()
"""


def test_the_lock_excludes_another_process_and_gives_up_in_time(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        reg = Registry(str(tmp_path))
        t0 = time.monotonic()
        with pytest.raises(LabError, match="could not lock") as err, reg.lock(timeout=0.3):
            pass
        took = time.monotonic() - t0
        assert err.value.step == "lock"
        assert 0.3 <= took < 3.0, took
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    with Registry(str(tmp_path)).lock(timeout=5):  # free again once the holder exits
        pass
    assert mode(tmp_path / ".lock") == 0o600
