"""remoteexec.target.files: private atomic writes and tails."""

from __future__ import annotations

import os
import pathlib
import stat

from remoteexec.target import files


def test_write_private_is_0600_and_replaces_atomically(tmp_path) -> None:
    path = str(tmp_path / "out")
    with open(path, "w") as f:
        f.write("old")
    os.chmod(path, 0o644)
    assert files.write_private(path, "new") == path
    assert pathlib.Path(path).read_text() == "new"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["out"], "no temporary file left behind"


def test_write_private_never_writes_through_a_planted_link(tmp_path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    path = str(tmp_path / "out")
    os.symlink(victim, path)  # a link planted where the file goes: replaced, not followed
    files.write_private(path, b"data")
    assert victim.read_text() == "keep"
    assert not os.path.islink(path) and pathlib.Path(path).read_bytes() == b"data"


def test_tail_returns_the_last_lines(tmp_path) -> None:
    path = tmp_path / "log"
    path.write_text("".join("line %d\n" % i for i in range(100)))
    assert files.tail(str(path), 3) == "line 97\nline 98\nline 99"
    assert files.tail(str(path), 0) == ""
    assert files.tail(str(tmp_path / "missing")) == ""
    assert files.tail(None) == ""


def test_read_tail_reads_at_most_max_bytes(tmp_path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 1000 + b"end")
    data, size = files.read_tail(str(path), 10)
    assert data == b"xxxxxxxend" and size == 1003
