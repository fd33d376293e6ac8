#!/usr/bin/env python3
"""A local HTTPS feed server for the fetch tests, misbehaving on request.

    feed_server.py CERT KEY CONTROL LOG

Prints its port, then serves every GET by what the CONTROL file says at that moment:

    ok FILE ETAG   200 with FILE's content and ETag (304 when If-None-Match is ETAG)
    status N       an empty answer with status N
    truncate       Content-Length 1000, 20 bytes of body, then the connection closes
    oversize       200 with a 5,000-byte body of valid entries
    slow           waits 5 s before answering
    garbage        200 with a body that is not a feed

Each request is appended to LOG as one line: `GET <path> if-none-match=<value>`.
"""
import http.server
import socketserver
import ssl
import sys
import time

CERT, KEY, CONTROL, LOG = sys.argv[1:5]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        inm = self.headers.get("If-None-Match")
        with open(LOG, "a") as log:
            log.write(f"GET {self.path} if-none-match={inm}\n")
        words = open(CONTROL).read().split()
        mode = words[0] if words else "status"
        if mode == "ok":
            path, etag = words[1], words[2]
            if inm == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Connection", "close")
                self.end_headers()
                return
            self.send(200, open(path, "rb").read(), [("ETag", etag)])
        elif mode == "status":
            self.send(int(words[1]) if len(words) > 1 else 500, b"")
        elif mode == "truncate":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"10.211.13.2\n10.211.1")
            self.wfile.flush()
            self.close_connection = True
        elif mode == "oversize":
            self.send(200, b"10.211.13.2\n" * 417)
        elif mode == "slow":
            time.sleep(5)
            self.send(200, b"10.211.13.2\n")
        elif mode == "garbage":
            self.send(200, b"<html>not a feed</html>\n")


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


server = Server(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(CERT, KEY)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
