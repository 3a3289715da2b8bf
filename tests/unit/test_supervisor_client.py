"""remoteexec.supervisor_client: stubs name target functions that the supervisor serves."""

from __future__ import annotations

import pytest

from remoteexec.supervisor_client import SupervisorClient, dotted
from remoteexec.target import checks, files, supervisor


def test_dotted_names_are_invokable_on_the_target(tmp_path) -> None:
    path = tmp_path / "log"
    path.write_text("a\nb\nc\n")
    assert dotted(files.tail) == "remoteexec.target.files.tail"
    assert supervisor.invoke(dotted(files.tail), [str(path), 2]) == "b\nc"
    assert supervisor.invoke(dotted(checks.problems), [[]]) == []
    with pytest.raises(ValueError, match=r"only remoteexec\.target functions"):
        supervisor.invoke("os.system", ["true"])


def test_every_stubbed_service_method_exists_on_the_supervisor() -> None:
    served = {"start", "wait", "status", "stop", "kill", "signal", "forget", "output", "read"}
    served |= {"wait_exit", "probe", "ping", "finish", "run", "invoke"}
    for name in served:
        assert callable(getattr(supervisor.Supervisor, name)), name
    stubs = {n for n in vars(SupervisorClient) if not n.startswith("_")}
    assert {"start", "stop", "status", "read", "probe", "tail", "free_port"} <= stubs
