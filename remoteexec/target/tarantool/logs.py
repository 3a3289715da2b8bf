"""Tarantool's log: the fatal and error lines that say why an instance failed. Stdlib only."""

import re
from typing import Iterable, List, Optional

from remoteexec.target.files import read_tail

__all__ = ["LOG_LINE", "log_lines"]

# "2026-11-21 12:28:11.665 [5202] main/103/init.lua load_cfg.lua:458 E> message"
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \[(?P<pid>\d+)\] \S+(?: \S+:\d+)? (?P<level>[A-Z!])> "
)
# What Tarantool writes to stderr before its log is open.
_STDERR_ERROR = re.compile(
    r"(?:\bER_[A-Z_]+:|Error\b|error:|fatal|can't|cannot|failed|Incorrect|not found)", re.IGNORECASE
)


def log_lines(
    log_path: str,
    levels: Iterable[str] = ("F", "E"),
    max_lines: int = 20,
    pid: Optional[int] = None,
    tail_bytes: int = 256 << 10,
) -> List[str]:
    """The last ``max_lines`` fatal/error lines of a Tarantool log or stderr file.

    Log lines (``... [pid] main/103/init.lua F> ...``) are kept when their level
    letter is in ``levels`` ("F" fatal, "E" error, "!" system error such as
    "Connection refused" retries, "C" critical, "W" warning, "I" info) and,
    with ``pid``, when they come from that process (a log file outlives
    restarts). Lines in no log format are what tarantool prints to stderr
    before its log is open (``ER_CFG: Incorrect value for option ...``,
    ``LuajitError: ...``); those that look like errors are kept too. Only the
    last ``tail_bytes`` of the file are read. A missing file gives [].
    """
    wanted = set(levels)
    try:
        data, size = read_tail(log_path, tail_bytes)
    except OSError:
        return []
    text = data.decode("utf-8", "replace")
    rows = text.splitlines()
    if size > tail_bytes and rows:
        rows = rows[1:]  # the first one is cut
    picked: List[str] = []
    for row in rows:
        row = row.rstrip()
        if not row:
            continue
        match = LOG_LINE.match(row)
        if match:
            if match.group("level") not in wanted:
                continue
            if pid is not None and int(match.group("pid")) != pid:
                continue
            picked.append(row)
        elif (
            not row[0].isspace()
            and not row.startswith("stack traceback")
            and _STDERR_ERROR.search(row)
        ):
            picked.append(row)
    return picked[-max_lines:] if max_lines > 0 else []
