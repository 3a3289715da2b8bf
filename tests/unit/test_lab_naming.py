"""remoteexec.lab.naming: the names a lab's kernel objects carry (pure)."""

from __future__ import annotations

import pytest

from remoteexec.lab import naming


@pytest.mark.parametrize("name", ["a", "lab-1", "My_lab.2", "x" * 40, "0abc"])
def test_valid_names(name: str) -> None:
    assert naming.valid_name(name)


@pytest.mark.parametrize("name", ["", "-lab", ".lab", "bad name", "x" * 41, "a/b", "ä"])
def test_invalid_names(name: str) -> None:
    assert not naming.valid_name(name)


def test_namespace_names_round_trip_to_their_lab() -> None:
    ns = naming.netns_name("my-lab-2", 3)
    assert ns == "rxl-my-lab-2-3"
    assert naming.lab_of_netns(ns) == "my-lab-2"
    assert naming.lab_of_netns("rxl-abc") is None
    assert naming.lab_of_netns("other-abc-1") is None


def test_links_are_the_labs_only_by_prefix_and_tag() -> None:
    tag = "0a1b2c"
    assert naming.bridge_name(tag) == "rxb0a1b2c"
    assert naming.veth_name(tag, 12) == "rxv0a1b2c12"
    assert naming.is_lab_link(naming.bridge_name(tag))
    assert naming.is_lab_link(naming.veth_name(tag, 12))
    for other in ("eth0", "rxbXYZ123", "rxb0a1b2", "rxv0a1b2", "docker0", "lo"):
        assert not naming.is_lab_link(other), other
    # Every name the kernel accepts is at most 15 characters.
    assert len(naming.veth_name(tag, 199)) <= 15


def test_root_tables_give_back_their_tag() -> None:
    assert naming.root_table("0a1b2c") == "rxl_0a1b2c"
    assert naming.tag_of_root_table("rxl_0a1b2c") == "0a1b2c"
    assert naming.tag_of_root_table("rxl_nothex") is None
    assert naming.tag_of_root_table("filter") is None


def test_new_tags_avoid_the_taken_ones() -> None:
    taken = {naming.new_tag(()) for _ in range(50)}
    assert all(naming.is_tag(t) for t in taken)
    for _ in range(50):
        assert naming.new_tag(taken) not in taken
