"""remoteexec.arguments: the master-side checks every entry point runs its
arguments through, and that each entry point refuses bad values by name
before anything starts. (Checks that need a host: tests/test_arguments.py.)"""

from __future__ import annotations

import math
import pathlib
from typing import Any, Callable, List

import pytest

import remoteexec as rx
from remoteexec import arguments, waits
from remoteexec.fanout import PlainHost, run_plain

NAN, INF = math.nan, math.inf
CMD = ["sleep", "30"]


def _executor(**kwargs: Any) -> rx.TCPExecutor:
    return rx.TCPExecutor(CMD, host="127.0.0.1", port=8000, **kwargs)


def _http(**kwargs: Any) -> rx.HTTPExecutor:
    return rx.HTTPExecutor(CMD, url="http://127.0.0.1:8000/", **kwargs)


# -- the checks themselves ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "options", "expected"),
    [
        (1, {}, 1.0),
        (0.25, {}, 0.25),
        (0, {"allow_zero": True}, 0.0),
        (None, {"allow_none": True}, None),
        (INF, {"allow_inf": True}, INF),
    ],
    ids=["int", "float", "zero-allowed", "none-allowed", "inf-allowed"],
)
def test_seconds_accepts(value: Any, options: Any, expected: Any) -> None:
    got = arguments.seconds("t", value, **options)
    assert got == expected and (got is None or type(got) is float)


@pytest.mark.parametrize(
    ("value", "options", "error", "words"),
    [
        (None, {}, ValueError, "t must be a number of seconds, got None"),
        (NAN, {"allow_zero": True, "allow_inf": True}, ValueError, "got NaN"),
        (INF, {}, ValueError, "t must be a finite number"),
        (-INF, {"allow_inf": True}, ValueError, "t must be a finite number"),
        (0, {}, ValueError, "t must be more than zero seconds, got 0"),
        (-1, {"allow_zero": True}, ValueError, "t must be zero or more seconds"),
        (True, {}, TypeError, "got bool True"),
        ("5", {}, TypeError, "got str '5'"),
    ],
    ids=["none", "nan", "inf", "minus-inf", "zero", "negative", "bool", "str"],
)
def test_seconds_refuses(value: Any, options: Any, error: type, words: str) -> None:
    with pytest.raises(error) as info:
        arguments.seconds("t", value, **options)
    assert words in str(info.value)


def test_port() -> None:
    assert arguments.port("p", 22) == 22
    assert arguments.port("p", "8080") == 8080
    assert arguments.port("p", 0, allow_zero=True) == 0
    with pytest.raises(ValueError, match="p must be a port in 1-65535, got 0"):
        arguments.port("p", 0)
    with pytest.raises(ValueError, match="p must be a port number, got 'x'"):
        arguments.port("p", "x")
    with pytest.raises(TypeError, match="p must be a port number, got bool"):
        arguments.port("p", True)


def test_unix_path_counts_bytes() -> None:
    assert arguments.unix_path("s", pathlib.Path("/tmp/a.sock")) == "/tmp/a.sock"
    fits = "/" + "s" * (arguments.UNIX_PATH_MAX - 1)
    assert arguments.unix_path("s", fits) == fits
    with pytest.raises(ValueError, match="s is 108 bytes, over the AF_UNIX limit of 107"):
        arguments.unix_path("s", fits + "s")
    with pytest.raises(ValueError, match="non-empty path"):
        arguments.unix_path("s", "")


def test_environment() -> None:
    assert arguments.environment("env", None) == {}
    got = arguments.environment("env", {"A": "1", "P": pathlib.Path("/x")})
    assert got == {"A": "1", "P": "/x"}
    with pytest.raises(TypeError, match=r"env\['A'\] must be a str \(or os.PathLike\), got int 1"):
        arguments.environment("env", {"A": 1})
    with pytest.raises(TypeError, match="invalid variable name 'A=B'"):
        arguments.environment("env", {"A=B": "1"})
    with pytest.raises(ValueError, match="contains a NUL byte"):
        arguments.environment("env", {"A": "x\0y"})
    with pytest.raises(TypeError, match="must be a mapping"):
        arguments.environment("env", [("A", "1")])  # type: ignore[arg-type]


def test_command() -> None:
    assert arguments.command("echo hi") == "echo hi"
    assert arguments.command(("echo", pathlib.Path("/x"), 3)) == ["echo", "/x", "3"]
    empties: List[Any] = ["", "  ", [], ()]
    for empty in empties:
        with pytest.raises(ValueError, match="command is empty"):
            arguments.command(empty)
    with pytest.raises(TypeError, match=r"command\[1\] must be a str, got bool"):
        arguments.command(["echo", False])
    with pytest.raises(TypeError, match="command must be a list of arguments or a string"):
        arguments.command(b"echo")


def test_bounded_keeps_both_ends() -> None:
    assert arguments.bounded("short", 100) == "short"
    text = "head-" + "x" * 10000 + "-tail"
    cut = arguments.bounded(text, 200)
    assert len(cut) < 260 and cut.startswith("head-") and cut.endswith("-tail")
    assert "characters elided" in cut


def test_bad_values_are_not_echoed_whole() -> None:
    huge = "v" * (1 << 20)
    for check in (
        lambda: arguments.seconds("t", huge),
        lambda: arguments.port("p", huge),
        lambda: arguments.environment("env", {"A": [huge]}),
        lambda: arguments.command([huge, None]),
    ):
        with pytest.raises((TypeError, ValueError)) as info:
            check()
        assert len(str(info.value)) < 1000


# -- every entry point refuses by name, before anything starts ----------------


TIMES = [
    ("timeout", lambda v: _executor(timeout=v)),
    ("sleep", lambda v: _executor(sleep=v)),
    ("stop_timeout", lambda v: _executor(stop_timeout=v)),
    ("timeout", lambda v: rx.SimpleExecutor(CMD, timeout=v)),
    ("request_timeout", lambda v: _http(request_timeout=v)),
    ("request_timeout", lambda v: waits.HTTP("http://127.0.0.1:1/", request_timeout=v)),
    # Closed at once should a regression let it open.
    ("heartbeat_timeout", lambda v: rx.Master(heartbeat_timeout=v).close()),
]


@pytest.mark.parametrize("value", [NAN, INF, -INF, 0, -1.5])
@pytest.mark.parametrize(
    ("name", "make"), TIMES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(TIMES)]
)
def test_times_refuse_nan_inf_and_non_positive(
    name: str, make: Callable[[Any], Any], value: float
) -> None:
    """A NaN deadline never expires (start() hung, Master lost its host);
    every time argument refuses it, and infinity, zero and negatives."""
    with pytest.raises(ValueError, match=name):
        make(value)


def test_cli_timeout_is_a_usage_error(capfd: pytest.CaptureFixture[str]) -> None:
    from remoteexec.cli import main

    with pytest.raises(SystemExit) as info:
        main(["run", "local", "--timeout", "nan", "--", "true"])
    assert info.value.code == 2
    assert "--timeout" in capfd.readouterr().err


def test_port_zero_is_for_executors_only() -> None:
    """port 0 means "pick one at start" for an executor, nothing for a wait."""
    assert rx.TCPExecutor(CMD, host="127.0.0.1", port=0).endpoints["port"] is None
    assert rx.HTTPExecutor(CMD, url="http://127.0.0.1:0/").endpoints["port"] is None
    with pytest.raises(ValueError, match="port"):
        waits.TCP("127.0.0.1", 0)
    with pytest.raises(ValueError, match="url"):
        waits.HTTP("http://127.0.0.1:0/")


@pytest.mark.parametrize("port", [-1, 65536, 70000])
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


def test_a_nul_byte_in_a_command_is_refused_naming_the_argument() -> None:
    with pytest.raises(ValueError, match=r"command\[1\] contains a NUL byte"):
        arguments.command(["echo", "a\0b"])
    with pytest.raises(ValueError, match=r"^command contains a NUL byte"):
        arguments.command("echo a\0b")
    # Executors and the fast path check their commands with it, before anything starts.
    with pytest.raises(ValueError, match=r"command\[2\] contains a NUL byte"):
        rx.SimpleExecutor(["sh", "-c", "echo\0"])
    host = PlainHost("h", "root@127.0.0.1", known_hosts_file=None)
    with pytest.raises(ValueError, match=r"command\[0\] contains a NUL byte"):
        run_plain([host], ["tr\0ue"])
