"""Readiness checks, evaluated on the target next to the process.

A check is a plain dict (so it can cross the wire) with a ``kind`` key. Each
kind has one small class with ``probe(remaining) -> (ok, detail)``: ``ok`` is
whether the condition holds now, ``detail`` says why not, for the timeout
message. Every network probe has its own socket timeout, bounded by what is
left of the caller's deadline, so a check can never hang.

Kinds: ``tcp`` (host, port), ``unix`` (path), ``http`` (url, port, status,
method, payload, headers, request_timeout, verify, ca_file), ``file`` (path),
``banner`` (pattern; log_path, or the process's logs). A list of checks
passes when all of them pass.

The kinds live in one registry, :data:`KINDS`, filled by :func:`kind`: a
new kind is one class here (its probe, its owner, its description for
messages) and, on the master, one :class:`remoteexec.waits.Wait` naming it.

``https`` is spoken here, on the host, with the stdlib's ssl: certificates
are verified against the default CA store or ``ca_file`` (a path on the
host) unless ``verify`` is false.
"""

from __future__ import annotations

import os
import re
import socket
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
)

from . import procs

if TYPE_CHECKING:  # imported when an http(s) check needs it: http.client
    import ssl  # pulls in email and ssl, a few MB in every context otherwise
    from http.client import HTTPConnection

PROBE_TIMEOUT = 1.0
#: The first pause between two probes of a readiness wait.
FIRST_POLL = 0.005
#: Later pauses: this share of the time waited so far (capped by the wait's ``sleep``).
POLL_GROWTH = 0.1

#: What a probe returns: whether the condition holds, and why not.
Outcome = Tuple[bool, str]
Spec = Mapping[str, Any]


def _bounded(remaining: float, cap: float = PROBE_TIMEOUT) -> float:
    return max(0.01, min(cap, remaining))


class Check:
    """One readiness condition, built from its spec."""

    #: The spec's ``kind``, set by :func:`kind`.
    kind = ""
    #: (log path, byte offset past the matching line) once a banner was seen.
    found_at: Optional[Tuple[str, int]] = None

    def __init__(self, spec: Spec) -> None:
        self.spec = spec

    def probe(self, remaining: float) -> Outcome:
        """Whether the condition holds now, within ``remaining`` seconds."""
        raise NotImplementedError

    def owner(self) -> Optional[int]:
        """The pid that already answers as the service would, if visible."""
        return None

    def problem(self) -> Optional[str]:
        """Why this check can never pass on this host, or None."""
        return None

    @classmethod
    def describe(cls, spec: Spec) -> str:
        """The check in a few words, for messages (``tcp 127.0.0.1:80``)."""
        return str(spec.get("kind", cls.kind))


#: kind name -> check class: the one registry of check kinds.
KINDS: Dict[str, Type[Check]] = {}

C = TypeVar("C", bound=Type[Check])


def kind(name: str) -> Callable[[C], C]:
    """Register a check class under ``name`` (the spec's ``kind``)."""

    def register(cls: C) -> C:
        cls.kind = name
        KINDS[name] = cls
        return cls

    return register


def free_port(address: str = "") -> int:
    """A TCP port free on ``address`` of this host now (the kernel's pick).

    For a service told to listen on port 0 whose port others must know: the
    port is picked here, then given to the service. Another process may take
    it in between; the service's start then fails and says so.
    """
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def poll_delay(waited: float, sleep: float) -> float:
    """The pause before the next probe of a wait that began ``waited`` seconds ago.

    FIRST_POLL at first, then a tenth of the time waited, never above
    ``sleep``: a service is seen ready at most ~10% (or 5 ms) after it is,
    at 5 to 10 probes per doubling of the wait (a cheap refused connect,
    mostly), where doubling pauses could see a service that took 80 ms only
    at 155 ms.
    """
    return min(sleep, max(FIRST_POLL, waited * POLL_GROWTH))


def describe(spec: Spec) -> str:
    """A spec in a few words, by its kind's own description."""
    cls = KINDS.get(spec.get("kind", ""))
    return cls.describe(spec) if cls else str(spec.get("kind"))


@kind("tcp")
class TCPCheck(Check):
    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        self.host = spec["host"]
        self.port = int(spec["port"])

    @classmethod
    def describe(cls, spec: Spec) -> str:
        return "tcp %s:%s" % (spec["host"], spec["port"])

    def probe(self, remaining: float) -> Outcome:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=_bounded(remaining))
        except OSError as e:
            return False, "tcp %s:%d: %s" % (self.host, self.port, e.strerror or e)
        sock.close()
        return True, ""

    def owner(self) -> Optional[int]:
        return procs.tcp_port_owner(self.port)


@kind("unix")
class UnixCheck(Check):
    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        self.path = spec["path"]

    @classmethod
    def describe(cls, spec: Spec) -> str:
        return "unix %s" % spec["path"]

    def probe(self, remaining: float) -> Outcome:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(_bounded(remaining))
        try:
            sock.connect(self.path)
        except OSError as e:
            return False, "unix socket %s: %s" % (self.path, e.strerror or e)
        finally:
            sock.close()
        return True, ""

    def owner(self) -> Optional[int]:
        return procs.unix_socket_owner(self.path)


def tls_context(verify: bool = True, ca_file: Optional[str] = None) -> ssl.SSLContext:
    """The client TLS context of an https check (raises OSError/ssl.SSLError
    when ``ca_file`` cannot be loaded)."""
    import ssl

    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_file)


def _tls_problem(e: BaseException) -> Optional[str]:
    """A certificate failure said plainly, with what to do; None for others."""
    reason = getattr(e, "verify_message", None)
    if reason is None:
        return None
    return (
        "TLS certificate verification failed: %s (pass ca_file= with the CA that signed it,"
        " or verify=False for a self-signed test service)" % reason
    )


@kind("http")
class HTTPCheck(Check):
    def __init__(self, spec: Spec) -> None:
        from urllib.parse import urlsplit  # here: ~3 ms (ipaddress) no install needs

        super().__init__(spec)
        self.url = urlsplit(spec["url"])
        self.https = self.url.scheme == "https"
        self.status = str(spec.get("status", r"^2\d\d$"))
        self.status_re = re.compile(self.status)
        self.method = spec.get("method", "HEAD")
        self.payload = spec.get("payload")
        self.headers = spec.get("headers") or {}
        self.request_timeout = spec.get("request_timeout")
        self.verify = spec.get("verify", True)
        self.ca_file = spec.get("ca_file")
        self.host = self.url.hostname or ""
        self.port = spec.get("port") or self.url.port or (443 if self.https else 80)
        self.tls: Optional[ssl.SSLContext] = None

    @classmethod
    def describe(cls, spec: Spec) -> str:
        return "http %s" % spec["url"]

    def problem(self) -> Optional[str]:
        """Why this check can never pass (an unusable ca_file), or None."""
        if not self.https:
            return None
        try:
            self.tls = self.tls or tls_context(self.verify, self.ca_file)
        except (OSError, ValueError) as e:
            return "ca_file %s: %s" % (self.ca_file, e)
        return None

    def connection(self, timeout: float) -> HTTPConnection:
        from http.client import HTTPConnection, HTTPSConnection

        if not self.https:
            return HTTPConnection(self.host, self.port, timeout=timeout)
        problem = self.problem()
        if problem:
            raise OSError(problem)
        return HTTPSConnection(self.host, self.port, timeout=timeout, context=self.tls)

    def probe(self, remaining: float) -> Outcome:
        from urllib.parse import urlencode, urlunsplit

        cap = self.request_timeout or PROBE_TIMEOUT
        target = urlunsplit(("", "", self.url.path or "/", self.url.query, ""))
        conn = None
        from http.client import HTTPException

        try:
            conn = self.connection(_bounded(remaining, cap))
            body = urlencode(self.payload) if self.payload else None
            conn.request(self.method, target, body, self.headers)
            status = str(conn.getresponse().status)
        except (OSError, HTTPException) as e:
            reason = _tls_problem(e) or e
            return False, "http %s %s: %s" % (self.method, self.url.geturl(), reason)
        finally:
            if conn is not None:
                conn.close()
        if status == self.status or self.status_re.match(status):
            return True, ""
        return False, "http %s %s: status %s, want %s" % (
            self.method,
            self.url.geturl(),
            status,
            self.status,
        )

    def owner(self) -> Optional[int]:
        return procs.tcp_port_owner(self.port)


@kind("file")
class FileCheck(Check):
    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        self.path = spec["path"]

    @classmethod
    def describe(cls, spec: Spec) -> str:
        return "file %s" % spec["path"]

    def probe(self, remaining: float) -> Outcome:  # noqa: ARG002 - instant, nothing to bound
        if os.path.isfile(self.path):
            return True, ""
        return False, "file %s does not exist" % self.path

    def owner(self) -> Optional[int]:
        try:
            with open(self.path) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            return None
        return pid if pid and procs.is_alive(pid) else None


@kind("banner")
class BannerCheck(Check):
    """Looks for a regex in the process logs (stdout, and stderr when kept
    apart), reading only what is new.

    Once found, ``found_at`` is (log path, byte offset past the matching
    line): a reader of the output starts there, as mirakuru's banner wait
    consumed its pipe up to that line.
    """

    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        self.pattern = spec["pattern"]
        self.regex = re.compile(self.pattern)
        paths = spec.get("log_paths") or [spec.get("log_path")]
        # [path, offset, carry] per log
        self.logs: List[List[Any]] = [[path, 0, b""] for path in paths if path]
        self.found_at = None

    def skip_to(self, offsets: Mapping[str, int]) -> None:
        """Look only past ``offsets`` (log path -> byte offset): a restarted
        process must print its banner again, the old one does not count."""
        for log in self.logs:
            log[1] = offsets.get(log[0], log[1])

    def _scan(self, log: List[Any]) -> Optional[int]:
        path, offset, carry = log
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read(1 << 20)
        log[1] = offset + len(chunk)
        data = carry + chunk
        start = offset - len(carry)  # the file offset of data[0]
        lines = data.split(b"\n")
        log[2] = lines.pop()
        position = start
        for line in lines:
            position += len(line) + 1
            if self.regex.search(line.decode("utf-8", "replace")):
                return position
        if log[2] and self.regex.search(log[2].decode("utf-8", "replace")):
            return log[1]  # an unterminated line: everything read so far
        return None

    def probe(self, remaining: float) -> Outcome:  # noqa: ARG002 - reads files, never waits
        errors = []
        for log in self.logs:
            try:
                found = self._scan(log)
            except OSError as e:
                errors.append("log %s: %s" % (log[0], e))
                continue
            if found is not None:
                self.found_at = (log[0], found)
                return True, ""
        if errors:
            return False, "; ".join(errors)
        return False, "banner %r not seen in output yet" % self.pattern


def build(specs: Optional[Iterable[Spec]], log_paths: Sequence[str] = ()) -> List[Check]:
    """Instantiate check objects from plain specs; a banner check reads
    ``log_paths`` (the process's stdout log, then its stderr log if any)."""
    built = []
    for spec in specs or ():
        spec = dict(spec)
        if spec["kind"] == BannerCheck.kind and not spec.get("log_path"):
            spec["log_paths"] = list(log_paths)
        built.append(KINDS[spec["kind"]](spec))
    return built


def problems(specs: Iterable[Spec]) -> List[str]:
    """Why some of ``specs`` can never pass on this host (an https check whose
    ca_file cannot be loaded): asked before anything starts."""
    found = []
    for check in build(specs):
        text = check.problem()
        if text:
            found.append(text)
    return found


def probe_all(checks: Iterable[Check], remaining: float) -> Outcome:
    """Run every check; return (all_ok, detail of the first failing one)."""
    for check in checks:
        ok, detail = check.probe(remaining)
        if not ok:
            return False, detail
    return True, ""
