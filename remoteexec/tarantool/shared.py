"""Helpers TarantoolInstance and ReplicaSet share: listen values, errors, secrets, bounds."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Optional, Tuple

import mitogen.core

from remoteexec.arguments import port, seconds, unix_path
from remoteexec.errors import RemoteExecError
from remoteexec.tarantool.config import check_credential

__all__ = [
    "ANY_ADDRESS",
    "SLACK",
    "bound_seconds",
    "check_listen",
    "renamed",
    "reworded",
    "secret",
    "split_listen",
    "stop_on_exit",
]

#: listen addresses that mean "every address": clients use the host's own.
ANY_ADDRESS = ("", "0.0.0.0", "::", "*", "[::]")
#: Seconds a call may take beyond its own bound (a start's time left, a probe's
#: or a stop's timeout): what the target side needs to answer once that bound
#: is up. Not REPLY_SLACK (30 s): a call to a hung host must end within its
#: timeout plus this.
SLACK = 2.0


def reworded(error: RemoteExecError, message: str, **extra: Any) -> RemoteExecError:
    """The same error (class, host, every field) with ``message``; ``extra`` fields win."""
    details = dict(error.details, **extra)
    fields: Dict[str, Any] = dict(
        command=error.command, exit_code=error.exit_code, output_tail=error.output_tail
    )
    for key in fields:
        if key in details:
            fields[key] = details.pop(key)
    return type(error)(message, host=error.host, **fields, **details)


def renamed(error: RemoteExecError, label: str, **extra: Any) -> RemoteExecError:
    """The same error, its message prefixed with ``label`` (which member failed)."""
    return reworded(error, "%s: %s" % (label, error.message), **extra)


def secret(user: Optional[str], password: Optional[str]) -> Optional[mitogen.core.Secret]:
    """The password as a Secret (masked in every repr and log), checked for URI use."""
    if password is None:
        return None
    if not user or user == "guest":
        raise ValueError("a password needs a user other than guest")
    check_credential(password)
    return mitogen.core.Secret(password)


def stop_on_exit(stop: Callable[[], Any], exc_type: Optional[type]) -> None:
    """``stop()`` for a ``with`` block; while an error is on its way out, a
    failed stop must not replace it (the master's close still kills all)."""
    if exc_type is None:
        stop()
        return
    with contextlib.suppress(Exception):
        stop()


def check_listen(name: str, listen: Any, *, allow_zero: bool) -> Any:
    """``listen`` as given, once checked: a port, ``"address:port"`` or a unix
    socket (``"/path"``, ``"unix/:/path"``).

    A port outside 1-65535 is a ValueError naming ``name``; 0 ("any free
    port") only with ``allow_zero``.
    """
    if isinstance(listen, bool) or not isinstance(listen, (int, str)):
        raise TypeError(
            "%s must be a port, 'address:port' or a unix socket path, got %s %r"
            % (name, type(listen).__name__, listen)
        )
    if isinstance(listen, int):
        port(name, listen, allow_zero=allow_zero)
        return listen
    text = listen.strip()
    if text.startswith("unix/:"):
        unix_path(name, text[len("unix/:") :])
    elif text.startswith("/"):
        unix_path(name, text)
    elif text.isdigit():
        port(name, text, allow_zero=allow_zero)
    else:
        address, sep, port_text = text.rpartition(":")
        if not sep or not address.strip("[]"):
            raise ValueError(
                "%s must be a port, 'address:port' or a unix socket path, got %r" % (name, listen)
            )
        port(name, port_text, allow_zero=allow_zero)
    return listen


def split_listen(listen: Any) -> Tuple[Optional[str], Optional[int]]:
    """(address or None, port or None) of a ``listen`` value; (None, None) for unix sockets."""
    text = str(listen)
    if text.isdigit():
        return None, int(text)
    address, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or text.startswith(("unix/", "/")):
        return None, None
    return address.strip("[]"), int(port)


def bound_seconds(name: str, value: Any) -> float:
    """:func:`remoteexec.arguments.seconds` for a bound that must be given: a finite
    positive number of seconds, else a ValueError/TypeError naming ``name``."""
    checked = seconds(name, value)
    if checked is None:  # seconds() refuses None itself; this narrows the type
        raise ValueError("%s must be a number of seconds, got None" % name)
    return float(checked)
