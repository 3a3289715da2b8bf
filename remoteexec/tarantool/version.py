"""Which Tarantool a host has, and what that version supports (master side).

The host runs ``tarantool --version`` (:mod:`remoteexec.target.tarantool.version`);
here its text is parsed with the same :data:`VERSION_RE`, and :class:`Features`
turns a version into the flags the rest of the package branches on, so no
module compares version tuples itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

from remoteexec.target.tarantool.version import VERSION_RE

__all__ = ["VERSION_RE", "Features", "Version", "parse_version"]

#: (major, minor, patch)
Version = Tuple[int, int, int]


def parse_version(text: str) -> Version:
    """Parse the output of ``tarantool --version`` into ``(major, minor, patch)``.

    Accepts e.g. ``"Tarantool 2.6.0-0-g47aa4e01e"``, ``"Tarantool 3.1.0-entrypoint-…"``
    and ``"Tarantool Enterprise 2.11.1-0-g…"``; only the first matching line counts.
    Raises ValueError when no version is found.
    """
    for line in text.splitlines():
        match = VERSION_RE.search(line)
        if match:
            major, minor, patch = (int(part) for part in match.groups())
            return (major, minor, patch)
    raise ValueError(f"no Tarantool version in {text[:200]!r}")


@dataclass(frozen=True)
class Features:
    """What a Tarantool version supports, as far as remoteexec cares.

    Build it with :meth:`for_version`. Where a release series got a feature in a
    point release (promote), the flags follow the published release notes; a
    runtime check (``box.ctl.promote ~= nil``) is the final word.
    """

    version: Version
    #: box.cfg.election_mode and box.info.election (2.6.1+).
    election_mode: bool
    #: box.ctl.promote() (2.6.3, 2.7.2, 2.8.1+; 2.6.2 called it clear_synchro_queue).
    promote: bool
    #: box.ctl.demote() (2.10+).
    demote: bool
    #: box.cfg.bootstrap_strategy (2.11+).
    bootstrap_strategy: bool
    #: replication_connect_quorum still works but logs a deprecation warning (2.11+).
    quorum_deprecated: bool
    #: box.cfg.listen may be a list of URIs (2.10+).
    multi_listen: bool
    #: the 3.x declarative YAML config exists (box.cfg still works).
    yaml_config: bool
    #: box.info.listen exists and shows the real bound port (2.4+).
    info_listen: bool

    @classmethod
    def for_version(cls, version: Sequence[int]) -> Features:
        """The features of ``version`` (its first three parts count)."""
        major, minor, patch = (int(part) for part in tuple(version)[:3])
        v: Version = (major, minor, patch)
        promote = v >= (2, 8, 1) or (2, 7, 2) <= v < (2, 8) or (2, 6, 3) <= v < (2, 7)
        return cls(
            version=v,
            election_mode=v >= (2, 6, 1),
            promote=promote,
            demote=v >= (2, 10, 0),
            bootstrap_strategy=v >= (2, 11, 0),
            quorum_deprecated=v >= (2, 11, 0),
            multi_listen=v >= (2, 10, 0),
            yaml_config=v >= (3, 0, 0),
            info_listen=v >= (2, 4, 0),
        )
