"""mirakuru drop-in (issue 8): each point, against mirakuru and remoteexec.

Every test runs three times: on mirakuru itself (the reference, from the
bench extra), on remoteexec with ``on=None`` (this machine, the drop-in
path) and on remoteexec on a lab host over SSH. A test states what
mirakuru does and checks remoteexec does the same; where remoteexec adds
something (a check on the host, ``running(tree=True)``, ``strict_stop``) the
test says so.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Any, List, Optional
from unittest import mock

import pytest
from conftest import PY, connect_options, skip_or_fail, wait_until

import remoteexec as rx

try:
    import mirakuru
except ImportError:  # the bench extra is missing
    mirakuru = None


@dataclass
class Impl:
    """One of the three places a test runs: mirakuru, remoteexec here, remoteexec on a lab host."""

    name: str
    host: Optional[rx.Host] = None
    lab: Any = None

    @property
    def remoteexec(self) -> bool:
        return self.name != "mirakuru"

    def cls(self, name: str) -> type:
        return getattr(mirakuru if self.name == "mirakuru" else rx, name)

    def kwargs(self, **kwargs: Any) -> dict:
        if self.name == "lab":
            kwargs["on"] = self.host
        return kwargs

    def make(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.cls(name)(*args, **self.kwargs(**kwargs))

    def errors(self) -> Any:
        return mirakuru.exceptions if self.name == "mirakuru" else rx

    def free_port(self) -> int:
        if self.name == "lab":
            Impl._next = getattr(Impl, "_next", 21000) + 1
            return Impl._next
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists where the process ran."""
        if self.name == "lab":
            return os.path.exists(self.lab.hosts[0].path(path))
        return os.path.exists(path)


@pytest.fixture(params=["mirakuru", "local", "lab"])
def impl(request: pytest.FixtureRequest, master: rx.Master) -> Impl:
    if request.param == "mirakuru":
        if mirakuru is None:
            skip_or_fail("mirakuru (the bench extra) is not installed")
        return Impl("mirakuru")
    if request.param == "local":
        return Impl("local")
    the_lab = request.getfixturevalue("lab")
    return Impl("lab", master.connect(the_lab.targets[0], **connect_options(the_lab)), the_lab)


def py(code: str) -> List[str]:
    return [PY, "-c", code]


def gone(pid: int) -> bool:
    """No such process, or a zombie (lab hosts share this pid space)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


SERVE = (
    "import socket,sys,time; s=socket.socket(); s.bind(('127.0.0.1', %d)); s.listen(64);"
    " print('listening', flush=True); time.sleep(60)"
)


# -- 1. pre_start_check() / after_start_check() ----------------------------


def test_overridden_hooks_are_called_here_and_polled(impl: Impl) -> None:
    """A subclass's hooks run on the master, polled every ``sleep`` until true."""
    calls: List[int] = []

    class Ready(impl.cls("Executor")):  # type: ignore[misc]
        def pre_start_check(self) -> bool:
            calls.append(0)
            return False

        def after_start_check(self) -> bool:
            calls.append(os.getpid())
            return len(calls) >= 4

    ex = Ready(["sleep", "30"], **impl.kwargs(timeout=10, sleep=0.05))
    started = time.monotonic()
    ex.start()
    try:
        assert calls == [0, os.getpid(), os.getpid(), os.getpid()]
        assert time.monotonic() - started >= 0.1, "polled every sleep, not in a busy loop"
        assert ex.running()
    finally:
        ex.stop()


def test_mocked_hooks_exit_codes(impl: Impl) -> None:
    """Hooks replaced on the instance are called; a non-zero exit fails at
    once, an exit 0 is tolerated until the timeout (daemonizers)."""
    failing = impl.make("Executor", ["bash", "-c", "exit 12"], timeout=5)
    failing.pre_start_check = mock.Mock(return_value=False)
    failing.after_start_check = mock.Mock(return_value=False)
    with pytest.raises(impl.errors().ProcessExitedWithError) as info:
        failing.start()
    assert info.value.exit_code == 12
    assert "exited with a non-zero code: 12" in str(info.value)
    assert failing.pre_start_check.called

    zero = impl.make("Executor", ["bash", "-c", "exit 0"], timeout=1)
    zero.pre_start_check = mock.Mock(return_value=False)
    zero.after_start_check = mock.Mock(return_value=False)
    with pytest.raises(impl.errors().TimeoutExpired):
        zero.start()
    assert zero.pre_start_check.called and zero.after_start_check.called


def test_true_pre_start_check_refuses_to_start(impl: Impl) -> None:
    ex = impl.make("Executor", ["sleep", "30"], timeout=5)
    ex.pre_start_check = mock.Mock(return_value=True)
    with pytest.raises(impl.errors().AlreadyRunning) as info:
        ex.start()
    assert "seems to be already running" in str(info.value)
    assert not ex.running()


def test_base_hooks_are_not_implemented(impl: Impl) -> None:
    ex = impl.make("Executor", ["sleep", "30"])
    with pytest.raises(NotImplementedError):
        ex.pre_start_check()
    with pytest.raises(NotImplementedError):
        ex.after_start_check()


def test_builtin_hooks_check_on_the_host(impl: Impl) -> None:
    """The built-in hooks can be called directly; remoteexec runs them on
    the host: on a lab host, 127.0.0.1 is the host's own loopback."""
    port = impl.free_port()
    ex = impl.make("TCPExecutor", py(SERVE % port), host="127.0.0.1", port=port, timeout=10)
    assert ex.pre_start_check() is False
    with ex:
        assert ex.pre_start_check() is True and ex.after_start_check() is True
        if impl.name == "lab":
            import socket

            with (
                pytest.raises(ConnectionRefusedError),
                socket.create_connection(("127.0.0.1", port), 0.5),
            ):
                pass  # not on the master's loopback: the check ran on the host
    assert ex.pre_start_check() is False


# -- 2. __del__ ---------------------------------------------------------------


def test_forgotten_executor_is_killed_when_collected(impl: Impl) -> None:
    ex = impl.make("SimpleExecutor", "sleep 300 && true #%s" % uuid.uuid4().hex, shell=True)
    ex.start()
    pid = ex.process.pid
    assert not gone(pid)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        del ex
        gc.collect()
    assert gone(pid), "killed by the time the collection returns, as mirakuru"
    if impl.remoteexec:
        assert any(issubclass(w.category, ResourceWarning) for w in seen), seen


# -- 3. .process ---------------------------------------------------------------


def test_process_is_a_popen_like_handle(impl: Impl) -> None:
    ex = impl.make("SimpleExecutor", ["sleep", "30"])
    assert ex.process is None
    ex.start()
    process = ex.process
    assert process.pid > 0 and not gone(process.pid)
    assert process.poll() is None and process.returncode is None
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=0.2)
    process.terminate()
    assert process.wait(timeout=5) == -signal.SIGTERM
    assert process.returncode == -signal.SIGTERM and process.poll() == -signal.SIGTERM
    process.kill()  # exited already: nothing happens, as with Popen
    ex.stop()  # -SIGTERM is what stop() expects
    assert ex.process is None

    other = impl.make("SimpleExecutor", ["sleep", "30"])
    other.start()
    other.process.send_signal(signal.SIGKILL)
    assert other.process.wait(timeout=5) == -signal.SIGKILL
    with pytest.raises(impl.errors().ProcessFinishedWithError) as info:
        other.stop()
    assert info.value.exit_code == -signal.SIGKILL and other.process is None


# -- 4. str() ------------------------------------------------------------------


def test_str_shows_the_whole_command(impl: Impl) -> None:
    command = ["sleep", "30", *["argument-%03d" % i for i in range(40)]]
    ex = impl.make("SimpleExecutor", command)
    assert " ".join(command) in str(ex)
    assert "SimpleExecutor" in repr(ex)


# -- 5. wording -----------------------------------------------------------------


def test_error_wording(impl: Impl) -> None:
    port = impl.free_port()
    slow = impl.make("TCPExecutor", ["sleep", "30"], host="127.0.0.1", port=port, timeout=1)
    with pytest.raises(impl.errors().TimeoutExpired) as info:
        slow.start()
    assert "timed out after 1 seconds" in str(info.value)
    assert not slow.running()

    first = impl.make("TCPExecutor", py(SERVE % port), host="127.0.0.1", port=port, timeout=10)
    second = impl.make("TCPExecutor", py(SERVE % port), host="127.0.0.1", port=port, timeout=10)
    with first, pytest.raises(impl.errors().AlreadyRunning) as info:
        second.start()
    assert "seems to be already running" in str(info.value)
    if impl.remoteexec:
        # remoteexec's detail after mirakuru's words: the host and what answered.
        text = str(info.value)
        assert "tcp 127.0.0.1:%d" % port in text
        assert (impl.host.name if impl.host else "local") in text


# -- 6. err_output() ----------------------------------------------------------

OUT_ERR = (
    "import sys,time; print('to stdout', flush=True); sys.stderr.write('to stderr\\n');"
    " sys.stderr.flush(); time.sleep(30)"
)


def test_err_output_is_stderr_alone(impl: Impl) -> None:
    ex = impl.make("SimpleExecutor", py(OUT_ERR), stderr=subprocess.PIPE)
    with ex:
        assert ex.output().readline() == "to stdout\n"
        assert ex.err_output().readline() == "to stderr\n"
        if impl.remoteexec:
            paths = (ex._proc["log_path"], ex._proc["err_log_path"])
            assert all(impl.exists(p) for p in paths), "two log files on the host"


def test_banner_on_stderr_consumed_as_mirakuru(impl: Impl) -> None:
    command = 'bash -c "sleep 0.3 && >&2 echo foo && >&2 echo bar && sleep 30"'
    ex = impl.make("OutputExecutor", command, "foo", timeout=10, stdin=None, stderr=subprocess.PIPE)
    with ex:
        assert ex.err_output().readline() == "bar\n"


def test_default_stderr_is_not_apart(impl: Impl) -> None:
    """stderr not piped (mirakuru's default): err_output() is None in both;
    mirakuru's stderr goes to the caller's, remoteexec's into output()."""
    with impl.make("SimpleExecutor", py(OUT_ERR), stdin=subprocess.DEVNULL) as ex:
        assert ex.err_output() is None
        if impl.remoteexec:
            assert wait_until(lambda: "to stderr" in ex.output_tail(), 5)
            assert "to stdout" in ex.output_tail()


# -- 7. output() is a stream -------------------------------------------------------

LINES = "import time; print('a', flush=True); time.sleep(0.5); print('b'); print('c', end='')"


def test_output_is_a_blocking_stream(impl: Impl) -> None:
    ex = impl.make("SimpleExecutor", py(LINES))
    ex.start()
    stream = ex.output()
    assert stream.readline() == "a\n"
    started = time.monotonic()
    assert stream.readline() == "b\n", "blocks until the next line arrives"
    assert time.monotonic() - started > 0.2
    assert stream.read() == "c", "read() returns the rest once the process exited"
    assert stream.readline() == "" and stream.read() == ""
    stream.close()
    ex.stop()

    again = impl.make("SimpleExecutor", py(LINES))
    again.start()
    assert list(again.output()) == ["a\n", "b\n", "c"]
    again.stop()


def test_output_after_the_banner(impl: Impl) -> None:
    command = 'bash -c "sleep 0.3 && echo foo && echo bar && sleep 30"'
    with impl.make("OutputExecutor", command, "foo", timeout=10) as ex:
        assert ex.output().readline() == "bar\n"
        if impl.remoteexec:
            assert "foo\nbar" in ex.output_tail(), "the tail has its own name"


# -- 8. stdin / stdout / stderr / popen_kwargs --------------------------------------


def test_stdio_arguments_do_not_warn(impl: Impl) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        impl.make("SimpleExecutor", ["true"])
        impl.make("SimpleExecutor", ["true"], stdin=None, stdout=subprocess.PIPE)
        impl.make("SimpleExecutor", ["true"], stderr=subprocess.STDOUT, popen_kwargs={"bufsize": 1})
        impl.make("OutputExecutor", ["true"], "x", stdin=None, stderr=subprocess.PIPE)


def test_stdin_pipe_stays_open_devnull_ends(impl: Impl) -> None:
    """mirakuru's default stdin=PIPE: a process reading stdin waits for it."""
    with impl.make("SimpleExecutor", ["cat"]) as ex:
        time.sleep(0.3)
        assert ex.running(), "cat still waits for input"
    closed = impl.make("SimpleExecutor", ["cat"], stdin=subprocess.DEVNULL)
    closed.start()
    assert wait_until(lambda: closed.process.poll() == 0, 5), "cat read EOF and exited"
    closed.stop()


# -- 9. cwd and environment at start() -------------------------------------------

SHOW = "import os; print(os.getcwd()); print(os.environ.get('RX_COMPAT_VALUE'))"


def test_cwd_and_environment_taken_at_start(
    impl: Impl, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    warm = impl.make("SimpleExecutor", ["true"])  # the local context exists before the change
    warm.start()
    warm.stop()
    ex = impl.make("SimpleExecutor", py(SHOW))
    value = uuid.uuid4().hex
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RX_COMPAT_VALUE", value)
    ex.start()
    cwd, seen = ex.output().read().splitlines()
    ex.stop()
    if impl.name == "lab":
        # A host's cwd and environment are its own; nothing of the master's leaks.
        assert (cwd, seen) != (str(tmp_path), value) and seen == "None"
    else:
        assert (cwd, seen) == (str(tmp_path), value)


# -- 10. where remoteexec differs on purpose, and mirakuru's default ------------------

DAEMONIZE = (
    "import os,time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        time.sleep(30)\n"
    "    os._exit(0)\n"
    "os.wait()\n"
)


def test_daemonizer_is_not_running_but_its_tree_is(impl: Impl) -> None:
    ex = impl.make("SimpleExecutor", py(DAEMONIZE))
    ex.start()
    assert wait_until(lambda: not ex.running(), 5), "the main process exited 0"
    if impl.remoteexec:
        assert ex.running(tree=True), "the daemon it left still runs"
    ex.kill()
    if impl.remoteexec:
        assert not ex.running(tree=True)


STUBBORN = (
    "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " print('armed', flush=True); time.sleep(60)"
)


def test_stop_that_had_to_kill(impl: Impl) -> None:
    """mirakuru kills a process that ignores the stop signal after timeout
    and returns; remoteexec too, and raises with strict_stop=True."""
    ex = impl.make("OutputExecutor", py(STUBBORN), "armed", timeout=1)
    ex.start()
    pid = ex.process.pid
    started = time.monotonic()
    ex.stop()
    assert time.monotonic() - started >= 0.9 and wait_until(lambda: gone(pid), 5)
    assert not ex.running()
    if impl.remoteexec:
        strict = impl.make("OutputExecutor", py(STUBBORN), "armed", timeout=1, strict_stop=True)
        strict.start()
        with pytest.raises(rx.TimeoutExpired) as info:
            strict.stop()
        assert info.value.details["escalated"] and "timed out after 1 seconds" in str(info.value)


def test_simple_executor_start_ignores_the_exit_code(impl: Impl) -> None:
    """A SimpleExecutor has no readiness: start() returns whatever the
    process exits with (mirakuru never looks); stop() checks the code."""
    for _ in range(5):
        ex = impl.make("SimpleExecutor", ["false"])
        ex.start()
        assert wait_until(lambda ex=ex: ex.process.poll() == 1, 5)
        with pytest.raises(impl.errors().ProcessFinishedWithError) as info:
            ex.stop()
        assert info.value.exit_code == 1 and ex.process is None
