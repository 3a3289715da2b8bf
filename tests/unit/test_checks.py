"""remoteexec.target.checks: one registry of check kinds."""

from __future__ import annotations

import socket

import pytest

from remoteexec import waits
from remoteexec.target import checks


def test_every_wait_names_a_registered_kind_with_its_own_description() -> None:
    made = [
        waits.TCP("127.0.0.1", 80),
        waits.UnixSocket("/tmp/x.sock"),
        waits.HTTP("http://127.0.0.1:8080/health"),
        waits.File("/tmp/x.pid"),
        waits.Banner("ready"),
    ]
    described = [checks.describe(s) for w in made for s in w.specs()]
    assert described == [
        "tcp 127.0.0.1:80",
        "unix /tmp/x.sock",
        "http http://127.0.0.1:8080/health",
        "file /tmp/x.pid",
        "banner",
    ]
    assert {s["kind"] for w in made for s in w.specs()} == set(checks.KINDS)


def test_a_kind_registered_once_is_usable_from_waits_and_build() -> None:
    @checks.kind("always")
    class Always(checks.Check):
        def probe(self, remaining: float) -> checks.Outcome:  # noqa: ARG002
            return True, ""

        @classmethod
        def describe(cls, spec: checks.Spec) -> str:  # noqa: ARG003
            return "always"

    try:
        specs = waits.Check("always").specs()
        assert checks.probe_all(checks.build(specs), 1.0) == (True, "")
        assert checks.describe(specs[0]) == "always"
    finally:
        del checks.KINDS["always"]
    with pytest.raises(ValueError, match="unknown check kind 'always'"):
        waits.Check("always")


def test_free_port_is_bindable() -> None:
    port = checks.free_port("127.0.0.1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
