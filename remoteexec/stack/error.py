"""StackError: what ``up()``, ``restart()`` and ``down()`` raise when a service fails."""

from __future__ import annotations

from typing import List, Optional

from remoteexec.errors import RemoteExecError


class StackError(RemoteExecError):
    """A stack could not come up (or go down) as asked.

    From ``up()``/``restart()``: ``service`` is the one that failed first,
    ``host`` its host(s), ``layer`` the readiness layer it reached
    (``"none"`` when it failed or exited before any readiness check passed),
    ``output_tail`` its output; ``started`` lists what had started (and was
    then stopped, in reverse dependency order), ``stopped`` what was
    stopped, ``never_started`` what never started. From ``down()``:
    ``errors`` has one line per service that failed to stop. Picklable,
    like every remoteexec error.
    """

    @property
    def stack(self) -> Optional[str]:
        """The stack's name."""
        return self.details.get("stack")

    @property
    def service(self) -> Optional[str]:
        """The service that failed first (``up``/``restart``)."""
        return self.details.get("service")

    @property
    def layer(self) -> Optional[str]:
        """The readiness layer that service reached (``"none"``: no check passed)."""
        return self.details.get("layer")

    @property
    def started(self) -> List[str]:
        """The services that had started when the failure came (all stopped again)."""
        return list(self.details.get("started") or [])

    @property
    def stopped(self) -> List[str]:
        """The services stopped after the failure, in stop order."""
        return list(self.details.get("stopped") or [])

    @property
    def never_started(self) -> List[str]:
        """The services that never started."""
        return list(self.details.get("never_started") or [])

    @property
    def errors(self) -> List[str]:
        """From ``down()``: one line per service that failed to stop."""
        return list(self.details.get("errors") or [])


__all__ = ["StackError"]
