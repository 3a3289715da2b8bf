"""The probe client: run Lua source inside a tarantool through its probe socket.

The probe server is started by the instance's ``init.lua`` (the master's
``remoteexec/tarantool/lua/probe.lua``): one JSON object per line each way
over a unix stream socket, served inside tarantool as admin. Stdlib only.
"""

import itertools
import json
import math
import socket
import time
from typing import Any, Dict, List, Optional, Sequence

from remoteexec.target.tarantool.replies import failure

__all__ = ["MAX_REPLY", "encode_request", "probe"]

#: A reply larger than this is not a probe answer any more.
MAX_REPLY = 64 << 20

_request_ids = itertools.count(1)


def _json_scalar(value: Any) -> Optional[str]:
    """JSON of a scalar for Tarantool's decoder (nan/inf, not NaN/Infinity); None otherwise."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(float(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (bytes, bytearray)):
        # Raw bytes travel inside the JSON string, see encode_request().
        return json.dumps(bytes(value).decode("utf-8", "surrogateescape"), ensure_ascii=False)
    return None


def _json_args(value: Any, out: List[str]) -> None:
    """JSON for Tarantool's decoder: it takes nan/inf (not NaN/Infinity)."""
    scalar = _json_scalar(value)
    if scalar is not None:
        out.append(scalar)
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _json_args(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(",")
            if isinstance(key, bytes):
                key = key.decode("utf-8", "surrogateescape")
            out.append(json.dumps(str(key), ensure_ascii=False))
            out.append(":")
            _json_args(item, out)
        out.append("}")
    else:
        raise TypeError(f"cannot pass {type(value).__name__} to Lua")


def encode_request(req_id: int, lua: str, args: Sequence[Any]) -> bytes:
    args = list(args)
    out = ['{"id":', str(req_id), ',"n":', str(len(args)), ',"lua":']
    out += [json.dumps(lua, ensure_ascii=False), ',"args":']
    _json_args(args, out)
    out.append("}\n")
    # surrogateescape turns bytes smuggled into str back into the raw bytes.
    return "".join(out).encode("utf-8", "surrogateescape")


def probe(
    socket_path: str, lua: str, args: Sequence[Any] = (), timeout: float = 5.0
) -> Dict[str, Any]:
    """Run Lua source inside a Tarantool instance through its probe socket.

    ``lua`` is a chunk; ``args`` arrive as ``...`` (a None argument as nil,
    count kept; a None inside a list or dict as box.NULL). Returns
    ``{"ok": True, "result": [every return value]}`` (nil and box.NULL as None,
    int64 exact, tuples as lists, non-finite floats as float) or an error dict
    (see the module doc) whose ``kind`` is "lua" (the chunk failed or did not
    compile; ``error`` adds ``error_type`` and ``error_code`` for box errors
    and the Lua ``traceback``), "connect" (nobody listens), "timeout" (no
    answer within ``timeout`` seconds; the chunk may still be running) or
    "protocol". ``error["message"]`` is the Lua error message as is.

    Strings are decoded as UTF-8; bytes that are not UTF-8 are kept as
    surrogate escapes (``s.encode("utf-8", "surrogateescape")`` gives them
    back). ``bytes`` arguments arrive in Lua as the same bytes.
    """
    deadline = time.monotonic() + timeout
    req_id = next(_request_ids)
    try:
        request = encode_request(req_id, lua, args)
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        return failure("protocol", f"cannot encode the request: {exc}", socket=socket_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.settimeout(max(timeout, 0.001))
            sock.connect(socket_path)
        except socket.timeout:
            return failure("timeout", f"connect timed out after {timeout} s", socket=socket_path)
        except OSError as exc:
            return failure(
                "connect",
                f"cannot connect to the probe socket: {exc.strerror or exc}",
                socket=socket_path,
                errno=exc.errno,
            )
        chunks: List[bytes] = []
        size = 0
        try:
            sock.sendall(request)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout()
                sock.settimeout(left)
                chunk = sock.recv(1 << 16)
                if not chunk:
                    return failure(
                        "protocol",
                        "the probe server closed the connection without a reply",
                        socket=socket_path,
                    )
                chunks.append(chunk)
                size += len(chunk)
                if b"\n" in chunk:
                    break
                if size > MAX_REPLY:
                    return failure("protocol", f"reply over {MAX_REPLY} bytes", socket=socket_path)
        except socket.timeout:
            return failure("timeout", f"no reply within {timeout} s", socket=socket_path)
        except OSError as exc:
            return failure("connect", f"probe connection failed: {exc}", socket=socket_path)
    finally:
        sock.close()

    line = b"".join(chunks).split(b"\n", 1)[0]
    try:
        reply = json.loads(line.decode("utf-8", "surrogateescape"))
    except ValueError as exc:
        return failure(
            "protocol",
            f"bad reply: {exc}",
            socket=socket_path,
            reply=line[:500].decode("utf-8", "replace"),
        )
    if not isinstance(reply, dict) or reply.get("id") not in (req_id, None):
        return failure("protocol", "reply does not match the request", socket=socket_path)
    if reply.get("ok") is True:
        result = reply.get("result")
        return {"ok": True, "result": result if isinstance(result, list) else []}
    return failure(
        str(reply.get("kind") or "lua"),
        str(reply.get("error")),
        socket=socket_path,
        error_type=reply.get("error_type"),
        error_code=reply.get("error_code"),
        traceback=reply.get("traceback"),
    )
