"""Pure helpers of remoteexec.tarantool: listen values, bounds, env checks, errors."""

from __future__ import annotations

import math
from typing import Any

import pytest

from remoteexec.errors import TimeoutExpired
from remoteexec.tarantool.instance import checked_env
from remoteexec.tarantool.shared import (
    bound_seconds,
    check_listen,
    renamed,
    reworded,
    split_listen,
)


class Later:
    def resolve(self) -> str:
        return "later"


def test_split_listen() -> None:
    assert split_listen(3301) == (None, 3301)
    assert split_listen("10.0.0.1:3301") == ("10.0.0.1", 3301)
    assert split_listen("[::1]:3301") == ("::1", 3301)
    assert split_listen("/tmp/t.sock") == (None, None)
    assert split_listen("unix/:/tmp/t.sock") == (None, None)


@pytest.mark.parametrize(
    ("value", "kind", "words"),
    [(70000, ValueError, "65535"), (True, TypeError, "port"), (":3301", ValueError, "address")],
)
def test_check_listen_refuses(value: Any, kind: type, words: str) -> None:
    with pytest.raises(kind, match=words):
        check_listen("listen", value, allow_zero=True)


def test_bound_seconds() -> None:
    assert bound_seconds("timeout", 2) == 2.0
    with pytest.raises(ValueError, match="timeout"):
        bound_seconds("timeout", math.nan)
    with pytest.raises(ValueError, match="timeout must be a number of seconds, got None"):
        bound_seconds("timeout", None)


def test_checked_env_keeps_deferred_values_and_checks_the_rest() -> None:
    later = Later()
    assert checked_env("env", {"A": "1", "B": later}) == {"A": "1", "B": later}
    with pytest.raises(TypeError, match="env"):
        checked_env("env", {"A": 1})


def test_reworded_and_renamed_keep_class_host_and_fields() -> None:
    error = TimeoutExpired("slow", host="h1", command=["x"], layer="mesh")
    again = renamed(error, "rs-1", member="rs-1")
    assert type(again) is TimeoutExpired and again.host == "h1"
    assert again.message == "rs-1: slow" and again.command == ["x"]
    assert again.details["layer"] == "mesh" and again.details["member"] == "rs-1"
    assert reworded(error, "other").message == "other"
