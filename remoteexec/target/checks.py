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

``https`` is spoken here, on the host, with the stdlib's ssl: certificates
are verified against the default CA store or ``ca_file`` (a path on the
host) unless ``verify`` is false.
"""

import os
import re
import socket
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from urllib.parse import urlencode, urlsplit, urlunsplit

from . import procs

PROBE_TIMEOUT = 1.0


def _bounded(remaining, cap=PROBE_TIMEOUT):
    return max(0.01, min(cap, remaining))


class TCPCheck:
    def __init__(self, spec):
        self.host = spec["host"]
        self.port = int(spec["port"])

    def probe(self, remaining):
        try:
            sock = socket.create_connection((self.host, self.port), timeout=_bounded(remaining))
        except OSError as e:
            return False, "tcp %s:%d: %s" % (self.host, self.port, e.strerror or e)
        sock.close()
        return True, ""

    def owner(self):
        return procs.tcp_port_owner(self.port)


class UnixCheck:
    def __init__(self, spec):
        self.path = spec["path"]

    def probe(self, remaining):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(_bounded(remaining))
        try:
            sock.connect(self.path)
        except OSError as e:
            return False, "unix socket %s: %s" % (self.path, e.strerror or e)
        finally:
            sock.close()
        return True, ""

    def owner(self):
        return procs.unix_socket_owner(self.path)


def tls_context(verify=True, ca_file=None):
    """The client TLS context of an https check (raises OSError/ssl.SSLError
    when ``ca_file`` cannot be loaded)."""
    import ssl

    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_file)


def _tls_problem(e):
    """A certificate failure said plainly, with what to do; None for others."""
    reason = getattr(e, "verify_message", None)
    if reason is None:
        return None
    return (
        "TLS certificate verification failed: %s (pass ca_file= with the CA that signed it,"
        " or verify=False for a self-signed test service)" % reason
    )


class HTTPCheck:
    def __init__(self, spec):
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
        self.host = self.url.hostname
        self.port = spec.get("port") or self.url.port or (443 if self.https else 80)
        self.tls = None

    def problem(self):
        """Why this check can never pass (an unusable ca_file), or None."""
        if not self.https:
            return None
        try:
            self.tls = self.tls or tls_context(self.verify, self.ca_file)
        except (OSError, ValueError) as e:
            return "ca_file %s: %s" % (self.ca_file, e)
        return None

    def connection(self, timeout):
        if not self.https:
            return HTTPConnection(self.host, self.port, timeout=timeout)
        problem = self.problem()
        if problem:
            raise OSError(problem)
        return HTTPSConnection(self.host, self.port, timeout=timeout, context=self.tls)

    def probe(self, remaining):
        cap = self.request_timeout or PROBE_TIMEOUT
        target = urlunsplit(("", "", self.url.path or "/", self.url.query, ""))
        conn = None
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

    def owner(self):
        return procs.tcp_port_owner(self.port)


class FileCheck:
    def __init__(self, spec):
        self.path = spec["path"]

    def probe(self, remaining):
        if os.path.isfile(self.path):
            return True, ""
        return False, "file %s does not exist" % self.path

    def owner(self):
        try:
            with open(self.path) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            return None
        return pid if pid and procs.is_alive(pid) else None


class BannerCheck:
    """Looks for a regex in the process logs (stdout, and stderr when kept
    apart), reading only what is new.

    Once found, ``found_at`` is (log path, byte offset past the matching
    line): a reader of the output starts there, as mirakuru's banner wait
    consumed its pipe up to that line.
    """

    def __init__(self, spec):
        self.pattern = spec["pattern"]
        self.regex = re.compile(self.pattern)
        paths = spec.get("log_paths") or [spec.get("log_path")]
        self.logs = [[path, 0, b""] for path in paths if path]  # path, offset, carry
        self.found_at = None

    def _scan(self, log):
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

    def probe(self, remaining):
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

    def owner(self):
        return None


KINDS = {
    "tcp": TCPCheck,
    "unix": UnixCheck,
    "http": HTTPCheck,
    "file": FileCheck,
    "banner": BannerCheck,
}


def build(specs, log_paths=()):
    """Instantiate check objects from plain specs; a banner check reads
    ``log_paths`` (the process's stdout log, then its stderr log if any)."""
    built = []
    for spec in specs or ():
        spec = dict(spec)
        if spec["kind"] == "banner" and not spec.get("log_path"):
            spec["log_paths"] = list(log_paths)
        built.append(KINDS[spec["kind"]](spec))
    return built


def problems(specs):
    """Why some of ``specs`` can never pass on this host (an https check whose
    ca_file cannot be loaded): asked before anything starts."""
    found = []
    for check in build(specs):
        problem = getattr(check, "problem", None)
        text = problem() if problem else None
        if text:
            found.append(text)
    return found


def probe_all(checks, remaining):
    """Run every check; return (all_ok, detail of the first failing one)."""
    for check in checks:
        ok, detail = check.probe(remaining)
        if not ok:
            return False, detail
    return True, ""
