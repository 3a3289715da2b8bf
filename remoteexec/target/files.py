"""Small file helpers both sides use: private atomic writes, log tails, private dirs.

Stdlib only (the host's Python imports it; the master side may too).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from typing import Optional, Tuple, Union

#: How many bytes from the end of a log a tail reads at most.
TAIL_BYTES = 64 * 1024
TAIL_LINES = 50


def write_private(path: str, data: Union[bytes, str]) -> str:
    """Write ``data`` to ``path`` with mode 0600, atomically; return ``path``.

    Written to a temporary name in the same directory (created exclusively,
    so never through a link someone left there), then renamed over ``path``:
    a reader sees the old file or the new one, never half of it.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = "%s.%d.%d.tmp" % (path, os.getpid(), threading.get_ident())
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def read_tail(path: str, max_bytes: int = TAIL_BYTES) -> Tuple[bytes, int]:
    """(the last ``max_bytes`` of the file at ``path``, its size); OSError as raised."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        return f.read(max_bytes), size


def tail(path: Optional[str], lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of the text file at ``path``; "" if it cannot be read."""
    if not path:
        return ""
    try:
        data, _ = read_tail(path)
    except OSError:
        return ""
    text = data.decode("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:]) if lines else ""


def own_dir(path: str) -> str:
    """``path`` as a 0700 directory owned by us, or a fresh private one.

    /tmp is shared: never follow a symlink or use a directory someone else
    made there.
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
        os.chmod(path, 0o700)
        return path
    import tempfile  # here: ~3 ms (with shutil, random) that install does not need

    return tempfile.mkdtemp(prefix="remoteexec-")


def read_bytes(path: str) -> bytes:
    """The whole file at ``path`` (artifacts); OSError as raised."""
    with open(path, "rb") as f:
        return f.read()
