"""The lab's one exception: :class:`LabError`, naming the step that failed and why."""

from __future__ import annotations

import shlex
from typing import Optional, Sequence

__all__ = ["LabError"]


class LabError(RuntimeError):
    """A lab step failed.

    ``step`` names what the lab was doing, ``argv`` is the command that failed
    (if any), ``stderr`` its error output and ``returncode`` its exit status.
    """

    def __init__(
        self,
        message: str,
        *,
        step: Optional[str] = None,
        argv: Optional[Sequence[str]] = None,
        stderr: Optional[str] = None,
        returncode: Optional[int] = None,
    ) -> None:
        self.message = message
        self.step = step
        self.argv = list(argv) if argv is not None else None
        self.stderr = stderr
        self.returncode = returncode
        super().__init__(self.render())

    def render(self) -> str:
        """The one-paragraph text ``str(error)`` shows: step, message, command, status, stderr."""
        text = f"{self.step}: {self.message}" if self.step else self.message
        if self.argv is not None:
            text += f"\n  command: {shlex.join(self.argv)}"
        if self.returncode is not None:
            text += f"\n  exit status: {self.returncode}"
        if self.stderr:
            text += "\n  stderr: " + self.stderr.strip().replace("\n", "\n          ")
        return text

    def extend(self, *, note: str = "", stderr: str = "") -> None:
        """Add to an error on its way up (what a cleanup left, a log's tail), so the
        one exception the caller sees says everything; ``str(error)`` follows."""
        self.message += note
        if stderr:
            self.stderr = (self.stderr or "") + stderr
        self.args = (self.render(),)
