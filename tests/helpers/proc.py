"""A test process with several behaviours, stdlib only (runs on lab hosts).

Usage: proc.py MODE [ARGS]; every mode that waits does so for at most
10 minutes, so nothing it starts can outlive a broken test run by long.
"""

import contextlib
import http.server
import os
import signal
import socket
import sys
import threading
import time

LIFETIME = 600


def serve_http(addr, port):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer((addr, port), Quiet)
    threading.Timer(LIFETIME, server.shutdown).start()
    server.serve_forever()


def serve_http_late(addr, port, delay):
    """Listen at once, answer 503 for ``delay`` seconds, then 200 and print
    'late ready': a TCP check passes long before an HTTP one."""
    ready = threading.Event()

    class Late(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200 if ready.is_set() else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *a):
            pass

    def flip():
        ready.set()
        print("late ready", flush=True)

    server = http.server.ThreadingHTTPServer((addr, port), Late)
    print("listening", flush=True)
    threading.Timer(delay, flip).start()
    threading.Timer(LIFETIME, server.shutdown).start()
    server.serve_forever()


def listen_tcp(addr, port):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((addr, port))
    sock.listen(16)
    return sock


def serve_counting(addr, port, answer_after):
    """Print 'probe PATH MONOTONIC' for each request; answer 503 until a
    path has been asked for ``answer_after`` times, then 200: the probe
    times of a readiness poll, measured on the host by the server."""
    seen = {}
    lock = threading.Lock()

    class Counting(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            now = time.monotonic()
            with lock:
                seen[self.path] = seen.get(self.path, 0) + 1
                count = seen[self.path]
            print("probe %s %.6f" % (self.path, now), flush=True)
            self.send_response(200 if count >= answer_after else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer((addr, port), Counting)
    print("listening", flush=True)
    threading.Timer(LIFETIME, server.shutdown).start()
    server.serve_forever()


def hang(addr, port):
    """Accept connections and never read or answer: a probe must time out."""
    sock = listen_tcp(addr, port)
    held = []
    print("hanging", flush=True)
    deadline = time.time() + LIFETIME
    sock.settimeout(1)
    while time.time() < deadline:
        with contextlib.suppress(OSError):
            held.append(sock.accept()[0])


def count_signals(directory, signum):
    """A main process, a child in its process group and a child that left it
    (own session, still marked): each appends every SIGNUM delivered to it
    to DIRECTORY/ROLE-PID, and dies of SIGNUM 0.5 s after the first one (so
    a second delivery of the same stop would still be counted).

    Use a real-time signal: those queue, where a second SIGTERM sent while
    the first is pending merges with it. The signal is blocked and taken
    with sigtimedwait, one queued delivery per call (a Python handler would
    run once for two deliveries that arrive together).
    """
    role = ["main"]
    signal.pthread_sigmask(signal.SIG_BLOCK, [signum])  # inherited by the children
    ready_r, ready_w = os.pipe()
    for child_role in ("member", "leaver"):
        if os.fork() == 0:
            role[0] = child_role
            if child_role == "leaver":
                os.setsid()
            os.write(ready_w, b"x")
            break
    else:
        got = b""
        for _ in range(2):
            got += os.read(ready_r, 1)
        print("signals counted from here (%d children)" % len(got), flush=True)
    path = os.path.join(directory, "%s-%d" % (role[0], os.getpid()))
    first = None
    deadline = time.monotonic() + LIFETIME
    while time.monotonic() < deadline:
        info = signal.sigtimedwait([signum], 0.02)
        if info is not None:
            with open(path, "a") as f:
                f.write("%d\n" % info.si_signo)
            first = first or time.monotonic()
        elif first and time.monotonic() - first > 0.5:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
    os._exit(0)


def mode_after(argv):
    """after DELAY MODE [ARGS]: MODE, started DELAY seconds late."""
    time.sleep(float(argv[0]))
    run(argv[1:])


def mode_http(argv):
    """http ADDR PORT [CHATTY_BYTES]: print CHATTY_BYTES of output, then serve."""
    chatty = int(argv[2]) if len(argv) > 2 else 0
    if chatty:
        line = "x" * 99 + "\n"
        for _ in range(chatty // 100):
            sys.stdout.write(line)
        sys.stdout.flush()
    print("serving", flush=True)
    serve_http(argv[0], int(argv[1]))


def mode_unix(argv):
    """unix PATH: listen on a Unix socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(argv[0])
    sock.listen(4)
    time.sleep(LIFETIME)


def mode_pidfile(argv):
    """pidfile PATH DELAY: write our pid to PATH after DELAY seconds."""
    time.sleep(float(argv[1]))
    # Written whole, then renamed: the file never exists empty, so whoever
    # sees it (readiness, AlreadyRunning's owner) can read the pid.
    with open(argv[0] + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(argv[0] + ".tmp", argv[0])
    time.sleep(LIFETIME)


def mode_banner(argv):
    """banner TEXT DELAY: print TEXT after DELAY seconds."""
    print("starting up", flush=True)
    time.sleep(float(argv[1]))
    print(argv[0], flush=True)
    time.sleep(LIFETIME)


def mode_daemon(argv):
    """daemon ADDR PORT: double fork, parent exits 0, the grandchild listens."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    sock = listen_tcp(argv[0], int(argv[1]))
    deadline = time.time() + LIFETIME
    sock.settimeout(1)
    while time.time() < deadline:
        with contextlib.suppress(OSError):
            sock.accept()[0].close()


def mode_stubborn(argv):
    """stubborn ADDR PORT: listen and ignore SIGTERM."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = listen_tcp(argv[0], int(argv[1]))
    print("stubborn ready", flush=True)
    time.sleep(LIFETIME)
    sock.close()


def mode_exit(argv):
    """exit CODE MESSAGE: print MESSAGE, exit with CODE."""
    print(argv[1], flush=True)
    sys.exit(int(argv[0]))


def mode_children(argv):
    """children N: a tree of sleepers."""
    for _ in range(int(argv[0])):
        if os.fork() == 0:
            time.sleep(LIFETIME)
            os._exit(0)
    print("tree ready", flush=True)
    time.sleep(LIFETIME)


def mode_lines(argv):
    """lines N: print 'line 1'..'line N', then wait."""
    for i in range(1, int(argv[0]) + 1):
        print("line %d" % i)
    print("lines done", flush=True)
    time.sleep(LIFETIME)


#: MODE -> what runs it, given the arguments after MODE.
MODES = {
    "after": mode_after,
    "http-late": lambda a: serve_http_late(a[0], int(a[1]), float(a[2])),  # ADDR PORT DELAY
    "http": mode_http,
    "unix": mode_unix,
    "pidfile": mode_pidfile,
    "banner": mode_banner,
    "daemon": mode_daemon,
    "stubborn": mode_stubborn,
    "exit": mode_exit,
    "children": mode_children,
    # http-count ADDR PORT N: 503 until the Nth request of a path
    "http-count": lambda a: serve_counting(a[0], int(a[1]), int(a[2])),
    "hang": lambda a: hang(a[0], int(a[1])),  # hang ADDR PORT: accept, never answer
    # sigcount DIR SIGNUM: count signals per process, see count_signals
    "sigcount": lambda a: count_signals(a[0], int(a[1])),
    "lines": mode_lines,
}


def run(argv):
    """Run mode ``argv[0]`` with the arguments after it."""
    mode = MODES.get(argv[0])
    if mode is None:
        sys.exit("unknown mode %s" % argv[0])
    mode(argv[1:])


if __name__ == "__main__":
    run(sys.argv[1:])
