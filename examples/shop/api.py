"""Tier 3: an HTTP service that asks the router (tier 2) for prices.

GET /health answers 200 only when the whole chain answers: this service, the
router on its host, and the router's net.box connection to the storage
replica set. GET /price/<item> returns the item's price. Standard library only.
"""

import argparse
import http.server
import json
import socket


def ask(router, item, timeout=2.0):
    """The router's answer to ``GET item``, e.g. ``"apple 3"``."""
    host, _, port = router.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(b"GET " + item.encode() + b"\n")
        conn.settimeout(timeout)
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(1024)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()


def handler(router):
    class Handler(http.server.BaseHTTPRequestHandler):
        def reply(self, code, body):
            data = json.dumps(body).encode() + b"\n"
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def answer(self, item):
            try:
                line = ask(router, item)
            except OSError as e:
                return 503, {"error": "router %s: %s" % (router, e)}
            if line.startswith("ERR"):
                return 503, {"error": line}
            name, _, price = line.partition(" ")
            return 200, {"item": name, "price": int(price)}

        def do_GET(self):
            if self.path == "/health":
                code, body = self.answer("apple")
                self.reply(code, {"ok": code == 200, **body})
            elif self.path.startswith("/price/"):
                self.reply(*self.answer(self.path[len("/price/") :]))
            else:
                self.reply(404, {"error": "try /health or /price/<item>"})

        do_HEAD = do_GET

        def log_message(self, fmt, *args):
            print("api: " + fmt % args, flush=True)

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--router", required=True, help="host:port of the router's text port")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("0.0.0.0", args.port), handler(args.router))
    print("api: listening on :%d, router at %s" % (args.port, args.router), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
