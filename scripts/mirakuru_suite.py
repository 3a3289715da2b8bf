#!/usr/bin/env python3
"""Run mirakuru's own, unmodified test suite against remoteexec.

    .venv/bin/python scripts/mirakuru_suite.py [--places local,lab] [--reference]

What it does, in a work directory outside /tmp (lab hosts have a private
/tmp; the rest of the filesystem is shared with them):

1. fetches mirakuru's tests. ``pip download --no-deps --no-binary mirakuru
   mirakuru==3.1.0`` first; no mirakuru sdist on PyPI ships ``tests/`` (3.1.0
   and the 3.0.x/2.6.x ones were checked), so they are then taken from a
   mirakuru git repository at ``--commit`` (default 69b4a0d, the commit the
   issue measured; its tests pass against mirakuru 3.1.0): ``--repo PATH``,
   else ``$MIRAKURU_REPO``, else the local mirror
   ``/work/.mirror/dbfixtures+mirakuru/repo``, else a clone of
   https://github.com/dbfixtures/mirakuru. The test files stay in the work
   directory; none is copied into this repository.
2. makes a venv in the work directory from the system's python3 (a lab
   host must see ``sys.executable``: the suite runs it there) with
   remoteexec's dependencies and pytest, and installs what mirakuru's tests
   import besides pytest (python-daemon, pytest-xdist for its
   ``xdist_group`` marker) with pip into the work directory (``--target``).
   remoteexec itself comes from ``--remoteexec`` (default: this checkout)
   through PYTHONPATH, so a before/after comparison is two runs.
3. writes a shim package ``mirakuru`` (``__init__``, ``base``, ``exceptions``,
   ``compat``, ``http``, ``tcp``, ``output``, ``pid``, ``unixsocket``) whose
   names are remoteexec's. Locally (``on=None``) the names ARE remoteexec's
   classes. On a lab host the shim connects a Master to the host named in
   ``$REMOTEEXEC_SUITE_HOST`` and its executors are remoteexec's classes
   with three defaults: ``on=`` that host, ``cwd=`` the master's cwd and
   ``envvars`` carrying the master's PATH and PYTHONPATH (the suite runs
   ``python``, ``sample_daemon.py`` and relative pid files from its own
   directory, which the lab host shares).
4. runs ``pytest`` on the suite (mirakuru's own config: ``filterwarnings =
   error``; plus pytest-timeout's ``--timeout 600``, so a test that would wait
   out mirakuru's default timeout of an hour fails instead) once per place,
   and prints passed/failed counts and the failures. On a lab host the 6
   tests that connect from the master to 127.0.0.1 are not run.

``--reference`` also runs the suite against the real mirakuru (the bench
extra). Exit status: 0 when every place ran, 1 when a place could not run
(no lab here, tests not found), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIRAKURU_VERSION = "3.1.0"
COMMIT = "69b4a0d"
MIRROR = "/work/.mirror/dbfixtures+mirakuru/repo"
UPSTREAM = "https://github.com/dbfixtures/mirakuru"
#: What mirakuru's tests import besides pytest, pinned as in its pyproject.
DEPS = ["python-daemon==3.1.2", "lockfile==0.12.2", "pytest-xdist==3.8.0", "execnet==2.1.1"]
#: Ours, not mirakuru's: a per-test bound, so a test that waits for mirakuru's
#: default timeout (3600 s) fails instead of stalling the run.
TEST_TIMEOUT = ["pytest-timeout==2.4.0"]
TEST_TIMEOUT_SECONDS = "600"
PYTEST_TIMEOUT = 1800
#: Tests that connect from the master to 127.0.0.1: on a lab host the
#: service listens on the host's loopback, so they only make sense locally.
MASTER_LOOPBACK = [
    "tests/executors/test_http_executor.py::test_executor_starts_and_waits",
    "tests/executors/test_http_executor.py::test_shell_started_server_stops",
    "tests/executors/test_http_executor.py::test_slow_method_server_starting",
    "tests/executors/test_http_executor.py::test_slow_post_payload_server_starting",
]
HOST_ENV = "REMOTEEXEC_SUITE_HOST"

SHIM_PLACE = '''"""Where the shim's executors run: here, or the lab host in $%(env)s."""

import json
import os
import threading

import remoteexec

_SPEC = os.environ.get("%(env)s")
_LOCK = threading.Lock()
_HOST = []


def host():
    """The lab host (connected once), or None for this machine."""
    if not _SPEC:
        return None
    with _LOCK:
        if not _HOST:
            spec = json.loads(_SPEC)
            master = remoteexec.Master()
            _HOST.append(master.connect(spec.pop("target"), **spec))
        return _HOST[0]


def place(cls):
    """``cls`` itself locally; on a lab host, ``cls`` with the lab defaults."""
    if not _SPEC:
        return cls

    positional_cwd = cls.__name__ in ("SimpleExecutor", "Executor")

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("on", host())
        if not (positional_cwd and len(args) >= 2):
            kwargs.setdefault("cwd", os.getcwd())
        env = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
        env.update(kwargs.get("envvars") or {})
        kwargs["envvars"] = env
        cls.__init__(self, *args, **kwargs)

    return type(cls.__name__, (cls,), {"__init__": __init__, "__module__": cls.__module__})
'''

SHIM = {
    "__init__.py": '''"""mirakuru's names, served by remoteexec (scripts/mirakuru_suite.py)."""

from mirakuru.base import Executor, SimpleExecutor
from mirakuru.exceptions import (
    AlreadyRunning,
    ExecutorError,
    ProcessExitedWithError,
    TimeoutExpired,
)
from mirakuru.http import HTTPExecutor
from mirakuru.output import OutputExecutor
from mirakuru.pid import PidExecutor
from mirakuru.tcp import TCPExecutor
from mirakuru.unixsocket import UnixSocketExecutor

__all__ = (
    "Executor",
    "SimpleExecutor",
    "OutputExecutor",
    "TCPExecutor",
    "HTTPExecutor",
    "PidExecutor",
    "UnixSocketExecutor",
    "ExecutorError",
    "TimeoutExpired",
    "AlreadyRunning",
    "ProcessExitedWithError",
)
''',
    "base.py": "import remoteexec\nfrom mirakuru._place import place\n\n"
    "SimpleExecutor = place(remoteexec.SimpleExecutor)\n"
    "Executor = place(remoteexec.Executor)\n",
    "exceptions.py": "from remoteexec.errors import (  # noqa: F401\n"
    "    AlreadyRunning, ExecutorError, ProcessExitedWithError,\n"
    "    ProcessFinishedWithError, TimeoutExpired,\n)\n",
    "compat.py": 'import signal\n\nSIGKILL = getattr(signal, "SIGKILL", signal.SIGTERM)\n',
    "http.py": "import remoteexec\nfrom mirakuru._place import place\n\n"
    "HTTPExecutor = place(remoteexec.HTTPExecutor)\n",
    "tcp.py": "import remoteexec\nfrom mirakuru._place import place\n\n"
    "TCPExecutor = place(remoteexec.TCPExecutor)\n",
    "output.py": "import remoteexec\nfrom mirakuru._place import place\n\n"
    "OutputExecutor = place(remoteexec.OutputExecutor)\n",
    "pid.py": "import remoteexec\nfrom mirakuru._place import place\n\n"
    "PidExecutor = place(remoteexec.PidExecutor)\n",
    "unixsocket.py": "import remoteexec\nfrom mirakuru._place import place\n\n"
    "UnixSocketExecutor = place(remoteexec.UnixSocketExecutor)\n",
    "_place.py": SHIM_PLACE % {"env": HOST_ENV},
}


def say(text: str) -> None:
    print(text, flush=True)


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], check=True)


def sdist_tests(work: str) -> Optional[str]:
    """Extract tests/ from the mirakuru sdist on PyPI into ``work``; its path or None."""
    where = os.path.join(work, "sdist")
    os.makedirs(where, exist_ok=True)
    name = os.path.join(where, "mirakuru-%s.tar.gz" % MIRAKURU_VERSION)
    if not os.path.exists(name):
        pip(
            "download", "-q", "--no-deps", "--no-binary", "mirakuru",
            "mirakuru==%s" % MIRAKURU_VERSION, "-d", where,
        )  # fmt: skip
    with tarfile.open(name) as tar:
        members = [m for m in tar.getmembers() if "/tests/" in m.name]
        if not members:
            return None
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(where, members=members, **kwargs)
    return os.path.join(where, "mirakuru-%s" % MIRAKURU_VERSION)


def repo_tests(work: str, repo: Optional[str], commit: str) -> str:
    """``git archive`` mirakuru's tests/ and pyproject.toml at ``commit`` into ``work``."""
    source = repo or os.environ.get("MIRAKURU_REPO") or (MIRROR if os.path.isdir(MIRROR) else None)
    if source is None:
        source = os.path.join(work, "mirakuru.git")
        if not os.path.isdir(source):
            say("cloning %s (no local mirakuru repository given)" % UPSTREAM)
            subprocess.run(["git", "clone", "--bare", "-q", UPSTREAM, source], check=True)
    out = os.path.join(work, "git-%s" % commit)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    archive = subprocess.run(
        ["git", "-C", source, "archive", commit, "tests", "pyproject.toml"],
        check=True,
        stdout=subprocess.PIPE,
    ).stdout
    subprocess.run(["tar", "x", "-C", out], input=archive, check=True)
    say("mirakuru's tests: %s at %s (the PyPI sdist has no tests/)" % (source, commit))
    return out


def prepare(work: str, repo: Optional[str], commit: str) -> Tuple[str, str, str]:
    """The suite directory, the shim directory and the deps directory."""
    os.makedirs(work, exist_ok=True)
    found = sdist_tests(work)
    if found is not None and repo is None:
        say("mirakuru's tests: from the sdist %s" % found)
    source = found if found is not None and repo is None else repo_tests(work, repo, commit)
    suite = os.path.join(work, "suite")
    shutil.rmtree(suite, ignore_errors=True)
    shutil.copytree(source, suite)
    deps = os.path.join(work, "deps")
    if not os.path.exists(os.path.join(deps, "pytest_timeout.py")):
        pip("install", "-q", "--no-deps", "--upgrade", "--target", deps, *DEPS, *TEST_TIMEOUT)
    shim = os.path.join(work, "shim")
    shutil.rmtree(shim, ignore_errors=True)
    os.makedirs(os.path.join(shim, "mirakuru"))
    for name, text in SHIM.items():
        with open(os.path.join(shim, "mirakuru", name), "w") as f:
            f.write(text)
    return suite, shim, deps


def results(junit: str) -> Dict[str, str]:
    """{test id: passed|failed|skipped} from a pytest junit file."""
    outcome: Dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = "%s::%s" % (case.get("classname"), case.get("name"))
        kinds = {child.tag for child in case}
        if kinds & {"failure", "error"}:
            outcome[name] = "failed"
        elif "skipped" in kinds:
            outcome.setdefault(name, "skipped")
        else:
            outcome.setdefault(name, "passed")
    return outcome


#: Directories a lab host does not share with this machine.
PRIVATE = ("/tmp/", "/var/tmp/", "/run/", "/root/", "/home/")


def suite_python(work: str) -> str:
    """The interpreter the suite runs on: a venv in ``work`` made from the
    system's python3 (a lab host sees its files too, and the suite runs
    ``sys.executable`` there), with remoteexec's dependencies and pytest but
    not remoteexec itself: which remoteexec is tested is on PYTHONPATH."""
    venv = os.path.join(work, "venv")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        base = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
        if base is None or os.path.realpath(base).startswith(PRIVATE):
            raise SystemExit("no python3 outside %s to run the suite on" % ", ".join(PRIVATE))
        say("making %s from %s" % (venv, base))
        subprocess.run([base, "-m", "venv", venv], check=True)
        subprocess.run(
            [python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "mitogen>=0.3.36", "psutil>=5.9", "pytest"],
            check=True,
        )  # fmt: skip
    return python


def source_path(work: str, checkout: str) -> str:
    """A directory holding only ``remoteexec`` (a link into ``checkout``):
    the checkout's own tests/ package would hide mirakuru's ``tests``."""
    source = os.path.join(work, "remoteexec-src")
    os.makedirs(source, exist_ok=True)
    link = os.path.join(source, "remoteexec")
    if os.path.islink(link):
        os.unlink(link)
    os.symlink(os.path.join(os.path.abspath(checkout), "remoteexec"), link)
    return source


def run_suite(
    label: str,
    suite: str,
    pythonpath: List[str],
    host: Optional[dict],
    extra: List[str],
    python: str,
) -> Dict[str, str]:
    junit = os.path.join(os.path.dirname(suite), "%s.xml" % label)
    basetemp = os.path.join(os.path.dirname(suite), "basetemp-%s" % label)
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(python) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(pythonpath + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop(HOST_ENV, None)
    if host is not None:
        env[HOST_ENV] = json.dumps(host)
    command = [
        python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
        "--basetemp", basetemp, "--junitxml", junit, "--timeout", TEST_TIMEOUT_SECONDS,
        *extra, "tests",
    ]  # fmt: skip
    say("\n== %s: %s" % (label, " ".join(command)))
    if os.path.exists(junit):
        os.unlink(junit)
    subprocess.run(command, cwd=suite, env=env, timeout=PYTEST_TIMEOUT, check=False)
    return results(junit) if os.path.exists(junit) else {}


def report(label: str, outcome: Dict[str, str]) -> str:
    passed = sum(1 for v in outcome.values() if v == "passed")
    failed = sorted(k for k, v in outcome.items() if v == "failed")
    line = "%-22s passed %d of %d, failed %d" % (label, passed, len(outcome), len(failed))
    return "\n".join([line] + ["    failed: %s" % name for name in failed])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--places", default="local,lab", help="local, lab or both (default)")
    parser.add_argument("--reference", action="store_true", help="also run real mirakuru")
    parser.add_argument("--repo", help="a mirakuru git repository to take the tests from")
    parser.add_argument("--commit", default=COMMIT, help="the tests' commit (default %(default)s)")
    parser.add_argument("--workdir", default=os.path.join(REPO, "build", "mirakuru-suite"))
    parser.add_argument(
        "--remoteexec", default=REPO, help="the checkout whose remoteexec is tested (default: this)"
    )
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)
    places = [p.strip() for p in args.places.split(",") if p.strip()]
    if not places or set(places) - {"local", "lab"}:
        parser.error("--places takes local, lab or local,lab")
    work = os.path.abspath(args.workdir)
    if work == "/tmp" or work.startswith(("/tmp/", "/var/tmp/", "/run/")):
        parser.error("--workdir must not be under /tmp, /var/tmp or /run: lab hosts cannot see it")
    suite, shim, deps = prepare(work, args.repo, args.commit)
    python = suite_python(work)
    source = source_path(work, args.remoteexec)
    lines: List[str] = []
    status = 0
    if args.reference:
        reference = os.path.join(work, "reference")
        if not os.path.isdir(os.path.join(reference, "mirakuru")):
            pip("install", "-q", "--no-deps", "--target", reference,
                "mirakuru==%s" % MIRAKURU_VERSION)  # fmt: skip
        outcome = run_suite("reference", suite, [reference, deps], None, args.pytest_args, python)
        lines.append(report("mirakuru (reference)", outcome))
    if "local" in places:
        outcome = run_suite("local", suite, [shim, deps, source], None, args.pytest_args, python)
        lines.append(report("remoteexec, local", outcome))
    if "lab" in places:
        from remoteexec.lab import Lab

        ok, why = Lab.available()
        if not ok:
            lines.append("remoteexec, lab host:  not run: %s" % why)
            status = 1
        else:
            with Lab(hosts=1) as lab:
                host = {
                    "target": lab.targets[0],
                    "identity_file": lab.identity_file,
                    "known_hosts_file": lab.known_hosts_file,
                    "python": python,
                    "connect_timeout": 10,
                }
                skip = [arg for test in MASTER_LOOPBACK for arg in ("--deselect", test)]
                path = [shim, deps, source]
                outcome = run_suite("lab", suite, path, host, skip + args.pytest_args, python)
            lines.append(report("remoteexec, lab host", outcome))
            lines.append(
                "    not run there (they connect from the master to 127.0.0.1): %s"
                % ", ".join(t.rpartition("::")[2] for t in MASTER_LOOPBACK)
            )
    say("\n" + "\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main())
