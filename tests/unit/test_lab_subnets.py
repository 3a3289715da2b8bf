"""remoteexec.lab.subnets: which network a lab gets (pure; no root needed)."""

from __future__ import annotations

import ipaddress
import random

import pytest

from remoteexec.lab import LabError
from remoteexec.lab.subnets import (
    gateway,
    host_address,
    networks_in_addresses,
    networks_in_routes,
    pick_subnet,
    recorded_networks,
)

Net = ipaddress.IPv4Network


def test_a_requested_subnet_is_taken_as_given_when_free() -> None:
    net = pick_subnet("10.9.8.0/24", 3, [Net("10.9.9.0/24")])
    assert net == Net("10.9.8.0/24")
    assert gateway(net) == "10.9.8.1"
    assert [host_address(net, i) for i in range(3)] == ["10.9.8.11", "10.9.8.12", "10.9.8.13"]


def test_a_host_address_in_a_requested_subnet_means_its_network() -> None:
    assert pick_subnet("10.9.8.77/24", 1, []) == Net("10.9.8.0/24")


@pytest.mark.parametrize(
    ("want", "hosts", "used", "match"),
    [
        ("10.9.8.0/33", 1, [], "bad subnet '10.9.8.0/33'"),
        ("nonsense", 1, [], "bad subnet 'nonsense'"),
        # 16 addresses: network + gateway + 10 skipped + 4 hosts + broadcast is one too many.
        ("10.9.8.0/28", 5, [], "too small for 5 hosts"),
        ("10.9.8.0/24", 1, [Net("10.9.0.0/16")], "overlaps 10.9.0.0/16"),
        ("10.9.8.0/24", 1, [Net("10.9.8.128/25")], "overlaps 10.9.8.128/25"),
    ],
)
def test_a_requested_subnet_that_cannot_serve_is_refused(
    want: str, hosts: int, used: list, match: str
) -> None:
    with pytest.raises(LabError, match=match) as err:
        pick_subnet(want, hosts, used)
    assert err.value.step == "allocate"


def test_the_smallest_subnet_that_fits_is_accepted() -> None:
    # 16 addresses: network, gateway, .2-.10 unused, hosts .11-.14, broadcast .15.
    assert pick_subnet("10.9.8.0/28", 4, []) == Net("10.9.8.0/28")


def test_an_automatic_subnet_is_a_free_10_x_y_0_24_in_the_lab_range() -> None:
    rng = random.Random(7)
    used = [Net("10.200.0.0/16"), Net("10.0.0.0/9")]  # the first 256 candidates and below
    for _ in range(50):
        net = pick_subnet(None, 3, used, rng)
        assert net.prefixlen == 24 and 201 <= net.network_address.packed[1] <= 250, net
        assert not any(u.overlaps(net) for u in used)


def test_an_automatic_subnet_skips_every_used_one_and_says_when_none_is_left() -> None:
    rng = random.Random(1)
    free = Net("10.250.255.0/24")
    used = list(Net("10.192.0.0/10").address_exclude(free))  # all of 10.192-255 but one
    assert pick_subnet(None, 1, used, rng) == free
    with pytest.raises(LabError, match=r"no free 10\.X\.Y\.0/24 subnet left"):
        pick_subnet(None, 1, [*used, free], rng)


def test_recorded_networks_skip_unreadable_records() -> None:
    states = [{"subnet": "10.201.3.0/24"}, {}, {"subnet": "garbage"}, {"subnet": None}]
    assert recorded_networks(states) == [Net("10.201.3.0/24")]


def test_networks_in_ip_addr_output() -> None:
    text = (
        "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n"
        "2: eth0    inet 192.168.1.20/24 brd 192.168.1.255 scope global eth0\n"
        "7: rxbabc123    inet 10.201.7.1/24 scope global rxbabc123\n"
        "garbage line\n"
    )
    assert networks_in_addresses(text) == [
        Net("127.0.0.0/8"),
        Net("192.168.1.0/24"),
        Net("10.201.7.0/24"),
    ]


def test_networks_in_ip_route_output_leave_default_routes_out() -> None:
    text = (
        "default via 192.168.1.1 dev eth0\n"
        "10.8.0.0/16 via 192.168.1.1 dev eth0\n"
        "blackhole 172.20.0.0/14\n"
        "local 127.0.0.1 dev lo table local proto kernel scope host src 127.0.0.1\n"
        "broadcast 192.168.1.255 dev eth0 table local\n"
        "unreachable default metric 4278198272\n"
        "\n"
        "fe80::/64 dev eth0\n"
    )
    assert networks_in_routes(text) == [
        Net("10.8.0.0/16"),
        Net("172.20.0.0/14"),
        Net("127.0.0.1/32"),
        Net("192.168.1.255/32"),
    ]
