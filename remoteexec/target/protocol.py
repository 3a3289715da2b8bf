"""The master↔target protocol: the shapes of replies, imported by both sides.

Stdlib only: the host's Python imports it. Every target function that can
fail returns either ``{"ok": True, ...}`` or the one error shape built by
:func:`error`; the master turns an error dict back into the typed exception
named by ``type`` (:func:`remoteexec.errors.from_dict`).
"""

from typing import Any, Dict

try:  # Python 3.8+ has TypedDict in typing; keep the target importable everywhere.
    from typing import TypedDict
except ImportError:  # pragma: no cover
    TypedDict = dict  # type: ignore[misc,assignment]


class ErrorDetail(TypedDict, total=False):
    """An error as it crosses from the target: the exception type's name and its fields.

    ``kind`` is a short machine-readable cause (``"timeout"``, ``"exited"``,
    ``"lua"``...) for callers that branch on it; every other key becomes a
    field of the exception (host, command, exit_code, output_tail...).
    """

    type: str
    message: str
    kind: str


class ErrorReply(TypedDict):
    """A failed call's reply."""

    ok: bool
    error: ErrorDetail


def error(type_name: str, message: str, **fields: Any) -> Dict[str, Any]:
    """The one error reply: ``{"ok": False, "error": {"type", "message", **fields}}``.

    Fields that are None are left out, so a reply stays small.
    """
    detail: Dict[str, Any] = {"type": type_name, "message": message}
    detail.update((k, v) for k, v in fields.items() if v is not None)
    return {"ok": False, "error": detail}
