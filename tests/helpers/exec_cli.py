"""``remoteexec exec`` from tests: a stack file naming the lab's hosts, and
the command run in a fresh interpreter (as a user runs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Optional

from conftest import PY, REPO


def stack_file(tmp_path: Any, lab: Any, known_hosts: Optional[str] = None) -> str:
    """A stack file with the lab's hosts (``known_hosts``: another
    known_hosts file than the lab's) and one idle service."""
    lines = [
        "[defaults]",
        "identity_file = %s" % json.dumps(lab.identity_file),
        "known_hosts_file = %s" % json.dumps(known_hosts or lab.known_hosts_file),
        "python = %s" % json.dumps(PY),
        "[hosts]",
        *['%s = { target = "%s" }' % (h.name, h.target) for h in lab.hosts],
        "[services.idle]",
        'on = "h1"',
        'command = ["true"]',
    ]
    path = tmp_path / "exec.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run_exec(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m remoteexec exec ARGS``, its output captured (2 min bound)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    argv = [sys.executable, "-m", "remoteexec", "exec", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
