"""Fixtures shared by test modules. A module loads them with
``pytest_plugins = ["helpers.fixtures"]``; a module's own fixture of the same
name wins over these."""

from __future__ import annotations

from typing import Any, Iterator, List

import pytest
from conftest import connect_options, need_tarantool

import remoteexec as rx


@pytest.fixture(scope="module")
def tt_master(request: pytest.FixtureRequest) -> Iterator[rx.Master]:
    """One master per module for Tarantool tests on the lab: skips (fails in
    CI) without a lab or a tarantool binary."""
    request.getfixturevalue("lab")
    need_tarantool()
    with rx.Master(heartbeat_timeout=5) as m:
        yield m


@pytest.fixture(scope="module")
def hosts(lab: Any, tt_master: rx.Master) -> List[rx.Host]:
    """The lab's three hosts, connected through :func:`tt_master`."""
    connected: List[rx.Host] = tt_master.connect_all(lab.targets, **connect_options(lab))
    return connected


@pytest.fixture(scope="module")
def lane_host(lab: Any) -> Iterator[rx.Host]:
    """The lab's first host, its lane open (one master for the module)."""
    with rx.Master(heartbeat_timeout=5) as m:
        h = m.connect(lab.targets[0], **connect_options(lab))
        assert h.open_lane(), "the lane opens"
        yield h
