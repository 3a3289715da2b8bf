"""The names and places a lab takes on the machine, and how to tell them apart.

Every kernel object a lab makes carries a prefix (``rxl-`` namespaces, ``rxb``
bridges, ``rxv`` veths, ``rxl_`` nftables tables) and its lab's name or 6-hex-digit
tag, so leftovers of a crashed lab are found by name alone (see
:mod:`remoteexec.lab.machine`).  Pure functions: nothing here touches the system.
"""

from __future__ import annotations

import re
import secrets
from typing import Collection, Optional

__all__ = [
    "BRIDGE_PREFIX",
    "DEFAULT_BASE",
    "NETNS_PREFIX",
    "NFT_HOST_TABLE",
    "NFT_ROOT_PREFIX",
    "VETH_PREFIX",
    "bridge_name",
    "is_lab_link",
    "is_tag",
    "lab_of_netns",
    "netns_name",
    "new_tag",
    "root_table",
    "tag_of_root_table",
    "valid_name",
    "veth_name",
]

#: Where a lab's keys, configs and logs go unless ``base_dir`` says otherwise.
DEFAULT_BASE = "/tmp/remoteexec-lab"
NETNS_PREFIX = "rxl-"
BRIDGE_PREFIX = "rxb"
VETH_PREFIX = "rxv"
NFT_ROOT_PREFIX = "rxl_"
#: The table a host's own namespace gets for its side of partitions.
NFT_HOST_TABLE = "rxl"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
_TAG_RE = re.compile(r"^[0-9a-f]{6}$")
_NS_RE = re.compile(r"^rxl-(.+)-(\d+)$")
_TAG_LEN = 6


def valid_name(name: str) -> bool:
    """Whether ``name`` may name a lab: letters, digits, ``_.-``, up to 40 chars."""
    return bool(_NAME_RE.match(name))


def is_tag(text: str) -> bool:
    """Whether ``text`` is a lab tag (6 lowercase hex digits)."""
    return bool(_TAG_RE.match(text))


def new_tag(taken: Collection[str], tries: int = 1000) -> str:
    """A random tag not in ``taken`` (bounded tries; the last one drawn if all clash)."""
    tag = ""
    for _ in range(tries):
        tag = secrets.token_hex(_TAG_LEN // 2)
        if tag not in taken:
            break
    return tag


def netns_name(lab: str, number: int) -> str:
    """The namespace of host ``number`` (1-based) of lab ``lab``: ``rxl-<lab>-<number>``."""
    return f"{NETNS_PREFIX}{lab}-{number}"


def lab_of_netns(netns: str) -> Optional[str]:
    """The lab name in a lab namespace's name, or None for anything else."""
    m = _NS_RE.match(netns)
    return m.group(1) if m else None


def bridge_name(tag: str) -> str:
    return BRIDGE_PREFIX + tag


def veth_name(tag: str, index: int) -> str:
    """The root-namespace end of host ``index``'s (0-based) veth pair."""
    return f"{VETH_PREFIX}{tag}{index}"


def is_lab_link(link: str) -> bool:
    """Whether a root-namespace link is a lab's bridge or veth (by name)."""
    if link.startswith(BRIDGE_PREFIX):
        return is_tag(link[len(BRIDGE_PREFIX) :])
    if link.startswith(VETH_PREFIX):
        return is_tag(link[len(VETH_PREFIX) : len(VETH_PREFIX) + _TAG_LEN])
    return False


def root_table(tag: str) -> str:
    """The lab's nftables table (family inet) in the root namespace."""
    return NFT_ROOT_PREFIX + tag


def tag_of_root_table(table: str) -> Optional[str]:
    """The tag in a lab's root-namespace table name, or None for any other table."""
    if not table.startswith(NFT_ROOT_PREFIX):
        return None
    tag = table[len(NFT_ROOT_PREFIX) :]
    return tag if is_tag(tag) else None
