"""Bounded subprocess calls for the lab: ``ip``, ``nft``, ``ssh-keygen``, ``sshd``.

Every call has a timeout and fails with a :class:`LabError` that names the step,
the command and its error output, so a broken lab says what broke.
"""

from __future__ import annotations

import subprocess
from typing import Iterable, Optional, Sequence

from .errors import LabError

__all__ = ["DEFAULT_TIMEOUT", "ip_batch", "nft_apply", "run"]

DEFAULT_TIMEOUT = 10.0


def run(
    step: str,
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    input: Optional[str] = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with a timeout; raise :class:`LabError` naming ``step`` on failure."""
    argv = list(argv)
    try:
        proc = subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise LabError(f"command not found: {exc.filename}", step=step, argv=argv) from exc
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        raise LabError(f"timed out after {timeout:g} s", step=step, argv=argv, stderr=err) from exc
    if check and proc.returncode != 0:
        raise LabError(
            "command failed",
            step=step,
            argv=argv,
            stderr=(proc.stderr or proc.stdout),
            returncode=proc.returncode,
        )
    return proc


def ip_batch(
    step: str,
    commands: Iterable[str],
    *,
    netns: Optional[str] = None,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run several ``ip`` commands in one process (``ip [-n NS] -batch -``): one fork
    for a whole topology instead of one per link."""
    argv = ["ip"]
    if netns:
        argv += ["-n", netns]
    if force:
        argv.append("-force")
    argv += ["-batch", "-"]
    script = "".join(c + "\n" for c in commands)
    try:
        return run(step, argv, input=script, timeout=timeout, check=not force)
    except LabError as exc:
        exc.extend(stderr="\n  batch:\n    " + script.strip().replace("\n", "\n    "))
        raise


def nft_apply(step: str, script: str, *, netns: Optional[str] = None) -> None:
    """Load an nftables script (atomically, one transaction) in ``netns`` or the root ns."""
    argv = ["nft", "-f", "-"]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    run(step, argv, input=script)
