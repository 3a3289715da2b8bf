"""remoteexec.connectors: the scheme registry, the local and ssh connectors'
plans (checked before anything is opened) and ssh's failure classification."""

from __future__ import annotations

import importlib
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Hashable, Iterator, Optional, Tuple, Type, cast

import mitogen.core
import pytest

import remoteexec.connectors
from remoteexec import connectors, errors
from remoteexec.connectors import LocalConnector, SSHConnector, ssh


def _kind() -> str:
    """A scheme no other test registered."""
    return "test%s" % uuid.uuid4().hex[:8]


# -- schemes and the registry ---------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("root@10.0.0.1", ("ssh", "root@10.0.0.1")),
        ("10.0.0.1:2222", ("ssh", "10.0.0.1:2222")),
        ("ssh://root@[::1]:2222", ("ssh", "root@[::1]:2222")),
        ("local://", ("local", "")),
        ("local://db", ("local", "db")),
        ("docker://web", ("docker", "web")),
    ],
)
def test_split_scheme(target: str, expected: Tuple[str, str]) -> None:
    assert connectors.split_scheme(target) == expected


@pytest.mark.parametrize("target", ["", None, 5])
def test_a_target_must_be_a_non_empty_string(target: Any) -> None:
    with pytest.raises(ValueError, match="target must be a non-empty string"):
        connectors.plan(target)


def test_builtin_schemes_are_registered() -> None:
    assert {"local", "ssh"} <= set(connectors.known())
    assert connectors.lookup("ssh") is SSHConnector
    assert connectors.lookup("local") is LocalConnector


def test_an_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"no connector for 'nosuch' targets; known: .*local.*ssh"):
        connectors.plan("nosuch://x")
    with pytest.raises(ValueError, match=r"no connector for '\.\./x'"):
        connectors.lookup("../x")


class _Plain(connectors.Connector):
    """A connector that opens nothing: enough to look it up by its scheme."""

    def __init__(self, name: str, options: Dict[str, Any]) -> None:
        self.options = options
        super().__init__(name, 1.0)

    @classmethod
    def from_target(cls, address: str, *, color: Optional[str] = None) -> _Plain:
        return cls(address, {"color": color})

    @property
    def key(self) -> Tuple[Hashable, ...]:
        return (self.kind, self.name)

    def start(self, router: Any, *, remote_name: str, via: Optional[Any]) -> Any:
        raise mitogen.core.StreamError("nothing here: %s %s %s" % (router, remote_name, via))


def test_a_registered_class_serves_its_scheme() -> None:
    kind = _kind()
    cls = connectors.register(type("Made", (_Plain,), {"kind": kind}))
    made = connectors.plan("%s://box" % kind, color="red")
    assert isinstance(made, _Plain) and type(made) is cls
    assert made.name == "box" and made.options == {"color": "red"}
    with pytest.raises(TypeError, match="color2"):
        connectors.plan("%s://box" % kind, color2="red")


def test_register_refuses_a_kind_that_is_not_a_name() -> None:
    with pytest.raises(ValueError, match="kind must be an identifier"):
        connectors.register(type("Bad", (_Plain,), {"kind": "has space"}))


def test_open_turns_the_connector_failures_into_connection_failed() -> None:
    kind = _kind()
    cls = cast(
        Type[_Plain],
        connectors.register(
            type("Failing", (_Plain,), {"kind": kind, "failures": (mitogen.core.StreamError,)})
        ),
    )
    with pytest.raises(errors.ConnectionFailed) as info:
        cls.from_target("box").open(None, remote_name="m:box")
    assert info.value.host == "box"
    assert str(info.value).startswith("[box] cannot open a %s context: nothing here" % kind)


@pytest.fixture
def connector_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory searched for ``remoteexec.connectors.<scheme>`` modules."""
    package: Any = remoteexec.connectors
    package.__path__.append(str(tmp_path))
    importlib.invalidate_caches()
    try:
        yield tmp_path
    finally:
        package.__path__.remove(str(tmp_path))
        for name in list(sys.modules):
            if name.startswith("remoteexec.connectors.test"):
                del sys.modules[name]


MODULE = """
from remoteexec.connectors.local import LocalConnector
from remoteexec.connectors.base import register


@register
class Made(LocalConnector):
    kind = "%s"
"""


def test_a_new_module_is_found_by_its_scheme(connector_dir: Path) -> None:
    """One new module in connectors/ is all a new way in needs: nothing
    imports it; asking for its scheme does."""
    kind = _kind()
    (connector_dir / ("%s.py" % kind)).write_text(MODULE % kind)
    assert kind not in connectors.known()
    made = connectors.plan("%s://here" % kind)
    assert type(made).__name__ == "Made" and made.kind == kind and made.name == "here"
    assert kind in connectors.known()


def test_a_connector_module_missing_a_dependency_says_which(connector_dir: Path) -> None:
    kind = _kind()
    (connector_dir / ("%s.py" % kind)).write_text("import no_such_dependency_xyz\n")
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        connectors.lookup(kind)


# -- local ----------------------------------------------------------------------


def test_local_plan() -> None:
    default = connectors.plan("local://")
    assert isinstance(default, LocalConnector)
    assert (default.name, default.python, default.key) == (
        "local",
        sys.executable,
        ("local", "local"),
    )
    assert default.is_local and not default.kill_transport_on_drop
    named = connectors.plan("local://db", python="/usr/bin/python3")
    assert (named.name, named.key) == ("db", ("local", "db"))
    assert connectors.plan("local://db", name="other").name == "other"
    with pytest.raises(TypeError, match="identity_file"):
        connectors.plan("local://", identity_file="/k")
    with pytest.raises(TypeError, match="python must be a path"):
        connectors.plan("local://", python=3)


# -- ssh ------------------------------------------------------------------------


def test_ssh_plan(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("")
    made = connectors.plan("root@10.0.0.1", identity_file=str(key), connect_timeout=3)
    assert isinstance(made, SSHConnector)
    assert made.name == "root@10.0.0.1" and not made.is_local and made.kill_transport_on_drop
    assert made.key[:7] == ("ssh", "root", "10.0.0.1", 22, "python3", str(key), "enforce")
    # The connect timeout is not part of it; the host-key settings are.
    same = connectors.plan("root@10.0.0.1", identity_file=str(key), connect_timeout=9)
    assert same.key == made.key
    for other in (
        connectors.plan("root@10.0.0.1", identity_file=str(key), check_host_keys="ignore"),
        connectors.plan("root@10.0.0.1", identity_file=str(key), known_hosts_file=str(key)),
        connectors.plan("root@10.0.0.1", identity_file=str(key), ssh_args=["-4"]),
    ):
        assert other.key != made.key
    assert made.setup_timeout == 3 + ssh.SETUP_SLACK
    assert made.options["ssh_args"][:2] == ["-o", "ConnectTimeout=3"]
    # The same host with the scheme spelled out, and a name of its own.
    again = connectors.plan("ssh://root@10.0.0.1:22", identity_file=str(key), name="db")
    assert again.key == made.key and again.name == "db"
    assert connectors.plan("10.0.0.1", port=2222).key[3] == 2222


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"check_host_keys": "accept"}, ValueError, "check_host_keys='accept'"),
        ({"identity_file": "/no/such/key"}, ValueError, "identity_file /no/such/key"),
        ({"known_hosts_file": "/no/such/kh"}, ValueError, "known_hosts_file /no/such/kh"),
        ({"connect_timeout": float("nan")}, ValueError, "connect_timeout"),
        ({"port": 70000}, ValueError, "port"),
        ({"identity": "/k"}, TypeError, "identity"),
    ],
    ids=["host-keys", "identity", "known-hosts", "timeout", "port", "unknown-option"],
)
def test_ssh_plan_refuses_bad_options(options: Dict[str, Any], error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        connectors.plan("root@10.0.0.1", **options)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host", (None, "host", None)),
        ("u@host:2200", ("u", "host", 2200)),
        ("u@[fe80::1]:22", ("u", "fe80::1", 22)),
        ("[::1]", (None, "::1", None)),
        ("a@b@host", ("a@b", "host", None)),
    ],
)
def test_target_parse(text: str, expected: Tuple[Any, ...]) -> None:
    parsed = ssh.Target.parse(text)
    assert (parsed.user, parsed.hostname, parsed.port) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [("u@", "has no host name"), ("[::1", "without"), ("h:x", "not a number"), ("[::1]x", "after")],
)
def test_target_parse_refuses(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        ssh.Target.parse(text)


#: mitogen's and ssh's own texts (seen on these machines), and what they mean.
CAUSES = [
    ("PasswordError: SSH authentication is incorrect", errors.AuthenticationFailed),
    ("Permission denied (publickey).", errors.AuthenticationFailed),
    ("Host key verification failed.", errors.HostKeyMismatch),
    (
        "EOF on stream; last 100 lines:\n  bash: /opt/nope/python3: No such file or directory",
        errors.RemotePythonMissing,
    ),
    ("Connection timed out.", errors.HostUnreachable),
    ("ssh: connect to host 10.0.0.9 port 22: No route to host", errors.HostUnreachable),
    ("ssh: connect to host 10.0.0.9 port 2222: Connection refused", errors.HostUnreachable),
    ("something else entirely", errors.ConnectionFailed),
]


@pytest.mark.parametrize(("text", "cls"), CAUSES, ids=[c.__name__ for _, c in CAUSES])
def test_classify_by_the_text_alone(text: str, cls: type) -> None:
    assert ssh.classify(mitogen.core.StreamError(text)) is cls


def test_connection_error_names_the_host_the_cause_and_what_to_do() -> None:
    made = connectors.plan("root@10.0.0.9", python="/opt/nope/python3", connect_timeout=4)
    missing = made.connection_error(
        mitogen.core.StreamError("EOF on stream\nbash: /opt/nope/python3: not found")
    )
    assert type(missing) is errors.RemotePythonMissing and missing.host == "root@10.0.0.9"
    assert "python='/opt/nope/python3' was not found on the host" in str(missing)
    assert "EOF on stream" not in missing.details["cause"]
    slow = made.connection_error(mitogen.core.StreamError("Connection timed out."))
    assert "no answer within connect_timeout=4s" in str(slow)
    assert slow.details["mitogen_error"] == "StreamError"
    client = made.connection_error(FileNotFoundError(2, "No such file or directory", "ssh"))
    assert type(client) is errors.ConnectionFailed
    assert "the ssh client is missing on this machine" in str(client)
