"""SSH connector: target parsing, ssh options and failure classification.

The context is bootstrapped over the system ssh client (mitogen's ``ssh``
method): ``~/.ssh/config``, agents and ProxyJump work as they do for ssh.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple, Type

import mitogen.core
import mitogen.ssh

from remoteexec import arguments
from remoteexec.connectors import coreboot
from remoteexec.connectors.base import Connector, register
from remoteexec.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    HostKeyMismatch,
    HostUnreachable,
    RemotePythonMissing,
)

HOST_KEY_MODES = ("enforce", "ignore")
#: ssh's ``KexAlgorithms`` by default: the classic curve25519 exchange first,
#: ssh's own list (post-quantum hybrids included) after it. OpenSSH 9.x's
#: default, sntrup761x25519, costs ~65 ms of CPU on each side per connection;
#: curve25519 ~1 ms. Pass ``kex_algorithms=None`` for ssh's own choice (see
#: docs/more/security.md).
FAST_KEX = "^curve25519-sha256,curve25519-sha256@libssh.org"


@dataclass(frozen=True)
class Target:
    """A parsed ``[user@]host[:port]`` target."""

    user: Optional[str]
    hostname: str
    port: Optional[int]

    @classmethod
    def parse(cls, text: str, port: Optional[int] = None) -> Target:
        """Parse ``text``; ``port`` (when given) wins over the one in it.
        A port outside 1-65535 is a ValueError naming the target."""
        if not text or not isinstance(text, str):
            raise ValueError(
                "target must be a '[user@]host[:port]' string, got %s"
                % arguments.bounded(repr(text), 100)
            )
        shown = arguments.bounded(repr(text), 200)
        user, _, rest = text.rpartition("@")
        hostname, port_text = rest, None
        if rest.startswith("["):  # [v6addr]:port
            close = rest.find("]")
            if close < 0:
                raise ValueError("target %s: '[' without ']'" % shown)
            hostname, tail = rest[1:close], rest[close + 1 :]
            if tail:
                if not tail.startswith(":"):
                    raise ValueError("target %s: unexpected %r after ']'" % (shown, tail))
                port_text = tail[1:]
        elif rest.count(":") == 1:
            hostname, port_text = rest.split(":")
        if not hostname:
            raise ValueError("target %s has no host name" % shown)
        if port is not None:
            return cls(user or None, hostname, arguments.port("port", port))
        if port_text is None:
            return cls(user or None, hostname, None)
        if not port_text.isdigit():
            raise ValueError("target %s: port %r is not a number" % (shown, port_text))
        checked = arguments.port("the port of target %s" % shown, port_text)
        return cls(user or None, hostname, checked)

    def __str__(self) -> str:
        """The target as :meth:`parse` reads it back; a port other than 22 shown
        (an IPv6 address then in brackets, or the port would read as part of it)."""
        text = self.user + "@" if self.user else ""
        if not self.port or self.port == 22:
            return text + self.hostname
        host = "[%s]" % self.hostname if ":" in self.hostname else self.hostname
        return "%s%s:%d" % (text, host, self.port)


def ssh_options(
    target: Target,
    *,
    identity_file: Optional[str],
    python: str,
    connect_timeout: float,
    check_host_keys: str,
    known_hosts_file: Optional[str],
    ssh_args: Sequence[str],
    kex_algorithms: Optional[str] = FAST_KEX,
) -> Dict[str, Any]:
    """Keyword arguments for ``router.ssh()``, but for ``remote_name`` and
    ``via``, which are known only when the context is opened.

    Host keys are checked by default (``enforce``); ``accept`` is not offered
    because mitogen needs a pty for it, which breaks the ssh client's own
    process group. Compression is off: it halves throughput on a LAN.
    ``kex_algorithms`` (default :data:`FAST_KEX`) comes after ``ssh_args``:
    ssh keeps an option's first value, so a ``KexAlgorithms`` there wins.
    """
    if check_host_keys not in HOST_KEY_MODES:
        raise ValueError(
            "check_host_keys=%r: use 'enforce' (default; with known_hosts_file=) or"
            " 'ignore' (throwaway hosts only)" % (check_host_keys,)
        )
    arguments.seconds("connect_timeout", connect_timeout)
    if identity_file and not os.path.exists(identity_file):
        raise ValueError("identity_file %s does not exist" % identity_file)
    args = ["-o", "ConnectTimeout=%d" % max(1, int(connect_timeout))]
    if known_hosts_file:
        if not os.path.exists(known_hosts_file):
            raise ValueError("known_hosts_file %s does not exist" % known_hosts_file)
        args += ["-o", "UserKnownHostsFile=%s" % known_hosts_file]
        args += ["-o", "GlobalKnownHostsFile=/dev/null"]
    args += list(ssh_args)
    if kex_algorithms is not None:
        if not isinstance(kex_algorithms, str) or not re.fullmatch(
            r"[-+^]?[A-Za-z0-9@.,_-]+", kex_algorithms
        ):
            raise ValueError(
                "kex_algorithms=%s: an ssh KexAlgorithms list, such as %r, or None"
                % (arguments.bounded(repr(kex_algorithms), 100), FAST_KEX)
            )
        args += ["-o", "KexAlgorithms=%s" % kex_algorithms]
    return dict(
        hostname=target.hostname,
        username=target.user,
        port=target.port,
        identity_file=identity_file,
        python_path=python,
        connect_timeout=connect_timeout,
        check_host_keys=check_host_keys,
        ssh_args=args,
        compression=False,
    )


_RULES = [
    (
        HostKeyMismatch,
        r"host key verification failed|remote host identification has changed"
        r"|unrecognized or mismatching host key"
        r"|no \S+ host key is known|host key for .* has changed",
        "the host key is unknown or has changed; add the host's key to known_hosts_file"
        " (or use check_host_keys='ignore' for throwaway hosts)",
    ),
    (
        AuthenticationFailed,
        r"authentication is incorrect|permission denied|too many authentication failures",
        "the server refused the key; check identity_file and the user's authorized_keys",
    ),
    (
        RemotePythonMissing,
        r"command not found|no such file or directory|not found",
        "the remote Python was not found; pass python= with a path that exists on the host",
    ),
    (
        HostUnreachable,
        r"timed out|connection refused|no route to host|network is unreachable"
        r"|could not resolve hostname|name or service not known|connection closed by"
        r"|connection reset",
        "no ssh connection; check the address, the port and that sshd runs there",
    ),
]


def classify(exc: BaseException) -> Type[ConnectionFailed]:
    """Pick the ConnectionFailed subclass that matches ssh's/mitogen's text."""
    text = str(exc).lower()
    for cls, pattern, _ in _RULES:
        if re.search(pattern, text):
            return cls
    return ConnectionFailed


def connection_error(
    exc: BaseException, target: str, python: str, timeout: float, known_name: str = ""
) -> ConnectionFailed:
    """A ConnectionFailed naming the host, the cause and what to do.
    ``known_name``: the host's name in known_hosts when it is not the bare
    host name (``[host]:port`` off port 22), said with a host key error."""
    cls = classify(exc)
    raw = str(exc).strip()
    # mitogen appends ssh's last lines; keep the meaningful ones, drop noise.
    lines = [ln.strip() for ln in raw.splitlines() if ln.strip()]
    cause = "; ".join(ln for ln in lines if not ln.startswith("EOF on stream"))[:600] or raw
    hint = next((h for c, _, h in _RULES if c is cls), "see ssh's message")
    if cls is RemotePythonMissing:
        hint = "python=%r was not found on the host; pass python= with a path that exists" % (
            python,
        )
    if cls is HostKeyMismatch and known_name:
        # mitogen's text replaces ssh's, which named the host as it looked it up
        hint += "; ssh looks the key up as %s (or as the bare host name, for the same key)" % (
            known_name,
        )
    if cls is HostUnreachable and "timed out" in raw.lower():
        hint = "no answer within connect_timeout=%gs; check the address and the network" % (
            timeout,
        )
    message = "cannot connect: %s (ssh: %s)" % (hint, cause)
    return cls(message, host=target, cause=cause, mitogen_error=type(exc).__name__)


#: Seconds beyond connect_timeout that a fresh context may take to install
#: the supervisor (the interpreter boots, mitogen ships the modules).
SETUP_SLACK = 20.0


def control_args(path: str) -> List[str]:
    """ssh options that make the connection a ControlMaster on ``path``,
    for the lane's sessions (see :mod:`remoteexec.lane`)."""
    return ["-o", "ControlMaster=yes", "-o", "ControlPath=" + path, "-o", "ControlPersist=no"]


@register
class SSHConnector(Connector):
    """A host over the system ssh client: ``[ssh://][user@]host[:port]``."""

    kind = "ssh"
    kill_transport_on_drop = True
    failures = (mitogen.core.StreamError, mitogen.core.Error, EOFError, OSError)

    def __init__(
        self,
        target: Target,
        options: Dict[str, Any],
        *,
        name: Optional[str] = None,
    ) -> None:
        """Use :meth:`from_target`: it checks the arguments and builds ``options``."""
        self.target = target
        #: ``router.ssh()``'s keyword arguments (see :func:`ssh_options`).
        self.options = options
        super().__init__(name or str(target), float(options["connect_timeout"]) + SETUP_SLACK)
        #: The ControlMaster socket of a direct connection (set by the master,
        #: see :mod:`remoteexec.lane`; None: ssh runs without one).
        self.control_path: Optional[str] = None

    @classmethod
    def from_target(
        cls,
        address: str,
        *,
        identity_file: Optional[str] = None,
        port: Optional[int] = None,
        python: str = "python3",
        connect_timeout: float = 10.0,
        check_host_keys: str = "enforce",
        known_hosts_file: Optional[str] = None,
        ssh_args: Sequence[str] = (),
        kex_algorithms: Optional[str] = FAST_KEX,
        name: Optional[str] = None,
    ) -> SSHConnector:
        """Parse ``address`` ("[user@]host[:port]"; ``port`` wins) and check
        the ssh options (see :func:`ssh_options`)."""
        parsed = Target.parse(address, port)
        options = ssh_options(
            parsed,
            identity_file=identity_file,
            python=python,
            connect_timeout=connect_timeout,
            check_host_keys=check_host_keys,
            known_hosts_file=known_hosts_file,
            ssh_args=ssh_args,
            kex_algorithms=kex_algorithms,
        )
        return cls(parsed, options, name=name)

    @property
    def key(self) -> Tuple[Hashable, ...]:
        """The same user, host, port, interpreter, key, host-key checking and
        ssh options (known_hosts_file among them; not the connect timeout):
        the same context. So a connect that checks host keys never gets a
        context opened without checking, or against another known_hosts."""
        return (
            self.kind,
            self.target.user,
            self.target.hostname,
            self.target.port or 22,
            self.options["python_path"],
            self.options["identity_file"],
            self.options["check_host_keys"],
            tuple(a for a in self.options["ssh_args"] if not a.startswith("ConnectTimeout=")),
        )

    def start(self, router: Any, *, remote_name: str, via: Optional[Any]) -> Any:
        extra: Dict[str, Any] = {"remote_name": remote_name}
        options = self.options
        if via is not None:
            extra["via"] = via
        elif self.control_path is not None:
            # ssh keeps an option's first value: ours come before the
            # user's ssh_args and ssh_config (a ControlPersist there would
            # leave the connection behind us).
            options = dict(options, ssh_args=control_args(self.control_path) + options["ssh_args"])
        if via is None and self.core_cache and coreboot.available(router):
            return coreboot.connect(
                router, mitogen.ssh.Connection, self.core_cache, **options, **extra
            )
        return router.ssh(**options, **extra)

    def mux_argv(self, command: str) -> List[str]:
        """The ssh command line that runs ``command`` (a remote shell line) in
        a new session on this host's open connection (its ControlMaster):
        no new connection, no handshake. It never connects by itself: with
        the master gone, the ProxyCommand ``false`` fails at once."""
        if self.control_path is None:
            raise ValueError("%s: no ControlMaster socket (a hop, or not connected)" % self.name)
        argv = ["ssh", "-T", "-S", self.control_path, "-o", "ControlMaster=no"]
        argv += ["-o", "ProxyCommand=false", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
        if self.target.user:
            argv += ["-l", self.target.user]
        if self.target.port:
            argv += ["-p", str(self.target.port)]
        return [*argv, "--", self.target.hostname, command]

    def connection_error(self, exc: BaseException) -> ConnectionFailed:
        if isinstance(exc, FileNotFoundError):
            return ConnectionFailed(
                "cannot connect: the ssh client is missing on this machine (%s);"
                " install openssh-client" % exc,
                host=self.name,
            )
        port = self.target.port
        return connection_error(
            exc,
            self.name,
            self.options["python_path"],
            self.options["connect_timeout"],
            "" if port in (None, 22) else "[%s]:%d" % (self.target.hostname, port),
        )


__all__ = [
    "FAST_KEX",
    "HOST_KEY_MODES",
    "SSHConnector",
    "Target",
    "classify",
    "connection_error",
    "control_args",
    "ssh_options",
]
