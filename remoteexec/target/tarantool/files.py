"""Files on the host: a file's tail, artifacts to copy, private atomic writes. Stdlib only."""

import contextlib
import os
from typing import Any, Dict, Tuple

__all__ = ["read_file", "read_tail", "tail_lines", "write_private"]


def read_tail(path: str, max_bytes: int) -> Tuple[bytes, int]:
    """(the last ``max_bytes`` of the file at ``path``, its size); OSError as raised."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        return f.read(max_bytes), size


def write_private(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 0600) atomically, never through a link."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def read_file(path: str, max_bytes: int = 16 << 20) -> Dict[str, Any]:
    """The last ``max_bytes`` of a file, for artifacts; a missing file is ``data`` None."""
    try:
        data, size = read_tail(path, max_bytes)
    except FileNotFoundError:
        return {"ok": True, "data": None, "size": 0}
    return {"ok": True, "data": data, "size": size}


def tail_lines(path: str, lines: int = 50, max_bytes: int = 256 << 10) -> str:
    """The last ``lines`` lines of the file at ``path`` (from its last ``max_bytes``); "" if
    it cannot be read."""
    try:
        data, size = read_tail(path, max_bytes)
    except OSError:
        return ""
    rows = data.decode("utf-8", "replace").splitlines()
    if size > max_bytes and rows:
        rows = rows[1:]  # the first one is cut
    return "\n".join(rows[-lines:]) if lines > 0 else ""
