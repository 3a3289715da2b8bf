#!/usr/bin/env python3
"""Mutation check: each known way to break the product must turn a test red.

    .venv/bin/python scripts/mutation_check.py [NAME ...]

For each mutation: copy the repository's files (git-tracked plus untracked,
not ignored) to a temporary directory, replace one exact anchor text in one
file (fail loudly when the anchor is not there exactly once: anchors move
when branches merge, so each is small and named below), check that the copy's
package is what both the master and a local context import, then run only
the tests selected for it there (``pytest -x``, PYTHONPATH and cwd = the
copy) and expect them to FAIL. A clean copy runs every selection first and
must pass (all selections in one pytest run), so a red run means the
mutation, not a broken selection. Mutations are checked :data:`JOBS` at a
time (``--jobs N``), each in a copy of its own.

Exit status: 0 when every mutation was killed, 1 when one survived, 2 when
the check itself could not run (anchor missing, selection empty or broken,
clean run red, the copy's package not the one imported).

A mutation marked ``pending`` is one whose test lives on another branch
until the lead merges it: if it survives, or its selection finds no test
yet, that is reported and does not fail the check. Remove the mark once
its test is on main.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTEST_TIMEOUT = 240  # seconds one pytest run may take before the check gives up
#: Mutations checked at once: most of a run is waiting (timeouts, labs
#: starting), and the suite passes with another copy of it running.
JOBS = 2
_PRINTING = threading.Lock()


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    anchor: str  # exact text, must occur once
    replacement: str
    tests: Tuple[str, ...]  # pytest arguments: node ids, or files plus -k
    why: str
    pending: Optional[str] = None  # why it may survive for now


MUTATIONS = (
    Mutation(
        "marker-substring",
        "remoteexec/target/procs.py",
        "(value is not None and got == value)",
        "(value is not None and value in got)",
        ("tests/test_markers.py::test_stopping_one_of_many_leaves_the_rest[local-stop]",),
        "markers matched as substrings: stopping executor 1 kills 10, 11, 12",
    ),
    Mutation(
        "unixsocket-no-readiness",
        "remoteexec/executors/unixsocket.py",
        "return UnixSocket(self.socket).specs()",
        "return []",
        ("tests/test_readiness.py::test_unix_socket_waits_for_the_bind[local]",),
        "UnixSocketExecutor._after_start_specs returns []: start() does not wait",
    ),
    Mutation(
        "tcp-no-readiness",
        "remoteexec/executors/tcp.py",
        "return TCP(self.host, self.port).specs()",
        "return []",
        ("tests/test_readiness.py::test_tcp_waits_for_the_listen[local]",),
        "TCPExecutor._after_start_specs returns []",
    ),
    Mutation(
        "output-no-readiness",
        "remoteexec/executors/output.py",
        "return Banner(self._banner).specs()",
        "return []",
        ("tests/test_readiness.py::test_output_waits_for_the_banner[local]",),
        "OutputExecutor._after_start_specs returns []",
    ),
    Mutation(
        "pid-no-readiness",
        "remoteexec/executors/pid.py",
        "return File(self.filename).specs()",
        "return []",
        ("tests/test_readiness.py::test_pid_waits_for_the_file[local]",),
        "PidExecutor._after_start_specs returns []",
    ),
    Mutation(
        "http-checks-only-the-port",
        "remoteexec/executors/http.py",
        "return self._wait.specs()",
        "return TCP(self.host, self.port).specs()",
        ("tests/test_readiness.py::test_http_waits_for_the_status_not_the_port[local]",),
        "HTTPExecutor waits for the TCP port instead of the HTTP status",
    ),
    Mutation(
        "all-of-keeps-a",
        "remoteexec/waits.py",
        "return [spec for part in self.parts for spec in part.specs()]",
        "return self.parts[0].specs()",
        (
            "tests/test_readiness.py::test_all_of_waits_for_the_late_part[local]",
            "tests/test_readiness.py::test_all_of_times_out_naming_the_part_that_never_holds[local-a&never]",
        ),
        "waits.AllOf keeps only its first part",
    ),
    Mutation(
        "blank-remote-traceback",
        "remoteexec/target/protocol.py",
        "remote_traceback=traceback.format_exc()[-4000:],",
        'remote_traceback="",',
        ("tests/test_errors.py::test_remote_traceback_names_the_raising_function_and_line[local]",),
        "protocol.raised sends no traceback",
    ),
    Mutation(
        "no-exited-0-hint",
        "remoteexec/target/lifecycle.py",
        'detail += "; the process exited 0 and nothing it started is running"',
        "pass",
        ("tests/test_errors.py::test_timeout_says_the_process_exited_0_leaving_nothing[local]",),
        "the timeout message loses 'exited 0 and nothing it started is running'",
    ),
    Mutation(
        "pickle-drops-details",
        "remoteexec/errors.py",
        "output_tail=self.output_tail,\n            **self.details,",
        "output_tail=self.output_tail,",
        ("tests/unit/test_errors.py::test_pickle_round_trip_keeps_every_attribute",),
        "errors lose their details (owner_pid, escalated, failures...) when pickled",
    ),
    Mutation(
        "replicaset-stop-swallows-errors",
        "remoteexec/tarantool/replicaset.py",
        "_raise_first(results)\n        return took",
        "return took",
        ("tests/test_tarantool.py::test_stop_reports_a_member_that_had_to_be_killed",),
        "ReplicaSet.stop() drops its members' stop errors",
    ),
    Mutation(
        "poll-at-fixed-sleep",
        "remoteexec/target/checks.py",
        "return min(sleep, max(FIRST_POLL, waited * POLL_GROWTH))",
        "return sleep",
        (
            "tests/test_claims_executors.py::test_readiness_polls_from_5ms_growing_up_to_sleep[local]",
        ),
        "readiness polled at a fixed sleep (mirakuru's way), not from 5 ms",
    ),
    Mutation(
        "poll-no-growth",
        "remoteexec/target/checks.py",
        "return min(sleep, max(FIRST_POLL, waited * POLL_GROWTH))",
        "return min(sleep, FIRST_POLL)",
        (
            "tests/test_claims_executors.py::test_readiness_polls_from_5ms_growing_up_to_sleep[local]",
        ),
        "readiness polled every 5 ms, never growing",
    ),
    Mutation(
        "stop-signal-twice",
        "remoteexec/target/spawn.py",
        "if not in_group:",
        "if True:",
        ("tests/test_claims_executors.py::test_each_process_gets_the_stop_signal_once[local]",),
        "stop signals the group, then each marked member again",
    ),
    Mutation(
        "probe-timeout-unbounded",
        "remoteexec/target/checks.py",
        "return max(0.01, min(cap, remaining))",
        "return cap",
        (
            "tests/test_claims_executors.py::test_probe_of_a_server_that_never_answers_is_bounded[local]",
        ),
        "a probe's socket timeout is not bounded by the deadline",
    ),
    Mutation(
        "no-exit-hook",
        "remoteexec/master.py",
        "(register or atexit.register)(_close_all)",
        "pass",
        ("tests/test_claims_executors.py::test_a_forgotten_master_is_closed_at_interpreter_exit",),
        "a forgotten master is not closed at interpreter exit",
    ),
    Mutation(
        "stop-timeout-fixed",
        "remoteexec/executors/base.py",
        "or self._timeout",
        "or 30.0",
        ("tests/test_claims_executors.py::test_stop_timeout_defaults_to_timeout[local]",),
        "stop_timeout defaults to 30 s instead of timeout",
    ),
    Mutation(
        "stdin-a-pipe",
        "remoteexec/target/spawn.py",
        'if spec.get("stdin") == "pipe":',
        "if True:",
        ("tests/test_claims_executors.py::test_stdin_is_dev_null[local]",),
        "a service reads a pipe nobody writes (mirakuru's stdin=PIPE), not /dev/null",
    ),
    Mutation(
        "log-mode-0644",
        "remoteexec/target/spawn.py",
        "log_fd = os.open(self.log_path, flags, 0o600)",
        "log_fd = os.open(self.log_path, flags, 0o644)",
        ("tests/test_claims_executors.py::test_logs_are_0600_in_a_0700_run_directory_on_the_host",),
        "logs created 0644",
    ),
    Mutation(
        "stopped-always-starts",
        "remoteexec/executors/base.py",
        "            if was_running:\n                self.start()",
        "            self.start()",
        ("tests/test_claims_executors.py::test_stopped_on_a_stopped_executor_just_yields[local]",),
        "stopped() starts an executor that was not running",
    ),
    Mutation(
        "name-ignored",
        "remoteexec/target/runstate.py",
        'name = spec.get("name") or program.split()[0]',
        "name = program.split()[0]",
        ("tests/test_claims_executors.py::test_name_names_the_log[local]",),
        "name= does not name the log",
    ),
    Mutation(
        "not-executable-untyped",
        "remoteexec/target/spawn.py",
        "if isinstance(e, PermissionError):",
        "if False:",
        (
            "tests/test_claims_executors.py::test_command_not_found_for_a_file_that_is_not_executable[local]",
        ),
        "a non-executable file is an ExecutorError, not CommandNotFound",
    ),
    Mutation(
        "status-on-main-thread",
        "remoteexec/host.py",
        "recv = self.context.call_service_async(SUPERVISOR, method, **kwargs)",
        "recv = (self.context.call_async(getattr(__import__('remoteexec.target.supervisor',"
        " fromlist=['x']), method), **kwargs) if method in ('status', 'output', 'run', 'stop')"
        " else self.context.call_service_async(SUPERVISOR, method, **kwargs))",
        ("tests/test_executors.py::test_status_not_blocked_by_long_call[local]",),
        "running()/output()/Host.run()/stop() queue on the main thread behind Host.call",
    ),
    Mutation(
        "default-sleep-differs",
        "remoteexec/executors/base.py",
        "sleep: float = 0.1,",
        "sleep: float = 0.05,",
        ("tests/test_claims_executors.py::test_constructor_takes_mirakuru_arguments_and_defaults",),
        "a constructor default differs from mirakuru 3.1's",
    ),
    Mutation(
        "wait-for-callable-ignored",
        "remoteexec/executors/base.py",
        "if condition():",
        "if True:",
        ("tests/test_claims_executors.py::test_wait_for_a_callable_times_out_and_kills[local]",),
        "wait_for(callable) returns without the condition holding",
    ),
    Mutation(
        "output-lines-off-by-one",
        "remoteexec/target/files.py",
        'return "\\n".join(text[-lines:]) if lines else ""',
        'return "\\n".join(text[-lines - 1 :]) if lines else ""',
        ("tests/test_claims_executors.py::test_output_lines_returns_that_many_lines[local]",),
        "output(lines=N) returns N+1 lines",
    ),
    Mutation(
        "no-already-running-check",
        "remoteexec/target/lifecycle.py",
        "    if pre_check_specs:",
        "    if False:",
        (
            "tests/test_claims_executors.py::test_already_running_for_a_unix_socket[local]",
            "tests/test_claims_executors.py::test_already_running_for_a_pid_file[local]",
        ),
        "a busy socket or pid file is taken for the new process's readiness",
    ),
    Mutation(
        "timed-out-start-leaves-its-tree",
        "remoteexec/target/lifecycle.py",
        "    proc.signal_tree(signal.SIGKILL)\n    proc.wait_gone(time.monotonic() + KILL_WAIT)\n"
        "    runstate.retire(proc)\n",
        "    runstate.retire(proc)\n",
        ("tests/test_executors.py::test_start_timeout[local]",),
        "a start that times out leaves its process running",
    ),
    Mutation(
        "restart-never",
        "remoteexec/target/spawn.py",
        "return rc != 0 and self.restarts < int(",
        "return False and self.restarts < int(",
        (
            "tests/test_executors.py::test_restart_on_failure_restarts_until_it_keeps_running[local]",
        ),
        "restart='on-failure' never restarts a failed process",
    ),
    Mutation(
        "restart-once-too-often",
        "remoteexec/target/spawn.py",
        "return rc != 0 and self.restarts < int(",
        "return rc != 0 and self.restarts <= int(",
        (
            "tests/test_executors.py::test_restart_gives_up_after_max_restarts_and_reports_the_exit[local]",
        ),
        "the supervisor restarts max_restarts + 1 times",
    ),
    Mutation(
        "restart-after-our-stop",
        "remoteexec/target/spawn.py",
        "        self.stopping.set()\n        with self.lock:\n",
        "        with self.lock:\n",
        ("tests/test_executors.py::test_no_restart_by_default_and_none_after_stop[local]",),
        "a process killed by our own stop is restarted",
    ),
    Mutation(
        "stop-no-sigcont",
        "remoteexec/target/spawn.py",
        "            if sig not in (signal.SIGKILL, signal.SIGCONT):",
        "            if False:",
        ("tests/test_executors.py::test_paused_process_stops_at_once[local]",),
        "a paused process is not continued after the stop signal: it waits out stop_timeout",
    ),
    Mutation(
        "keeper-restarts-a-stop",
        "remoteexec/target/keeper.py",
        '    return stopping or os.path.exists(exit_path + ".stop")',
        "    return False",
        ("tests/test_detach_keeper.py::test_a_stop_is_not_restarted",),
        "the keeper restarts a service that a stop ended",
    ),
    Mutation(
        "restart-old-banner-counts",
        "remoteexec/target/restarts.py",
        "            check.skip_to(offsets)",
        "            pass",
        (
            "tests/test_executors.py::test_a_restarted_output_executor_is_ready_only_on_a_new_banner[local]",
        ),
        "a restarted OutputExecutor counts the banner its previous run printed as ready",
    ),
    # --- README claims (issue 7, items 7, 11, 12): heartbeats, Tarantool, SSH, lab CLI
    Mutation(
        "heartbeat-interval-half",
        "remoteexec/master.py",
        "self.heartbeat_interval = min(1.0, self.heartbeat_timeout / 4)",
        "self.heartbeat_interval = min(1.0, self.heartbeat_timeout / 2)",
        (
            "tests/test_claims_heartbeat.py::test_heartbeat_interval_is_a_quarter_of_the_timeout_at_most_1s[quarter]",
        ),
        "heartbeats every heartbeat_timeout/2 instead of /4",
    ),
    Mutation(
        "heartbeat-interval-uncapped",
        "remoteexec/master.py",
        "self.heartbeat_interval = min(1.0, self.heartbeat_timeout / 4)",
        "self.heartbeat_interval = self.heartbeat_timeout / 4",
        (
            "tests/test_claims_heartbeat.py::test_heartbeat_interval_is_a_quarter_of_the_timeout_at_most_1s[capped]",
        ),
        "the heartbeat interval is not capped at 1 s",
    ),
    Mutation(
        "heartbeat-default-20s",
        "remoteexec/master.py",
        "heartbeat_timeout: float = 10.0,",
        "heartbeat_timeout: float = 20.0,",
        ("tests/test_claims_heartbeat.py::test_default_heartbeat_timeout_is_10s_in_the_watchdog",),
        "Master's heartbeat_timeout defaults to 20 s instead of 10 s",
    ),
    Mutation(
        "host-lost-early",
        "remoteexec/heartbeat.py",
        "if now - self.last_ack > timeout:",
        "if now - self.last_ack > timeout / 2:",
        (
            "tests/test_claims_heartbeat.py::test_partition_lost_in_its_window_watchdog_kills_and_logs_go",
        ),
        "the master declares a host lost after half the heartbeat timeout",
    ),
    Mutation(
        "watchdog-early",
        "remoteexec/target/runstate.py",
        "msg = recv.get(timeout=timeout)",
        "msg = recv.get(timeout=timeout / 2)",
        (
            "tests/test_claims_heartbeat.py::test_partition_lost_in_its_window_watchdog_kills_and_logs_go",
        ),
        "the context's watchdog kills the run after half the heartbeat timeout",
    ),
    Mutation(
        "logs-kept-on-loss",
        "remoteexec/target/runstate.py",
        "    kill_all()\n    if not STATE.keep_logs:\n        remove_run_dir()",
        "    kill_all()",
        (
            "tests/test_claims_heartbeat.py::test_partition_lost_in_its_window_watchdog_kills_and_logs_go",
        ),
        "the run directory (logs) stays on a host whose master went silent",
    ),
    Mutation(
        "tarantool-no-box-info-fallback",
        "remoteexec/target/tarantool/instance.py",
        "if not listener.running and time.monotonic() - started < 1.0:",
        "if not listener.running:",
        (
            "tests/test_claims_tarantool.py::test_box_info_status_is_the_fallback_when_notify_socket_says_nothing",
        ),
        "readiness waits for NOTIFY_SOCKET only, never falls back to box.info.status",
    ),
    Mutation(
        "tarantool-leader-first",
        "remoteexec/tarantool/replicaset.py",
        "for group in (self.replicas, [self.leader]):",
        "for group in ([self.leader], self.replicas):",
        ("tests/test_claims_tarantool.py::test_replicas_are_started_before_the_leader",),
        "ReplicaSet.start() spawns the leader before the replicas",
    ),
    Mutation(
        "tarantool-files-not-private",
        "remoteexec/tarantool/lua/init.lua",
        " ffi.C.umask(63) end",
        " end",
        (
            "tests/test_claims_tarantool.py::test_init_lua_work_dir_and_state_files_are_private_on_the_host",
        ),
        "init.lua no longer sets umask 077: snapshots, xlogs, log 0644/0640",
    ),
    Mutation(
        "tarantool-no-port-precheck",
        "remoteexec/tarantool/instance.py",
        "refuse_if = TCP(address, port)",
        "refuse_if = None",
        (
            "tests/test_claims_tarantool.py::test_a_previous_runs_instance_on_the_port_is_never_taken_for_ours",
        ),
        "a port already served by a previous run's tarantool is not checked before start",
    ),
    Mutation(
        "tarantool-status-drops-link-lag",
        "remoteexec/tarantool/replicaset.py",
        'for k in ("status", "message", "lag", "idle")',
        'for k in ("status", "message")',
        ("tests/test_claims_tarantool.py::test_status_has_every_field_the_readme_lists",),
        "status() links lose lag and idle",
    ),
    Mutation(
        "tarantool-calls-wait-longer",
        "remoteexec/tarantool/shared.py",
        "SLACK = 2.0",
        "SLACK = 5.0",
        (
            "tests/test_claims_tarantool.py::test_calls_to_a_hung_lab_host_end_within_their_timeout_plus_2s[context]",
        ),
        "calls to a hung host wait their timeout plus 5 s, not plus 2 s",
    ),
    Mutation(
        "no-route-not-unreachable",
        "remoteexec/connectors/ssh.py",
        'r"timed out|connection refused|no route to host|network is unreachable"',
        'r"timed out|connection refused|network is unreachable"',
        ("tests/test_connect.py::test_no_route_is_host_unreachable",),
        "'No route to host' is not classified as HostUnreachable",
    ),
    Mutation(
        "check-host-keys-ignore-ignored",
        "remoteexec/connectors/ssh.py",
        "check_host_keys=check_host_keys,\n        ssh_args=args,",
        'check_host_keys="enforce",\n        ssh_args=args,',
        ("tests/test_connect.py::test_check_host_keys_ignore_connects_to_an_unknown_key",),
        "check_host_keys='ignore' still enforces known_hosts",
    ),
    # --- the Stack issue (10): port 0 on an executor, restarts by the host
    Mutation(
        "port-zero-not-picked",
        "remoteexec/executors/tcp.py",
        "self.port = self.supervisor.free_port(self.host)",
        "self.port = self.port",
        (
            "tests/test_executors.py::test_port_zero_is_picked_on_the_host_at_start[lab-tcp]",
            "tests/test_executors.py::test_port_zero_is_picked_on_the_host_at_start[lab-http]",
        ),
        "port=0 is not replaced by a free port of the host at start",
    ),
    Mutation(
        "stack-restart-from-the-master",
        "remoteexec/stack/adapt.py",
        'method = getattr(service, "set_restart", None)',
        "method = None",
        ("tests/test_stack.py::test_on_failure_restarts_up_to_max_restarts",),
        "the stack keeps restart= to itself: executors restarted from the master",
    ),
    Mutation(
        "lab-down-all-keeps-labs-in-use",
        "remoteexec/lab/machine.py",
        "if not all and owner_alive(st):",
        "if owner_alive(st):",
        ("tests/test_lab.py::test_cli_lab_commands_and_down_all_in_a_sandbox",),
        "lab down --all skips labs whose creator still runs (run in the test's sandbox)",
    ),
    Mutation(
        "lane-any-token",
        "remoteexec/target/lane.py",
        "hmac.compare_digest(token, secret)",
        "True",
        ("tests/test_lane.py::test_a_wrong_token_is_refused",),
        "the context takes any process that reaches its lane socket as the relay",
    ),
    Mutation(
        "bytecache-no-digest",
        "remoteexec/target/bytecache.py",
        "    if sha256(body).digest() != digest:",
        "    if False:",
        ("tests/test_bootstrap.py::test_a_tampered_cache_file_is_refused_and_replaced",),
        "a cache entry whose body does not match its digest is loaded",
    ),
    Mutation(
        "run-exit-unbounded",
        "remoteexec/target/run.py",
        "pipes.pump(deadline) and _reaped(child, deadline)",
        "pipes.pump(deadline) and _reaped(child, None)",
        ("tests/test_lane_run.py::test_a_command_that_closes_its_output_still_times_out",),
        "a command that closes its output and runs on is waited for past its timeout",
    ),
    Mutation(
        "guard-woken-per-spawn",
        "remoteexec/target/guard.py",
        "    watch.register(fd, 0)",
        "    watch.register(fd, select.POLLIN)",
        ("tests/test_supervisor.py::test_spawns_do_not_wake_the_guard",),
        "every spawn's session line wakes the guard process",
    ),
    Mutation(
        "guard-drops-late-sessions",
        "remoteexec/target/guard.py",
        "        watch.poll(int(DRAIN_EVERY * 1000))\n",
        "        if watch.poll(int(DRAIN_EVERY * 1000)):\n            break\n",
        ("tests/test_supervisor.py::test_guard_reads_sessions_told_right_before_the_context_ends",),
        "the guard exits at its context's end without reading the last sessions told",
    ),
    Mutation(
        "guard-ignores-pid-reuse",
        "remoteexec/target/guard.py",
        "if leader is None or earliest <= leader[3] <= latest:",
        "if True:",
        ("tests/test_supervisor.py::test_guard_checks_session_leader_start_time",),
        "the guard takes a reused pid's new session for the one it was told",
    ),
    Mutation(
        "spawn-window-after-fork",
        "remoteexec/target/spawn.py",
        "    earliest = procs.boot_ticks()\n    try:",
        "    earliest = procs.boot_ticks() + 1000\n    try:",
        ("tests/test_supervisor.py::test_context_sigkill_kills_its_services",),
        "a spawn tells the guard a start-time window its session leader is not in",
    ),
    Mutation(
        "lane-spin-unbounded",
        "remoteexec/lane.py",
        "                if time.perf_counter() >= end:\n                    return\n",
        "                if time.perf_counter() >= end + 3600:\n                    return\n",
        ("tests/test_lane.py::test_a_slow_reply_is_waited_for_asleep",),
        "a caller spins (a CPU) for as long as its reply takes",
    ),
    Mutation(
        "lane-never-spins",
        "remoteexec/lane.py",
        "                self._spin()\n",
        "                pass\n",
        ("tests/test_lane.py::test_a_fast_reply_is_caught_spinning",),
        "a caller sleeps in poll at once, however soon its reply comes",
    ),
    Mutation(
        "lane-run-spins",
        "remoteexec/lane.py",
        "            if spin:\n                self._spin()\n",
        "            self._spin()\n",
        ("tests/test_lane.py::test_a_run_waits_asleep",),
        "a Host.run's caller spins through the spawn too",
    ),
    Mutation(
        "requests-policy-open",
        "remoteexec/target/supervisor.py",
        "self._on_message, policy=mitogen.core.has_parent_authority",
        "self._on_message, policy=None",
        (
            "tests/test_requests_policy.py::test_a_child_of_the_hosts_context_is_refused[request_handle]",
        ),
        "the supervisor's request handler runs calls from any context, not only the master",
    ),
    Mutation(
        "quick-policy-open",
        "remoteexec/target/quick.py",
        "HANDLE = router.add_handler(serve, policy=mitogen.core.has_parent_authority)",
        "HANDLE = router.add_handler(serve, policy=None)",
        (
            "tests/test_requests_policy.py::test_a_child_of_the_hosts_context_is_refused[quick_handle]",
        ),
        "the quick handler serves any context, not only the master",
    ),
    Mutation(
        "watchdog-policy-open",
        "remoteexec/target/runstate.py",
        "recv = mitogen.core.Receiver(router, policy=mitogen.core.has_parent_authority)",
        "recv = mitogen.core.Receiver(router)",
        ("tests/test_requests_policy.py::test_the_heartbeat_watchdog_heeds_only_the_master",),
        "another context's message ends (or feeds) the heartbeat watchdog",
    ),
    Mutation(
        "plain-port-name-bare",
        "remoteexec/fanout.py",
        'name = target.hostname if port == 22 else "[%s]:%d" % (target.hostname, port)',
        "name = target.hostname",
        ("tests/test_ports.py::test_fast_path_finds_the_key_as_openssh_does[plain]",),
        "the fast path looks a port-N host up under its bare name",
    ),
    Mutation(
        "plain-port-fallback-open",
        "remoteexec/fanout.py",
        "if key.asbytes() not in self._portless:",
        "if False:",
        ("tests/test_ports.py::test_fast_path_refuses_other_keys",),
        "the fast path trusts any key listed under the bare name of a port-N host",
    ),
    Mutation(
        "host-name-drops-port",
        "remoteexec/connectors/ssh.py",
        'return "%s%s:%d" % (text, host, self.port)',
        "return text + self.hostname",
        ("tests/test_ports.py::test_context_path_names_a_host_given_port_as_addr_port",),
        "a host's name drops its non-22 port",
    ),
    Mutation(
        "connect-cache-ignores-host-key-mode",
        "remoteexec/connectors/ssh.py",
        '            self.options["check_host_keys"],\n',
        "",
        ("tests/test_connect.py::test_check_host_keys_ignore_connects_to_an_unknown_key",),
        "a connect that checks host keys gets the cached context opened with 'ignore'",
    ),
    Mutation(
        "run-refused-spawn-leaks-pipes",
        "remoteexec/target/run.py",
        "ValueError\n        pipes.close()",
        "ValueError\n        pass",
        ("tests/test_run_limits.py::test_a_spawn_that_raises_leaves_no_pipe_open",),
        "a command Popen refuses (a NUL byte) leaves its pipes open in the context",
    ),
    Mutation(
        "tree-refused-spawn-leaks-stdin",
        "remoteexec/target/spawn.py",
        "ValueError\n            if stdin_fd is not None:",
        "ValueError\n            if False:",
        ("tests/test_run_limits.py::test_an_executor_spawn_that_raises_leaves_no_pipe_open",),
        "a process tree Popen refuses leaves its stdin pipe open in the context",
    ),
    Mutation(
        "run-nul-byte-reaches-host",
        "remoteexec/arguments.py",
        '    if "\\0" in text:',
        "    if False:",
        (
            "tests/test_run_limits.py::test_a_nul_byte_is_refused_before_anything_is_sent",
            "tests/unit/test_arguments.py::"
            "test_a_nul_byte_in_a_command_is_refused_naming_the_argument",
        ),
        "a NUL byte in a command is sent to the host instead of refused, naming the field",
    ),
    Mutation(
        "reply-too-large-loses-host",
        "remoteexec/host.py",
        "            if str(e).startswith(_TOO_LARGE):",
        "            if False:",
        (
            "tests/test_run_limits.py::test_a_reply_too_large_for_mitogen_is_an_error_not_a_lost_host",
        ),
        "a reply over mitogen's 128 MiB marks the whole host lost",
    ),
    Mutation(
        "lane-reply-too-large-ends-lane",
        "remoteexec/target/lane.py",
        "        if len(reply) - HEADER.size > MAX_FRAME:",
        "        if False:",
        (
            "tests/test_run_limits.py::test_a_reply_too_large_for_the_lane_is_an_error_not_an_ended_lane",
        ),
        "a reply over the lane's frame limit ends the lane",
    ),
    Mutation(
        "guard-stall-waits-each-spawn",
        "remoteexec/target/guardlink.py",
        "(0.0 if self.stalled else 1.0)",
        "1.0",
        ("tests/test_guard_stall.py::test_a_stalled_guard_costs_one_wait_and_is_reported",),
        "a stalled guard costs every spawn a 1 s wait",
    ),
    Mutation(
        "lane-open-interrupted-leaks-ssh",
        "remoteexec/lane.py",
        "            lane.end(graceful=False)\n            raise\n        return lane",
        "            raise\n        return lane",
        ("tests/test_lane_interrupts.py::test_an_open_interrupted_midway_ends_its_ssh_session",),
        "a lane open stopped by an interrupt leaves its ssh session running",
    ),
    Mutation(
        "lane-second-interrupt-leaks-ssh",
        "remoteexec/lane.py",
        "        finally:  # interrupted (a second Ctrl-C) or not: the client goes",
        "        except BaseException:\n            raise\n        else:",
        (
            "tests/test_lane_interrupts.py::test_a_second_interrupt_while_the_lane_ends_still_ends_it",
        ),
        "a second Ctrl-C while the lane ends leaves its ssh client running",
    ),
    Mutation(
        "requests-no-thread-drops-call",
        "remoteexec/target/supervisor.py",
        "                        msg.reply("
        'protocol.raised("starting a thread for the request", e))',
        "                        pass",
        (
            "tests/test_supervisor_threads.py::test_a_request_with_no_thread_to_serve_it_is_answered_at_once",
        ),
        "a request the context has no thread for is dropped (the caller waits forever)",
    ),
    Mutation(
        "plain-no-keepalive",
        "remoteexec/fanout.py",
        "            _keep_alive(client, silence)\n",
        "            pass\n",
        (
            "tests/test_fanout_plain.py::test_a_silently_partitioned_host_is_lost_within_heartbeat_timeout",
        ),
        "a partitioned host is waited for until its command ends (forever with no timeout)",
    ),
    Mutation(
        "plain-lost-as-exit",
        "remoteexec/fanout.py",
        "        if transport is None or not transport.is_active():",
        "        if False:",
        (
            "tests/test_fanout_plain.py::test_a_silently_partitioned_host_is_lost_within_heartbeat_timeout",
        ),
        "a connection that ended mid-command is reported as the command's exit -1",
    ),
    Mutation(
        "guard-witness-unchecked",
        "remoteexec/target/guard.py",
        "        if sid in witnesses and exists(witnesses[sid]):",
        "        if sid in witnesses:",
        ("tests/test_guard_reuse.py::test_guard_spares_a_stranger_in_a_reused_session",),
        "the guard keeps an emptied session for good and kills a stranger that reuses its id",
    ),
    Mutation(
        "lane-unpickle-unrestricted",
        "remoteexec/target/lane.py",
        "    find_class = staticmethod(check_global)",
        "    pass",
        ("tests/test_lane_pickle.py::test_a_pickle_that_would_run_code_is_refused_in_the_master",),
        "a host's lane reply may name any global, and the master calls it",
    ),
)


def _files() -> List[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout
    return [name for name in out.decode().split("\0") if name]


def _copy(files: Sequence[str], dest: str) -> None:
    for name in files:
        src = os.path.join(REPO, name)
        if not os.path.isfile(src):  # deleted in the work tree but still tracked
            continue
        target = os.path.join(dest, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(src, target)


def _apply(copy: str, m: Mutation) -> None:
    path = os.path.join(copy, m.path)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    found = text.count(m.anchor)
    if found != 1:
        raise SystemExit(
            "mutation %s: anchor %r found %d times in %s (expected once); "
            "the code moved: update the anchor in scripts/mutation_check.py"
            % (m.name, m.anchor, found, m.path)
        )
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(m.anchor, m.replacement))


def _env(copy: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = copy
    env.pop("PYTEST_ADDOPTS", None)
    return env


#: Run in the copy: where the master and a local context import the module from.
_PROBE = r"""
import importlib, sys
import remoteexec as rx
module = sys.argv[1]
mine = importlib.import_module(module).__file__
expr = "__import__('importlib').import_module(%r).__file__" % module
with rx.Master() as master:
    theirs = master.local().call(eval, expr)
print(mine)
print(theirs)
"""


def _module_file(copy: str, path: str) -> str:
    """The Python file that stands for ``path`` in the copy: itself, or for a
    data file (Lua) the ``__init__.py`` of the package that reads it."""
    if path.endswith(".py"):
        return path
    folder = os.path.dirname(path)
    while folder and not os.path.isfile(os.path.join(copy, folder, "__init__.py")):
        folder = os.path.dirname(folder)
    return os.path.join(folder, "__init__.py")


def _verify_imports(copy: str, m: Mutation) -> None:
    """The master and a local context both run the copy's (mutated) module
    (for a data file, the copy's package that reads it)."""
    source = _module_file(copy, m.path)
    module = source[: -len(".py")].replace("/", ".")
    if module.endswith(".__init__"):
        module = module[: -len(".__init__")]
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, module],
        cwd=copy,
        env=_env(copy),
        capture_output=True,
        text=True,
        timeout=60,
    )
    # A module served by the bytecode cache names its source "master:PATH".
    paths = [p[len("master:") :] if p.startswith("master:") else p for p in r.stdout.split()]
    expected = os.path.realpath(os.path.join(copy, source))
    if r.returncode != 0 or len(paths) != 2 or any(os.path.realpath(p) != expected for p in paths):
        raise SystemExit(
            "mutation %s: the copy's %s is not what runs (master, local context: %s)\n%s"
            % (m.name, module, paths, r.stderr[-2000:])
        )


def _pytest(copy: str, args: Sequence[str]) -> Tuple[int, str, float]:
    started = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args],
        cwd=copy,
        env=_env(copy),
        capture_output=True,
        text=True,
        timeout=PYTEST_TIMEOUT,
    )
    return r.returncode, r.stdout + r.stderr, time.monotonic() - started


def _clean_run(files: Sequence[str], chosen: Sequence[Mutation]) -> None:
    """Every selection passes on the unmutated copy: one pytest run for all
    of them (they share its fixtures, the labs included), and one each for
    pending mutations, whose tests may not exist yet."""
    with tempfile.TemporaryDirectory(prefix="mutation-clean-") as copy:
        _copy(files, copy)
        ready = [m for m in chosen if not m.pending]
        selected = list(dict.fromkeys(arg for m in ready for arg in m.tests))
        if selected:
            rc, out, took = _pytest(copy, selected)
            print("clean  %d selections in one run  rc=%d %5.1fs" % (len(ready), rc, took))
            if rc != 0:
                failed = [
                    line.split()[1] for line in out.splitlines() if line.startswith("FAILED ")
                ]
                whose = [
                    m.name
                    for m in ready
                    if any(t.split("::")[0] in f for t in m.tests for f in failed)
                ]
                raise SystemExit(
                    "the unmutated copy fails the tests of %s (rc %d):\n%s"
                    % (", ".join(whose) or "some mutation", rc, out[-3000:])
                )
        for m in chosen:
            if not m.pending:
                continue
            rc, out, took = _pytest(copy, m.tests)
            if rc == 5:
                print("clean  %-32s no test selected yet (pending: %s)" % (m.name, m.pending))
                continue
            print("clean  %-32s rc=%d %5.1fs" % (m.name, rc, took), flush=True)
            if rc != 0:
                raise SystemExit(
                    "the unmutated copy fails the tests of %s (rc %d):\n%s"
                    % (m.name, rc, out[-3000:])
                )


def _check(files: Sequence[str], m: Mutation) -> str:
    """'killed', 'survived' or 'pending' for one mutation."""
    with tempfile.TemporaryDirectory(prefix="mutation-%s-" % m.name) as copy:
        _copy(files, copy)
        _apply(copy, m)
        _verify_imports(copy, m)
        rc, out, took = _pytest(copy, m.tests)
    if rc == 1:
        verdict = "killed"
    elif m.pending and rc in (0, 5):
        verdict = "pending"
    elif rc == 0:
        verdict = "survived"
    else:
        raise SystemExit(
            "mutation %s: pytest could not run (rc %d):\n%s" % (m.name, rc, out[-3000:])
        )
    lines = out.strip().splitlines()
    if verdict == "killed":  # why: the first assertion line pytest printed
        lines = [line for line in lines if line.startswith("E ")][:2] or lines[-3:]
    else:
        lines = lines[-5:]
    with _PRINTING:  # one mutant's lines together, whichever job ends first
        print("mutant %-32s %-8s %5.1fs  (%s)" % (m.name, verdict.upper(), took, m.why))
        print("    " + "\n    ".join(line[:200] for line in lines), flush=True)
    return verdict


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="mutations to check (default: all)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=JOBS,
        help="mutations checked at once, each in its own copy (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    known = {m.name: m for m in MUTATIONS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error("unknown mutations %s; known: %s" % (unknown, ", ".join(known)))
    chosen = [known[n] for n in args.names] or list(MUTATIONS)
    started = time.monotonic()
    files = _files()
    _clean_run(files, chosen)
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {m.name: pool.submit(_check, files, m) for m in chosen}
        verdicts = {name: f.result() for name, f in futures.items()}
    survived = [n for n, v in verdicts.items() if v == "survived"]
    pending = [n for n, v in verdicts.items() if v == "pending"]
    print(
        "mutation check: %d killed, %d survived%s, %d pending%s in %.0fs"
        % (
            list(verdicts.values()).count("killed"),
            len(survived),
            " (%s)" % ", ".join(survived) if survived else "",
            len(pending),
            " (%s)" % ", ".join(pending) if pending else "",
            time.monotonic() - started,
        )
    )
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main())
