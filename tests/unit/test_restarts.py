"""remoteexec.target.restarts: the restart policy's settings."""

from __future__ import annotations

import pytest

from remoteexec.target import restarts


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({}, None),
        ({"restart": "on-failure", "max_restarts": 2, "restart_backoff": 0.1}, None),
        ({"restart": "always"}, "restart must be one of"),
        ({"restart": "on-failure", "max_restarts": -1}, "max_restarts"),
        ({"restart": "on-failure", "max_restarts": True}, "max_restarts"),
        ({"restart": "on-failure", "restart_backoff": float("inf")}, "restart_backoff"),
        ({"restart": "on-failure", "restart_backoff": "1"}, "restart_backoff"),
    ],
)
def test_policy_problem(spec: dict, problem: object) -> None:
    found = restarts.policy_problem(spec)
    if problem is None:
        assert found is None
    else:
        assert found is not None and str(problem) in found
