"""A host's name from its ssh target (``Host.name`` of ``Master.connect``):
the target as given, a port other than 22 shown, and read back by
``Target.parse`` as the same user, host and port."""

from __future__ import annotations

from typing import Optional

import pytest

from remoteexec.connectors.ssh import Target


@pytest.mark.parametrize(
    ("text", "port", "name"),
    [
        ("root@10.0.0.11", None, "root@10.0.0.11"),
        ("root@10.0.0.11:22", None, "root@10.0.0.11"),
        ("root@10.0.0.11:2222", None, "root@10.0.0.11:2222"),
        ("root@10.0.0.11", 2222, "root@10.0.0.11:2222"),
        ("root@10.0.0.11:2222", 22, "root@10.0.0.11"),
        ("db.example", 2200, "db.example:2200"),
        ("u@[fe80::1]:2222", None, "u@[fe80::1]:2222"),
        ("[::1]", 2200, "[::1]:2200"),
        ("u@[::1]:22", None, "u@::1"),
    ],
)
def test_a_targets_name_shows_its_port_and_reads_back(
    text: str, port: Optional[int], name: str
) -> None:
    target = Target.parse(text, port)
    assert str(target) == name
    again = Target.parse(name)
    assert (again.user, again.hostname, again.port or 22) == (
        target.user,
        target.hostname,
        target.port or 22,
    )
