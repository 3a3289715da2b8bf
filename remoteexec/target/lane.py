"""The lane, target side: a second ssh session whose stdio a context thread serves.

A mitogen call crosses the broker threads and mitogen's framing on both
sides. The lane skips them: the master opens a second session on the same
ssh connection (OpenSSH multiplexing), which runs :data:`RELAY`, a few lines
of stdlib Python. The relay connects to a unix socket this context listens
on (in the run's 0700 directory), proves it was started by our master with a
one-time token, and hands its stdin and stdout to the context (SCM_RIGHTS).
From then on one thread here, ``remoteexec-lane``, reads requests from that
stdin with blocking reads and writes the replies to that stdout: no broker,
no hand-off. The relay only waits: when the context closes the socket (or
dies), it exits and sshd ends the session.

Frames are a 4-byte big-endian length and a pickle of protocol
:data:`PROTOCOL`, read on either side by mitogen's own restricted
``find_class`` (:func:`unpickle`): the same types pass as on mitogen's path
and a refused one is refused alike, in the master as on the host. Requests:
``("call", module, qualname, args, kwargs)`` (``Host.call``) and ``("run",
kwargs)`` (``Host.run``: the supervisor's own :func:`.run.run`). The first
frame the context writes is a hello.
"""

from __future__ import annotations

import _compat_pickle
import base64
import contextlib
import hmac
import io
import itertools
import os
import pickle
import select
import shlex
import socket
import struct
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

import mitogen.core

from . import protocol, runstate
from .run import run

#: The relay, run by the lane's ssh session as ``python -I -S -c``. It reads
#: the socket path and the token from its stdin (never a command line), sends
#: the token and its stdin/stdout to the context, then waits for the socket
#: to close.
RELAY = r"""
import os, socket, struct, sys
def readn(n):
    b = b""
    while len(b) < n:
        c = os.read(0, n - len(b))
        if not c:
            sys.exit(3)
        b += c
    return b
n, t = struct.unpack(">HH", readn(4))
path = readn(n).decode()
token = readn(t)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
s.sendmsg([token], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("ii", 0, 1))])
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0)
os.dup2(null, 1)
while s.recv(64):
    pass
"""
#: The largest frame either side accepts (mitogen's own default message limit).
MAX_FRAME = 128 * 1024 * 1024
#: Bytes read from the lane at once.
READ_SIZE = 256 * 1024
#: A frame's header: the length of the pickle that follows.
HEADER = struct.Struct(">I")
#: The name of the thread that serves the lane in the context.
THREAD_NAME = "remoteexec-lane"
#: Seconds the context waits for the relay to connect after :func:`listen`.
ACCEPT_TIMEOUT = 30.0
#: Bytes of a token (random, from the master's secrets module).
TOKEN_BYTES = 32
#: The pickle protocol of frames. Protocol 3 writes bytes as bytes, where
#: mitogen's protocol 2 makes each a ``_codecs.encode`` call on a latin-1
#: str (2 MiB of output: 8 ms to pickle, 4 ms to unpickle; 0.05 ms each
#: at 3), and is otherwise protocol 2: no type is written natively that
#: mitogen's path refuses (protocol 4 would pass sets, 5 bytearrays).
PROTOCOL = 3

_LOCK = threading.Lock()
_COUNT = itertools.count(1)
#: What the lane of this context did: attempts refused (bad token, wrong
#: peer), lanes served, requests served.
STATS: Dict[str, int] = {"refused": 0, "served": 0, "requests": 0}
#: The lane's socket to its relay: closing it ends the relay, and the session.
_CURRENT: List[socket.socket] = []


def relay_command(python: str) -> str:
    """The remote command of a lane session: ``python`` running :data:`RELAY`
    (base64: nothing for the remote shell to interpret)."""
    code = base64.b64encode(RELAY.encode()).decode()
    boot = "import base64;exec(base64.b64decode('%s'))" % code
    return "%s -I -S -c %s" % (shlex.quote(python), shlex.quote(boot))


def handshake(path: str, token: bytes) -> bytes:
    """What the master writes to the relay's stdin: the socket path and the token."""
    raw = path.encode()
    return struct.pack(">HH", len(raw), len(token)) + raw + token


def listen(token: str, timeout: float = ACCEPT_TIMEOUT) -> Dict[str, Any]:
    """Listen for one relay, in the run's 0700 directory, for ``timeout``
    seconds; it must send ``token`` (hex). Single use: the socket is removed
    once one peer connected, whatever it sent. Returns the socket's path."""
    runstate.require_installed()
    assert runstate.STATE.run_dir is not None
    secret = bytes.fromhex(str(token))
    if len(secret) != TOKEN_BYTES:
        raise ValueError("a lane token is %d bytes" % TOKEN_BYTES)
    path = os.path.join(runstate.STATE.run_dir, "lane%d" % next(_COUNT))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(path)
        os.chmod(path, 0o600)
        server.listen(1)
        server.settimeout(timeout)
    except OSError:
        server.close()
        raise
    thread = threading.Thread(
        target=_accept, args=(server, path, secret), name=THREAD_NAME, daemon=True
    )
    thread.start()
    return {"ok": True, "path": path}


def _accept(server: socket.socket, path: str, secret: bytes) -> None:
    """Take one peer, check it, and serve the lane it brings (on this thread)."""
    try:
        conn, _ = server.accept()
    except OSError:  # nobody came in time
        return
    finally:
        server.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
    fds: List[int] = []
    relay_pid = 0
    try:
        conn.settimeout(10.0)
        token, fds = _receive(conn)
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        relay_pid, uid, _gid = struct.unpack("3i", creds)
        good = uid == os.getuid() and len(fds) == 2 and hmac.compare_digest(token, secret)
    except (OSError, ValueError):
        good = False
    if not good:
        with _LOCK:
            STATS["refused"] += 1
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    conn.settimeout(None)
    with _LOCK:
        STATS["served"] += 1
        for old in _CURRENT:  # a new lane replaces the old one (one per context)
            with contextlib.suppress(OSError):
                old.shutdown(socket.SHUT_RDWR)
        _CURRENT[:] = [conn]
    try:
        serve(fds[0], fds[1], conn, relay_pid)
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        with _LOCK:
            if conn in _CURRENT:
                _CURRENT.remove(conn)
        conn.close()


def _receive(conn: socket.socket) -> Tuple[bytes, List[int]]:
    """The token and the file descriptors the relay sent (one message)."""
    size = socket.CMSG_SPACE(4 * struct.calcsize("i"))
    # Close-on-exec as they arrive: no process this context starts (os.system
    # in a user's call included) may hold the lane's session pipes.
    cloexec = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
    data, ancillary, _flags, _addr = conn.recvmsg(TOKEN_BYTES, size, cloexec)
    fds: List[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(struct.unpack("%di" % (usable // 4), payload[:usable]))
    for fd in fds:
        os.set_inheritable(fd, False)
    return data, fds


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def frame(value: Any) -> bytes:
    """``value`` as one frame: header and pickle (:data:`PROTOCOL`). A value
    no pickler takes becomes mitogen's CallError saying why, as
    ``Message.pickled`` does it."""
    try:
        data = pickle.dumps(value, PROTOCOL)
    except pickle.PicklingError:
        data = mitogen.core.Message.pickled(value).data
    return HEADER.pack(len(data)) + data


#: mitogen's own check of every global a pickle names (its ``Message``'s
#: ``find_class``): CallError, mitogen's Blob/Secret/Kwargs/Context/Sender
#: and the bytes of protocol 2, nothing else. A message with no router, as
#: the lane's frames always were: a Context unpickles without one.
#: None on a mitogen without that private name: :func:`unpickle` then reads
#: each frame through a whole mitogen Message (slower, the same rules).
FIND_CLASS: Optional[Callable[[str, str], Any]] = getattr(
    mitogen.core.Message(data=b"", enc=mitogen.core.Message.ENC_PKL), "_find_global", None
)


def check_global(module: str, name: str) -> Any:
    """:data:`FIND_CLASS` of the global as protocol 2 names it (``builtins``
    is ``__builtin__`` there, as pickle's ``fix_imports`` writes it): the
    very same globals pass, and a refusal says the same words, as on
    mitogen's path."""
    if (module, name) in _compat_pickle.REVERSE_NAME_MAPPING:
        module, name = _compat_pickle.REVERSE_NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.REVERSE_IMPORT_MAPPING:
        module = _compat_pickle.REVERSE_IMPORT_MAPPING[module]
    assert FIND_CLASS is not None  # unpickle() does not come here without it
    return FIND_CLASS(module, name)


class Unpickler(pickle.Unpickler):
    """The C unpickler with mitogen's ``find_class`` (:func:`check_global`):
    a frame can build no object mitogen's path would refuse, and call no
    function in the reader (a compromised host must not run code in the
    master). A class attribute: nothing to set up per frame."""

    find_class = staticmethod(check_global)


def unpickle(data: bytes) -> Any:
    """The value of a frame's pickle, as ``Message.unpickle`` gives it:
    bytes of protocol 2 as bytes, a CallError raised, a bad pickle a
    StreamError, a refused global mitogen's StreamError."""
    if FIND_CLASS is None:
        return mitogen.core.Message(data=bytes(data), enc=mitogen.core.Message.ENC_PKL).unpickle()
    try:
        value = Unpickler(io.BytesIO(data), encoding="bytes").load()
    except (TypeError, ValueError) as e:
        raise mitogen.core.StreamError("invalid message: %s", e) from None
    if isinstance(value, mitogen.core.CallError):
        raise value
    return value


def serve(infd: int, outfd: int, relay: socket.socket, relay_pid: int = 0) -> None:
    """Answer requests read from ``infd`` on ``outfd`` until EOF, a bad frame,
    or the relay's socket closing (the relay was killed: end the lane). The
    first frame says hello: this context's pid and the relay's."""
    os.set_blocking(infd, True)
    os.set_blocking(outfd, True)
    hello = {"ok": True, "pid": os.getpid(), "relay_pid": relay_pid, "thread": THREAD_NAME}
    _write(outfd, frame(hello))
    poller = select.poll()
    poller.register(infd, select.POLLIN)
    relay_fd = relay.fileno()
    poller.register(relay_fd, select.POLLIN)
    buffer = bytearray()  # a large request (many reads) is not copied again on each
    while True:
        size = HEADER.unpack_from(buffer)[0] if len(buffer) >= HEADER.size else None
        if size is not None and size > MAX_FRAME:
            return  # garbage: end the lane
        if size is None or len(buffer) < HEADER.size + size:
            # One poll and one read a request, most of the time: the whole
            # frame arrives at once.
            for fd, _ in poller.poll():
                if fd == relay_fd:
                    return  # the relay went away (or spoke): the lane ends with it
            chunk = os.read(infd, READ_SIZE)
            if not chunk:
                return
            buffer += chunk
            continue
        end = HEADER.size + size
        body = bytes(buffer[HEADER.size : end])
        del buffer[:end]
        try:
            reply = frame(answer(body))
        except Exception as e:  # a result no pickler takes (a lock, a socket): say so
            reply = frame(mitogen.core.CallError(e))
        if len(reply) - HEADER.size > MAX_FRAME:  # the master would end the lane
            reply = frame(_too_large(body, len(reply) - HEADER.size))
        _write(outfd, reply)


def answer(body: bytes) -> Any:
    """The reply to one request frame's pickle. A request mitogen's unpickler
    refuses, or an unknown one, is answered with a CallError, as mitogen does."""
    STATS["requests"] += 1  # only this thread counts requests
    try:
        request = unpickle(body)
        kind = request[0]
        if kind == "call":
            _, module, qualname, args, kwargs = request
            return (_CALL or _call_function())(module, qualname, args, kwargs)
        if kind == "run":
            try:
                return run(**request[1])
            except Exception as e:
                return protocol.raised("run", e)
        raise ValueError("unknown lane request %r" % (kind,))
    except Exception as e:
        return mitogen.core.CallError(e)


def _too_large(body: bytes, size: int) -> Dict[str, Any]:
    """The error reply in place of a reply of ``size`` bytes to request
    ``body``, over :data:`MAX_FRAME`: the master would refuse it and end the
    lane (mitogen's path says the same of a message over its limit)."""
    what = "a lane request"
    with contextlib.suppress(Exception):
        request = unpickle(body)
        what = "call %s()" % request[2] if request[0] == "call" else str(request[0])
    return protocol.error(
        "RemoteCallError",
        "the reply to %s is too large: %d bytes, over the %d a lane frame may carry"
        % (what, size, MAX_FRAME),
        type_name="ReplyTooLarge",
        remote_message="reply too large: %d bytes" % size,
    )


#: The supervisor's ``call_function``, found on the first call (imported
#: there, not here: the supervisor is loaded already, and not a module this
#: one brings along).
_CALL: Optional[Callable[..., Any]] = None


def _call_function() -> Callable[..., Any]:
    global _CALL
    from .supervisor import call_function

    _CALL = call_function
    return call_function


def stats() -> Dict[str, int]:
    """A copy of :data:`STATS` (for tests and diagnostics)."""
    with _LOCK:
        return dict(STATS)


__all__ = [
    "ACCEPT_TIMEOUT",
    "FIND_CLASS",
    "HEADER",
    "MAX_FRAME",
    "PROTOCOL",
    "RELAY",
    "STATS",
    "THREAD_NAME",
    "TOKEN_BYTES",
    "Unpickler",
    "answer",
    "check_global",
    "frame",
    "handshake",
    "listen",
    "relay_command",
    "serve",
    "stats",
    "unpickle",
]
