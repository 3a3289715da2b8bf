"""Fixtures for cross-host tests: a lab of three real SSH hosts for the whole
session, a fresh master for each test, and the hosts connected through it."""

from __future__ import annotations

import os
from typing import Iterator, List

import pytest

import remoteexec as rx
from remoteexec.lab import Lab

#: The interpreter on the hosts (lab hosts share this machine's /usr).
PY = "/usr/bin/python3"
#: In CI a test that cannot run must fail, not skip: a green run proves something.
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    ok, why = Lab.available()
    if not ok:
        if IN_CI:
            pytest.fail("lab unavailable in CI: %s" % why)
        pytest.skip("lab unavailable: %s" % why)
    with Lab(hosts=3) as the_lab:  # torn down after the session, whatever happened
        yield the_lab


@pytest.fixture
def master() -> Iterator[rx.Master]:
    # Closing it kills everything the test started, on every host.
    with rx.Master(heartbeat_timeout=3) as the_master:
        yield the_master


@pytest.fixture
def hosts(lab: Lab, master: rx.Master) -> List[rx.Host]:
    connected: List[rx.Host] = master.connect_all(
        lab.targets,
        identity_file=lab.identity_file,
        known_hosts_file=lab.known_hosts_file,  # host keys stay checked
        python=PY,
        connect_timeout=5,
    )
    return connected
