"""Files on the host: artifacts to copy, a log's last lines. Stdlib only.

Reading a tail and writing privately are :mod:`remoteexec.target.files`'.
"""

from typing import Any, Dict

from remoteexec.target.files import read_tail

__all__ = ["read_file", "tail_lines"]


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
