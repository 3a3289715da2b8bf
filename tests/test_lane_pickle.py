"""The lane's serialization (remoteexec/target/lane.py: pickle protocol 3,
mitogen's own restricted find_class on both ends): the same values, types
and errors as mitogen's path, and whatever mitogen refuses is refused in the
master too. Real lab hosts; one master for the module."""

from __future__ import annotations

import os
import pickle
from typing import Any

import mitogen.core
import pytest
from helpers import lane_values

import remoteexec as rx
from remoteexec.target import lane as target_lane

pytestmark = pytest.mark.lab


pytest_plugins = ["helpers.fixtures"]


@pytest.fixture(scope="module")
def host(lane_host: rx.Host) -> rx.Host:
    return lane_host


def _lane(host: rx.Host) -> rx.Host:
    if not host.lane.is_open:
        assert host.open_lane()
    return host


def _through_mitogen(host: rx.Host, pending: Any) -> Any:
    """A call sent with send_* (never on the lane), waited for."""
    return pending.finish(host.unpickle(pending.receiver.get, pending.what, pending.timeout))


def _shape(value: Any) -> Any:
    """``value`` with every object's type alongside it (== ignores them: 1 == 1.0 == True)."""
    if isinstance(value, dict):
        return ("dict", sorted((repr(_shape(k)), _shape(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_shape(v) for v in value])
    return (type(value).__name__, value)


def _error(fn: Any, *args: Any, **kwargs: Any) -> BaseException:
    try:
        fn(*args, **kwargs)
    except Exception as e:
        return e
    raise AssertionError("%s%r raised nothing" % (fn, args))


def test_frames_carry_bytes_as_bytes_and_read_back_as_mitogens_do() -> None:
    value = lane_values.sample()
    data = target_lane.frame(value)[target_lane.HEADER.size :]
    assert b"_codecs" not in data, "bytes pickled as bytes (protocol 3), not as calls"
    assert data[:2] == b"\x80\x03"
    assert _shape(target_lane.unpickle(data)) == _shape(value)
    # mitogen's own unpickler reads a lane frame to the same value, and the
    # lane reads mitogen's pickle (protocol 2) to the same value.
    msg = mitogen.core.Message(data=data, enc=mitogen.core.Message.ENC_PKL)
    assert _shape(msg.unpickle()) == _shape(value)
    assert _shape(target_lane.unpickle(mitogen.core.Message.pickled(value).data)) == _shape(value)
    # Globals are checked as protocol 2 names them: the bytes type passes
    # (mitogen's __builtin__.bytes), builtins.bytearray does not.
    assert target_lane.unpickle(pickle.dumps(bytes, target_lane.PROTOCOL)) is bytes
    with pytest.raises(mitogen.core.StreamError, match="'__builtin__'/'bytearray'"):
        target_lane.unpickle(pickle.dumps(bytearray, target_lane.PROTOCOL))


def test_values_cross_the_lane_as_they_cross_mitogen(host: rx.Host) -> None:
    _lane(host)
    calls = host.lane.stats["calls"]
    expected = _shape(lane_values.sample())
    on_lane = host.call(lane_values.sample)
    assert _shape(on_lane) == expected
    assert _shape(_through_mitogen(host, host.send_call(lane_values.sample))) == expected
    # And as arguments: master to host and back.
    assert _shape(host.call(lane_values.echo, on_lane)) == expected
    assert host.lane.stats["calls"] == calls + 2, "both on the lane"


def test_two_mebibytes_cross_the_lane_both_ways(host: rx.Host) -> None:
    _lane(host)
    calls, runs = host.lane.stats["calls"], host.lane.stats["runs"]
    big = lane_values.BIG
    assert host.call(lane_values.big) == big
    assert host.call(lane_values.echo, big) == big
    script = "import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d); "
    script += "sys.stderr.buffer.write(d[::-1])"
    result = host.run(["python3", "-c", script], input=big, text=False, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, big, big[::-1])
    assert host.lane.stats["calls"] == calls + 2 and host.lane.stats["runs"] == runs + 1


def test_a_remote_exception_is_the_same_remote_call_error(host: rx.Host) -> None:
    _lane(host)
    on_lane = _error(host.call, lane_values.fails_with, b"\xff\x00")
    on_mitogen = _error(_through_mitogen, host, host.send_call(lane_values.fails_with, b"\xff\x00"))
    assert isinstance(on_lane, rx.RemoteCallError) and type(on_lane) is type(on_mitogen)
    assert on_lane.host == host.name and host.name in str(on_lane)
    assert str(on_lane) == str(on_mitogen)
    assert on_lane.details["type_name"] == "ValueError"
    assert on_lane.details["remote_message"] == "bad b'\\xff\\x00'"


def test_without_mitogens_find_class_frames_are_read_by_a_mitogen_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A mitogen without the private ``_find_global`` (FIND_CLASS None): the
    lane still reads its frames, by mitogen's Message, with the same rules."""
    monkeypatch.setattr(target_lane, "FIND_CLASS", None)
    value = lane_values.sample()
    data = target_lane.frame(value)[target_lane.HEADER.size :]
    assert _shape(target_lane.unpickle(data)) == _shape(value)
    with pytest.raises(mitogen.core.StreamError, match="getpid"):
        target_lane.unpickle(pickle.dumps(os.getpid, target_lane.PROTOCOL))


def test_a_pickle_that_would_run_code_is_refused_in_the_master(host: rx.Host) -> None:
    """A compromised host's reply that names a function (os.getpid here) is
    refused by the master's unpickler, on the lane as on mitogen's path: the
    function never runs in the master."""
    _lane(host)
    calls = host.lane.stats["calls"]
    on_lane = _error(host.call, lane_values.runs_in_the_reader)
    assert host.lane.stats["calls"] == calls, "the reply was refused"
    on_mitogen = _error(_through_mitogen, host, host.send_call(lane_values.runs_in_the_reader))
    assert isinstance(on_lane, mitogen.core.StreamError), on_lane
    assert type(on_lane) is type(on_mitogen) and str(on_lane) == str(on_mitogen)
    assert "getpid" in str(on_lane)
    # What mitogen refuses as data is refused alike, in the same words: a
    # set, which protocol 3 writes as a call of builtins.set (protocol 2:
    # __builtin__.set).
    on_lane = _error(host.call, lane_values.returns_a_set)
    on_mitogen = _error(_through_mitogen, host, host.send_call(lane_values.returns_a_set))
    assert type(on_lane) is type(on_mitogen) and str(on_lane) == str(on_mitogen)
    assert str(on_lane) == "cannot unpickle '__builtin__'/'set'"
    # The refused frame was read whole: the lane serves the next call.
    assert host.call(lane_values.echo, os.getpid()) == os.getpid()
    assert host.lane.stats["calls"] == calls + 1 and host.lane.is_open
