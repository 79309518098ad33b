#!/usr/bin/env python3
"""The same requests to stackway and to the server it stands in for, answer by answer.

    python3 benches/diff/run.py                      # every battery
    python3 benches/diff/run.py gate compress        # some

Each battery starts the reference (nginx from Debian's package; uvicorn and gunicorn from PyPI,
installed into target/diff/pylib when missing) and `stackway serve` (target/release/stackway, or
--binary) with the same configuration in front of the same raw upstream, sends both the same
requests, and prints each pair of answers that differ. A difference made on purpose is listed in
the battery's KNOWN with its reason and printed as known; any other makes the exit status 1.
Not part of `cargo test`: the references' answers are facts about them, looked at by a person.
"""

import argparse
import http.client
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYLIB = ROOT / "target" / "diff" / "pylib"
HERE = Path(__file__).resolve().parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Every process a battery starts: those still running when the run ends (a battery that failed
# before its own `finally`) are killed then, not left holding their ports and the run's output.
STARTED = []


def spawn(*args, **kwargs):
    """subprocess.Popen, the process noted in STARTED."""
    proc = subprocess.Popen(*args, **kwargs)
    STARTED.append(proc)
    return proc


def killed(*procs):
    """Kills each process and waits for it."""
    for p in procs:
        p.kill()
        p.wait()


def wait_for(port, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {seconds} s")


class RawServer:
    """A server on a free port that hands each connection to `serve`, on a thread of its own."""

    def __init__(self):
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        """Reads what comes, and closes without an answer."""
        conn.recv(65536)
        conn.close()


# A raw upstream, answering by its query: status, ct, len, ce, etag (with cond, a 304 to an
# If-None-Match of it), cc, ar, vary, cr, chunked,
# h (a field line of its own, any number of them), big (an X-Big field that many bytes long), sleep
# (seconds before it answers) or raw (the whole answer, sent as it is, and
# the connection closed); each request's line, fields and body noted for `seen`.
class Upstream(RawServer):
    def __init__(self):
        self.log = []
        super().__init__()

    def serve(self, conn):
        f = conn.makefile("rb")
        try:
            while self.answer(conn, f):
                pass
        except (OSError, ValueError):
            pass
        conn.close()

    def answer(self, conn, f):
        line = f.readline()
        if not line.strip():
            return False
        heads = []
        while (h := f.readline()) not in (b"\r\n", b"\n", b""):
            heads.append(h.decode("latin-1").strip())
        fields = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in heads)}
        body = b""
        if "chunked" in fields.get("transfer-encoding", "").lower():
            while size := int(f.readline().split(b";")[0], 16):
                body += f.read(size)
                f.readline()
            while f.readline() not in (b"\r\n", b""):
                pass
        elif fields.get("content-length"):
            body = f.read(int(fields["content-length"]))
        self.log.append((line.decode("latin-1").strip(), heads, body.decode("latin-1")))
        target = line.split()[1].decode("latin-1")
        pairs = urllib.parse.parse_qsl(urllib.parse.urlsplit(target).query, keep_blank_values=True)
        q = dict(pairs)
        if "raw" in q:
            conn.sendall(q["raw"].encode("latin-1"))
            return False
        time.sleep(float(q.get("sleep", 0)))
        payload = (b"hello world, " * 200)[: int(q.get("len", 2600))]
        status = q.get("status", "200")
        if "cond" in q and "etag" in q and fields.get("if-none-match") == q["etag"]:
            status = "304"
        out = [f"HTTP/1.1 {status} X", "Content-Type: " + q.get("ct", "text/html")]
        for key, name in [("ce", "Content-Encoding"), ("etag", "ETag"), ("cc", "Cache-Control"),
                          ("ar", "Accept-Ranges"), ("vary", "Vary"), ("cr", "Content-Range")]:
            if key in q:
                out.append(f"{name}: {q[key]}")
        out += [v for k, v in pairs if k == "h"] + [f"X-Big: {'b' * int(v)}" for k, v in pairs if k == "big"]
        bodiless = status in ("204", "304") or line.startswith(b"HEAD")
        if q.get("chunked"):
            out.append("Transfer-Encoding: chunked")
            payload = b"" if bodiless else b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload) if payload else b"0\r\n\r\n"
        else:
            if status != "204":
                out.append(f"Content-Length: {len(payload)}")
            payload = b"" if bodiless else payload
        conn.sendall("\r\n".join(out).encode() + b"\r\n\r\n" + payload)
        return True

    def seen(self):
        log, self.log = self.log, []
        return log


NGINX = """daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;
error_log {d}/error.log crit;
events {{ worker_connections 256; }}
http {{
  access_log off; client_body_temp_path {d}/cb; proxy_temp_path {d}/pt;
  fastcgi_temp_path {d}/ft; uwsgi_temp_path {d}/ut; scgi_temp_path {d}/st;
  {http}
  server {{ listen 127.0.0.1:{port}; server_name localhost; {server} }}
}}
"""


class Pair:
    """nginx with `server` (UPSTREAM in it the upstream's address) and stackway with `args`."""

    def __init__(self, binary, server, args, http="", upstream=None):
        self.upstream = upstream or Upstream()
        self.dir = tempfile.mkdtemp(prefix="stackway-diff-")
        self.ref_port, self.our_port = free_port(), free_port()
        up = f"127.0.0.1:{self.upstream.port}"
        conf = NGINX.format(d=self.dir, port=self.ref_port, http=http,
                            server=server.replace("UPSTREAM", up))
        Path(self.dir, "nginx.conf").write_text(conf)
        self.procs = [
            spawn(["nginx", "-p", self.dir, "-c", f"{self.dir}/nginx.conf"]),
            spawn([binary, "serve", "--bind", f"127.0.0.1:{self.our_port}",
                              "--log-level", "error"] + [a.replace("UPSTREAM", up) for a in args],
                             stdout=subprocess.DEVNULL),
        ]
        try:
            wait_for(self.ref_port)
            wait_for(self.our_port)
        except SystemExit:
            self.close()
            raise

    def close(self):
        killed(*self.procs)


def exchange(port, data, timeout=1.5):
    """The raw bytes a connection gets back for `data`, read until closed or quiet."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    return out


def parse(data, head=False):
    """(status, fields, body) of the first response in `data`."""
    if b"\r\n\r\n" not in data:
        return None, {}, b""
    top, rest = data.split(b"\r\n\r\n", 1)
    lines = top.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), []).append(value.strip())
    body = rest
    if not head and "chunked" in ",".join(fields.get("transfer-encoding", [])).lower():
        body = b""
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size.split(b";")[0] or b"0", 16)
            if not n:
                break
            body, rest = body + rest[:n], rest[n + 2:]
    return lines[0].split(" ")[1], fields, body


def request(method, target, extra="", version="1.1"):
    return f"{method} {target} HTTP/{version}\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n".encode()


class Tally:
    def __init__(self, known):
        self.known, self.new, self.same, self.on_purpose = known, 0, 0, 0

    def compare(self, case, ref, ours):
        if ref == ours:
            self.same += 1
            return
        reason = self.known.get(case) or self.known.get(case.split(" (")[0])
        if reason:
            self.on_purpose += 1
            print(f"  known  {case}: {reason}")
        else:
            self.new += 1
            print(f"  DIFFERS {case}\n    reference {ref}\n    stackway  {ours}")

    def summary(self, name):
        print(f"{name}: {self.same} the same, {self.on_purpose} different on purpose, {self.new} new")
        return self.new


# --- nginx batteries ---------------------------------------------------------------------------

COMPRESS_KNOWN = {
    "GET /r Accept-Encoding: *": "`*` accepts any coding (RFC 9110 §12.5.3): brotli; nginx's gzip looks for `gzip` alone",
    "GET /r Accept-Encoding: gzip;q=0, *": "the same: brotli is not refused",
    "GET /r Accept-Encoding: deflate": "deflate, br and zstd are codings stackway speaks; nginx's gzip module gzip alone",
    "GET /r Accept-Encoding: br;q=0, gzip;q=0, *": "zstd, which `*` still allows",
    "GET /r?ct=image/png": "images are compressed already: left alone (nginx compresses any gzip_types)",
    "GET /r?ct=application/octet-stream": "the same, for binary data",
    "GET /r?ct=application/grpc": "gRPC messages carry their own compression",
    "GET /r?status=500": "every status is compressed; nginx's gzip only 200, 403 and 404",
    "GET /r?status=201": "the same",
    "GET /r?status=301": "the same",
    "GET /r?status=206&cr=bytes%200-2599/9999": "a 206 varies by Accept-Encoding as its 200 would",
    "GET /r?status=304&etag=%22x%22": "a 304 carries the Vary its 200 would (RFC 9110 §15.4.5)",
    "GET /r?cc=no-transform": "no-transform is honoured (RFC 9110 §7.7); nginx ignores it",
    "GET /r?cc=private,%20no-transform": "the same",
    "GET /r?vary=Origin": "Accept-Encoding added after the app's names, not before",
    "GET /r?vary=Accept-Encoding": "not repeated (nginx appends a second)",
    "GET /r?vary=origin,%20accept-encoding": "the same",
    "GET /r?vary=*": "`*` varies on everything already",
}


def battery_compress(binary):
    """--compress against `gzip on` (every type, every request, Vary), one upstream."""
    pair = Pair(binary, "location / { proxy_pass http://UPSTREAM; gzip on; gzip_types *; gzip_vary on;"
                        " gzip_proxied any; gzip_min_length 256; gzip_http_version 1.0; }",
                ["--mount", "/=http://UPSTREAM", "--compress"])
    tally = Tally(COMPRESS_KNOWN)
    keep = ["content-encoding", "vary", "etag", "accept-ranges", "content-length", "content-range"]

    def look(port, method, target, accept):
        extra = f"Accept-Encoding: {accept}\r\n" if accept is not None else ""
        status, fields, _ = parse(exchange(port, request(method, target, extra)), method == "HEAD")
        out = {"status": status}
        for name in keep:
            if name in fields:
                out[name] = ", ".join(fields[name]).lower() if name == "vary" else ", ".join(fields[name])
        if out.get("content-encoding") and "content-length" in out:
            out["content-length"] = "N"
        return out

    cases = [("GET", "/r", accept) for accept in [
        None, "gzip", "GZIP", "gzip;q=0", "gzip; q=0.000", "gzip;Q=0", "x-gzip", "*", "*;q=0",
        "gzip;q=0, *", "identity", "deflate", "gzip;q=0.001", "gzip,deflate;q=0.5", "gzip;q=abc",
        "gzip ; q=0", "gzipx", "compress, gzip", "br;q=0, gzip;q=0, *"]]
    cases += [("GET", "/r?" + q, "gzip") for q in [
        "ct=image/png", "ct=image/svg%2Bxml", "ct=application/grpc", "ct=text/event-stream",
        "ct=application/json", "ct=application/octet-stream", "status=404", "status=500",
        "status=201", "status=301", "status=206&cr=bytes%200-2599/9999", "status=204",
        "status=304&etag=%22x%22", "ce=br", "etag=%22abc%22", "etag=W/%22abc%22", "ar=bytes",
        "cc=no-transform", "cc=private,%20no-transform", "len=100", "len=255", "len=256",
        "len=100&chunked=1", "len=0", "vary=Origin", "vary=Accept-Encoding",
        "vary=origin,%20accept-encoding", "vary=*", "chunked=1"]]
    cases.append(("HEAD", "/r", "gzip"))
    try:
        for method, target, accept in cases:
            case = f"{method} {target}" + (f" Accept-Encoding: {accept}" if target == "/r" else "")
            tally.compare(case, look(pair.ref_port, method, target, accept),
                          look(pair.our_port, method, target, accept))
    finally:
        pair.close()
    return tally.summary("compress")


GATE_KNOWN = {
    "CL+TE": "RFC 9112 §6.3 lets a server go by Transfer-Encoding alone and close the connection, as hyper does; nginx refuses",
    "TE chunked, identity": "hyper refuses `chunked` not last as malformed (400); nginx says it does not know the coding (501)",
    "TE xchunked": "the same",
    "CL twice, the same": "RFC 9110 §8.6 allows one value sent twice; nginx refuses",
    "chunk lines ending in a bare LF": "refused: a chunked body's lines end in CRLF (RFC 9112 §7.1)",
    "Host: a@b": "userinfo is no host (RFC 9110 §7.2): 400; nginx passes it",
    "Host: a:b:c": "no host and port (RFC 9110 §7.2): 400; nginx passes it",
    "Host: [::1": "an address without its bracket: 400; nginx passes it",
    "HTTP/1.2": "httparse knows HTTP/1.0 and 1.1 alone; nginx takes a later minor version as 1.1",
    "HTTP/2.0 request line": "400 where nginx says 505",
    "get (lowercase method)": "methods are case-sensitive tokens: `get` is passed on; nginx refuses it",
    "a field line without a colon": "refused; nginx takes it as an empty field",
    "a fragment in the target": "the fragment is no part of the target (RFC 9110 §7.1): left out",
    "CONNECT": "501, the server is no forward proxy (RFC 9110 §15.6.2); nginx 400",
}


def battery_gate(binary):
    """Malformed heads and framing through `proxy_pass` and a proxy mount: the statuses, and
    what reached the upstream."""
    upstream = Upstream()
    pair = Pair(binary, 'location / { proxy_pass http://UPSTREAM; proxy_http_version 1.1;'
                        ' proxy_set_header Connection ""; }',
                ["--mount", "/=http://UPSTREAM"], upstream=upstream)
    tally = Tally(GATE_KNOWN)
    h = "Host: localhost\r\n"
    cases = [
        ("CL+TE", f"POST / HTTP/1.1\r\n{h}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n{h}\r\n"),
        ("TE gzip, chunked", f"POST / HTTP/1.1\r\n{h}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        ("TE chunked, identity", f"POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
        ("TE xchunked", f"POST / HTTP/1.1\r\n{h}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
        ("TE twice", f"POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE in HTTP/1.0", f"POST / HTTP/1.0\r\n{h}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        ("CL twice, the same", f"POST / HTTP/1.1\r\n{h}Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
        ("CL twice, different", f"POST / HTTP/1.1\r\n{h}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        ("CL +3", f"POST / HTTP/1.1\r\n{h}Content-Length: +3\r\n\r\nabc"),
        ("CL 0x3", f"POST / HTTP/1.1\r\n{h}Content-Length: 0x3\r\n\r\nabc"),
        ("a chunk extension", f"POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n0\r\n\r\n"),
        ("chunk lines ending in a bare LF", f"POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n"),
        ("a chunk longer than its size", f"POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n"),
        ("a chunk size past u64", f"POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF1\r\nabc\r\n0\r\n\r\n"),
        ("an obs-fold", f"GET / HTTP/1.1\r\n{h}X-A: one\r\n two\r\n\r\n"),
        ("a space before the colon", f"GET / HTTP/1.1\r\n{h}X-A : 1\r\n\r\n"),
        ("no Host in HTTP/1.1", "GET / HTTP/1.1\r\n\r\n"),
        ("two Hosts", f"GET / HTTP/1.1\r\n{h}Host: other\r\n\r\n"),
        ("two Authorization", f"GET / HTTP/1.1\r\n{h}Authorization: Basic YTpi\r\nAuthorization: Basic Yzpk\r\n\r\n"),
        ("GET in the authority form", f"GET a.example:80 HTTP/1.1\r\n{h}\r\n"),
        ("a bare LF request", "GET / HTTP/1.1\nHost: localhost\n\n"),
        ("HTTP/1.2", f"GET / HTTP/1.2\r\n{h}\r\n"),
        ("HTTP/2.0 request line", f"GET / HTTP/2.0\r\n{h}\r\n"),
        ("get (lowercase method)", f"get / HTTP/1.1\r\n{h}\r\n"),
        ("a NUL in a field", f"GET / HTTP/1.1\r\n{h}X-A: a\x00b\r\n\r\n"),
        ("a CR in a field", f"GET / HTTP/1.1\r\n{h}X-A: a\rb\r\n\r\n"),
        ("a field line without a colon", f"GET / HTTP/1.1\r\n{h}X-A\r\n\r\n"),
        ("a fragment in the target", f"GET /a#frag HTTP/1.1\r\n{h}\r\n"),
        ("CONNECT", f"CONNECT localhost:80 HTTP/1.1\r\n{h}\r\n"),
        ("two requests pipelined", f"GET /1 HTTP/1.1\r\n{h}\r\nGET /2 HTTP/1.1\r\n{h}\r\n"),
    ]
    cases += [(f"Host: {host}", f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n") for host in [
        "a@b", "a b", "a/b", "[::1]:80", "ex%41mple", "a:b:c", ":80", "[::1"]]

    def look(port, data):
        statuses = re.findall(rb"HTTP/1\.[01] (\d{3})", exchange(port, data.encode("latin-1"), 1.0))
        time.sleep(0.05)
        return [s.decode() for s in statuses], [line for line, *_ in upstream.seen()]

    try:
        for case, data in cases:
            tally.compare(case, look(pair.ref_port, data), look(pair.our_port, data))
    finally:
        pair.close()
    return tally.summary("gate")


ERRORS_KNOWN = {
    "dead upstream": "text/html with charset=utf-8; nginx's static module adds an ETag",
    "401 from basic auth": "the same, and the challenge names its charset (RFC 7617)",
    "413": "the same",
    "upstream 503, empty": "an empty answer says only its status: dressed (nginx only with proxy_intercept_errors)",
}


def battery_errors(binary):
    """--error-page against error_page, for the server's own errors and an upstream's."""
    tally = Tally(ERRORS_KNOWN)
    page = Path(tempfile.mkdtemp(prefix="stackway-diff-"), "err.html")
    page.write_text("<h1>Sorry</h1>\n")
    users = page.with_name("htpasswd")
    users.write_text("alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n")  # secret
    loc = f"location = /err.html {{ root {page.parent}; internal; }}"
    runs = [
        ("dead upstream", f"location / {{ proxy_pass http://127.0.0.1:1; }} error_page 502 /err.html; {loc}",
         ["--mount", "/=http://127.0.0.1:1", "--error-page", f"502={page}"], request("GET", "/x")),
        ("401 from basic auth", f'location / {{ auth_basic "Restricted"; auth_basic_user_file {users}; proxy_pass http://UPSTREAM; }} error_page 401 /err.html; {loc}',
         ["--mount", "/=http://UPSTREAM", "--basic-auth", str(users), "--error-page", f"401={page}"], request("GET", "/x")),
        ("413", f"client_max_body_size 10; location / {{ proxy_pass http://UPSTREAM; }} error_page 413 /err.html; {loc}",
         ["--mount", "/=http://UPSTREAM", "--max-body-size", "10", "--error-page", f"413={page}"],
         request("POST", "/x", "Content-Length: 20\r\n")),
        ("upstream 503 with a body", f"location / {{ proxy_pass http://UPSTREAM; }} error_page 503 /err.html; {loc}",
         ["--mount", "/=http://UPSTREAM", "--error-page", f"503={page}"], request("GET", "/r?status=503&len=20")),
        ("upstream 503, empty", f"location / {{ proxy_pass http://UPSTREAM; }} error_page 503 /err.html; {loc}",
         ["--mount", "/=http://UPSTREAM", "--error-page", f"503={page}"], request("GET", "/r?status=503&len=0")),
    ]
    for case, server, args, data in runs:
        pair = Pair(binary, server, args)
        try:
            answers = []
            for port in (pair.ref_port, pair.our_port):
                status, fields, body = parse(exchange(port, data))
                fields = {k: v for k, v in fields.items() if k in ("content-type", "www-authenticate", "etag")}
                answers.append((status, fields, body))
            tally.compare(case, *answers)
        finally:
            pair.close()
    return tally.summary("errors")


def battery_access(binary):
    """--access against allow/deny, and behind a trusted proxy against set_real_ip_from."""
    tally = Tally({})
    rule_sets = [["allow 127.0.0.1", "deny all"], ["deny 127.0.0.1", "allow all"],
                 ["allow 127.0.0.0/8", "deny all"], ["deny 10.0.0.0/8"], ["allow ::1", "deny all"],
                 ["deny all", "allow 127.0.0.1"], ["allow 0.0.0.0/0", "deny all"]]
    for rules in rule_sets:
        pair = Pair(binary, "location / { %s proxy_pass http://UPSTREAM; }" % " ".join(r + ";" for r in rules),
                    ["--mount", "/=http://UPSTREAM"] + sum((["--access", r] for r in rules), []))
        try:
            statuses = [parse(exchange(port, request("GET", "/r?len=2")))[0]
                        for port in (pair.ref_port, pair.our_port)]
            tally.compare(" ; ".join(rules), *statuses)
        finally:
            pair.close()
    pair = Pair(binary, "location / { allow 10.1.2.3; deny all; proxy_pass http://UPSTREAM; }",
                ["--mount", "/=http://UPSTREAM", "--proxy-fix", "--access", "allow 10.1.2.3", "--access", "deny all"],
                http="set_real_ip_from 127.0.0.1; real_ip_header X-Forwarded-For;")
    try:
        for forwarded in ["10.1.2.3", "10.9.9.9", "10.9.9.9, 10.1.2.3", None]:
            extra = f"X-Forwarded-For: {forwarded}\r\n" if forwarded else ""
            statuses = [parse(exchange(port, request("GET", "/r?len=2", extra)))[0]
                        for port in (pair.ref_port, pair.our_port)]
            tally.compare(f"X-Forwarded-For: {forwarded}", *statuses)
    finally:
        pair.close()
    return tally.summary("access")


class AuthService(RawServer):
    """An auth service that answers as the request's `X-Auth-Case` field says (`status`, and
    `h` field lines, as a query), noting each request's line and fields for `seen`."""

    def __init__(self):
        self.log = []
        super().__init__()

    def serve(self, conn):
        f = conn.makefile("rb")
        try:
            line = f.readline().decode("latin-1").strip()
            heads = []
            while (h := f.readline()) not in (b"\r\n", b"\n", b""):
                heads.append(h.decode("latin-1").strip())
            self.log.append((line, heads))
            fields = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in heads)}
            pairs = urllib.parse.parse_qsl(fields.get("x-auth-case", ""), keep_blank_values=True)
            status = dict(pairs).get("status", "200")
            out = [f"HTTP/1.1 {status} X", "Content-Length: 6", "Connection: close"]
            out += [v for k, v in pairs if k == "h"]
            conn.sendall("\r\n".join(out).encode() + b"\r\n\r\nauth's")
        except OSError:
            pass
        conn.close()


FORWARD_AUTH_KNOWN = {
    "302 to a login page": "a redirect from the service goes back to the client as it is, to its login page (as "
                           "Traefik's and Caddy's forward auth); nginx's auth_request takes it for an error, 500",
    "404": "an answer of the service that is no yes, no 401, 403 or redirect: 503, the gateway cannot serve; "
           "nginx 500",
    "500": "the same", "503": "the same",
    "the service down": "the same",
    "401 with a cookie": "the service's 401 goes back whole, its Set-Cookie too; nginx keeps only WWW-Authenticate",
}


def battery_forward_auth(binary):
    """--forward-auth against auth_request (with auth_request_set copying X-User to the
    upstream): what the client gets for each answer of the auth service, what the upstream
    gets, and what the service is asked."""
    tally = Tally(FORWARD_AUTH_KNOWN)
    auth = AuthService()
    a = f"127.0.0.1:{auth.port}"
    pair = Pair(binary,
                "location = /verify { internal; proxy_pass http://" + a + "/verify; "
                "proxy_pass_request_body off; proxy_set_header Content-Length \"\"; "
                "proxy_set_header X-Original-URI $request_uri; proxy_set_header X-Original-Method $request_method; } "
                "location / { auth_request /verify; auth_request_set $user $upstream_http_x_user; "
                "proxy_set_header X-User $user; proxy_pass http://UPSTREAM; }",
                ["--mount", "/=http://UPSTREAM", "--forward-auth", f"http://{a}/verify",
                 "--forward-auth-copy", "X-User"])
    case = lambda query: f"X-Auth-Case: {query}\r\n"
    cases = [
        ("200", case("status=200")),
        ("204", case("status=204")),
        ("200 with X-User", case("status=200&h=X-User:%20alice")),
        ("200, the client's own X-User", case("status=200") + "X-User: mallory\r\n"),
        ("401 with a challenge", case("status=401&h=WWW-Authenticate:%20Basic%20realm%3D%22x%22")),
        ("401 without one", case("status=401")),
        ("403", case("status=403")),
        ("302 to a login page", case("status=302&h=Location:%20/login")),
        ("404", case("status=404")),
        ("500", case("status=500")),
        ("503", case("status=503")),
        ("401 with a cookie", case("status=401&h=Set-Cookie:%20a%3Db")),
    ]

    def outcome(port, extra, method="GET"):
        auth.log.clear()
        pair.upstream.seen()
        status, fields, _ = parse(exchange(port, request(method, "/r/p?len=2&q=1", extra)))
        kept = {k: v for k, v in fields.items() if k in ("www-authenticate", "location", "set-cookie")}
        upstream = [dict((h.partition(":")[0].lower(), h.partition(":")[2].strip()) for h in heads)
                    for _, heads, _ in pair.upstream.seen()]
        return status, kept, [u.get("x-user") for u in upstream]

    try:
        for name, extra in cases:
            tally.compare(name, outcome(pair.ref_port, extra), outcome(pair.our_port, extra))
        # What the service is asked, for a POST with a body.
        asked = []
        for port in (pair.ref_port, pair.our_port):
            auth.log.clear()
            exchange(port, b"POST /r/p?x=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                           b"Content-Length: 2\r\nCookie: c=1\r\n" + case("status=200").encode() + b"\r\nhi")
            line, heads = auth.log[0] if auth.log else ("", [])
            line = line.rsplit(" ", 1)[0]  # nginx's proxy speaks HTTP/1.0 by default
            fields = {h.partition(":")[0].lower(): h.partition(":")[2].strip() for h in heads}
            asked.append((line, {k: fields.get(k) for k in ("cookie", "content-length", "x-original-uri",
                                                              "x-original-method")}))
        tally.compare("the service asked, for a POST", *asked)
        auth.sock.shutdown(socket.SHUT_RDWR)
        auth.sock.close()
        tally.compare("the service down", outcome(pair.ref_port, ""), outcome(pair.our_port, ""))
    finally:
        pair.close()
    return tally.summary("forward-auth")


HTTP2_KNOWN = {
    "a connection field": "the stream is reset, the request malformed (RFC 9113 §8.2.2); nginx drops the field",
    "TE: gzip": "the same: TE may only say trailers",
    "TE: trailers": "passed on, as trailers are passed back; nginx drops TE",
    "an upper-case name": "the connection is closed (GOAWAY) where nginx resets the stream: both refuse the request",
    "a POST without a length": "its body streamed to the upstream, chunked; nginx reads it whole and sends its length",
    "Host beside :authority, the same": "the same host in another case is the same host (RFC 9110 §4.2.3); nginx "
                                        "compares the bytes, 400",
    "Host beside :authority, the default port": "the scheme's port said or not is the same port; nginx 400",
}


def h2_exchange(port, headers, body=None):
    """One request over a new TLS connection speaking HTTP/2 (the h2 library's client, told
    to send the fields as given): the status, or how the stream or connection was ended."""
    import ssl
    import h2.config
    import h2.connection
    import h2.events
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=2), server_hostname="localhost")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False,
        split_outbound_cookies=False))
    conn.initiate_connection()
    conn.send_headers(1, headers, end_stream=body is None)
    if body is not None:
        conn.send_data(1, body, end_stream=True)
    sock.sendall(conn.data_to_send())
    status = None
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"].decode()
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(len(event.data), 1)
                elif isinstance(event, h2.events.StreamEnded):
                    return status
                elif isinstance(event, h2.events.StreamReset):
                    return "stream reset"
                elif isinstance(event, h2.events.ConnectionTerminated):
                    return status or "connection closed"
            sock.sendall(conn.data_to_send())
    except (socket.timeout, OSError):
        pass
    finally:
        sock.close()
    return status


def battery_http2(binary):
    """Over HTTP/2 (TLS, ALPN) against nginx's `http2`, each in front of the same upstream:
    malformed requests, and the head the upstream gets of well-formed ones."""
    python_env()
    work = Path(tempfile.mkdtemp(prefix="stackway-diff-h2-"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", work / "key.pem",
                    "-out", work / "cert.pem", "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True)
    upstream, ref_port, our_port = Upstream(), free_port(), free_port()
    pair = Pair(binary, "",
                ["--bind", f"127.0.0.1:{our_port}", "--tls-cert", str(work / "cert.pem"), "--tls-key",
                 str(work / "key.pem"), "--mount", "/=http://UPSTREAM"],
                http=f"server {{ listen 127.0.0.1:{ref_port} ssl http2; ssl_certificate {work}/cert.pem; "
                     f"ssl_certificate_key {work}/key.pem; "
                     f"location / {{ proxy_pass http://127.0.0.1:{upstream.port}; }} }}",
                upstream=upstream)
    tally = Tally(HTTP2_KNOWN)
    get = lambda path="/r?len=2": [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
                                   (":path", path)]
    cases = {
        "plain": get(),
        "cookie crumbs": get() + [("cookie", "a=1"), ("cookie", "b=2")],
        "Host beside :authority, the same": get() + [("host", "LOCALHOST")],
        "Host beside :authority, another": get() + [("host", "other.example")],
        "Host beside :authority, another port": get() + [("host", "localhost:8080")],
        "Host beside :authority, the default port": get() + [("host", "localhost:443")],
        "Host without :authority": [(":method", "GET"), (":scheme", "https"), (":path", "/r?len=2"),
                                    ("host", "localhost")],
        "a field twice": get() + [("x-a", "1"), ("x-a", "2")],
        "a connection field": get() + [("connection", "keep-alive")],
        "TE: gzip": get() + [("te", "gzip")],
        "TE: trailers": get() + [("te", "trailers")],
        "an upper-case name": get() + [("X-Upper", "1")],
        "a POST without a length": [(":method", "POST"), (":scheme", "https"), (":authority", "localhost"),
                                    (":path", "/r?len=2")],
    }
    ours_only = ("host", "x-forwarded-", "x-real-ip", "connection", "content-length", "transfer-encoding")

    def outcome(port, case, headers):
        pair.upstream.seen()
        status = h2_exchange(port, headers, b"hello" if case.startswith("a POST") else None)
        seen = [(line.rsplit(" ", 1)[0], sorted(h.lower() for h in heads if not h.lower().startswith(ours_only)),
                 body) for line, heads, body in pair.upstream.seen()]
        return status, seen

    try:
        for case, headers in cases.items():
            tally.compare(case, outcome(ref_port, case, headers), outcome(our_port, case, headers))
    finally:
        pair.close()
    return tally.summary("http2")


PROXY_KNOWN = {
    # What the upstream is sent
    "GET /r Connection: close, X-Gone": "a field the client's Connection names stays on its hop (RFC 9110 §7.6.1); nginx passes it",
    "GET /r Keep-Alive: 300": "Proxy-Connection is a hop's (RFC 9110 §7.6.1 names it); nginx passes it",
    "GET /r TE: trailers": "passed, as trailers are passed back (gRPC's `grpc-status` is one); nginx drops TE",
    "GET /r Upgrade: h2c": "HTTP2-Settings belongs to the h2c upgrade, this hop's alone (RFC 9113 §3.2.1); nginx passes it",
    "GET /r Proxy-Authorization: Basic YTpi": "credentials for this hop, not the upstream (RFC 9110 §11.7.2); nginx passes them",
    "GET /r Proxy: http://evil.example": "never passed: a CGI host behind would make it HTTP_PROXY (httpoxy); nginx needs `proxy_set_header Proxy \"\"`",
    "GET /r X-Forwarded-Prefix: /evil": "a mount at the root names no prefix, and the client's is not passed for one",
    "GET /r?": "the target after the mount as the client sent it; nginx under a base sends its normalised $uri",
    "GET /a%2Fb": "the same: nginx decodes %2F under a base",
    "GET /a%zzb": "passed as the client sent it, for the upstream to judge (an HTTP upstream is given the target, "
                  "never its decoded form; a uwsgi or FastCGI one refuses it with 400, as nginx does every request)",
    "GET /%7euser": "the same, %7e",
    "GET //x": "the same: nginx merges the slashes under a base",
    # What the client is answered
    "answered: Server": "the upstream's Server passes (stackway names itself nowhere); nginx puts its own in its place",
    "answered: Date": "the upstream's Date passes (RFC 9110 §6.6.1: the time the answer was made, which a cache's age counts from); nginx puts its own",
    "answered: hop-by-hop": "the fields the upstream's Connection names, and Proxy-Connection, stay on its hop (RFC 9110 §7.6.1)",
    "answered: Upgrade without 101": "Upgrade and HTTP2-Settings in an answer that switches nothing are the upstream's hop",
    "answered: Proxy-Authenticate": "a challenge for the upstream's hop (RFC 9110 §11.7.1)",
    "answered: X-Accel-*": "passed: the proxy does not act on them (a SharedData in front acts on X-Accel-Redirect, a cache on X-Accel-Expires); nginx takes them for itself",
    "answered: X-Pad": "passed: nginx drops it for a browser of the 1990s",
    "answered: Location /base/x": "a path into the upstream's base is turned into the mount's, as an absolute one is; nginx's proxy_redirect only matches the absolute form",
    "answered: Location upstream/x": "made a path of the mount's (RFC 9110 §10.2.2 allows a relative Location); nginx makes it absolute with the client's host",
    "answered: Location upstream/base/x": "the same",
    "answered: Content-Location upstream/base/x": "rewritten as Location is; nginx leaves it",
    "answered: a 10 KB field": "passed (up to 64 KiB of fields); nginx's proxy_buffer_size (4 KiB) makes it a 502",
    "answered: CL twice, different": "502: the body's length is unknown (RFC 9112 §6.3); nginx takes the last",
    "answered: a field line without a colon": "502: no field (RFC 9112 §5); nginx takes it as an empty one",
    "answered: 100 first": "an interim answer the client did not ask for is read past; nginx 1.22 sends the 100 as the answer, the rest as its body",
    "answered: 103 first": "the same, for 103",
    "answered: 101 unasked": "502: a switch the request did not offer (RFC 9110 §15.2.2); nginx passes it on",
    "answered: status 099": "502: no status code (RFC 9110 §15 has three digits, 100 to 599 in use); nginx passes it",
    "answered: 204 with a length": "a 204 has no Content-Length (RFC 9110 §8.6); nginx passes it",
    "answered: 304 with a length": "left out (RFC 9110 §8.6 allows either); nginx passes it",
    "answered: HTTP/2.0 status line": "502: HTTP/1's parser knows 1.0 and 1.1; nginx reads 2.0 as 1.x",
    "answered: no status line": "502: no HTTP/1 answer (HTTP/0.9 is not spoken); nginx passes the bytes as an HTTP/0.9 answer",
}

# What a production config sets beside `proxy_pass`, which stackway's proxy sends unasked.
NGINX_FORWARDED = ('proxy_http_version 1.1; proxy_set_header Connection ""; '
                   'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; '
                   'proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $http_host; '
                   'proxy_set_header X-Forwarded-Port $server_port;')


def battery_proxy(binary):
    """A mount of an upstream against `proxy_pass` (with the X-Forwarded-* a production config
    sets): the head the upstream is sent, and the answer the client gets for what it answers."""
    upstream = Upstream()
    tally = Tally(PROXY_KNOWN)
    pairs = [
        ("", Pair(binary, f"location / {{ proxy_pass http://UPSTREAM; {NGINX_FORWARDED} }}",
                  ["--mount", "/=http://UPSTREAM"], upstream=upstream)),
        ("/app", Pair(binary, f"location /app/ {{ proxy_pass http://UPSTREAM/base/; {NGINX_FORWARDED}"
                              " proxy_set_header X-Forwarded-Prefix /app; }",
                      ["--mount", "/app=http://UPSTREAM/base"], upstream=upstream)),
    ]
    h = "Host: localhost\r\n"
    sent = [
        ("GET", "/r", ""),
        ("GET", "/r", "Connection: close, X-Gone\r\nX-Gone: 1\r\n"),
        ("GET", "/r", "Keep-Alive: 300\r\nProxy-Connection: keep-alive\r\n"),
        ("GET", "/r", "TE: trailers\r\n"),
        ("GET", "/r", "TE: gzip\r\n"),
        ("GET", "/r", "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"),
        ("GET", "/r", "Upgrade: websocket\r\n"),
        ("GET", "/r", "Proxy-Authorization: Basic YTpi\r\n"),
        ("GET", "/r", "Proxy: http://evil.example\r\n"),
        ("GET", "/r", "X-Forwarded-For: 10.0.0.1\r\n"),
        ("GET", "/r", "X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n"),
        ("GET", "/r", "X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 1\r\n"),
        ("GET", "/r", "X-Forwarded-Prefix: /evil\r\n"),
        ("GET", "/r", "X_Under: 1\r\n"),
        ("GET", "/r", "X-Empty:\r\n"),
        ("GET", "/r", "X-A: 1\r\nX-A: 2\r\n"),
        ("GET", "/r", "Cookie: a=1\r\nCookie: b=2\r\n"),
        ("GET", "/r", "Via: 1.1 front\r\n"),
        ("GET", "/r", "Forwarded: for=10.0.0.1\r\n"),
        ("GET", "/r", "Accept-Encoding: gzip\r\nIf-None-Match: \"x\"\r\nRange: bytes=0-1\r\n"),
        ("GET", "/r", "Authorization: Basic YTpi\r\n"),
        ("POST", "/r", "Content-Length: 3\r\n\r\nabc"),
        ("POST", "/r", "Content-Length: 0\r\n"),
        ("POST", "/r", ""),
        ("POST", "/r", "Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"),
        ("GET", "/r", "Content-Length: 3\r\n\r\nabc"),
        ("HEAD", "/r", ""),
        ("OPTIONS", "/r", ""),
        ("DELETE", "/r", ""),
        ("PURGE", "/r", ""),
        ("TRACE", "/r", ""),
        ("GET", "/r?a=%20&b=+&c=%2F", ""),
        ("GET", "/r?", ""),
        ("GET", "/a%2Fb", ""),
        ("GET", "/a%zzb", ""),
        ("GET", "/a%20b", ""),
        ("GET", "/%7euser", ""),
        ("GET", "//x", ""),
        ("GET", "/a;p=1/b", ""),
        ("GET", "/caf\u00e9", ""),
        ("GET", "/", ""),
    ]

    def raw_request(prefix, method, target, extra, host=h):
        head, _, body = extra.partition("\r\n\r\n") if "\r\n\r\n" in extra else (extra, "", "")
        return f"{method} {prefix}{target} HTTP/1.1\r\n{host}{head}Connection: close\r\n\r\n{body}".encode()

    def seen(pair, data):
        status = parse(exchange(pair.ref_port if seen.ref else pair.our_port, data))[0]
        time.sleep(0.05)
        heads = []
        for line, fields, body in upstream.seen():
            port = str(pair.ref_port if seen.ref else pair.our_port)
            fields = sorted((f.split(":", 1)[0].lower() + ":" + f.split(":", 1)[1].replace(port, "PORT")
                             if ":" in f else f) for f in fields)
            heads.append((line, fields, body))
        return status, heads

    up = f"http://127.0.0.1:{upstream.port}"
    answered = [  # (case, the upstream's fields, the method), or (case, None, its whole answer)
        ("Server", ["Server: upstream/1"], "GET"),
        ("Date", ["Date: Mon, 01 Jan 2001 00:00:00 GMT"], "GET"),
        ("hop-by-hop", ["Connection: X-Secret", "X-Secret: 1", "Keep-Alive: timeout=5", "Proxy-Connection: keep-alive"], "GET"),
        ("Upgrade without 101", ["Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQAAP__"], "GET"),
        ("Proxy-Authenticate", ["Proxy-Authenticate: Basic realm=x"], "GET"),
        ("X-Accel-*", ["X-Accel-Buffering: no", "X-Accel-Expires: 10", "X-Accel-Charset: utf-8"], "GET"),
        ("X-Pad", ["X-Pad: avoid browser bug"], "GET"),
        ("two Set-Cookie", ["Set-Cookie: a=1", "Set-Cookie: b=2; Path=/base"], "GET"),
        ("Location /x", ["Location: /x"], "GET"),
        ("Location /base/x", ["Location: /base/x"], "GET"),
        ("Location upstream/x", [f"Location: {up}/x"], "GET"),
        ("Location upstream/base/x", [f"Location: {up}/base/x?y=1"], "GET"),
        ("Location elsewhere", ["Location: http://other.example/x"], "GET"),
        ("Content-Location upstream/base/x", [f"Content-Location: {up}/base/x"], "GET"),
        ("Refresh upstream/base/x", [f"Refresh: 0; url={up}/base/x"], "GET"),
        ("Link", ["Link: </base/x>; rel=preload"], "GET"),
        ("two Cache-Control", ["Cache-Control: no-cache", "Cache-Control: private"], "GET"),
        ("two Content-Type", ["Content-Type: application/json"], "GET"),
        ("an empty field", ["X-Empty:"], "GET"),
        ("Trailer, chunked", ["Trailer: X-T"], "GET"),
        ("HEAD", [], "HEAD"),
        ("a 10 KB field", ["X-Big: " + "b" * 10000], "GET"),
        ("HTTP/1.0 to the close", None, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nto the close"),
        ("HTTP/1.1 to the close", None, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nto the close"),
        ("no reason phrase", None, "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"),
        ("bare LF", None, "HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
        ("CL+TE", None, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
        ("CL twice, different", None, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"),
        ("CL twice, the same", None, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"),
        ("TE gzip", None, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok"),
        ("a body short of its length", None, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
        ("a field line without a colon", None, "HTTP/1.1 200 OK\r\nX-A\r\nContent-Length: 2\r\n\r\nok"),
        ("a space before the colon", None, "HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 2\r\n\r\nok"),
        ("an obs-fold", None, "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 2\r\n\r\nok"),
        ("100 first", None, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        ("103 first", None, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        ("101 unasked", None, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"),
        ("status 600", None, "HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nok"),
        ("status 099", None, "HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok"),
        ("204 with a length", None, "HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\nok"),
        ("304 with a length", None, "HTTP/1.1 304 Not Modified\r\nContent-Length: 2\r\n\r\n"),
        ("HTTP/2.0 status line", None, "HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        ("no status line", None, "hello\r\n\r\n"),
        ("nothing", None, ""),
    ]

    def got(port, prefix, fields, method):
        if fields is None:
            target, method = "/r?raw=" + urllib.parse.quote(method, safe=""), "GET"
        else:
            target = "/r?len=5&chunked=1" if any(f.startswith("Trailer") for f in fields) else "/r?len=5"
            target += "".join("&h=" + urllib.parse.quote(f, safe="") for f in fields if not f.startswith("X-Big"))
            target += "".join(f"&big={len(f) - 7}" for f in fields if f.startswith("X-Big"))
        data = exchange(port, raw_request(prefix, method, target, ""))
        upstream.seen()
        if not data.startswith(b"HTTP/1."):
            return data  # HTTP/0.9, or nothing
        status, heads, body = parse(data, head=method == "HEAD")
        if status >= "500":
            return status  # the proxy's own page
        if not any(f.startswith("Date") for f in fields or []):
            heads.pop("date", None)
        heads.pop("connection", None)
        heads["server"] = [v for v in heads.get("server", []) if v == "upstream/1"]
        heads = {k: [v.replace(str(port), "PORT") for v in vs] for k, vs in heads.items() if vs}
        return status, sorted(heads.items()), body

    try:
        for prefix, pair in pairs:
            for case, fields, method in answered:
                tally.compare(f"answered: {case} ({prefix or '/'})",
                              *(got(port, prefix, fields, method) for port in (pair.ref_port, pair.our_port)))
            for method, target, extra in sent:
                answers = []
                for seen.ref in (True, False):
                    answers.append(seen(pair, raw_request(prefix, method, target, extra)))
                case = f"{method} {target}" + (f" {extra.split(chr(13))[0]}" if extra else "")
                tally.compare(f"{case} ({prefix or '/'})", *answers)
            for case, host in [("HTTP/1.0 without Host", ""), ("Host with a port", "Host: localhost:8080\r\n"),
                               ("Host in capitals", "Host: LOCALHOST\r\n")]:
                data = raw_request(prefix, "GET", "/r", "", host)
                if not host:
                    data = data.replace(b"HTTP/1.1", b"HTTP/1.0")
                answers = []
                for seen.ref in (True, False):
                    answers.append(seen(pair, data))
                tally.compare(f"{case} ({prefix or '/'})", *answers)
    finally:
        for _, pair in pairs:
            pair.close()
    return tally.summary("proxy")


AUTH_KNOWN = {
    "the challenge": "names its charset, UTF-8 (RFC 7617 §2.1), so a browser sends a UTF-8 user as UTF-8",
    "a line with spaces before the user": "a line's leading whitespace is no part of the user, as Apache's "
                                          "htpasswd reading has it; nginx takes `  spaced` as the user",
    "  spaced as the user": "the same",
}


def battery_auth(binary):
    """--basic-auth against auth_basic: the statuses and challenge for Authorization fields of
    every shape, each hash htpasswd files hold, and what reaches the upstream."""
    import base64
    import hashlib
    root = Path(tempfile.mkdtemp(prefix="stackway-diff-auth-"))
    openssl = lambda *args: subprocess.run(["openssl", "passwd", *args], capture_output=True, text=True,
                                           check=True).stdout.strip()
    sha = "{SHA}" + base64.b64encode(hashlib.sha1(b"secret").digest()).decode()
    users = {"alice": openssl("-apr1", "-salt", "abcdefgh", "secret"), "md5": openssl("-1", "-salt", "ab", "secret"),
             "sha256": openssl("-5", "-salt", "abcdefgh", "secret"), "sha512": openssl("-6", "-salt", "ab", "secret"),
             "sha1": sha, "colon": openssl("-apr1", "-salt", "abcdefgh", "a:b"),
             "jos\u00e9": openssl("-apr1", "-salt", "abcdefgh", "secret"), "Alice": sha}
    lines = [f"{user}:{hashed}" for user, hashed in users.items()]
    # (a line stackway cannot read, plain text or an empty hash, stops it starting, with the line named)
    lines += ["# a comment", "", "  spaced:" + sha]
    (root / "htpasswd").write_text("\n".join(lines) + "\n", encoding="utf-8")
    upstream = Upstream()
    pair = Pair(binary, f'location / {{ auth_basic "Staff"; auth_basic_user_file {root}/htpasswd; '
                        f'proxy_pass http://UPSTREAM; }}',
                ["--mount", "/=http://UPSTREAM", "--basic-auth", f"{root}/htpasswd", "--basic-auth-realm", "Staff"],
                upstream=upstream)
    tally = Tally(AUTH_KNOWN)
    b64 = lambda text: base64.b64encode(text.encode("utf-8")).decode()
    cases = {
        "none": [],
        "right": [f"Basic {b64('alice:secret')}"],
        "wrong password": [f"Basic {b64('alice:wrong')}"],
        "no such user": [f"Basic {b64('mallory:secret')}"],
        "$1$": [f"Basic {b64('md5:secret')}"], "$5$": [f"Basic {b64('sha256:secret')}"],
        "$6$": [f"Basic {b64('sha512:secret')}"], "{SHA}": [f"Basic {b64('sha1:secret')}"],
        "a colon in the password": [f"Basic {b64('colon:a:b')}"],
        "a UTF-8 user": ["Basic " + b64("jos\u00e9:secret")],
        "the user in another case": [f"Basic {b64('ALICE:secret')}"],
        "a second user differing in case": [f"Basic {b64('Alice:secret')}"],
        "a line with spaces before the user": [f"Basic {b64('spaced:secret')}"],
        "  spaced as the user": [f"Basic {b64('  spaced:secret')}"],
        "an empty user": [f"Basic {b64(':secret')}"],
        "no colon": [f"Basic {b64('alice')}"],
        "lowercase scheme": [f"basic {b64('alice:secret')}"],
        "uppercase scheme": [f"BASIC {b64('alice:secret')}"],
        "two spaces": [f"Basic  {b64('alice:secret')}"],
        "a trailing space": [f"Basic {b64('alice:secret')} "],
        "no padding": [f"Basic {b64('alice:secret1').rstrip('=')}"],
        "invalid base64": ["Basic !!!!"],
        "the scheme alone": ["Basic"],
        "Bearer": ["Bearer abc"],
        "two fields, the right one second": [f"Basic {b64('alice:wrong')}", f"Basic {b64('alice:secret')}"],
        "two fields, the right one first": [f"Basic {b64('alice:secret')}", f"Basic {b64('alice:wrong')}"],
        "url-safe base64": ["Basic " + base64.urlsafe_b64encode("jos\u00e9:secret".encode()).decode()],
        "a comment line as a user": [f"Basic {b64('# a comment:secret')}"],
    }

    def answer(port, fields, challenge=False):
        extra = "".join(f"Authorization: {f}\r\n" for f in fields)
        status, heads, _ = parse(exchange(port, request("GET", "/r?len=2", extra)))
        time.sleep(0.05)
        seen = [h.split(":", 1)[1].strip() for _, hs, _ in upstream.seen() for h in hs
                if h.lower().startswith("authorization:")]
        if challenge:
            return heads.get("www-authenticate")
        return status, bool(heads.get("www-authenticate")), seen

    try:
        tally.compare("the challenge", *(answer(port, [], True) for port in (pair.ref_port, pair.our_port)))
        for case, fields in cases.items():
            tally.compare(case, *(answer(port, fields) for port in (pair.ref_port, pair.our_port)))
    finally:
        pair.close()
    return tally.summary("auth")


RATE_KNOWN = {
    "the refusal": "429 Too Many Requests (RFC 6585 §4) with Retry-After; nginx's limit_req_status and "
                   "limit_conn_status default to 503",
}


def battery_rate(binary):
    """--rate-limit against limit_req and limit_conn: how many of a burst of requests pass,
    sent one after another or all at once, and how long the delayed ones wait."""
    import concurrent.futures
    tally = Tally(RATE_KNOWN)
    runs = [  # (case, stackway's rule, nginx's zone rate, nginx's limit_req/limit_conn, requests, at once)
        ("1r/s, 5 in a row", "1r/s", "1r/s", "limit_req zone=z;", 5, False),
        ("1r/s burst=3 nodelay, 8 in a row", "1r/s burst=3 nodelay", "1r/s", "limit_req zone=z burst=3 nodelay;", 8, False),
        ("10r/s burst=5 nodelay, 20 in a row", "10r/s burst=5 nodelay", "10r/s", "limit_req zone=z burst=5 nodelay;", 20, False),
        ("1r/s burst=3, 8 at once", "1r/s burst=3", "1r/s", "limit_req zone=z burst=3;", 8, True),
        ("2r/s burst=1, 6 at once", "2r/s burst=1", "2r/s", "limit_req zone=z burst=1;", 6, True),
        ("60r/m burst=2 nodelay, 5 in a row", "60r/m burst=2 nodelay", "60r/m", "limit_req zone=z burst=2 nodelay;", 5, False),
        ("conn=2, 5 at once", "1000r/s burst=100 nodelay conn=2", "1000r/s",
         "limit_req zone=z burst=100 nodelay; limit_conn c 2;", 5, True),
    ]
    refusals = {"reference": set(), "stackway": set()}
    for case, rule, rate, limits, count, at_once in runs:
        pair = Pair(binary, f"location / {{ {limits} proxy_pass http://UPSTREAM; }}",
                    ["--mount", "/=http://UPSTREAM", "--rate-limit", rule],
                    http=f"limit_req_zone $binary_remote_addr zone=z:1m rate={rate}; "
                         "limit_conn_zone $binary_remote_addr zone=c:1m;")
        target = "/r?len=2&sleep=0.5" if "conn" in rule else "/r?len=2"

        def one(port):
            started = time.monotonic()
            status = parse(exchange(port, request("GET", target), 10))[0]
            return status, time.monotonic() - started

        def burst(port, side):
            if at_once:
                with concurrent.futures.ThreadPoolExecutor(count) as pool:
                    answers = list(pool.map(lambda _: one(port), range(count)))
            else:
                answers = [one(port) for _ in range(count)]
            passed = [t for status, t in answers if status == "200"]
            refusals[side].update(status for status, _ in answers if status != "200")
            # How many passed, and the last one's wait in whole seconds.
            return len(passed), round(max(passed, default=0))

        try:
            tally.compare(case, burst(pair.ref_port, "reference"), burst(pair.our_port, "stackway"))
        finally:
            pair.close()
    tally.compare("the refusal", *(sorted(side) for side in refusals.values()))
    return tally.summary("rate")


POOL_KNOWN = {}


class Silent(RawServer):
    """Reads each request and never answers."""

    def serve(self, conn):
        conn.recv(65536)
        time.sleep(30)
        conn.close()


class Lingering(RawServer):
    """Answers one request with its body, keeping the connection by HTTP/1.1's default, and
    closes it a moment later without reading the next request sent on it."""

    def serve(self, conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return conn.close()
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        while length and len(body) < int(length.group(1)):
            body += conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(0.2)
        conn.close()


class Named(RawServer):
    """Answers every request on a connection with its name."""

    def __init__(self, name):
        self.name = name
        super().__init__()

    def serve(self, conn):
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
            while b"\r\n\r\n" in data:
                _, data = data.split(b"\r\n\r\n", 1)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n" + self.name)
        conn.close()


def battery_pool(binary):
    """A pool with a member that is down (nothing listens), that closes each connection
    without an answer, or that never answers (the read timeout), and one with two members of
    three down, against nginx's upstream block: how many requests of each kind are answered,
    and how."""
    upstream = Upstream()
    tally = Tally(POOL_KNOWN)
    closer, silent = RawServer(), Silent()
    kinds = {"GET": request("GET", "/r?len=2"), "HEAD": request("HEAD", "/r?len=2"),
             "POST with a body": request("POST", "/r?len=2", "Content-Length: 3\r\n") + b"abc",
             "POST without one": request("POST", "/r?len=2", "Content-Length: 0\r\n"),
             "PUT with a body": request("PUT", "/r?len=2", "Content-Length: 3\r\n") + b"abc",
             "DELETE": request("DELETE", "/r?len=2")}
    # The members before the good one and after it: a fresh pool's first request goes to the
    # first, and the turn takes the second of three next.
    for member, before, after in [("down", [free_port()], []), ("closing", [closer.port], []),
                                  ("silent", [silent.port], []),
                                  ("two of three down", [free_port()], [free_port()])]:
        members = [f"127.0.0.1:{port}" for port in before + [upstream.port] + after]
        for kind, data in kinds.items():
            # A pair of its own: its first request goes to the bad member.
            pair = Pair(binary, "location / { proxy_pass http://pool; proxy_http_version 1.1; "
                                "proxy_set_header Connection \"\"; proxy_read_timeout 1s; }",
                        ["--mount", "/=" + ",".join(f"http://{m}" for m in members), "--workers", "1",
                         "--proxy-read-timeout", "1"],
                        http="upstream pool { " + " ".join(f"server {m};" for m in members) + " }",
                        upstream=upstream)
            try:
                counts = []
                for port in (pair.ref_port, pair.our_port):
                    statuses = [parse(exchange(port, data, 5))[0] for _ in range(4)]
                    counts.append(sorted((s, statuses.count(s)) for s in set(statuses)))
                tally.compare(f"{kind} ({member})", *counts)
            finally:
                pair.close()
    closer.sock.close()
    silent.sock.close()
    # A member that closes each kept connection a moment after its answer: the request sent
    # on it meanwhile is asked again on a new connection where it may be.
    lingering = Lingering()
    member = f"127.0.0.1:{lingering.port}"
    pair = Pair(binary, "location / { proxy_pass http://pool; proxy_http_version 1.1; "
                        "proxy_set_header Connection \"\"; }",
                ["--mount", f"/=http://{member}", "--workers", "1"],
                http=f"upstream pool {{ server {member}; keepalive 4; }}", upstream=upstream)
    try:
        for kind, data in kinds.items():
            answers = []
            for port in (pair.ref_port, pair.our_port):
                seen = []
                for _ in range(3):
                    exchange(port, kinds["GET"], 5)
                    status, _, body = parse(exchange(port, data, 5))
                    seen.append((status, body if status == "200" else None))
                answers.append(seen)
            tally.compare(f"{kind} (a kept connection closed under it)", *answers)
    finally:
        pair.close()
    lingering.sock.close()
    # nginx's server parameters: who answers each of a run of requests.
    named = [Named(name) for name in (b"a", b"b", b"c")]
    a, b, c = (f"127.0.0.1:{n.port}" for n in named)
    dead = f"127.0.0.1:{free_port()}"
    for case, members in [("weight=3 and 1", [f"{a} weight=3", b]),
                          ("weights 5, 1, 2", [f"{a} weight=5", b, f"{c} weight=2"]),
                          ("a backup", [a, f"{b} backup"]),
                          ("a backup, the other down", [f"{dead}", f"{b} backup"]),
                          ("a member marked down", [f"{a} down", b, c]),
                          ("max_fails=2 on a dead member", [f"{dead} max_fails=2", a])]:
        pair = Pair(binary, "location / { proxy_pass http://pool; }",
                    ["--mount", "/=" + ",".join(f"http://{m}" for m in members), "--workers", "1"],
                    http="upstream pool { " + " ".join(f"server {m};" for m in members) + " }",
                    upstream=upstream)
        try:
            tally.compare(case, *([parse(exchange(port, request("GET", "/"), 5))[2] for _ in range(12)]
                                  for port in (pair.ref_port, pair.our_port)))
        finally:
            pair.close()
    # nginx's other balancers: who answers each of forty users (by their X-User, for a hash).
    users = [request("GET", "/", f"X-User: user-{i}\r\n") for i in range(40)]
    for case, method, members in [("least_conn with weights", "least_conn", [f"{a} weight=3", b, c]),
                                  ("ip_hash", "ip_hash", [a, b, c]),
                                  ("ip_hash, the member it lands on down", "ip_hash", [a, b, dead]),
                                  ("hash", "hash $http_x_user", [a, b, c]),
                                  ("hash with weights", "hash $http_x_user", [f"{a} weight=3", b, c]),
                                  ("hash, a member down", "hash $http_x_user", [a, dead, c]),
                                  ("hash consistent", "hash $http_x_user consistent", [a, b, c]),
                                  ("hash consistent with weights", "hash $http_x_user consistent",
                                   [a, f"{b} weight=2", c])]:
        balance = {"ip_hash": "ip-hash", "least_conn": "least-outstanding"}.get(method, method)
        config = Path(tempfile.mkdtemp(prefix="stackway-diff-"), "stackway.toml")
        upstreams = ", ".join(f'"http://{m}"' for m in members)
        config.write_text(f'[[mount]]\nprefix = "/"\nproxy = [{upstreams}]\n'
                          f'[mount.proxy_options]\nbalance = "{balance}"\n')
        pair = Pair(binary, "location / { proxy_pass http://pool; }",
                    ["--config", str(config), "--workers", "1"],
                    http=f"upstream pool {{ {method}; " + " ".join(f"server {m};" for m in members) + " }",
                    upstream=upstream)
        try:
            tally.compare(case, *([parse(exchange(port, user, 5))[2] for user in users]
                                  for port in (pair.ref_port, pair.our_port)))
        finally:
            pair.close()
    for n in named:
        n.sock.close()
    # One member, and the read timeout: an answer later than it, and one in time.
    pair = Pair(binary, "location / { proxy_pass http://UPSTREAM; proxy_read_timeout 1s; }",
                ["--mount", "/=http://UPSTREAM", "--proxy-read-timeout", "1"], upstream=upstream)
    try:
        for case, target in [("an answer after the read timeout", "/r?len=2&sleep=2"),
                             ("an answer within it", "/r?len=2&sleep=0.5")]:
            tally.compare(case, *(parse(exchange(port, request("GET", target), 5))[0]
                                  for port in (pair.ref_port, pair.our_port)))
    finally:
        pair.close()
    return tally.summary("pool")


XACCEL_KNOWN = {
    "If-Modified-Since": "a date in the future is still a date: 304, as for any static file (the static battery)",
}


def battery_xaccel(binary):
    """X-Accel-Redirect from a proxied app against nginx's: which file is served in its place,
    with which of the app's fields, for the ranges and conditionals a download is asked with."""
    root = Path(tempfile.mkdtemp(prefix="stackway-diff-xaccel-"))
    (root / "report.pdf").write_bytes(b"%PDF-" + bytes(range(256)) * 20)
    (root / "notes.txt").write_text("notes\n")
    (root / "sub").mkdir()
    (root / "sub" / "a b.txt").write_text("spaced\n")
    config = root / "stackway.toml"
    upstream = Upstream()
    config.write_text(f'[[static]]\nprefix = "/protected"\npath = "{root}"\ninternal = true\n\n'
                      f'[[mount]]\nprefix = "/"\nproxy = "http://127.0.0.1:{upstream.port}"\n')
    pair = Pair(binary, f"location /protected/ {{ internal; alias {root}/; }} location / {{ proxy_pass http://UPSTREAM; }}",
                ["--config", str(config)], upstream=upstream,
                http="include /etc/nginx/mime.types; default_type application/octet-stream;")
    tally = Tally(XACCEL_KNOWN)
    q = lambda *fields: "/r?len=7" + "".join("&h=" + urllib.parse.quote(f, safe="") for f in fields)
    redirect = "X-Accel-Redirect: /protected/report.pdf"
    cases = [
        ("a file", q(redirect), ""),
        ("a text file", q("X-Accel-Redirect: /protected/notes.txt"), ""),
        ("the app's Content-Type and Content-Disposition",
         q(redirect, "Content-Disposition: attachment; filename=r.pdf").replace("/r?", "/r?ct=application/x-custom&"), ""),
        ("the app's Set-Cookie, Cache-Control, Expires", q(redirect, "Set-Cookie: a=1", "Cache-Control: private",
                                                            "Expires: Thu, 01 Jan 2037 00:00:00 GMT"), ""),
        ("the app's other fields", q(redirect, "X-Other: 1", "ETag: \"app\"", "Last-Modified: Mon, 01 Jan 2001 00:00:00 GMT"), ""),
        ("a missing file", q("X-Accel-Redirect: /protected/missing.pdf"), ""),
        ("a path outside the export", q("X-Accel-Redirect: /protected/../stackway.toml"), ""),
        ("an encoded name", q("X-Accel-Redirect: /protected/sub/a%20b.txt"), ""),
        ("a query", q("X-Accel-Redirect: /protected/notes.txt?x=1"), ""),
        ("a range", q(redirect), "Range: bytes=0-4\r\n"),
        ("If-Modified-Since", q(redirect), "If-Modified-Since: Thu, 01 Jan 2037 00:00:00 GMT\r\n"),
        ("the app's status 201", q(redirect).replace("/r?", "/r?status=201&"), ""),
        ("HEAD", q(redirect), "HEAD"),
        ("the export from outside", "/protected/notes.txt", ""),
    ]

    def answer(port, target, extra):
        method, extra = ("HEAD", "") if extra == "HEAD" else ("GET", extra)
        status, fields, body = parse(exchange(port, request(method, target, extra)), head=method == "HEAD")
        if status >= "400":
            return status
        keep = ("content-type", "content-disposition", "set-cookie", "cache-control", "expires", "x-other",
                "content-range", "content-length", "x-accel-redirect", "last-modified")
        return status, sorted((k, v) for k, v in fields.items() if k in keep), len(body)

    try:
        for case, target, extra in cases:
            tally.compare(case, *(answer(port, target, extra) for port in (pair.ref_port, pair.our_port)))
    finally:
        pair.close()
    return tally.summary("xaccel")


STATIC_KNOWN = {
    "GET /s/dir": "308, which keeps the method (RFC 9110 §15.4.9); nginx 301",
    "GET /s/dir?q=1": "the same",
    "GET /s/.hidden": "dot-files are never served (Werkzeug's SharedData, actix-files): 404",
    "GET /s/dir/.hidden": "the same",
    "GET /s//a.txt": "an empty segment names no file: 404",
    "GET /s/a%2Ftxt": "an encoded slash is no separator: 404",
    "GET /s/out": "a symlink that leaves the root is refused: 404",
    "GET /s/q%3Fx.txt": "a `?` in a name is refused, as no name a URL can carry plainly",
    "GET /s/./a.txt": "dot segments are refused (400), the Dispatcher's rule",
    "GET /s/dir/../a.txt": "the same",
    "GET /s/gz.txt Accept-Encoding: gzip": "a `.gz` beside the file is sent to who accepts gzip (nginx's gzip_static, off by default)",
    "HEAD /s/big.bin Range: bytes=0-9": "range requests are GET's (RFC 9110 §14.2): HEAD is answered whole; nginx 206",
    "GET /s/empty.txt Range: bytes=0-0": "no byte of an empty file can be satisfied: 416 (nginx 200)",
    "GET /s/big.bin Range: bytes=0-9,10-19": "ranges closer than a part's own head are coalesced into one (RFC 9110 §14.2 allows it)",
    "GET /s/big.bin Range: bytes=0-9,20-29": "the same",
    "GET /s/app.js": "text/javascript, RFC 9239's; the mime.types of Debian's nginx 1.22 says application/javascript",
    "GET /s/emptydir/": "a directory without an index is not listed, nor said to be there: 404, as Werkzeug's SharedData; nginx 403",
    "GET /s/big.bin Range: bytes=abc": "a Range that does not parse is ignored (RFC 9110 §14.2): 200; nginx 416",
    "GET /s/big.bin Range: bytes=4-2": "the same",
    "GET /s/a.txt If-Unmodified-Since: garbage": "an invalid date is ignored (RFC 9110 §13.1.4): 200; nginx 412",
    "GET /s/a.txt If-None-Match+If-Modified-Since(old)": "a matching If-None-Match wins, If-Modified-Since is ignored (RFC 9110 §13.2.2): 304; nginx 200",
    "GET /s/a.txt If-Modified-Since(future)": "a date in the future is still a date: 304, as Werkzeug; nginx's `if_modified_since exact` 200",
    "POST /s/a.txt": "405 with Allow (RFC 9110 §15.5.6), nginx's has none",
    "DELETE /s/a.txt": "the same",
}


def battery_static(binary):
    """--static against nginx's `alias`: names, types, directories, ranges, conditionals, methods."""
    root = Path(tempfile.mkdtemp(prefix="stackway-diff-static-"))
    (root / "dir").mkdir()
    (root / "emptydir").mkdir()
    files = {"a.txt": b"hello\n", "page.html": b"<p>hi</p>", "style.css": b"p{}", "app.js": b"1;",
             "image.png": b"\x89PNG\r\n\x1a\n" + bytes(50), "unknown.qqq": b"?", "noext": b"n",
             ".hidden": b"secret", "dir/index.html": b"<p>index</p>", "dir/.hidden": b"s",
             "a b.txt": b"space", "caf\u00e9.txt": b"cafe", "empty.txt": b"", "gz.txt": b"plain " * 50,
             "big.bin": bytes(range(256)) * 400}
    for name, data in files.items():
        (root / name).write_bytes(data)
    import gzip
    (root / "gz.txt.gz").write_bytes(gzip.compress(files["gz.txt"]))
    (root / "in").symlink_to(root / "a.txt")
    (root / "out").symlink_to("/etc/hostname")
    pair = Pair(binary, f"location /s/ {{ alias {root}/; }}", ["--static", f"/s={root}"],
                http="include /etc/nginx/mime.types; default_type application/octet-stream;")
    tally = Tally(STATIC_KNOWN)
    lm = (root / "a.txt").stat().st_mtime
    http_date = lambda t: time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(t))
    cases = [("GET", p, "") for p in
             ["/s/a.txt", "/s/page.html", "/s/style.css", "/s/app.js", "/s/image.png", "/s/unknown.qqq",
              "/s/noext", "/s/missing", "/s/.hidden", "/s/dir/.hidden", "/s/dir", "/s/dir?q=1", "/s/dir/",
              "/s/emptydir/", "/s//a.txt", "/s/a%2Ftxt", "/s/a%20b.txt", "/s/caf%C3%A9.txt", "/s/in", "/s/out",
              "/s/q%3Fx.txt", "/s/./a.txt", "/s/dir/../a.txt", "/s/a.txt?x=1", "/s/empty.txt", "/s/A.TXT"]]
    cases += [("GET", "/s/gz.txt", "Accept-Encoding: gzip"), ("GET", "/s/gz.txt", "")]
    for r in ["bytes=0-9", "bytes=-10", "bytes=102390-", "bytes=0-9,20-29", "bytes=0-9,10-19", "bytes=0-9,5000-5009",
              "bytes=999999-",
              "bytes=abc", "bytes=4-2", "items=0-1", "bytes=0-0"]:
        cases.append(("GET", "/s/big.bin", f"Range: {r}"))
    cases += [("GET", "/s/empty.txt", "Range: bytes=0-0"), ("HEAD", "/s/big.bin", "Range: bytes=0-9"),
              ("HEAD", "/s/a.txt", ""), ("POST", "/s/a.txt", ""), ("DELETE", "/s/a.txt", ""),
              ("OPTIONS", "/s/a.txt", "")]
    conditionals = {
        "If-Modified-Since(same)": f"If-Modified-Since: {http_date(lm)}",
        "If-Modified-Since(old)": f"If-Modified-Since: {http_date(lm - 3600)}",
        "If-Modified-Since(future)": f"If-Modified-Since: {http_date(time.time() + 86400)}",
        "If-Unmodified-Since(old)": f"If-Unmodified-Since: {http_date(lm - 3600)}",
        "If-Unmodified-Since: garbage": "If-Unmodified-Since: garbage",
        "If-None-Match: *": "If-None-Match: *",
        "If-Match: *": "If-Match: *",
        "If-Match: \"nope\"": "If-Match: \"nope\"",
    }

    def answer(port, method, target, extra):
        status, fields, body = parse(exchange(port, request(method, target, extra + "\r\n" if extra else "")),
                                     head=method == "HEAD")
        one = lambda name: (fields.get(name) or [None])[0]
        if status >= "400":
            # An error's page is each server's own: its status says it.
            return {"status": status, "range": one("content-range")}
        location = one("location")
        content_type = one("content-type")
        if content_type and content_type.startswith("text/"):
            content_type = content_type.removesuffix("; charset=utf-8")
        if content_type and content_type.startswith("multipart/byteranges"):
            # Each server's own boundary: the parts' ranges, not the bytes around them.
            parts = re.findall(rb"content-range: ([^\r]+)", body, re.I)
            return {"status": status, "type": "multipart/byteranges", "parts": [p.decode() for p in parts]}
        return {"status": status, "type": content_type, "length": one("content-length"),
                "range": one("content-range"), "encoding": one("content-encoding"),
                "location": location and urllib.parse.urlsplit(location).path,
                "last-modified": one("last-modified"), "etag": bool(one("etag")),
                "body": len(body) if status in ("200", "206") else None, "_etag": one("etag")}

    def compare(case, ref, ours):
        tally.compare(case, *({k: v for k, v in side.items() if not k.startswith("_")} for side in (ref, ours)))

    try:
        for method, target, extra in cases:
            answers = [answer(port, method, target, extra) for port in (pair.ref_port, pair.our_port)]
            compare(f"{method} {target}" + (f" {extra}" if extra else ""), *answers)
        for name, field in conditionals.items():
            answers = [answer(port, "GET", "/s/a.txt", field) for port in (pair.ref_port, pair.our_port)]
            compare(f"GET /s/a.txt {name}", *answers)
        # Validators each server made itself: its own ETag back to it.
        tags = [answer(port, "GET", "/s/a.txt", "")["_etag"] for port in (pair.ref_port, pair.our_port)]
        for name, field in {"If-None-Match(etag)": "If-None-Match: {}", "If-Range(etag)": "Range: bytes=0-1\r\nIf-Range: {}",
                            "If-None-Match+If-Modified-Since(old)": "If-None-Match: {}\r\nIf-Modified-Since: "
                            + http_date(lm - 3600)}.items():
            answers = [answer(port, "GET", "/s/a.txt", field.format(tag))
                       for port, tag in zip((pair.ref_port, pair.our_port), tags)]
            compare(f"GET /s/a.txt {name}", *answers)
    finally:
        pair.close()
    return tally.summary("static")


# --- Python batteries --------------------------------------------------------------------------

def python_env():
    """PYTHONPATH with uvicorn, websockets, gunicorn and Flask-CORS, installed into target/diff/pylib
    if the interpreter has them not."""
    env = dict(os.environ, PYTHONPATH=f"{HERE}:{PYLIB}")
    probe = [sys.executable, "-c", "import uvicorn, websockets, gunicorn"]
    if subprocess.run(probe, env=env, capture_output=True).returncode:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(PYLIB),
                        "uvicorn", "websockets", "gunicorn"], check=True)
    # The h2 library, the http2 battery's client.
    if not (PYLIB / "h2").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(PYLIB), "h2"], check=True)
    # Flask-CORS and the Flask it runs on, where stackway's interpreter finds them too.
    if not (PYLIB / "flask_cors").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(PYLIB),
                        "flask", "flask-cors"], check=True)
    sys.path.insert(0, str(PYLIB))
    return env


def reference_python(server, app, env, args=()):
    """gunicorn or uvicorn serving `app` of apps.py on a free port with `args`, once it listens."""
    port = free_port()
    args = {"gunicorn": ["-b", f"127.0.0.1:{port}", "--chdir", str(HERE)],
            "uvicorn": ["--port", str(port), "--app-dir", str(HERE)]}[server] + list(args)
    proc = spawn([sys.executable, "-m", server, *args, "--log-level", "critical", f"apps:{app}"],
                            env=env, stderr=subprocess.DEVNULL)
    wait_for(port)
    return proc, port


def stackway_python(binary, app, env, mounts=(), args=()):
    """`stackway serve ARGS` with `app` (of apps.py) at the root, and `mounts` beside it, once it
    listens."""
    port = free_port()
    mounts = [f"/={app}", *mounts]
    proc = spawn([binary, "serve", "--bind", f"127.0.0.1:{port}", "--log-level", "error",
                             "--pythonpath", str(HERE), "--pythonpath", str(PYLIB), *args]
                            + [arg for mount in mounts for arg in ("--mount", mount)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(port)
    return proc, port


WEBSOCKET_KNOWN = {
    "/reject": "the refusal's 403 has no Content-Type (uvicorn's says text/plain)",
    "/reject-4001": "the same",
    "/no-accept-return": "an app that returns without a word refuses the handshake: 403 (uvicorn 500)",
    "/crash-before": "the 500's body says its status",
    "/crash-after": "closed with 1011, an internal error (RFC 6455 §7.4.1); uvicorn drops the connection (1006)",
    "/return": "an app that returns closes with 1000; uvicorn drops the connection (1006)",
    "/send-both": "the same",
    "/send-neither": "closed with 1011 (uvicorn drops the connection)",
    "/double-accept": "the same",
}


def ws_session(port, path, subprotocols, actions):
    """A WebSocket session with the `websockets` client: each action a message sent, `recv`, or
    `closeNNNN`; what came of it."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
    from websockets.sync.client import connect

    out = []
    try:
        with connect(f"ws://127.0.0.1:{port}{path}", subprotocols=subprotocols, open_timeout=3,
                     close_timeout=2, max_size=None) as ws:
            out.append(("open", ws.response.status_code, ws.subprotocol, ws.response.headers.get("x-extra")))
            for action in actions:
                if action == "recv":
                    try:
                        m = ws.recv(timeout=2)
                        out.append(("message", m if isinstance(m, str) else len(m)))
                    except TimeoutError:
                        out.append("nothing")
                    except ConnectionClosed:
                        out.append("closed")
                elif action.startswith("close"):
                    ws.close(int(action[5:] or 1000), "client bye")
                else:
                    ws.send(action)
            try:
                ws.recv(timeout=2)
                out.append("a message more")
            except ConnectionClosed:
                pass
            except TimeoutError:
                out.append("still open")
                ws.close()
            out.append(("closed", int(ws.close_code or 0), ws.close_reason))
    except InvalidStatus as e:
        r = e.response
        out.append(("http", r.status_code, r.headers.get("content-type"), bytes(r.body[:40])))
    except (InvalidHandshake, OSError, EOFError) as e:
        out.append(("failed", type(e).__name__))
    return out


WS_CASES = [("/echo", None, ["hi", "recv", "close"]), ("/echo", ["a", "b"], ["close4002"]),
            ("/scope?q=1", ["chat", "superchat"], ["recv"]), ("/reject", None, []),
            ("/reject-4001", None, []), ("/no-accept-return", None, []), ("/deny", None, []),
            ("/accept-sub", ["one", "two"], ["recv"]), ("/crash-before", None, []),
            ("/crash-after", None, ["recv"]), ("/close-reason", None, []), ("/return", None, ["recv"]),
            ("/send-both", None, []), ("/send-neither", None, []), ("/double-accept", None, []),
            ("/big", None, ["recv"]), ("/push", None, ["recv", "close4003"])]


def battery_websocket(binary):
    """ASGI WebSockets against uvicorn with the `websockets` client: handshakes, refusals,
    messages, close codes and reasons both ways, and what `send` does once the client has gone."""
    env = python_env()
    uvicorn, uv_port = reference_python("uvicorn", "websocket", env)
    ours, our_port = stackway_python(binary, "asgi:apps:websocket", env)
    tally = Tally(WEBSOCKET_KNOWN)

    try:
        for path, subprotocols, actions in WS_CASES:
            answers = []
            for port in (uv_port, our_port):
                got = ws_session(port, path, subprotocols, actions)
                if path.startswith(("/disconnect", "/push")):
                    time.sleep(0.3)
                    got.append(json_get(port, "/report"))
                answers.append(got)
            tally.compare(path, *answers)
    finally:
        killed(uvicorn, ours)
    return tally.summary("websocket")


def battery_proxy_websocket(binary):
    """WebSockets through a mount of an upstream against nginx's `proxy_pass` with the Upgrade
    fields passed on, to the same uvicorn app: the handshake, messages, closes both ways."""
    env = python_env()
    uvicorn, uv_port = reference_python("uvicorn", "websocket", env)
    tally = Tally({})
    upstream = type("Uvicorn", (), {"port": uv_port})()
    forwarded = NGINX_FORWARDED.replace('proxy_set_header Connection "";', "")
    pair = Pair(binary, f"location / {{ proxy_pass http://UPSTREAM; {forwarded} proxy_set_header Upgrade $http_upgrade; "
                        "proxy_set_header Connection $connection_upgrade; }",
                ["--mount", "/=http://UPSTREAM"], upstream=upstream,
                http="map $http_upgrade $connection_upgrade { default upgrade; '' close; }")
    try:
        for path, subprotocols, actions in WS_CASES:
            answers = []
            for port in (pair.ref_port, pair.our_port):
                got = ws_session(port, path, subprotocols, actions)
                if path.startswith("/push"):
                    time.sleep(0.3)
                    got.append(json_get(port, "/report").get("push"))
                answers.append(got)
            tally.compare(path, *answers)
    finally:
        pair.close()
        killed(uvicorn)
    return tally.summary("proxy-websocket")


def json_get(port, path):
    import urllib.request
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3).read())


def battery_wsgi_input(binary):
    """wsgi.input and wsgi.errors against gunicorn: read, read(n), readline, readlines, iteration,
    for a body framed by its length, chunked, and none."""
    env = python_env()
    gunicorn, gu_port = reference_python("gunicorn", "wsgi_input", env)
    ours, our_port = stackway_python(binary, "wsgi:apps:wsgi_input", env)
    tally = Tally({"readlines(3)": "the hint is honoured as io's readlines honours it; gunicorn ignores it (PEP 3333 lets it)"})
    body = b"ab\ncd\n\nefgh"
    try:
        for framing in ["length", "chunked", "none"]:
            for mode in ["read", "read(3)", "readline", "readline(2)", "readlines", "readlines(3)", "iter",
                         "read(-1)", "read(None)", "read(0)", "read past", "read twice", "errors"]:
                target = "/" + urllib.parse.quote(mode)
                if framing == "length":
                    data = request("POST", target, f"Content-Length: {len(body)}\r\n") + body
                elif framing == "chunked":
                    data = request("POST", target, "Transfer-Encoding: chunked\r\n") + b"5\r\n" + body[:5] \
                        + b"\r\n" + b"%x\r\n" % (len(body) - 5) + body[5:] + b"\r\n0\r\n\r\n"
                else:
                    data = request("GET", target)
                answers = [parse(exchange(port, data, 3))[2] for port in (gu_port, our_port)]
                tally.compare(f"{mode}" if framing == "length" else f"{mode} ({framing})",
                              *[json.loads(a or b"null") for a in answers])
    finally:
        killed(gunicorn, ours)
    return tally.summary("wsgi-input")


def answer_of(port, method, path, version="1.1", own_headers=()):
    """What a client gets for `method path`: the status, the fields (those in `own_headers`, each
    server's own, left out), the body's first 100 bytes and whether its framing says it is whole;
    only the status of a 500 (each server's own page); the first bytes of what is not HTTP/1."""
    data = exchange(port, f"{method} {path} HTTP/{version}\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                    .encode(), 3)
    if not data.startswith(b"HTTP/1."):
        return data[:80]
    status, fields, body = parse(data, head=method == "HEAD")
    if status == "500":
        return status
    fields = {k: v for k, v in fields.items() if k not in own_headers}
    chunked = "chunked" in ",".join(fields.get("transfer-encoding", []))
    length = fields.get("content-length", [None])[0]
    complete = data.endswith(b"0\r\n\r\n") if chunked else length is None or str(len(body)) == length
    return status, sorted(fields.items()), body[:100], complete


def compare_answers(tally, ports, gets, heads=(), http10=()):
    """Each path of `gets` asked as a GET of both servers, of `heads` as a HEAD, of `http10` as an
    HTTP/1.0 GET; the servers' own Date and Server left out but where the app names its own."""
    own = lambda how: () if how == "date-server" else ("date", "server")
    for how in gets:
        tally.compare(how, *(answer_of(port, "GET", f"/{how}", own_headers=own(how)) for port in ports))
    for how in heads:
        tally.compare(f"{how} (HEAD)", *(answer_of(port, "HEAD", f"/{how}", own_headers=own(how)) for port in ports))
    for how in http10:
        tally.compare(f"{how} (HTTP/1.0)", *(answer_of(port, "GET", f"/{how}", "1.0", own(how)) for port in ports))


WSGI_RESPONSE_KNOWN = {
    "no-start-response": "500, the app's mistake; gunicorn sends the status line `HTTP/1.1 None`",
    "status-099": "500: no status PEP 3333 allows (three digits, a final one); gunicorn passes it",
    "header-upgrade": "an app's Upgrade is left out as its other connection fields are (it can switch to nothing); "
                      "gunicorn keeps `Upgrade: websocket` for its own WebSocket support",
    "date-server": "the app's Date and Server stand (as Werkzeug's server lets them); gunicorn puts its own",
    "cl-twice": "one value sent twice is sent once",
    "cl-negative": "500, the app's mistake; gunicorn sends `Content-Length: -1`",
    "str-body": "500 before the head: PEP 3333's body is bytes; gunicorn sends a 200 head and cuts the body",
    "bytearray": "the same, for a bytearray",
    "memoryview": "the same, for a memoryview",
    "bytes-body": "the same, for a body of bytes rather than an iterable of them",
    "plain (HTTP/1.0)": "an HTTP/1.0 answer without `Connection: close`, the version's default (RFC 9112 §9.3)",
    "generator (HTTP/1.0)": "the same", "raise-mid-body (HTTP/1.0)": "the same", "write (HTTP/1.0)": "the same",
}

WSGI_RESPONSE_CASES = [
    "plain", "raise-before", "no-start-response", "status-no-reason", "status-lower", "status-invalid", "status-999",
    "status-bytes", "status-099", "status-extra-space", "status-tab", "204-with-body", "304-with-body", "hop-by-hop",
    "transfer-encoding", "header-crlf", "header-lf", "header-non-latin1", "header-latin1", "header-name-space",
    "header-name-colon", "header-name-empty", "header-value-int", "header-lists", "header-upgrade", "two-set-cookie",
    "date-server", "cl-short", "cl-long", "cl-invalid", "cl-twice", "cl-negative", "header-trailing-space",
    "no-content-type", "start-twice", "exc-info", "exc-info-after", "raise-after-start", "raise-mid-body", "write",
    "write-only", "str-body", "str-second", "bytearray", "memoryview", "generator", "empty", "empty-strings",
    "none-body", "bytes-body", "file-wrapper", "big",
]


def battery_wsgi_response(binary):
    """What a client gets of a WSGI app's answer against gunicorn: statuses, fields, bodies,
    framing, and the app's mistakes (PEP 3333's rules broken) before and after its head."""
    env = python_env()
    gunicorn, gu_port = reference_python("gunicorn", "wsgi_response", env)
    ours, our_port = stackway_python(binary, "wsgi:apps:wsgi_response", env)
    tally = Tally(WSGI_RESPONSE_KNOWN)

    try:
        compare_answers(tally, (gu_port, our_port), WSGI_RESPONSE_CASES,
                        ["plain", "generator", "cl-short", "empty", "write"],
                        ["plain", "generator", "raise-mid-body", "write"])
    finally:
        killed(gunicorn, ours)
    return tally.summary("wsgi-response")


ASGI_RESPONSE_KNOWN = {
    "status-099": "500, the app's mistake; uvicorn closes the connection without a word",
    "status-str": "the same, for a status that is no int",
    "status-1xx": "the same, for an interim status as the answer",
    "header-crlf": "the same, for a header value with a line break",
    "header-name-space": "the same, for a header name that is no token",
    "cl-invalid": "the same, for a Content-Length that is no length",
    "status-999": "a three-digit status is passed, as for a WSGI app and under gunicorn; uvicorn's h11 closes the connection",
    "header-trailing-space": "the whitespace after a value is no part of it (RFC 9110 §5.5): sent without; h11 closes the connection",
    "date-server": "the app's Date and Server stand alone; uvicorn sends its own beside them, two of each",
    "cl-long": "the declared length is sent and the rest dropped, as gunicorn does for a WSGI app; uvicorn cuts the body short",
    "start-twice": "500: the head is held until the body's first piece, so a mistake before it is still a 500; "
                   "uvicorn has sent a 200 head and cuts the body",
    "raise-after-start": "the same", "return-after-start": "the same", "unknown-message": "the same",
    "body-str": "the same, for a body of text",
    "plain (HEAD)": "a HEAD answer with neither length nor chunking, as the app gave none; uvicorn says chunked",
    "pieces (HEAD)": "the same",
    "plain (HTTP/1.0)": "an HTTP/1.0 answer without `Connection: close`, the version's default (RFC 9112 §9.3)",
    "pieces (HTTP/1.0)": "the same", "raise-mid-body (HTTP/1.0)": "the same",
}

ASGI_RESPONSE_CASES = [
    "plain", "raise-before", "return-before", "body-before-start", "status-099", "status-999", "status-str",
    "204-with-body", "304-with-body", "status-1xx", "hop-by-hop", "transfer-encoding", "header-crlf",
    "header-name-space", "header-name-upper", "header-lists", "header-upgrade", "two-set-cookie", "date-server",
    "cl-short", "cl-long", "cl-invalid", "cl-twice", "no-content-type", "header-value-latin1",
    "header-trailing-space", "start-twice", "raise-after-start", "return-after-start", "raise-mid-body",
    "return-mid-body", "send-after-end", "pieces", "no-body-key", "body-str", "bytearray", "unknown-message",
    "trailers-unasked",
]


def battery_asgi_response(binary):
    """What a client gets of an ASGI app's answer against uvicorn: statuses, headers, bodies,
    framing, and the app's mistakes before and after its start."""
    env = python_env()
    uvicorn, uv_port = reference_python("uvicorn", "asgi_response", env)
    ours, our_port = stackway_python(binary, "asgi:apps:asgi_response", env)
    tally = Tally(ASGI_RESPONSE_KNOWN)
    try:
        compare_answers(tally, (uv_port, our_port), ASGI_RESPONSE_CASES, ["plain", "pieces", "cl-short"],
                        ["plain", "pieces", "raise-mid-body"])
    finally:
        killed(uvicorn, ours)
    return tally.summary("asgi-response")


MISTAKE = "the app's mistake is a 500 from stackway"
UWSGI_RESPONSE_KNOWN = {
    "raise-before": f"{MISTAKE}; uWSGI closes the connection, which nginx makes a 502",
    "no-start-response": "the same", "status-bytes": "the same", "header-name-space": "the same",
    "status-invalid": f"{MISTAKE}; uWSGI answers 200",
    "status-tab": "the same", "cl-invalid": "the same", "cl-negative": "the same",
    "status-099": f"{MISTAKE}; uWSGI passes the status on",
    "header-crlf": f"{MISTAKE}; uWSGI sends the line break, and the client reads a header the app never named",
    "header-lf": "the same",
    "header-name-colon": f"{MISTAKE}; uWSGI sends it, and the client reads another name",
    "header-name-empty": f"{MISTAKE}; uWSGI sends `: 1`, which nginx reads as a field named 1",
    "header-non-latin1": f"{MISTAKE}; uWSGI leaves the header and the body out",
    "header-value-int": "the same",
    "header-lists": "taken as tuples are, as gunicorn takes them; uWSGI leaves the headers and the body out",
    "header-upgrade": "an app's connection fields are left out, as gunicorn leaves them out; uWSGI passes them",
    "start-twice": f"{MISTAKE} (PEP 3333: a second start_response without exc_info is an error); uWSGI takes the second",
    "raise-after-start": f"{MISTAKE}, as nothing of the answer has gone yet; uWSGI sends the 200 with an empty body",
    "str-body": f"{MISTAKE}, before the head; uWSGI sends a 200 with an empty body",
    "bytearray": "the same", "memoryview": "the same",
    "none-body": "the same, for a body that is None",
    "bytes-body": f"{MISTAKE}: bytes are no iterable of bytes (PEP 3333), as gunicorn refuses them; uWSGI sends them",
}


def uwsgi_binary():
    """uWSGI from PyPI, installed into target/diff/uwsgi when missing (it builds its C)."""
    venv = ROOT / "target" / "diff" / "uwsgi"
    if not (venv / "bin" / "uwsgi").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "uwsgi"], check=True)
    return str(venv / "bin" / "uwsgi")


def behind_uwsgi_pass(binary, app, env, locations):
    """uWSGI and stackway's uwsgi listener each serving `app` of apps.py, each behind an nginx
    server of `locations(upstream)`: the processes, and the two servers' ports, once all listen."""
    uwsgi_port, ours_port = free_port(), free_port()
    uwsgi = spawn([uwsgi_binary(), "--socket", f"127.0.0.1:{uwsgi_port}", "--chdir", str(HERE),
                   "--module", f"apps:{app}", "--master", "--processes", "1",
                   "--disable-logging", "--die-on-term"], env=env,
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ours = spawn([binary, "serve", "--bind", f"uwsgi://127.0.0.1:{ours_port}", "--log-level", "error",
                  "--pythonpath", str(HERE), "--mount", f"/=wsgi:apps:{app}"], env=env,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    front = tempfile.mkdtemp(prefix="stackway-diff-")
    ref_port, our_port = free_port(), free_port()
    second = f"server {{ listen 127.0.0.1:{our_port}; server_name localhost; {locations(f'127.0.0.1:{ours_port}')} }}"
    Path(front, "nginx.conf").write_text(NGINX.format(d=front, port=ref_port, http=second,
                                                      server=locations(f"127.0.0.1:{uwsgi_port}")))
    nginx = spawn(["nginx", "-p", front, "-c", f"{front}/nginx.conf"])
    for port in (uwsgi_port, ours_port, ref_port, our_port):
        wait_for(port)
    return (nginx, uwsgi, ours), ref_port, our_port


def battery_uwsgi_response(binary):
    """Behind nginx's `uwsgi_pass`, what a client gets of a WSGI app's answer from stackway's
    uwsgi listener against uWSGI's: statuses, fields, bodies, framing and the app's mistakes."""
    procs, ref_port, our_port = behind_uwsgi_pass(
        binary, "wsgi_response", python_env(),
        lambda up: f"location / {{ include /etc/nginx/uwsgi_params; uwsgi_pass {up}; }}")
    tally = Tally(UWSGI_RESPONSE_KNOWN)
    try:
        compare_answers(tally, (ref_port, our_port), WSGI_RESPONSE_CASES,
                        ["plain", "generator", "cl-short", "empty", "write"])
    finally:
        killed(*procs)
    return tally.summary("uwsgi-response")


UWSGI_ENVIRON_KNOWN = {
    "SCRIPT_NAME": "present, empty, as PEP 3333 requires it; uWSGI leaves it out when nginx sends none",
    "RAW_URI": "gunicorn's name for the client's target, given beside REQUEST_URI; uWSGI has none",
    "PATH_INFO (modifier1 30)": "SCRIPT_NAME taken off the front of PATH_INFO, as `uwsgi_modifier1 30` asks; uWSGI 2 "
                                "leaves it on, and the app's URLs carry the prefix twice",
    "headers repeated, cased, empty": "a field's lines joined with `, ` (RFC 9110 §5.3); nginx sends a variable a line "
                                      "and uWSGI keeps the last",
    "two Cookie lines": "joined with `; `, one cookie string; uWSGI keeps the last line, and loses the first cookie",
    "Content-Type, and a name with an underscore": "no HTTP_CONTENT_TYPE beside CONTENT_TYPE (RFC 3875 §4.1.18); "
                                                   "uWSGI keeps nginx's",
    "a body by length": "the same, for HTTP_CONTENT_LENGTH",
    "an empty body": "the same",
    "Expect: 100-continue": "the same",
    "a body chunked": "no HTTP_TRANSFER_ENCODING: nginx read the chunks and sends the body by its length, and "
                      "Werkzeug would take `chunked` for a body to read to its end",
    "X-Forwarded-For and -Proto from 127.0.0.1": "a front's word is taken only under --proxy-fix; uWSGI takes "
                                                 "X-Forwarded-Proto from anyone",
}


def battery_uwsgi_environ(binary):
    """Behind nginx's `uwsgi_pass` with Debian's `uwsgi_params`, the WSGI environ stackway's
    uwsgi listener makes against uWSGI's, for `raw_requests()`: at the root, and under a
    `location /app` that names its SCRIPT_NAME with `uwsgi_modifier1 30`."""
    locations = lambda up: (f"location / {{ include /etc/nginx/uwsgi_params; uwsgi_pass {up}; }} "
                            f"location /app {{ include /etc/nginx/uwsgi_params; uwsgi_param SCRIPT_NAME /app; "
                            f"uwsgi_modifier1 30; uwsgi_pass {up}; }}")
    procs, ref_port, our_port = behind_uwsgi_pass(binary, "environ", python_env(), locations)
    tally = Tally(UWSGI_ENVIRON_KNOWN)

    def normalise(environ, port):
        environ = {k: v for k, v in environ.items() if not k.startswith(ENVIRON_OWN + ("uwsgi.",))}
        for key in ("REMOTE_PORT", "SERVER_PORT"):
            if key in environ:
                environ[key] = "PORT"
        if port == ref_port and environ.get("SCRIPT_NAME") == "/app":
            # uWSGI's PATH_INFO as modifier1 30 would make it: compared once, below.
            environ["PATH_INFO"] = environ["PATH_INFO"].removeprefix("/app")
        return environ

    try:
        compare_dumps(tally, (ref_port, our_port), ["SCRIPT_NAME", "RAW_URI"], normalise)
        requests = mounted_requests(reference_under=True)
        tally.compare("PATH_INFO (modifier1 30)",
                      *(dump(port, requests["a query"][0])["PATH_INFO"] for port in (ref_port, our_port)))
        compare_dumps(tally, (ref_port, our_port), ["RAW_URI"], normalise, requests, " (under /app)")
    finally:
        killed(*procs)
    return tally.summary("uwsgi-environ")


DISPATCH_KNOWN = {
    "/a%2Fb": "an encoded slash is no separator: the segment `a/b` is no mount's (the proxy passes it on as it came); "
              "PATH_INFO decodes it, so Werkzeug's match is `/a/b`",
    "/a/%2E%2E/c": "dot segments are refused (400): a mount's app never gets a path that climbs out of it",
    "/a/./x": "the same", "/a/../c": "the same",
}


def battery_dispatch(binary):
    """The Dispatcher against Werkzeug's DispatcherMiddleware (under gunicorn) over the same
    mounts: which app a path reaches, with what SCRIPT_NAME and PATH_INFO."""
    env = python_env()
    sys.path.insert(0, str(HERE))
    from apps import MOUNTS
    gunicorn, gu_port = reference_python("gunicorn", "dispatched", env)
    ours, our_port = stackway_python(binary, "wsgi:apps:where_root", env, [
        f"{urllib.parse.quote(prefix)}=wsgi:apps:where_{name}" for prefix, name in MOUNTS.items()])
    tally = Tally(DISPATCH_KNOWN)
    paths = ["/", "/a", "/a/", "/a/x", "/a/x/", "/ab", "/a/b", "/a/b/", "/a/b/c", "/a/bc", "/a//b", "//a", "/A",
             "/c", "/c/", "/c/x", "/x%20y", "/x%20y/z", "/caf%C3%A9", "/caf%C3%A9/x", "/caf%c3%a9/x", "/a%2Fb",
             "/%61/x", "/a/%2E%2E/c", "/a/./x", "/a/../c", "/a?q=1", "/a/x?q=/b", "/d", "/d/e", "/d/e/f",
             "/d/e/f/g", "/d/e/fg", "/a;p/x", "/a/x;p", "/%FF"]
    try:
        for path in paths:
            tally.compare(path, *(dump(port, request("GET", path)) for port in (gu_port, our_port)))
    finally:
        killed(gunicorn, ours)
    return tally.summary("dispatch")


SHARED_DATA_KNOWN = {
    "/static/dir": "a directory with an index is redirected to its slash (308) and its index served, as nginx's "
                   "`index`; Werkzeug's passes it to the app",
    "/static/dir/": "the same",
    "/static/dir/b.txt/": "a file is no directory: the app's; Werkzeug serves the file",
    "/static/.hidden": "dot-files are never served: the app's; Werkzeug serves them",
    "/static/out/hostname": "a symlink that leaves the root is not followed: the app's; Werkzeug serves /etc/hostname",
    "/static/../etc/hostname": "dot segments are refused (400), the Dispatcher's rule; Werkzeug passes them to the app",
    "/static/%2e%2e/a.txt": "the same",
    "/static/dir/../a.txt": "the same; Werkzeug serves the file they resolve to",
    "/static/dir%2Fb.txt": "an encoded slash is no separator: no file has that name; Werkzeug decodes it and serves "
                           "dir/b.txt",
    "POST /static/a.txt": "405 with Allow: a file answers GET and HEAD (nginx's 405 too); Werkzeug serves it to a POST",
}


def battery_shared_data(binary):
    """--static in front of a WSGI app against Werkzeug's SharedData (under gunicorn): which
    requests a file answers and which fall through to the app."""
    root = Path(tempfile.mkdtemp(prefix="stackway-diff-shared-"))
    for name, data in {"a.txt": "a", "dir/b.txt": "b", "dir/index.html": "index", ".hidden": "h",
                       "a b.txt": "space", "caf\u00e9.txt": "cafe", "UPPER.TXT": "upper"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(data)
    (root / "emptydir").mkdir()
    (root / "out").symlink_to("/etc")
    env = dict(python_env(), STACKWAY_DIFF_STATIC=str(root))
    gunicorn, gu_port = reference_python("gunicorn", "shared", env)
    ours, our_port = stackway_python(binary, "wsgi:apps:fallthrough", env, args=["--static", f"/static={root}"])
    tally = Tally(SHARED_DATA_KNOWN)
    paths = ["/static/a.txt", "/static/missing", "/static", "/static/", "/static/dir", "/static/dir/",
             "/static/dir/b.txt", "/static/dir/b.txt/", "/static/.hidden", "/static/a%20b.txt",
             "/static/caf%C3%A9.txt", "/static/upper.txt", "/static/UPPER.TXT", "/static/emptydir",
             "/static/out/hostname", "/static/../etc/hostname", "/static/%2e%2e/a.txt", "/static/dir/../a.txt",
             "/static//a.txt", "/static/a.txt?x=1", "/staticx/a.txt", "/STATIC/a.txt", "/a.txt",
             "/static/dir%2Fb.txt", "/static/a.txt%00"]

    def outcome(port, path, method="GET"):
        status, fields, body = parse(exchange(port, request(method, path)), head=method == "HEAD")
        return status, body.decode("latin-1") if status == "200" else None

    try:
        for path in paths:
            tally.compare(path, outcome(gu_port, path), outcome(our_port, path))
        tally.compare("HEAD /static/a.txt", outcome(gu_port, "/static/a.txt", "HEAD"),
                      outcome(our_port, "/static/a.txt", "HEAD"))
        tally.compare("POST /static/a.txt", outcome(gu_port, "/static/a.txt", "POST"),
                      outcome(our_port, "/static/a.txt", "POST"))
    finally:
        killed(gunicorn, ours)
    return tally.summary("shared-data")


def battery_max_requests(binary):
    """--max-requests 5 against gunicorn's, one process each: which process answers each
    request of a sequence on connections of their own, then on one kept connection (gunicorn's
    closes each). The reference is its sync worker, which accepts a connection only after it
    has served the last: its gthread worker's accept loop can take the next connection in the
    moment its limit is reached and serve one request past it."""
    env = python_env()
    gunicorn, gu_port = reference_python("gunicorn", "pid", env, ["--max-requests", "5"])
    ours, our_port = stackway_python(binary, "wsgi:apps:pid", env, args=["--max-requests", "5"])
    tally = Tally({})

    def sequence(port):
        """For each request: the how-manyth process answered it, and whether it found its kept
        connection closed and went again."""
        seen, answers = [], []

        def answer(response, retried):
            pid = response.read().decode()
            if pid not in seen:
                seen.append(pid)
            answers.append((seen.index(pid), retried))

        for _ in range(12):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/")
            answer(conn.getresponse(), False)
            conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(13):
            try:
                conn.request("GET", "/")
                answer(conn.getresponse(), False)
            except (http.client.HTTPException, OSError):
                conn.close()
                conn.request("GET", "/")
                answer(conn.getresponse(), True)
        conn.close()
        return answers

    try:
        ref, mine = sequence(gu_port), sequence(our_port)
        for n, (a, b) in enumerate(zip(ref, mine), 1):
            where = "its own connection" if n <= 12 else "the kept connection"
            tally.compare(f"request {n} on {where}", a, b)
    finally:
        killed(gunicorn, ours)
    return tally.summary("max-requests")


CORS_KNOWN = {
    "preflight of CONNECT": "the methods allowed are listed whatever was asked, and the browser refuses one not among "
                            "them: the same outcome; Flask-CORS lists none",
    "preflight of no route": "a preflight is answered before the app, as a front answers it: the request that follows "
                             "gets the app's 404, readable; Flask-CORS's preflight is the 404, which fails it",
}


def battery_cors(binary):
    """--cors against Flask-CORS's defaults on the same Flask app (under gunicorn): any origin,
    and one: simple requests, preflights, and what they vary by."""
    env = python_env()
    tally = Tally(CORS_KNOWN)
    origin = lambda o: f"Origin: {o}\r\n"
    preflight = lambda o, method, headers="": (origin(o) + f"Access-Control-Request-Method: {method}\r\n"
                                               + (f"Access-Control-Request-Headers: {headers}\r\n" if headers else ""))
    cases = [
        ("GET without Origin", "GET", "/", ""),
        ("GET", "GET", "/", origin("https://a.example")),
        ("GET from another origin", "GET", "/", origin("https://b.example")),
        ("GET from null", "GET", "/", origin("null")),
        ("GET of a route with its own header", "GET", "/header", origin("https://a.example")),
        ("GET of no route", "GET", "/missing", origin("https://a.example")),
        ("POST", "POST", "/", origin("https://a.example")),
        ("preflight PUT", "OPTIONS", "/", preflight("https://a.example", "PUT")),
        ("preflight with headers", "OPTIONS", "/", preflight("https://a.example", "POST", "X-A, Content-Type")),
        ("preflight from another origin", "OPTIONS", "/", preflight("https://b.example", "PUT")),
        ("preflight of CONNECT", "OPTIONS", "/", preflight("https://a.example", "CONNECT")),
        ("preflight of a lowercase method", "OPTIONS", "/", preflight("https://a.example", "put")),
        ("OPTIONS without a method asked", "OPTIONS", "/", origin("https://a.example")),
        ("preflight of no route", "OPTIONS", "/missing", preflight("https://a.example", "GET")),
    ]
    def answer(port, method, path, extra):
        """What a browser makes of it (Fetch's CORS check, no credentials): the status's class,
        whether the origin may read it, and, for a preflight, the methods and headers allowed.
        How each says so (`*` or the origin echoed, its Vary, 200 or 204) is each one's own."""
        status, fields, _ = parse(exchange(port, request(method, path, extra)))
        one = lambda name: (fields.get(name) or [""])[0]
        sent = re.search(r"Origin: (\S+)", extra)
        allowed = sent is not None and one("access-control-allow-origin") in ("*", sent.group(1))
        listed = lambda name: sorted({t.strip().lower() for t in one(name).split(",") if t.strip()} - {"options"})
        if "Access-Control-Request-Method" in extra:
            return status[0], allowed, listed("access-control-allow-methods"), listed("access-control-allow-headers")
        return status[0], allowed

    for which, rule in [("any", "*"), ("one", "https://a.example")]:
        gunicorn, gu_port = reference_python("gunicorn", f"flask_cors_{which}", env)
        ours, our_port = stackway_python(binary, "wsgi:apps:flask_plain", env, args=["--cors", rule])
        try:
            for case, method, path, extra in cases:
                tally.compare(f"{case} ({which})", *(answer(p, method, path, extra) for p in (gu_port, our_port)))
        finally:
            killed(gunicorn, ours)
    return tally.summary("cors")


def raw_requests():
    """Raw requests for the apps that answer what they were given: paths, queries, encodings,
    headers, bodies, versions."""
    get = lambda target, extra="", version="1.1": \
        f"GET {target} HTTP/{version}\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n".encode()
    post = lambda extra, body: \
        f"POST /p HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n".encode() + body
    return {
        "the root": get("/"),
        "a query": get("/a/b?x=1&y=%20&z"),
        "an empty query": get("/q?"),
        "UTF-8 percent-encoded": get("/caf%C3%A9?q=caf%C3%A9"),
        "invalid UTF-8 percent-encoded": get("/%FF%FE"),
        "an encoded slash": get("/a%2Fb"),
        "a % that escapes nothing": get("/a%zzb"),
        "a % cut short": get("/a%2"),
        "a space encoded": get("/a%20b"),
        "a doubled slash": get("//double//slash"),
        "a dot segment": get("/a/./b/../c"),
        "path parameters": get("/a;b=c/d"),
        "a fragment in the target": get("/f?x=1#frag"),
        "absolute-form target": get("http://other.example:81/abs?q"),
        "Host with a port": b"GET / HTTP/1.1\r\nHost: example.com:8080\r\nConnection: close\r\n\r\n",
        "Host an IPv6 literal": b"GET / HTTP/1.1\r\nHost: [::1]:81\r\nConnection: close\r\n\r\n",
        "HTTP/1.0 without Host": b"GET /old HTTP/1.0\r\n\r\n",
        "HTTP/1.0 with Host": get("/old", version="1.0"),
        "headers repeated, cased, empty": get("/h", "X-A: 1\r\nx-a: 2\r\nX-MiXeD: Case\r\nX-Empty:\r\n"),
        "two Cookie lines": get("/c", "Cookie: a=1\r\nCookie: b=2\r\n"),
        "Content-Type, and a name with an underscore": get("/u", "Content-Type: text/plain\r\nX_Under: 1\r\n"),
        "HTTP/1.1 without Host": b"GET /nohost HTTP/1.1\r\nConnection: close\r\n\r\n",
        "an empty Host": b"GET /emptyhost HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
        "a header value with tabs and spaces": get("/t", "X-Sp:  \t padded \t \r\n"),
        "a header value in latin-1": b"GET /l HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Latin: caf\xe9\r\n\r\n",
        "X-Forwarded-For and -Proto from 127.0.0.1": get("/xf", "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n"),
        "a body by length": post("Content-Length: 11\r\n", b"hello world"),
        "a body chunked": post("Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        "an empty body": post("Content-Length: 0\r\n", b""),
        "Expect: 100-continue": post("Content-Length: 2\r\nExpect: 100-continue\r\n", b"hi"),
        "HEAD": b"HEAD /h HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        "OPTIONS *": b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        "a method of its own": b"PURGE /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    }


def mounted_requests(reference_under=False):
    """`raw_requests()` with an origin-form target, as pairs: the request as it is, for a
    reference told its prefix (a front took it off), or with `/app` in front too where
    `reference_under`; and with `/app` in front, for stackway's mount at `/app`."""
    under = lambda data: re.sub(rb"^(\w+) /", rb"\1 /app/", data)
    return {name: (under(data) if reference_under else data, under(data))
            for name, data in raw_requests().items() if under(data) != data}


# The differences on purpose of both servers that answer `raw_requests()`.
RAW_KNOWN = {
    "a dot segment": "dot segments are refused (400), as the Dispatcher's rule",
    "a fragment in the target": "the fragment is no part of the target (RFC 9110 §7.1): left out, where the reference keeps it",
    "X-Forwarded-For and -Proto from 127.0.0.1": "a front's word is taken only under --proxy-fix; the reference trusts 127.0.0.1's by default",
}
SCOPE_KNOWN = RAW_KNOWN | {
    "asgi": "spec version 2.4: `send` raises once the client has gone; uvicorn says 2.3 for `http`",
    "absolute-form target": "`path` is the target's path; uvicorn puts the whole absolute URI in it",
}


def dump(port, data):
    """What an app that answers what it was given (as JSON) says to `data`; else the status."""
    answer = exchange(port, data, 3)
    status, _, body = parse(answer.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n"))
    return json.loads(body) if status == "200" and body else status


def compare_dumps(tally, ports, once, normalise, cases=None, suffix=""):
    """`cases` (`raw_requests()` by default; a case may be a pair, the reference's request and
    stackway's) to both ports, printing the keys whose values differ. The keys in `once`
    (values of the server rather than the request) are compared for the first request alone.
    `suffix` goes after each case's name."""
    cases = cases or raw_requests()
    pair = lambda data: data if isinstance(data, tuple) else (data, data)
    first = [dump(port, data) for port, data in zip(ports, pair(cases["the root"]))]
    for key in once:
        tally.compare(key + suffix, *(side.get(key) for side in first))
    for case, data in cases.items():
        ref, ours = (dump(port, data) for port, data in zip(ports, pair(data)))
        if isinstance(ref, dict) and isinstance(ours, dict):
            ref, ours = (normalise({k: v for k, v in side.items() if k not in once}, port)
                         for side, port in ((ref, ports[0]), (ours, ports[1])))
            keys = sorted(k for k in set(ref) | set(ours) if ref.get(k) != ours.get(k))
            ref, ours = ({k: side.get(k) for k in keys} for side in (ref, ours))
        tally.compare(case + suffix, ref, ours)


class CgiUpstream(RawServer):
    """A raw uwsgi or FastCGI server that answers each request with its variables, in the order
    they came (a repeated one a list), and its body as `body`, as JSON."""

    def __init__(self, protocol):
        self.protocol = protocol
        super().__init__()

    def serve(self, conn):
        f = conn.makefile("rb")
        try:
            vars_, body = (self.uwsgi if self.protocol == "uwsgi" else self.fastcgi)(f)
            said = {}
            for name, value in vars_:
                said[name] = [*said[name], value] if isinstance(said.get(name), list) else \
                    [said[name], value] if name in said else value
            said["body"] = body.decode("latin-1")
            answer = json.dumps(said).encode()
            if self.protocol == "uwsgi":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(answer), answer))
            else:
                out = b"Status: 200 OK\r\nContent-Type: application/json\r\n\r\n" + answer
                for i in range(0, len(out), 65535):
                    conn.sendall(self.record(6, out[i:i + 65535]))
                conn.sendall(self.record(6, b"") + self.record(3, bytes(8)))
        except (OSError, ValueError, KeyError):
            pass
        conn.close()

    @staticmethod
    def uwsgi(f):
        _, size, _ = struct.unpack("<BHB", f.read(4))
        block, vars_ = f.read(size), []
        while block:
            n = struct.unpack("<H", block[:2])[0]
            name, block = block[2:2 + n], block[2 + n:]
            n = struct.unpack("<H", block[:2])[0]
            vars_.append((name.decode("latin-1"), block[2:2 + n].decode("latin-1")))
            block = block[2 + n:]
        length = dict(vars_).get("CONTENT_LENGTH") or "0"
        return vars_, f.read(int(length))

    @staticmethod
    def record(kind, content):
        return struct.pack(">BBHHBB", 1, kind, 1, len(content), 0, 0) + content

    @staticmethod
    def fastcgi(f):
        params, body = b"", b""
        while True:
            _, kind, _, size, padding, _ = struct.unpack(">BBHHBB", f.read(8))
            content = f.read(size)
            f.read(padding)
            if kind == 4:
                params += content
            elif kind == 5:
                if not content:
                    break
                body += content
        vars_ = []
        while params:
            lengths = []
            for _ in range(2):
                if params[0] < 128:
                    lengths.append(params[0])
                    params = params[1:]
                else:
                    lengths.append(struct.unpack(">I", params[:4])[0] & 0x7FFFFFFF)
                    params = params[4:]
            name, value = params[:lengths[0]], params[lengths[0]:sum(lengths)]
            vars_.append((name.decode("latin-1"), value.decode("latin-1")))
            params = params[sum(lengths):]
        return vars_, body


CGI_KNOWN = RAW_KNOWN | {
    "SERVER_SOFTWARE": "each server's own name",
    "DOCUMENT_ROOT": "a uwsgi mount has no root (nginx's is its default `html`)",
    "DOCUMENT_ROOT (fastcgi /app)": "`fastcgi_root` as it is given; nginx's is the `alias` with its trailing slash",
    "SERVER_ADDR": "a uwsgi upstream is told it too (Debian's uwsgi_params leave it out)",
    "HTTP_CONNECTION": "the client's Connection is its hop's (RFC 9110 §7.6.1)",
    "HTTP_X_FORWARDED_FOR": "the proxy's X-Forwarded-* reach the app, the client's own replaced (appended to, for -For): "
                            "an app set up to trust them (Django's SECURE_PROXY_SSL_HEADER) reads this server's word; "
                            "nginx passes the client's",
    "HTTP_X_FORWARDED_PROTO": "the same", "HTTP_X_FORWARDED_HOST": "the same", "HTTP_X_FORWARDED_PORT": "the same",
    "HTTP_X_FORWARDED_PREFIX": "the same",
    "absolute-form target": "HTTP_HOST is the host the client asked for with its port, as stock nginx passes the "
                            "client's Host (Debian's params put $host, without the port), and SERVER_NAME that host: "
                            "a mount has no server_name",
    "Host with a port": "the same", "Host an IPv6 literal": "the same",
    "HTTP/1.0 without Host": "no HTTP_HOST, and SERVER_NAME the address the client reached; nginx's $host is its server_name",
    "an empty Host": "an empty Host names no host: the address the client reached stands in, as RFC 9112 §3.3 allows "
                     "(and gunicorn and uvicorn do); nginx refuses it with 400",
    "headers repeated, cased, empty": "a repeated field sent once, its lines joined with `, ` (RFC 9110 §5.3); nginx sends "
                                      "the variable twice, and the app sees one of them",
    "two Cookie lines": "the same, joined with `; ` (RFC 9113 §8.2.3)",
    "Content-Type, and a name with an underscore": "CONTENT_TYPE alone (RFC 3875 §4.1.18 leaves HTTP_CONTENT_TYPE out); nginx sends both",
    "a body by length": "the same, for CONTENT_LENGTH", "an empty body": "the same",
    "Expect: 100-continue": "the same; and Expect was this hop's, answered here",
    "a body chunked": "the body is read whole and framed by CONTENT_LENGTH: no HTTP_TRANSFER_ENCODING (beside which Werkzeug reads no body)",
    "a header value with tabs and spaces": "the whitespace around a value is no part of it (RFC 9110 §5.5); nginx keeps tabs",
    "OPTIONS *": "`*` goes to the mount at the root, and without one is 404; nginx refuses it with 400",
}

# Values of the server's, or the same at every request: compared once.
CGI_ONCE = ["SERVER_SOFTWARE", "DOCUMENT_ROOT", "SERVER_ADDR", "HTTP_CONNECTION", "HTTP_X_FORWARDED_FOR",
            "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_PREFIX"]


def battery_cgi(binary):
    """A mount of a uwsgi or FastCGI upstream against `uwsgi_pass` with Debian's `uwsgi_params`
    and `fastcgi_pass` with its `fastcgi_params`: the variables the upstream is sent, for
    `raw_requests()`, at the root and under a mount."""
    tally = Tally(CGI_KNOWN)
    root = tempfile.mkdtemp(prefix="stackway-diff-cgi-")
    config = Path(root, "fastcgi.toml")
    runs = [
        ("uwsgi", "/", "location / { include /etc/nginx/uwsgi_params; uwsgi_pass UPSTREAM; }",
         ["--mount", "/=uwsgi://UPSTREAM"]),
        # modifier1 30 asks for SCRIPT_NAME taken off PATH_INFO (uWSGI 2 leaves it on: the
        # uwsgi-environ battery): compared as it asks, with what stackway sends.
        ("uwsgi", "/app", "location /app/ { include /etc/nginx/uwsgi_params; uwsgi_param SCRIPT_NAME /app; "
                          "uwsgi_modifier1 30; uwsgi_pass UPSTREAM; }",
         ["--mount", "/app=uwsgi://UPSTREAM"]),
        ("fastcgi", "/", f"location / {{ root {root}; include /etc/nginx/fastcgi_params; "
                         "fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; fastcgi_pass UPSTREAM; }",
         ["--config", str(config)]),
        ("fastcgi", "/app", f"location /app/ {{ alias {root}/; include /etc/nginx/fastcgi_params; "
                            "fastcgi_param SCRIPT_FILENAME $request_filename; fastcgi_pass UPSTREAM; }",
         ["--config", str(config)]),
    ]
    for protocol, mount, server, args in runs:
        upstream = CgiUpstream(protocol)
        config.write_text(f'[[mount]]\nprefix = "{mount}"\nproxy = "fastcgi://127.0.0.1:{upstream.port}"\n'
                          f'[mount.proxy_options]\nfastcgi_root = "{root}"\n')
        pair = Pair(binary, server, args, upstream=upstream)
        cases = {name: data.replace(b" /", f" {mount.rstrip('/')}/".encode(), 1) for name, data in raw_requests().items()}

        def normalise(said, port):
            if protocol == "uwsgi" and said.get("SCRIPT_NAME") and said.get("PATH_INFO", "").startswith(said["SCRIPT_NAME"]):
                said["PATH_INFO"] = said["PATH_INFO"][len(said["SCRIPT_NAME"]):]  # modifier1 30
            if protocol == "uwsgi" and said.get("SCRIPT_NAME") == "":
                del said["SCRIPT_NAME"]  # a mount at the root says so; uWSGI's default is the same
            if "REMOTE_PORT" in said:
                said["REMOTE_PORT"] = "PORT"
            if said.get("SERVER_PORT") == str(port):
                said["SERVER_PORT"] = "PORT"
            return said

        try:
            compare_dumps(tally, (pair.ref_port, pair.our_port), CGI_ONCE, normalise, cases, f" ({protocol} {mount})")
        finally:
            pair.close()
    return tally.summary("cgi")


class CgiResponder(CgiUpstream):
    """A raw uwsgi or FastCGI server that answers with CGI_ANSWERS[protocol][its QUERY_STRING].
    uwsgi: `out` as it is, then the connection closed. FastCGI: `out` as stdout records of
    `split` bytes, `stderr` first, then the end of the request with `end` (app status, protocol
    status), or the connection closed where `end` is None."""

    def serve(self, conn):
        f = conn.makefile("rb")
        try:
            vars_, _ = (self.uwsgi if self.protocol == "uwsgi" else self.fastcgi)(f)
            answer = CGI_ANSWERS[self.protocol][dict(vars_)["QUERY_STRING"]]
            out, split = answer["out"], answer.get("split", 65535)
            if self.protocol == "uwsgi":
                conn.sendall(out)
                raise OSError("closed after the answer")
            if "stderr" in answer:
                conn.sendall(self.record(7, answer["stderr"]))
            for i in range(0, len(out), split):
                conn.sendall(self.record(6, out[i:i + split]))
            if answer.get("end", (0, 0)) is not None:
                app, protocol = answer.get("end", (0, 0))
                conn.sendall(self.record(6, b"") + self.record(3, struct.pack(">IB3x", app, protocol)))
        except (OSError, ValueError, KeyError):
            pass
        conn.close()


# What the uwsgi responder sends, by the request's query: raw HTTP, as a WSGI server does.
UWSGI_ANSWERS = {
    "plain": {"out": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello"},
    "http10": {"out": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello"},
    "no-reason": {"out": b"HTTP/1.1 404\r\nContent-Type: text/plain\r\n\r\nnope"},
    "own-reason": {"out": b"HTTP/1.1 299 Fine Enough\r\nContent-Type: text/plain\r\n\r\nok"},
    "cgi-status": {"out": b"Status: 201 Created\r\nContent-Type: text/plain\r\n\r\nmade"},
    "http2-line": {"out": b"HTTP/2.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello"},
    "garbage-line": {"out": b"FOO BAR\r\nContent-Type: text/plain\r\n\r\nhello"},
    "lf-only": {"out": b"HTTP/1.1 200 OK\nContent-Type: text/plain\n\nhello"},
    "no-headers": {"out": b"HTTP/1.1 200 OK\r\n\r\nhello"},
    "content-length": {"out": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
    "content-length-long": {"out": b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nhello"},
    "content-length-short": {"out": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhello"},
    "chunked": {"out": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
    "continue-first": {"out": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                              b"\r\nhello"},
    "status-304-body": {"out": b"HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\n\r\nbody"},
    "status-204-body": {"out": b"HTTP/1.1 204 No Content\r\n\r\nbody"},
    "connection-fields": {"out": b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
                                 b"Content-Length: 1\r\n\r\nx"},
    "nothing": {"out": b""},
    "closed-in-head": {"out": b"HTTP/1.1 200 OK\r\nContent-Ty"},
    "huge-head": {"out": b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\nx"},
    "no-colon": {"out": b"HTTP/1.1 200 OK\r\ngarbage\r\n\r\nx"},
}

# What the FastCGI responder answers, by the request's query.
FASTCGI_ANSWERS = {
    "plain": {"out": b"Content-Type: text/plain\r\n\r\nhello"},
    "status": {"out": b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope"},
    "status-no-reason": {"out": b"Status: 404\r\nContent-Type: text/plain\r\n\r\nnope"},
    "status-own-reason": {"out": b"Status: 299 Fine Enough\r\nContent-Type: text/plain\r\n\r\nok"},
    "status-lower": {"out": b"status: 201 Created\r\nContent-Type: text/plain\r\n\r\nmade"},
    "status-invalid": {"out": b"Status: abc\r\nContent-Type: text/plain\r\n\r\nx"},
    "status-1xx": {"out": b"Status: 103 Early Hints\r\nContent-Type: text/plain\r\n\r\nx"},
    "status-twice": {"out": b"Status: 201 Created\r\nStatus: 500 Oops\r\nContent-Type: text/plain\r\n\r\nx"},
    "status-304-body": {"out": b"Status: 304 Not Modified\r\nETag: \"a\"\r\n\r\nbody"},
    "status-204-body": {"out": b"Status: 204 No Content\r\n\r\nbody"},
    "no-content-type": {"out": b"X-A: 1\r\n\r\nbody"},
    "no-headers": {"out": b"\r\nbody"},
    "location-absolute": {"out": b"Location: http://example.com/x\r\n\r\n"},
    "location-local": {"out": b"Location: /other?q=1\r\n\r\n"},
    "location-with-status": {"out": b"Status: 301 Moved\r\nLocation: /other\r\n\r\n"},
    "location-with-body": {"out": b"Location: http://example.com/x\r\nContent-Type: text/html\r\n\r\n<a>x</a>"},
    "lf-only": {"out": b"Content-Type: text/plain\nX-A: 1\n\nhello"},
    "split-head": {"out": b"Content-Type: text/plain\r\nX-Long: " + b"v" * 300 + b"\r\n\r\nhello", "split": 7},
    "big-body": {"out": b"Content-Type: text/plain\r\n\r\n" + b"0123456789" * 20000, "split": 65535},
    "stderr": {"out": b"Content-Type: text/plain\r\n\r\nhello", "stderr": b"PHP Warning: something\n"},
    "set-cookies": {"out": b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Type: text/plain\r\n\r\nx"},
    "content-length": {"out": b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"},
    "content-length-long": {"out": b"Content-Type: text/plain\r\nContent-Length: 50\r\n\r\nhello"},
    "content-length-short": {"out": b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhello"},
    "chunked": {"out": b"Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
    "connection-fields": {"out": b"Content-Type: text/plain\r\nConnection: close\r\nKeep-Alive: timeout=5\r\n"
                                 b"\r\nx"},
    "date-server": {"out": b"Content-Type: text/plain\r\nDate: Thu, 01 Jan 2015 00:00:00 GMT\r\n"
                           b"Server: php\r\n\r\nx"},
    "no-colon": {"out": b"Content-Type: text/plain\r\ngarbage\r\n\r\nx"},
    "space-before-colon": {"out": b"Content-Type : text/plain\r\n\r\nx"},
    "empty-value": {"out": b"Content-Type: text/plain\r\nX-Empty:\r\n\r\nx"},
    "no-end-of-head": {"out": b"Content-Type: text/plain\r\n"},
    "nothing": {"out": b""},
    "huge-head": {"out": b"Content-Type: text/plain\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\nx"},
    "closed-mid-body": {"out": b"Content-Type: text/plain\r\nContent-Length: 50\r\n\r\nhello", "end": None},
    "closed-after-body": {"out": b"Content-Type: text/plain\r\n\r\nhello", "end": None},
    "closed-in-head": {"out": b"Content-Type: text/pl", "end": None},
    "app-status-1": {"out": b"Content-Type: text/plain\r\n\r\nhello", "end": (1, 0)},
    "overloaded": {"out": b"", "end": (0, 2)},
}

CGI_ANSWERS = {"uwsgi": UWSGI_ANSWERS, "fastcgi": FASTCGI_ANSWERS}

CGI_RESPONSE_KNOWN = {
    "cgi-status (uwsgi)": "the same status; the `Status` field is the CGI head's and stays there (nginx's uwsgi "
                          "module passes it on to the client too)",
    "http2-line (uwsgi)": "502: an HTTP/2.0 status line is no HTTP/1 answer; nginx takes any version",
    "continue-first (uwsgi)": "the 100 is skipped and the final answer passed; nginx sends the 100 as the answer, "
                              "with the real one as its body",
    "status-1xx": "502: a 1xx is no final status; nginx sends it as the answer's, and the client waits for another",
    "no-headers": "502: a CGI response has at least one field (RFC 3875 §6.2); nginx makes it a 200",
    "no-colon": "a line that is no field is left out; nginx passes it as a field named by the line, empty",
    "huge-head": "a head is taken up to 64 KiB; nginx's fastcgi_buffer_size is 4 KiB (8 on some systems)",
    "closed-after-body": "an upstream that closes without FCGI_END_REQUEST may not have finished: the body is "
                         "aborted, not ended as whole (nginx ends it and logs the error)",
}


def battery_cgi_response(binary):
    """A uwsgi and a FastCGI mount against `uwsgi_pass` and `fastcgi_pass`, each in front of the
    same raw responder: what a client gets of each answer (statuses, redirects, fields,
    framing, the responder's failures)."""
    tally = Tally(CGI_RESPONSE_KNOWN)
    root = tempfile.mkdtemp(prefix="stackway-diff-cgi-")
    config = Path(root, "cgi.toml")
    for protocol, params in [("uwsgi", "include /etc/nginx/uwsgi_params; uwsgi_pass UPSTREAM;"),
                             ("fastcgi", "include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME "
                                         "$document_root$fastcgi_script_name; fastcgi_pass UPSTREAM;")]:
        upstream = CgiResponder(protocol)
        config.write_text(f'[[mount]]\nprefix = "/"\nproxy = "{protocol}://127.0.0.1:{upstream.port}"\n'
                          f'[mount.proxy_options]\nfastcgi_root = "{root}"\n')
        pair = Pair(binary, f"location / {{ root {root}; {params} }}", ["--config", str(config)], upstream=upstream)
        # A 502 is the server's own page: its status compared.
        said = lambda answer: answer[0] if answer[0] == "502" else answer
        ask = lambda method, case: [said(answer_of(port, method, f"/x.php?{case}", own_headers=("date", "server")))
                                    for port in (pair.ref_port, pair.our_port)]
        try:
            for case in CGI_ANSWERS[protocol]:
                tally.compare(f"{case} ({protocol})", *ask("GET", case))
            tally.compare(f"plain, HEAD ({protocol})", *ask("HEAD", "plain"))
        finally:
            pair.close()
    return tally.summary("cgi-response")


def battery_scope(binary):
    """The `http` scope against uvicorn's, for `raw_requests()`."""
    env = python_env()
    uvicorn, uv_port = reference_python("uvicorn", "scope", env)
    ours, our_port = stackway_python(binary, "asgi:apps:scope", env)
    tally = Tally(SCOPE_KNOWN)

    def normalise(scope, _port):
        for key in ("server", "client"):
            if scope.get(key):
                scope[key][1] = "PORT"
        return scope

    try:
        compare_dumps(tally, (uv_port, our_port), ["asgi"], normalise)
    finally:
        killed(uvicorn, ours)
    # Mounted: under `/app` (each target sent with it in front) against uvicorn's --root-path,
    # which serves an app behind a front that took the prefix off.
    uvicorn, uv_port = reference_python("uvicorn", "scope", env, ["--root-path", "/app"])
    ours, our_port = stackway_python(binary, "asgi:apps:root_scope", env, ["/app=asgi:apps:scope"])
    try:
        compare_dumps(tally, (uv_port, our_port), ["asgi"], normalise, mounted_requests(), " (mounted)")
    finally:
        killed(uvicorn, ours)
    return tally.summary("scope")


ENVIRON_KNOWN = RAW_KNOWN | {
    "SERVER_NAME": "the request's host, as CGI's Script-URI and Apache's UseCanonicalName Off; gunicorn's bind address",
    "SERVER_PORT": "the same, the request's port",
    "headers repeated, cased, empty": "a repeated field's lines joined with `, `, as nginx and Apache pass them on (RFC 9110 §5.3); gunicorn and Werkzeug join with `,`",
    "HTTP/1.1 without Host": "400, as RFC 9112 §3.2 requires (and uvicorn answers); gunicorn serves it",
    "two Cookie lines": "joined with `; `, one cookie string (RFC 9113 §8.2.3); gunicorn's `,` makes one cookie of the two",
    "absolute-form target": "the target's authority is the host (RFC 9112 §3.2.2), as nginx's $host, and REQUEST_URI its path; gunicorn keeps the Host field and the whole URI",
}
# Each server's own: its name, its extensions, how it runs the app.
ENVIRON_OWN = ("SERVER_SOFTWARE", "wsgi.multithread", "wsgi.multiprocess", "wsgi.errors",
               "wsgi.input", "wsgi.file_wrapper", "gunicorn.", "stackway.")


def battery_environ(binary):
    """The WSGI environ against gunicorn's, for `raw_requests()`."""
    env = python_env()
    gunicorn, gu_port = reference_python("gunicorn", "environ", env)
    ours, our_port = stackway_python(binary, "wsgi:apps:environ", env)
    tally = Tally(ENVIRON_KNOWN)

    def normalise(environ, _port):
        # gunicorn's name for CGI's REQUEST_URI, which stackway gives as Apache and uWSGI do.
        if "RAW_URI" in environ:
            environ["REQUEST_URI"] = environ.pop("RAW_URI")
        environ = {k: v for k, v in environ.items() if not k.startswith(ENVIRON_OWN)}
        if "REMOTE_PORT" in environ:
            environ["REMOTE_PORT"] = "PORT"
        return environ

    try:
        compare_dumps(tally, (gu_port, our_port), ["SERVER_NAME", "SERVER_PORT"], normalise)
    finally:
        killed(gunicorn, ours)
    # Mounted: under `/app` against gunicorn's SCRIPT_NAME from its environment, which takes
    # the prefix off PATH_INFO where a request's path starts with it.
    gunicorn, gu_port = reference_python("gunicorn", "environ", dict(env, SCRIPT_NAME="/app"))
    ours, our_port = stackway_python(binary, "wsgi:apps:where_root", env, ["/app=wsgi:apps:environ"])
    try:
        requests = mounted_requests(reference_under=True)
        compare_dumps(tally, (gu_port, our_port), ["SERVER_NAME", "SERVER_PORT"], normalise, requests,
                      " (mounted)")
    finally:
        killed(gunicorn, ours)
    return tally.summary("environ")


PROXY_FIX_KNOWN = {
    "X-Forwarded-For: [2001:db8::1]:4711": "REMOTE_ADDR is the address, its port REMOTE_PORT; Werkzeug copies the text",
    "X-Forwarded-For: 203.0.113.9:4711": "the same",
    "X-Forwarded-For: unknown": "not an address: ignored, REMOTE_ADDR stays the peer's (Werkzeug copies any text)",
    "X-Forwarded-For: _hidden, 203.0.113.9": "the same, for RFC 7239's obfuscated identifier",
    'X-Forwarded-For: "198.51.100.1, 203.0.113.9"': "the same, for one quoted item",
    "X-Forwarded-Proto: HTTPS": "the scheme in its canonical lower case (RFC 3986 §3.1)",
    "X-Forwarded-Proto: ftp": "http or https alone: a WSGI app's URLs are never ftp:// (Werkzeug takes any text)",
    "X-Forwarded-Proto: wss": "the same",
    "X-Forwarded-Proto: https, ftp": "the same",
    "X-Forwarded-Host: shop.example": "a host without a port is at the scheme's default port (Werkzeug keeps the "
                                      "port the proxy connected to in SERVER_PORT); the URLs are the same",
    "X-Forwarded-Host: [2001:db8::1]": "the same",
    "X-Forwarded-Host: a.example, shop.example": "the same",
    "X-Forwarded-Host: shop.example, a.example:81": "the same",
    "X-Forwarded-Host: SHOP.Example": "the same, and SERVER_NAME in lower case, as stackway gives it from Host",
    "https and host": "the same",
    "host and port": "the same (x_port 0)",
    "IPv6 host and port": "the same",
    "https, host and 443": "the same",
    "everything, one hop": "the same",
    "X-Forwarded-Host: shop.example/evil": "not host[:port]: ignored (Werkzeug copies it into HTTP_HOST, and its "
                                           "own URLs then have no host)",
    "X-Forwarded-Host: user@shop.example": "the same",
    "X-Forwarded-Host: shop.example:": "the same",
    "X-Forwarded-Host: shop.example:abc": "the same",
    "X-Forwarded-Port: abc": "not a port: ignored (Werkzeug's URLs then have no host)",
    "X-Forwarded-Port: 99999": "the same",
    "X-Forwarded-Prefix: /store/": "SCRIPT_NAME without the trailing slash (PEP 3333); the URLs are the same",
    "X-Forwarded-Prefix: /": "the same: the root is an empty SCRIPT_NAME",
    "X-Forwarded-Prefix: store": "not a path: ignored (Werkzeug's app fails, 500)",
    "X-Forwarded-Prefix: //evil.example": "ignored: a prefix of `//` makes every URL the app builds point at another "
                                          "host",
    "X-Forwarded-Prefix: /a?x": "a query is no part of a prefix: ignored",
    "X-Forwarded-Prefix: /a%20b": "SCRIPT_NAME decoded as PEP 3333 has it, as the path's is; Werkzeug leaves it "
                                  "encoded; the URLs are the same",
    "X-Forwarded-Prefix: /caf%C3%A9": "the same",
}


def proxy_fix_cases():
    """(name, extra header lines) for the proxy-fix battery: each X-Forwarded-* field alone, as
    lists of one to three hops, odd and hostile values, and together."""
    xff, xfp, xfh = "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"
    xfport, xfprefix = "X-Forwarded-Port", "X-Forwarded-Prefix"
    one = lambda name, *values: (f"{name}: " + " | ".join(values),
                                 "".join(f"{name}: {value}\r\n" for value in values))
    cases = [("none", "")]
    for value in ["203.0.113.9", "198.51.100.1, 203.0.113.9", "1.1.1.1, 198.51.100.1, 203.0.113.9",
                  "2001:db8::1", "[2001:db8::1]:4711", "203.0.113.9:4711", "unknown", ", 203.0.113.9",
                  "203.0.113.9,", '"203.0.113.9"', '"198.51.100.1, 203.0.113.9"', "", "_hidden, 203.0.113.9"]:
        cases.append(one(xff, value))
    cases.append(one(xff, "198.51.100.1", "203.0.113.9"))
    for value in ["https", "HTTPS", "http, https", "https, http", "ftp", "wss", "https, ftp"]:
        cases.append(one(xfp, value))
    for value in ["shop.example", "shop.example:8443", "SHOP.Example", "[2001:db8::1]", "[2001:db8::1]:8443",
                  "a.example, shop.example", "shop.example/evil", "user@shop.example", "shop.example:",
                  "shop.example:abc", "1.2.3.4:80", "shop.example, a.example:81"]:
        cases.append(one(xfh, value))
    for value in ["8443", "443", "80", "abc", "99999", "8443, 9443", "0"]:
        cases.append(one(xfport, value))
    for value in ["/store", "/store/", "/", "store", "//evil.example", "/a%20b", "/caf%C3%A9", "/a, /b",
                  "/a/b/c", "/a?x"]:
        cases.append(one(xfprefix, value))
    together = lambda *pairs: "".join(f"{name}: {value}\r\n" for name, value in pairs)
    cases += [
        ("host and port", together((xfh, "shop.example"), (xfport, "8443"))),
        ("host with a port and port", together((xfh, "shop.example:81"), (xfport, "8443"))),
        ("IPv6 host and port", together((xfh, "[2001:db8::1]"), (xfport, "8443"))),
        ("https, host and 443", together((xfp, "https"), (xfh, "shop.example"), (xfport, "443"))),
        ("https and host", together((xfp, "https"), (xfh, "shop.example"))),
        ("http and port 80", together((xfp, "http"), (xfport, "80"))),
        ("everything, one hop", together((xff, "203.0.113.9"), (xfp, "https"), (xfh, "shop.example"),
                                         (xfport, "8443"), (xfprefix, "/store"))),
        ("everything, two hops", together((xff, "203.0.113.9, 10.0.0.2"), (xfp, "https, http"),
                                          (xfh, "shop.example, internal:8080"), (xfport, "443, 8080"),
                                          (xfprefix, "/store, /inner"))),
    ]
    return cases


def battery_proxy_fix(binary):
    """--proxy-fix against Werkzeug's ProxyFix (under gunicorn) with the same trust, four
    configurations: what the app's environ says and the URLs Werkzeug's request builds."""
    env = python_env()
    sys.path.insert(0, str(HERE))
    from apps import PROXY_FIX
    tally = Tally(PROXY_FIX_KNOWN)
    for name, trust in PROXY_FIX.items():
        # gunicorn's own reading of X-Forwarded-Proto off (it trusts 127.0.0.1): Werkzeug's alone.
        gunicorn, gu_port = reference_python("gunicorn", f"fixed_{name}", env,
                                             ["--forwarded-allow-ips", "192.0.2.1"])
        flag = ",".join(f"{key}={n}" for key, n in zip(["for", "proto", "host", "port", "prefix"], trust))
        ours, our_port = stackway_python(binary, "wsgi:apps:fixed", env, args=["--proxy-fix", flag])
        try:
            for case, extra in proxy_fix_cases():
                data = (f"GET /p/q?x=1 HTTP/1.1\r\nHost: app.internal:8000\r\nConnection: close\r\n{extra}\r\n"
                        .encode())
                ref, ours_ = (dump(port, data) for port in (gu_port, our_port))
                if isinstance(ref, dict) and isinstance(ours_, dict):
                    if ref["SERVER_NAME"] == "127.0.0.1":
                        # gunicorn's is its socket's address, stackway's the Host's (the environ
                        # battery's known difference): compared where ProxyFix set it.
                        del ref["SERVER_NAME"], ours_["SERVER_NAME"]
                    for side, port in ((ref, gu_port), (ours_, our_port)):
                        for key, value in side.items():
                            if isinstance(value, str):
                                side[key] = value.replace(str(port), "PORT")
                tally.compare(f"{case} ({name})", ref, ours_)
        finally:
            killed(gunicorn, ours)
    return tally.summary("proxy-fix")


HAPROXY = """global
    maxconn 100
defaults
    mode http
    timeout connect 2s
    timeout client 2s
    timeout server 2s
frontend front
    bind 127.0.0.1:{port} accept-proxy
    option forwardfor
    default_backend back
backend back
    server up 127.0.0.1:{upstream}
"""


PROXY_PROTOCOL_KNOWN = {
    "v1 UNKNOWN with addresses": "taken, the connection's own address standing: for UNKNOWN \"the receiver must ignore "
                                 "anything presented before the CRLF\" (the specification, 2.1); HAProxy closes",
    "v1 UNKNOWN with garbage": "the same",
    "v1 a port over 65535": "refused: \"any sequence which does not exactly match the protocol must be discarded\" "
                            "(2.1); HAProxy takes it",
    "v1 a port with a leading zero": "the same",
    "v1 an address with leading zeros": "the same (\"heading zeroes are not permitted\")",
    "v1 an address out of range": "the same; HAProxy takes 999 as 231",
    "v2 UNSPEC": "taken, the connection's own address standing (a receiver \"is free to accept the connection anyway "
                 "and use the real endpoint addresses or to reject it\", 2.2); HAProxy closes",
    "v2 UNIX": "the same: a unix client has no address to name",
    "v2 UDP4": "taken: its address is the client's (the specification lets a receiver take what it supports); "
               "HAProxy closes",
}


def with_crc32c(header):
    """A version 2 header ending in a zeroed CRC32C TLV, with its checksum in it."""
    crc = 0xFFFFFFFF
    for byte in header:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return header[:-4] + struct.pack("!I", crc ^ 0xFFFFFFFF)


def proxy_protocol_cases():
    """(name, bytes before the request) for the proxy-protocol battery: version 1 and 2 headers
    as balancers send them, and malformed ones."""
    v1 = lambda line: line.encode() + b"\r\n"
    ipv4 = bytes([203, 0, 113, 7, 10, 0, 0, 1, 0xC8, 0x22, 0, 80])
    ipv6 = bytes.fromhex("20010db8000000000000000000000007" "20010db8000000000000000000000001") + b"\xc8\x22\x01\xbb"
    v2 = lambda command, family, body: (b"\r\n\r\n\0\r\nQUIT\n" + bytes([command, family])
                                        + struct.pack("!H", len(body)) + body)
    tlv = lambda kind, value: bytes([kind]) + struct.pack("!H", len(value)) + value
    return [
        ("no header", b""),
        ("v1 TCP4", v1("PROXY TCP4 203.0.113.7 10.0.0.1 51234 80")),
        ("v1 TCP6", v1("PROXY TCP6 2001:db8::7 2001:db8::1 51234 443")),
        ("v1 TCP6, an IPv4-mapped address", v1("PROXY TCP6 ::ffff:203.0.113.7 ::1 51234 443")),
        ("v1 UNKNOWN", v1("PROXY UNKNOWN")),
        ("v1 UNKNOWN with addresses", v1("PROXY UNKNOWN 2001:db8::7 2001:db8::1 51234 443")),
        ("v1 UNKNOWN with garbage", v1("PROXY UNKNOWN what ever")),
        ("v1 ending in LF alone", b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 80\n"),
        ("v1 without its end", b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 80"),
        ("v1 a port over 65535", v1("PROXY TCP4 203.0.113.7 10.0.0.1 99999 80")),
        ("v1 port 0", v1("PROXY TCP4 203.0.113.7 10.0.0.1 0 80")),
        ("v1 a port with a leading zero", v1("PROXY TCP4 203.0.113.7 10.0.0.1 051234 80")),
        ("v1 an address with leading zeros", v1("PROXY TCP4 203.0.113.007 10.0.0.1 51234 80")),
        ("v1 an address out of range", v1("PROXY TCP4 999.0.113.7 10.0.0.1 51234 80")),
        ("v1 TCP4 with IPv6 addresses", v1("PROXY TCP4 2001:db8::7 2001:db8::1 51234 443")),
        ("v1 TCP6 with IPv4 addresses", v1("PROXY TCP6 203.0.113.7 10.0.0.1 51234 80")),
        ("v1 two spaces", v1("PROXY TCP4  203.0.113.7 10.0.0.1 51234 80")),
        ("v1 a port missing", v1("PROXY TCP4 203.0.113.7 10.0.0.1 51234")),
        ("v1 a word more", v1("PROXY TCP4 203.0.113.7 10.0.0.1 51234 80 more")),
        ("v1 lower-case proxy", v1("proxy TCP4 203.0.113.7 10.0.0.1 51234 80")),
        ("v1 lower-case tcp4", v1("PROXY tcp4 203.0.113.7 10.0.0.1 51234 80")),
        ("v1 TCP5", v1("PROXY TCP5 203.0.113.7 10.0.0.1 51234 80")),
        ("v1 longer than 107 bytes", v1("PROXY UNKNOWN " + "x" * 100)),
        ("v1 twice", v1("PROXY TCP4 203.0.113.7 10.0.0.1 51234 80") * 2),
        ("v2 TCP4", v2(0x21, 0x11, ipv4)),
        ("v2 TCP6", v2(0x21, 0x21, ipv6)),
        ("v2 LOCAL", v2(0x20, 0x00, b"")),
        ("v2 LOCAL with addresses", v2(0x20, 0x11, ipv4)),
        ("v2 UNSPEC", v2(0x21, 0x00, b"")),
        ("v2 UDP4", v2(0x21, 0x12, ipv4)),
        ("v2 UNIX", v2(0x21, 0x31, b"/a".ljust(108, b"\0") + b"/b".ljust(108, b"\0"))),
        ("v2 a NOOP TLV", v2(0x21, 0x11, ipv4 + tlv(0x04, b"\0\0"))),
        ("v2 ALPN and authority TLVs", v2(0x21, 0x11, ipv4 + tlv(0x01, b"h2") + tlv(0x02, b"shop.example"))),
        ("v2 a TLV past the end", v2(0x21, 0x11, ipv4 + b"\x04\x00\x09\x00")),
        ("v2 a wrong CRC32C TLV", v2(0x21, 0x11, ipv4 + tlv(0x03, b"\0\0\0\0"))),
        ("v2 a right CRC32C TLV", with_crc32c(v2(0x21, 0x11, ipv4 + tlv(0x03, b"\0\0\0\0")))),
        ("v2 addresses cut short", v2(0x21, 0x11, ipv4[:8])),
        ("v2 version 1", v2(0x11, 0x11, ipv4)),
        ("v2 version 3", v2(0x31, 0x11, ipv4)),
        ("v2 command 2", v2(0x22, 0x11, ipv4)),
        ("v2 family 5", v2(0x21, 0x51, ipv4)),
        ("v2 the signature wrong", b"\r\n\r\n\0\r\nQUIX\n" + v2(0x21, 0x11, ipv4)[12:]),
        ("v2 a long TLV", v2(0x21, 0x11, ipv4 + tlv(0x04, b"\0" * 3000))),
    ]


def battery_proxy_protocol(binary):
    """--proxy-protocol against HAProxy's `accept-proxy` (the protocol's reference), each in
    front of the same upstream with the client's address in X-Forwarded-For: which headers
    are taken and which client each names."""
    tally = Tally(PROXY_PROTOCOL_KNOWN)
    upstream = Upstream()
    work = tempfile.mkdtemp(prefix="stackway-diff-")
    ref_port, our_port = free_port(), free_port()
    Path(work, "haproxy.cfg").write_text(HAPROXY.format(port=ref_port, upstream=upstream.port))
    procs = [spawn(["haproxy", "-f", f"{work}/haproxy.cfg", "-q"]),
             spawn([binary, "serve", "--bind", f"127.0.0.1:{our_port}", "--log-level", "error",
                    "--proxy-protocol", "--mount", f"/=http://127.0.0.1:{upstream.port}"],
                   stdout=subprocess.DEVNULL)]
    wait_for(ref_port), wait_for(our_port)

    def outcome(port, head):
        upstream.log.clear()
        answer = exchange(port, head + request("GET", "/r?len=2"))
        status = parse(answer)[0] or "closed"
        forwarded = [h.split(":", 1)[1].strip() for _, heads, _ in upstream.log for h in heads
                     if h.lower().startswith("x-forwarded-for:")]
        return status, forwarded

    try:
        for case, head in proxy_protocol_cases():
            tally.compare(case, outcome(ref_port, head), outcome(our_port, head))
    finally:
        killed(*procs)
        upstream.sock.close()
    return tally.summary("proxy-protocol")


CACHE_KNOWN = {
    "Last-Modified alone": "stored with a heuristic lifetime, a tenth of its age (RFC 9111 §4.2.2); nginx stores "
                           "nothing that says no lifetime",
    "no-cache with an ETag": "stored and revalidated with If-None-Match (RFC 9111 §5.2.2.4), the upstream's 304 "
                             "serving it; nginx does not store it and fetches it whole",
    "max-age=0 with an ETag": "the same",
    "Set-Cookie": "stored with its Set-Cookie, as the HTTP caching test suite's required `headers-store-Set-Cookie` "
                  "asks; nginx stores nothing with a Set-Cookie",
    "GET, POST, GET": "a successful POST invalidates its target (RFC 9111 §4.4); nginx keeps serving the stored response",
    "HEAD, then GET": "a HEAD goes upstream as a HEAD and stores no body; nginx sends a GET in its place and stores that",
    "a client's Authorization": "a response to a request with Authorization is not stored unless it says public, "
                                "s-maxage or must-revalidate (RFC 9111 §3.5); nginx stores it and serves it to "
                                "every other client",
    "a client's no-cache": "a client's no-cache sends the request on (RFC 9111 §5.2.1.4); nginx ignores it",
    "a client's Pragma": "the same, for Pragma: no-cache without Cache-Control (RFC 9111 §5.4)",
    "a client's Range": "a range of a stored whole response is answered from it; nginx answers 200 (its ranges of a "
                        "cached response need the upstream's Accept-Ranges)",
}


def cache_cases():
    """(name, [(method, query, extra fields)]) for the cache battery: a sequence of requests to
    one target, each answered by the upstream as its query says."""
    day_ago = "Last-Modified: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() - 86400))
    future = "Expires: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3600))
    past = "Expires: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() - 3600))
    q = urllib.parse.quote
    twice = lambda query, extra="": [("GET", query, extra), ("GET", query, extra)]
    return [
        ("max-age", twice("cc=max-age=60")),
        ("nothing said", twice("")),
        ("Last-Modified alone", twice(f"h={q(day_ago)}")),
        ("no-store", twice("cc=no-store,max-age=60")),
        ("private", twice("cc=private,max-age=60")),
        ("no-cache", twice("cc=no-cache,max-age=60")),
        ("no-cache with an ETag", twice("cc=no-cache&etag=%22v1%22&cond=1")),
        ("max-age=0", twice("cc=max-age=0")),
        ("max-age=0 with an ETag", twice("cc=max-age=0&etag=%22v1%22&cond=1")),
        ("s-maxage", twice("cc=s-maxage=60")),
        ("s-maxage=0, max-age", twice("cc=s-maxage=0,max-age=60")),
        ("Expires ahead", twice(f"h={q(future)}")),
        ("Expires past", twice(f"h={q(past)}")),
        ("Expires past, max-age", twice(f"cc=max-age=60&h={q(past)}")),
        ("Set-Cookie", twice("cc=max-age=60&h=Set-Cookie:%20a%3Db")),
        ("Vary: *", twice("cc=max-age=60&vary=*")),
        ("Vary: Accept-Encoding, two codings",
         [("GET", "cc=max-age=60&vary=Accept-Encoding", "Accept-Encoding: gzip\r\n"),
          ("GET", "cc=max-age=60&vary=Accept-Encoding", "Accept-Encoding: br\r\n"),
          ("GET", "cc=max-age=60&vary=Accept-Encoding", "Accept-Encoding: gzip\r\n")]),
        ("Vary: X-A", [("GET", "cc=max-age=60&vary=X-A", "X-A: 1\r\n"),
                       ("GET", "cc=max-age=60&vary=X-A", "X-A: 2\r\n"),
                       ("GET", "cc=max-age=60&vary=X-A", "X-A: 1\r\n")]),
        ("POST, then GET", [("POST", "cc=max-age=60", ""), ("GET", "cc=max-age=60", ""),
                            ("GET", "cc=max-age=60", "")]),
        ("GET, POST, GET", [("GET", "cc=max-age=60", ""), ("POST", "cc=max-age=60", ""),
                            ("GET", "cc=max-age=60", "")]),
        ("GET, then HEAD", [("GET", "cc=max-age=60", ""), ("HEAD", "cc=max-age=60", "")]),
        ("HEAD, then GET", [("HEAD", "cc=max-age=60", ""), ("GET", "cc=max-age=60", "")]),
        ("404 with max-age", twice("cc=max-age=60&status=404")),
        ("404 alone", twice("status=404")),
        ("500 with max-age", twice("cc=max-age=60&status=500")),
        ("301 with max-age", twice("cc=max-age=60&status=301&h=Location:%20/x")),
        ("302 alone", twice("status=302&h=Location:%20/x")),
        ("a client's Authorization", twice("cc=max-age=60", "Authorization: Basic YTpi\r\n")),
        ("a client's Authorization, public", twice("cc=public,max-age=60", "Authorization: Basic YTpi\r\n")),
        ("a client's no-cache", [("GET", "cc=max-age=60", ""), ("GET", "cc=max-age=60", "Cache-Control: no-cache\r\n")]),
        ("a client's max-age=0", [("GET", "cc=max-age=60", ""), ("GET", "cc=max-age=60", "Cache-Control: max-age=0\r\n")]),
        ("a client's Pragma", [("GET", "cc=max-age=60", ""), ("GET", "cc=max-age=60", "Pragma: no-cache\r\n")]),
        ("a client's If-None-Match", [("GET", "cc=max-age=60&etag=%22v1%22", ""),
                                      ("GET", "cc=max-age=60&etag=%22v1%22", "If-None-Match: \"v1\"\r\n")]),
        ("a client's Range", [("GET", "cc=max-age=60", ""), ("GET", "cc=max-age=60", "Range: bytes=0-9\r\n")]),
        ("a Range first", [("GET", "cc=max-age=60", "Range: bytes=0-9\r\n"), ("GET", "cc=max-age=60", "")]),
        ("a cookie sent", twice("cc=max-age=60", "Cookie: a=b\r\n")),
        ("chunked", twice("cc=max-age=60&chunked=1")),
        ("an empty body", twice("cc=max-age=60&len=0")),
        ("X-Accel-Expires: 0", twice("cc=max-age=60&h=X-Accel-Expires:%200")),
        ("X-Accel-Expires: 60", twice("h=X-Accel-Expires:%2060")),
        ("Cache-Control: no-cache=\"Set-Cookie\"", twice("cc=max-age=60,no-cache=%22Set-Cookie%22&h=Set-Cookie:%20a%3Db")),
    ]


def battery_cache(binary):
    """--cache against proxy_cache (with proxy_cache_revalidate), each in front of the same
    upstream: for each sequence of requests to a target, what the client gets and which of
    them reach the upstream (and whether conditionally)."""
    tally = Tally(CACHE_KNOWN)
    cache_dir = tempfile.mkdtemp(prefix="stackway-diff-cache-")
    pair = Pair(binary, "location / { proxy_cache c; proxy_cache_revalidate on; proxy_pass http://UPSTREAM; }",
                ["--cache", "16MiB", "--mount", "/=http://UPSTREAM"],
                http=f"proxy_cache_path {cache_dir} keys_zone=c:1m;")

    def run(port, case, steps):
        said = []
        for method, query, extra in steps:
            target = f"/r/{urllib.parse.quote(case)}?{query}"
            answer = exchange(port, request(method, target, extra))
            status, _, body = parse(answer, head=method == "HEAD")
            went = [("conditional" if any(h.lower().startswith("if-none-match:") for h in heads) else "plain")
                    for _, heads, _ in pair.upstream.seen()]
            said.append((status, len(body), went))
        return said

    try:
        for case, steps in cache_cases():
            tally.compare(case, run(pair.ref_port, case, steps), run(pair.our_port, case, steps))
    finally:
        pair.close()
    return tally.summary("cache")


BATTERIES = {"compress": battery_compress, "gate": battery_gate, "errors": battery_errors,
             "access": battery_access, "auth": battery_auth, "rate": battery_rate, "pool": battery_pool, "xaccel": battery_xaccel, "proxy": battery_proxy, "static": battery_static, "websocket": battery_websocket, "proxy-websocket": battery_proxy_websocket, "wsgi-input": battery_wsgi_input,
             "wsgi-response": battery_wsgi_response, "asgi-response": battery_asgi_response,
             "uwsgi-response": battery_uwsgi_response,
             "scope": battery_scope, "dispatch": battery_dispatch, "cors": battery_cors, "cgi": battery_cgi, "environ": battery_environ,
             "proxy-fix": battery_proxy_fix, "proxy-protocol": battery_proxy_protocol,
             "cache": battery_cache, "uwsgi-environ": battery_uwsgi_environ,
             "cgi-response": battery_cgi_response, "forward-auth": battery_forward_auth,
             "shared-data": battery_shared_data, "http2": battery_http2,
             "max-requests": battery_max_requests}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("batteries", nargs="*", choices=[[]] + list(BATTERIES), default=[])
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "stackway"))
    args = parser.parse_args()
    if not Path(args.binary).exists():
        raise SystemExit(f"{args.binary} is not built: cargo build --release -p stackway-cli")
    try:
        new = sum(BATTERIES[name](args.binary) for name in args.batteries or BATTERIES)
    finally:
        killed(*(proc for proc in STARTED if proc.poll() is None))
    sys.exit(1 if new else 0)


if __name__ == "__main__":
    main()
