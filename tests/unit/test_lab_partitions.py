"""remoteexec.lab.partitions: which cuts a partition or heal leaves, and the
nftables rules that enforce them (pure; the real drops are in tests/test_lab.py)."""

from __future__ import annotations

import pytest

from remoteexec.lab import MASTER, LabError
from remoteexec.lab.partitions import (
    affected,
    cut,
    heal,
    host_rules,
    lab_table_tags,
    nft_script,
    peers,
    root_script,
)

NODES = ["h1", "h2", "h3"]


def pair(a: str, b: str) -> frozenset:
    return frozenset((a, b))


def test_a_pair_cut_adds_up() -> None:
    cuts = cut(set(), NODES, "h1", "h2")
    assert cuts == {pair("h1", "h2")}
    cuts = cut(cuts, NODES, "h3", MASTER)
    assert cuts == {pair("h1", "h2"), pair("h3", MASTER)}


def test_a_host_alone_is_cut_from_every_other_host_and_the_master() -> None:
    assert cut(set(), NODES, "h2", None) == {
        pair("h2", "h1"),
        pair("h2", "h3"),
        pair("h2", MASTER),
    }


def test_bad_cuts_are_refused() -> None:
    with pytest.raises(LabError, match="a must be a host"):
        cut(set(), NODES, MASTER, "h1")
    with pytest.raises(LabError, match="cannot partition h1 from itself"):
        cut(set(), NODES, "h1", "h1")


def test_heal_all_one_node_or_one_pair() -> None:
    cuts = cut(set(), NODES, "h1", None) | {pair("h2", "h3")}
    assert heal(cuts) == set()
    assert heal(cuts, "h1") == {pair("h2", "h3")}
    assert heal(cuts, "h3", "h2") == cut(set(), NODES, "h1", None)
    assert heal(cuts, "h2", MASTER) == cuts  # no such cut: nothing changes


def test_only_nodes_whose_cuts_change_are_reloaded() -> None:
    old = {pair("h1", "h2")}
    new = {pair("h1", "h2"), pair("h3", MASTER)}
    assert affected(old, new) == {"h3", MASTER}
    assert affected(new, new) == set()
    assert peers("h1", cut(set(), NODES, "h1", None)) == ["h2", "h3", MASTER]


def test_host_rules_drop_cut_peers_and_the_master_silently() -> None:
    addresses = {"h1": "10.9.8.11", "h2": "10.9.8.12", "h3": "10.9.8.13"}
    net, gw = "10.9.8.0/24", "10.9.8.1"
    assert host_rules([], addresses, net, gw) == []
    assert host_rules(["h2", "h3"], addresses, net, gw) == [
        'iifname "lo" accept',
        "ip saddr { 10.9.8.12, 10.9.8.13 } drop",
    ]
    assert host_rules([MASTER], addresses, net, gw) == [
        'iifname "lo" accept',
        "ip saddr != 10.9.8.0/24 drop",
        "ip saddr 10.9.8.1 drop",
    ]
    rules = host_rules(["h2", "h3", MASTER], addresses, net, gw)
    assert all(r.endswith((" drop", " accept")) for r in rules)
    assert not any("reject" in r for r in rules), "a cut must be silent"


def test_nft_scripts_replace_the_table_atomically() -> None:
    assert nft_script("t", {}) == "table inet t\ndelete table inet t\n"
    script = nft_script("t", {"input": ["ip saddr 1.2.3.4 drop"]})
    assert script.startswith("table inet t\ndelete table inet t\ntable inet t {\n")
    assert "type filter hook input priority -50; policy accept;" in script
    assert "    ip saddr 1.2.3.4 drop\n" in script


def test_the_root_table_keeps_the_lab_from_routing_outside_and_cuts_the_master() -> None:
    script = root_script("0a1b2c", "rxb0a1b2c", [])
    assert "table inet rxl_0a1b2c {" in script and "hook forward" in script
    assert 'iifname "rxb0a1b2c" oifname != "rxb0a1b2c" reject' in script
    assert "hook input" not in script
    script = root_script("0a1b2c", "rxb0a1b2c", ["10.9.8.11", "10.9.8.12"])
    assert "ip saddr { 10.9.8.11, 10.9.8.12 } drop" in script


def test_lab_tables_are_picked_from_nft_list_tables() -> None:
    listing = (
        "table inet rxl_0a1b2c\n"
        "table ip filter\n"
        "table inet rxl_nothex\n"
        "table inet firewalld\n"
        "table inet rxl_ffffff\n"
    )
    assert lab_table_tags(listing) == ["0a1b2c", "ffffff"]
