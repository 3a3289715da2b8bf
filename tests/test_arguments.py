"""Bad input on the master: a clear ValueError/TypeError naming the argument,
raised before anything starts on any host, and error texts that stay small
however large the values in them."""

from __future__ import annotations

import math
import os
import pathlib
import pickle
import time
from typing import Any, Callable

import pytest
from conftest import PY, run_pids

import remoteexec as rx
from remoteexec import errors, waits

NAN, INF = math.nan, math.inf
CMD = ["sleep", "30"]
#: An error text is "a few kB", whatever went into it.
TEXT_BOUND = 8000
#: Refused before anything starts: milliseconds when idle, with room for a
#: loaded machine. What it catches is far slower: a NaN timeout that never
#: expires, a connection attempt, a 30 s start timeout.
REFUSED_AT_ONCE = 5.0


def _executor(**kwargs: Any) -> rx.TCPExecutor:
    return rx.TCPExecutor(CMD, host="127.0.0.1", port=8000, **kwargs)


def _http(**kwargs: Any) -> rx.HTTPExecutor:
    return rx.HTTPExecutor(CMD, url="http://127.0.0.1:8000/", **kwargs)


TIMES = [
    ("timeout", lambda v: _executor(timeout=v)),
    ("sleep", lambda v: _executor(sleep=v)),
    ("stop_timeout", lambda v: _executor(stop_timeout=v)),
    ("timeout", lambda v: rx.SimpleExecutor(CMD, timeout=v)),
    ("request_timeout", lambda v: _http(request_timeout=v)),
    ("request_timeout", lambda v: waits.HTTP("http://127.0.0.1:1/", request_timeout=v)),
    ("heartbeat_timeout", lambda v: rx.Master(heartbeat_timeout=v)),
]


@pytest.mark.parametrize("value", [NAN, INF, -INF, 0, -1.5])
@pytest.mark.parametrize("name,make", TIMES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(TIMES)])
def test_times_refuse_nan_inf_and_non_positive(
    name: str, make: Callable[[Any], Any], value: float
) -> None:
    """A NaN deadline never expires (start() hung, Master lost its host);
    every time argument refuses it, and infinity, zero and negatives."""
    with pytest.raises(ValueError, match=name):
        made = make(value)
        if isinstance(made, rx.Master):
            made.close()


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


def test_cli_timeout_is_a_usage_error(capfd: pytest.CaptureFixture[str]) -> None:
    from remoteexec.cli import main

    with pytest.raises(SystemExit) as info:
        main(["run", "local", "--timeout", "nan", "--", "true"])
    assert info.value.code == 2
    assert "--timeout" in capfd.readouterr().err


# -- ports ---------------------------------------------------------------------


@pytest.mark.parametrize("port", [0, -1, 65536, 70000])
def test_ports_out_of_range_refused(port: int) -> None:
    """70000 used to be probed as 70000 % 65536 = 4464 for the whole timeout."""
    with pytest.raises(ValueError, match="port"):
        rx.TCPExecutor(CMD, host="127.0.0.1", port=port)
    with pytest.raises(ValueError, match="port"):
        waits.TCP("127.0.0.1", port)
    url = "http://127.0.0.1:%d/" % port
    with pytest.raises(ValueError, match="url http://127.0.0.1:%d/" % port):
        rx.HTTPExecutor(CMD, url=url)
    with pytest.raises(ValueError, match="url"):
        waits.HTTP(url)


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


def test_urls_default_ports_and_schemes() -> None:
    assert rx.HTTPExecutor(CMD, url="http://127.0.0.1/").port == 80
    assert rx.HTTPExecutor(CMD, url="https://127.0.0.1/x").port == 443
    assert rx.HTTPExecutor(CMD, url="https://[::1]:8443/").port == 8443
    assert waits.HTTP("https://127.0.0.1/").specs()[0]["port"] == 443
    for url in ("ftp://127.0.0.1/", "127.0.0.1:8000/", "//127.0.0.1:8000/"):
        with pytest.raises(ValueError, match="scheme must be http or https"):
            rx.HTTPExecutor(CMD, url=url)
        with pytest.raises(ValueError, match="scheme must be http or https"):
            waits.HTTP(url)
    with pytest.raises(ValueError, match="host name"):
        rx.HTTPExecutor(CMD, url="http:///x")
    with pytest.raises(ValueError, match="ca_file"):
        waits.HTTP("http://127.0.0.1/", ca_file="/etc/ssl/certs/ca-certificates.crt")
    with pytest.raises(ValueError, match="contradict"):
        rx.HTTPExecutor(CMD, url="https://127.0.0.1/", verify=False, ca_file="/x.pem")


def test_regexes_checked_before_start() -> None:
    """A bad regex used to fail on the host after the process had started."""
    with pytest.raises(ValueError, match="status"):
        rx.HTTPExecutor(CMD, url="http://127.0.0.1:1/", status="(")
    with pytest.raises(ValueError, match="banner"):
        rx.OutputExecutor(CMD, banner="[unclosed")
    with pytest.raises(TypeError, match="banner"):
        waits.Banner(b"ready")  # type: ignore[arg-type]


# -- unix socket paths ---------------------------------------------------------


def test_unix_socket_path_over_the_limit_refused() -> None:
    """A path over sun_path's 108 bytes waited the whole timeout."""
    path = "/tmp/" + "s" * 120 + ".sock"
    with pytest.raises(ValueError, match="socket_name is 130 bytes, over the AF_UNIX limit"):
        rx.UnixSocketExecutor(CMD, socket_name=path)
    with pytest.raises(ValueError, match="AF_UNIX"):
        waits.UnixSocket(path)
    # Bytes count, not characters: 40 three-byte characters are 120 bytes.
    with pytest.raises(ValueError, match="AF_UNIX"):
        waits.UnixSocket("/tmp/" + "€" * 40)
    ok = "/tmp/" + "s" * 100
    assert rx.UnixSocketExecutor(CMD, socket_name=pathlib.Path(ok)).socket == ok


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

ERROR_CLASSES = [
    cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.RemoteExecError)
]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_text_is_bounded_and_keeps_full_attributes(cls: type) -> None:
    big = "x" * (1 << 20)
    err = cls(
        "failed " + big,
        host="h1",
        command=["prog", big, "tail-arg"],
        exit_code=3,
        output_tail=big + "\nlast line",
        blob=big,
    )
    text = str(err)
    assert len(text) < TEXT_BOUND, len(text)
    assert "characters elided" in text
    assert text.startswith("[h1] failed xxx") and "last line" in text
    assert "tail-arg" in text, "both ends of the command are kept"
    assert len(err.command_text) < TEXT_BOUND
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls and str(back) == text
    assert back.command == ["prog", big, "tail-arg"]
    assert back.message == "failed " + big
    assert back.output_tail == big + "\nlast line"
    assert back.details["blob"] == big


def test_messages_built_on_a_host_are_bounded_here() -> None:
    big = "y" * (1 << 20)
    fields = {"type": "AlreadyRunning", "message": "port busy " + big, "command": big}
    err = errors.from_remote(fields, "h2")
    assert type(err) is rx.AlreadyRunning
    assert len(str(err)) < TEXT_BOUND
    assert err.message == "port busy " + big and err.command == big


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
