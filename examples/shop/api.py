"""Tier 3: an HTTP service that asks the router (tier 2) for prices.

GET /health answers 200 only when the whole chain answers: this service, every
router it was given, and each router's net.box connection to the storage
replica set. GET /price/<item> returns the item's price; PUT /price/<item>/<n>
sets it (the router writes it on the storage leader); PUT /cart/<user>/<item>
adds the item to the user's cart (the router reads the price from storage and
adds it to the cart in the sessions replica set) and returns the cart's total. ``--router`` is
``HOST:PORT``, or ``HOST,HOST,...:PORT`` for a group of routers on one port
(what ``${router.host}`` gives for a router on several hosts); requests go to
the routers in turn. Standard library only.
"""

# socketserver, not http.server: http.server imports http.client, email and ssl,
# ~35 ms of CPU at every start (three times as long as the interpreter itself);
# argparse another ~10 ms. The readiness wait of the api counts all of it.
import itertools
import json
import socket
import socketserver
import sys
import threading

#: Reason phrases of the statuses this service answers with.
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}


def routers(spec):
    """``"h1,h2:3380"`` -> ``[("h1", 3380), ("h2", 3380)]``."""
    hosts, _, port = spec.rpartition(":")
    return [(host, int(port)) for host in hosts.split(",") if host]


def ask(router, line, timeout=2.0):
    """The router's one-line answer to ``line``, e.g. ``"apple 3"``."""
    with socket.create_connection(router, timeout=timeout) as conn:
        conn.sendall(line.encode() + b"\n")
        conn.settimeout(timeout)
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(1024)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()


def read_request(rfile):
    """``(request line, method, path)`` of the request on ``rfile``; its headers
    and body read and dropped."""
    line = rfile.readline(65537).decode("latin-1").rstrip("\r\n")
    words = line.split()
    length = 0
    for _ in range(100):  # the headers, bounded
        header = rfile.readline(65537)
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value)
    if length:
        rfile.read(min(length, 1 << 20))
    return (line,) + ((words[0], words[1]) if len(words) >= 2 else ("", ""))


def handler(targets):
    turn = itertools.cycle(targets)
    lock = threading.Lock()

    def answer(line, router=None, fields=("item", "price")):
        if router is None:
            with lock:
                router = next(turn)
        where = "router %s:%d" % router
        try:
            reply = ask(router, line)
        except OSError as e:
            return 503, {"error": "%s: %s" % (where, e)}
        if not reply or reply.startswith("ERR"):
            return 503, {"error": "%s: %s" % (where, reply or "no answer")}
        key, _, value = reply.partition(" ")
        return 200, {fields[0]: key, fields[1]: int(value), "router": where}

    def get(path):
        if path == "/health":
            checks = [answer("GET apple", router) for router in targets]
            bad = [body for code, body in checks if code != 200]
            body = {"ok": not bad, "routers": len(checks), **(bad[0] if bad else checks[0][1])}
            return 503 if bad else 200, body
        if path.startswith("/price/"):
            return answer("GET " + path[len("/price/") :])
        return 404, {"error": "try /health or /price/<item>"}

    def put(path):
        kind, _, rest = path.lstrip("/").partition("/")
        key, _, value = rest.partition("/")
        if kind == "price" and key and value.isdigit():
            return answer("PUT %s %s" % (key, value))
        if kind == "cart" and key and value and "/" not in value:
            return answer("ADD %s %s" % (key, value), fields=("user", "total"))
        return 404, {"error": "try PUT /price/<item>/<price> or /cart/<user>/<item>"}

    def respond(method, path):
        if method in ("GET", "HEAD"):
            return get(path)
        if method == "PUT":
            return put(path)
        return 400, {"error": "GET, HEAD or PUT"}

    class Handler(socketserver.StreamRequestHandler):
        """One HTTP/1.0 request per connection: GET, HEAD and PUT."""

        def handle(self):
            line, method, path = read_request(self.rfile)
            code, body = respond(method, path)
            data = json.dumps(body).encode() + b"\n"
            head = "HTTP/1.0 %d %s\r\nContent-Type: application/json\r\n" % (
                code,
                REASONS.get(code, ""),
            )
            head += "Content-Length: %d\r\nConnection: close\r\n\r\n" % len(data)
            self.wfile.write(head.encode() + (b"" if method == "HEAD" else data))
            # http.server's access line, as before: 'api: "GET /health HTTP/1.1" 200 -'.
            print('api: "%s" %d -' % (line, code), flush=True)

    return Handler


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


USAGE = "usage: api.py --router HOST[,HOST...]:PORT [--port PORT]"


def usage_error(message):
    """Exit 2 with ``message``, as argparse would (it alone costs ~10 ms of startup)."""
    print("%s\napi.py: error: %s" % (USAGE, message), file=sys.stderr, flush=True)
    sys.exit(2)


def option(args, name, default=None):
    """The value after ``name`` in ``args`` (``default`` when absent)."""
    if name in args[:-1]:
        return args[args.index(name) + 1]
    if default is None:
        usage_error("the following arguments are required: %s" % name)
    return default


def main():
    args = sys.argv[1:]
    router, port = option(args, "--router"), option(args, "--port", "8080")
    if not port.isdigit():
        usage_error("argument --port: invalid int value: %r" % port)
    server = Server(("0.0.0.0", int(port)), handler(routers(router)))
    print("api: listening on :%s, routers %s" % (port, router), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
