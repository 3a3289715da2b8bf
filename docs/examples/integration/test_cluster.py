"""Cross-host tests: a server on one host, its clients on the others."""

from __future__ import annotations

import os
import time
from typing import List

import pytest

import remoteexec as rx
from remoteexec.lab import Lab

PY = "/usr/bin/python3"

#: A client run ON a host: fetch a URL, print the status or the error.
FETCH = """
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).status)
except OSError as e:
    print("failed:", type(e).__name__)
"""


def web_server(host: rx.Host, address: str) -> rx.HTTPExecutor:
    """An HTTP server on ``host``, listening on its lab address."""
    return rx.HTTPExecutor(
        [PY, "-m", "http.server", "8000", "--bind", address],
        url="http://%s:8000/" % address,
        on=host,
        timeout=20,
    )


def fetch(host: rx.Host, url: str, timeout: float = 5) -> str:
    result = host.run([PY, "-c", FETCH, url, str(timeout)], timeout=timeout + 10)
    return str(result.stdout).strip()


def test_a_server_on_one_host_answers_the_others(lab: Lab, hosts: List[rx.Host]) -> None:
    address = lab.hosts[0].address
    with web_server(hosts[0], address):  # ready: the URL answered, checked on host 1
        for client in hosts[1:]:
            assert fetch(client, "http://%s:8000/" % address) == "200"


def test_a_partition_cuts_one_client_only(lab: Lab, hosts: List[rx.Host]) -> None:
    address = lab.hosts[0].address
    url = "http://%s:8000/" % address
    with web_server(hosts[0], address):
        lab.partition(1, 0)  # host 2 and host 1 cannot talk; packets dropped, silently
        try:
            assert fetch(hosts[1], url, timeout=1) == "failed: URLError"
            assert fetch(hosts[2], url) == "200"
        finally:
            lab.heal()
        assert fetch(hosts[1], url) == "200"


def test_nothing_is_left_running(lab: Lab) -> None:
    # A master of its own, to close it inside the test.
    with rx.Master() as master:
        host = master.connect(
            lab.targets[0],
            identity_file=lab.identity_file,
            known_hosts_file=lab.known_hosts_file,
            python=PY,
        )
        server = web_server(host, lab.hosts[0].address).start()
        pid = server.pid
    # Lab hosts share this machine's pid space, so the pid can be checked here.
    deadline = time.monotonic() + 5
    while os.path.exists("/proc/%d" % pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists("/proc/%d" % pid), "the server outlived its master"


def test_a_failed_start_names_the_host_and_the_output(hosts: List[rx.Host]) -> None:
    broken = rx.HTTPExecutor(
        [PY, "-c", "import sys; sys.exit('no config file')"],
        url="http://127.0.0.1:8000/",
        on=hosts[2],
        timeout=20,
    )
    with pytest.raises(rx.ProcessExitedWithError) as failure:
        broken.start()
    assert failure.value.host == hosts[2].name
    assert failure.value.exit_code == 1
    assert "no config file" in failure.value.output_tail
