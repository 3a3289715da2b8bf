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

import argparse
import http.server
import itertools
import json
import socket
import threading


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

    class Handler(http.server.BaseHTTPRequestHandler):
        def reply(self, code, body):
            data = json.dumps(body).encode() + b"\n"
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                checks = [answer("GET apple", router) for router in targets]
                bad = [body for code, body in checks if code != 200]
                self.reply(
                    503 if bad else 200,
                    {"ok": not bad, "routers": len(checks), **(bad[0] if bad else checks[0][1])},
                )
            elif self.path.startswith("/price/"):
                self.reply(*answer("GET " + self.path[len("/price/") :]))
            else:
                self.reply(404, {"error": "try /health or /price/<item>"})

        do_HEAD = do_GET

        def do_PUT(self):
            kind, _, rest = self.path.lstrip("/").partition("/")
            key, _, value = rest.partition("/")
            if kind == "price" and key and value.isdigit():
                self.reply(*answer("PUT %s %s" % (key, value)))
            elif kind == "cart" and key and value and "/" not in value:
                self.reply(*answer("ADD %s %s" % (key, value), fields=("user", "total")))
            else:
                self.reply(404, {"error": "try PUT /price/<item>/<price> or /cart/<user>/<item>"})

        def log_message(self, fmt, *args):
            print("api: " + fmt % args, flush=True)

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--router", required=True, help="HOST[,HOST...]:PORT of the routers")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    targets = routers(args.router)
    server = http.server.ThreadingHTTPServer(("0.0.0.0", args.port), handler(targets))
    print("api: listening on :%d, routers %s" % (args.port, args.router), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
