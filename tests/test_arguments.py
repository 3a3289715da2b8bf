"""Bad input on the master: a clear ValueError/TypeError naming the argument,
raised before anything starts on any host, and error texts that stay small
however large the values in them. These need a host (to show nothing started
on it); the checks alone are in tests/unit/test_arguments.py."""

from __future__ import annotations

import math
import os
import pathlib
import time
from typing import Any

import pytest
from conftest import PY, run_pids

import remoteexec as rx

NAN, INF = math.nan, math.inf
CMD = ["sleep", "30"]
#: An error text is "a few kB", whatever went into it.
TEXT_BOUND = 8000
#: Refused before anything starts: milliseconds when idle, with room for a
#: loaded machine. What it catches is far slower: a NaN timeout that never
#: expires, a connection attempt, a 30 s start timeout.
REFUSED_AT_ONCE = 5.0


@pytest.mark.parametrize("value", [NAN, INF, 0, -1])
def test_host_times_refused_before_anything_runs(master: rx.Master, value: float) -> None:
    host = master.local()
    started = time.monotonic()
    with pytest.raises(ValueError, match="timeout"):
        host.run(["sleep", "30"], timeout=value)
    with pytest.raises(ValueError, match="reply_timeout"):
        host.service("status", reply_timeout=value, proc_id=1)
    assert time.monotonic() - started < REFUSED_AT_ONCE
    assert not run_pids(master.run_id), "nothing may have started"


@pytest.mark.parametrize("value", [NAN, INF, 0, -1])
def test_connect_timeout_refused_before_connecting(master: rx.Master, value: float) -> None:
    with pytest.raises(ValueError, match="connect_timeout"):
        master.connect("127.0.0.1", connect_timeout=value, check_host_keys="ignore")
    assert master.hosts == []


# -- ports ---------------------------------------------------------------------


@pytest.mark.parametrize("port", [0, -1, 65536, 70000])
def test_connect_ports_out_of_range_refused(master: rx.Master, port: int) -> None:
    started = time.monotonic()
    with pytest.raises(ValueError, match="port"):
        master.connect("127.0.0.1", port=port, check_host_keys="ignore")
    with pytest.raises(ValueError, match="port"):
        master.connect("root@127.0.0.1:%d" % port, check_host_keys="ignore")
    with pytest.raises(ValueError, match="port"):
        master.connect("[::1]:%d" % port, check_host_keys="ignore")
    # connect_all refuses the whole list before connecting to any of it.
    with pytest.raises(ValueError, match="port"):
        master.connect_all(["127.0.0.1", "127.0.0.2:%d" % port], check_host_keys="ignore")
    assert time.monotonic() - started < REFUSED_AT_ONCE
    assert master.hosts == []


def test_connect_all_unknown_option_is_a_type_error(master: rx.Master) -> None:
    with pytest.raises(TypeError, match="identity"):
        master.connect_all(["127.0.0.1"], identity="key")
    assert master.hosts == []


# -- commands ------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], "", "   ", ()])
def test_empty_command_refused_on_the_master(master: rx.Master, command: Any) -> None:
    """Host.run([]) raised RemoteCallError(IndexError) from the host."""
    host = master.local()
    with pytest.raises(ValueError, match="command is empty"):
        host.run(command)
    with pytest.raises(ValueError, match="command is empty"):
        rx.SimpleExecutor(command)


def test_command_parts_must_be_strings(master: rx.Master) -> None:
    host = master.local()
    with pytest.raises(TypeError, match=r"command\[1\] must be a str, got NoneType"):
        host.run(["echo", None])
    with pytest.raises(TypeError, match="command must be a list"):
        rx.SimpleExecutor(b"sleep 1")  # type: ignore[arg-type]
    # PathLike and numbers are fine, as subprocess takes them.
    assert host.run([pathlib.Path("/bin/echo"), 7]).stdout == "7\n"


# -- environments --------------------------------------------------------------


@pytest.mark.parametrize("value", [None, b"xyz", [1], 5])
def test_environment_values_must_be_strings(master: rx.Master, value: Any) -> None:
    """They were passed through str(): the child saw 'None', "b'xyz'", '[1]'."""
    host = master.local()
    with pytest.raises(TypeError, match=r"env\['BAD'\] must be a str"):
        host.run(["true"], env={"OK": "1", "BAD": value})
    with pytest.raises(TypeError, match=r"envvars\['BAD'\] must be a str"):
        rx.SimpleExecutor(CMD, envvars={"BAD": value})
    assert not run_pids(master.run_id)


def test_environment_pathlike_values_arrive_as_paths(master: rx.Master, tmp_path) -> None:
    r = master.local().run([PY, "-c", "import os; print(os.environ['P'])"], env={"P": tmp_path})
    assert r.stdout == "%s\n" % tmp_path


# -- bounded error texts -------------------------------------------------------


def test_a_huge_argument_gives_a_bounded_error(master: rx.Master) -> None:
    """A 1 MB argument gave a 1,048,673-character message."""
    host = master.local()
    big = "z" * (1 << 20)
    with pytest.raises(rx.RemoteExecError) as info:
        host.run(["no-such-program-xyz", big], check=True)
    assert len(str(info.value)) < TEXT_BOUND
    assert big in info.value.command, "the attribute keeps the whole command"
    ex = rx.TCPExecutor(["no-such-program-xyz", big], host="127.0.0.1", port=1, on=host)
    assert big in str(ex) and len(repr(ex)) < 1000
    with pytest.raises(rx.RemoteExecError) as info:
        ex.start()
    assert len(str(info.value)) < TEXT_BOUND
    assert big in info.value.command


def test_type_errors_do_not_echo_huge_values(master: rx.Master) -> None:
    host = master.local()
    huge = {"k": "v" * (1 << 20)}
    for call in (
        lambda: host.service("status", proc_id=object(), pad=[set()] * 1000),
        lambda: rx.SimpleExecutor(huge),  # type: ignore[arg-type]
        lambda: rx.SimpleExecutor(CMD, envvars=[huge]),  # type: ignore[arg-type]
        lambda: rx.SimpleExecutor(CMD, timeout=[huge]),  # type: ignore[arg-type]
        lambda: rx.SimpleExecutor(CMD, on=huge),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError) as info:
            call()
        assert len(str(info.value)) < 1000, str(info.value)[:200]


def test_output_lines_must_be_a_count(master: rx.Master) -> None:
    ex = rx.SimpleExecutor(CMD, on=master.local())
    for lines in (-1, 1.5, "10"):
        with pytest.raises(ValueError, match="lines"):
            ex.output_tail(lines=lines)  # type: ignore[arg-type]


def test_missing_ca_file_refused_before_start(master: rx.Master, tmp_path) -> None:
    """The CA file is read on the host; one it cannot load can never pass."""
    host = master.local()
    missing = str(tmp_path / "no-such-ca.pem")
    ex = rx.HTTPExecutor(
        [PY, "-c", "import time; time.sleep(30)"],
        url="https://127.0.0.1:1/",
        ca_file=missing,
        on=host,
        timeout=30,
    )
    started = time.monotonic()
    with pytest.raises(ValueError, match="ca_file %s" % missing):
        ex.start()
    assert time.monotonic() - started < REFUSED_AT_ONCE
    assert not run_pids(master.run_id), "nothing may have started"
    assert not os.path.exists(missing)
