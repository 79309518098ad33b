#!/usr/bin/env python3
"""Writes cli/link-order.txt, the functions the binaries run, for the linker.

build.rs hands the file to lld (`--symbol-ordering-file`), which lays these
functions out first and together: a request's functions share the
instruction cache's and TLB's lines and pages, and what a process runs to
start sits in a few pages of the binary instead of pages all through its
7 MiB of code (the kernel maps up to 64 KiB around each page a process
touches).

The list comes from callgrind over three runs of the release binaries:
`stackway serve` starting and stopping; the same serving hello, static files,
a route, a proxied request and a 404; and `stackway-python` serving a WSGI app
over uwsgi (as nginx's `uwsgi_pass` asks), then over HTTP. A serving run is
counted in parts: its start, until it listens, and each of its loads. The
loads come first, each with the functions the ones before it did not run:
uwsgi, WSGI over HTTP, then the Rust apps' requests, so that a request of the
first runs from one stretch of the binary, and one of the others from the
stretches before its own. The starts come after. Within each part the
functions that ran the most instructions come first. The Flask hello behind
`uwsgi_pass` ran its part of the binary from 106 pages of 4 KiB with the
starts first, and from 66 with the loads first (BENCHMARKS.md).

Symbols carry a hash that changes when a function's crate or generic
arguments change; lld skips names it does not find, so an old list costs
nothing but its effect. Regenerate it after a dependency upgrade or a large
change:

    cargo build --release -p stackway-cli && python3 cli/link-order.py

Whether the list still fits the release binaries at hand (`nm`, from binutils;
`.ci/run` runs it after its release build):

    python3 cli/link-order.py --check   # exits 1 when under 90 % of its names are there

A list left behind costs a process at rest its pages: 33 commits after it was
written, 424 of its 1,173 names were in the binaries, and `stackway serve
--mount /=hello` rested at 5.5 MiB where a list made anew gave 3.9.

Needs valgrind (Debian's `valgrind`) and curl.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
OUT = Path(__file__).resolve().parent / "link-order.txt"

APP = '''\
def application(environ, start_response):
    body = ("Hello, %s!" % environ["PATH_INFO"].strip("/")).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def curl(*urls, head=False):
    """GETs (or HEADs) `urls` on one connection."""
    outputs = [arg for url in urls for arg in ("-o", "/dev/null", url)]
    subprocess.run(["curl", "-s", *(["-I"] if head else []), *outputs], check=True)


def uwsgi_request(port, path):
    """One request in the uwsgi protocol, as nginx's uwsgi_pass sends curl's with
    Debian's uwsgi_params."""
    fields = {"QUERY_STRING": "", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "",
              "CONTENT_LENGTH": "", "REQUEST_URI": path, "PATH_INFO": path,
              "DOCUMENT_ROOT": "/usr/share/nginx/html", "SERVER_PROTOCOL": "HTTP/1.1",
              "REQUEST_SCHEME": "http", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "51234",
              "SERVER_PORT": "80", "SERVER_NAME": "localhost", "HTTP_HOST": "localhost",
              "HTTP_USER_AGENT": "curl/7.88.1", "HTTP_ACCEPT": "*/*"}
    body = b"".join(len(k).to_bytes(2, "little") + k.encode() + len(v).to_bytes(2, "little")
                    + v.encode() for k, v in fields.items())
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"\0" + len(body).to_bytes(2, "little") + b"\0" + body)
        while s.recv(65536):
            pass


def callgrind(name, command, loads, tmp):
    """Runs `command` under callgrind until it listens, then each of `loads`, then
    stops it; returns the profiles of its start and of each load (the last one's
    with the stop)."""
    out = tmp / f"{name}.callgrind"
    process = subprocess.Popen(["valgrind", "--tool=callgrind", "--demangle=no",
                                f"--callgrind-out-file={out}", *command],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        # One line a listener, once it listens (not a connection: that would run the
        # accept's code in the start's part).
        listeners = command.count("--bind")
        while listeners:
            line = process.stdout.readline()
            if not line:
                sys.exit(f"link-order: {name}: the server stopped before listening")
            listeners -= line.startswith("listening on")
        threading.Thread(target=process.stdout.read, daemon=True).start()
        for load in loads:
            # What ran since the last dump goes to `out.N`, and the counts start again.
            subprocess.run(["callgrind_control", "--dump", str(process.pid)],
                           capture_output=True, check=True)
            load()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
    return [Path(f"{out}.{n}") for n in range(1, len(loads) + 1)] + [out]


def functions(profile, binary):
    """The functions of `binary` in a callgrind profile, with their own instructions."""
    names, objects, cost = {}, {}, {}
    current_object = function = None
    skip = False

    def name(table, text):
        m = re.match(r"\((\d+)\)(?: (.*))?", text)
        if not m:
            return text
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table[m.group(1)]

    for line in profile.read_text().splitlines():
        if line.startswith("ob="):
            current_object = name(objects, line[3:])
        elif line.startswith("cob="):
            name(objects, line[4:])
        elif line.startswith("fn="):
            function = name(names, line[3:])
            if current_object and current_object.endswith("/" + binary):
                cost.setdefault(function, 0)
            else:
                function = None
        elif line.startswith("cfn="):
            name(names, line[4:])
        elif line.startswith("calls="):
            skip = True  # the next line is the call's inclusive cost
        elif line[:1].isdigit() or line[:1] in "+-*":
            if skip:
                skip = False
            elif function is not None:
                parts = line.split()
                if len(parts) > 1:
                    cost[function] += int(parts[1])
    # callgrind marks a recursive call's function with 'N; the symbol is the same.
    ordered = sorted(cost, key=lambda f: -cost[f])
    symbols = (re.sub(r"'\d+$", "", f) for f in ordered)
    return [s for s in symbols if not s.startswith(("0x", "(below"))]


def release_binaries():
    """`stackway` and `stackway-python` of the release build; exits if one is missing."""
    binaries = RELEASE / "stackway", RELEASE / "stackway-python"
    for binary in binaries:
        if not binary.exists():
            sys.exit(f"link-order: {binary} is missing; cargo build --release -p stackway-cli")
    return binaries


def check():
    """How many of the list's names the release binaries have; exits 1 under 90 %."""
    symbols = set()
    for binary in release_binaries():
        listed = subprocess.run(["nm", "--defined-only", binary],
                                capture_output=True, text=True, check=True).stdout
        symbols.update(line.split()[-1] for line in listed.splitlines() if line.strip())
    names = [line for line in OUT.read_text().splitlines() if line and not line.startswith("#")]
    found = sum(name in symbols for name in names)
    print(f"link-order: {found} of {len(names)} names in the release binaries")
    if found < 0.9 * len(names):
        sys.exit("link-order: the list is stale; python3 cli/link-order.py writes it anew")


def main():
    for tool in ("valgrind", "curl"):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            sys.exit(f"link-order: {tool} is missing")
    stackway, python = release_binaries()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "static").mkdir()
        (tmp / "static" / "a.txt").write_text("static\n" * 100)
        (tmp / "order_app.py").write_text(APP)
        http, uwsgi = free_port(), free_port()

        start = callgrind("start", [stackway, "serve", "--bind", f"127.0.0.1:{http}",
                                    "--mount", "/=hello"], [lambda: time.sleep(1)], tmp)

        base = f"http://127.0.0.1:{http}"

        def serve_load():
            for _ in range(20):
                curl(f"{base}/", f"{base}/static/a.txt", f"{base}/routes/users/42",
                     f"{base}/proxy/you", f"{base}/static/none")
                curl(f"{base}/static/a.txt", head=True)

        serve = callgrind("serve", [stackway, "serve", "--bind", f"127.0.0.1:{http}",
                                    "--mount", "/=hello", "--mount", "/routes=routes",
                                    "--static", f"/static={tmp / 'static'}",
                                    "--mount", f"/proxy=http://127.0.0.1:{http}"],
                          [serve_load], tmp)

        def uwsgi_load():
            for _ in range(20):
                uwsgi_request(uwsgi, "/you")

        def http_load():
            for _ in range(20):
                curl(f"{base}/you", f"{base}/you/again")

        served = callgrind("python", [python, "serve", "--bind", f"127.0.0.1:{http}",
                                      "--bind", f"uwsgi://127.0.0.1:{uwsgi}",
                                      "--pythonpath", str(tmp), "--wsgi-threads", "0",
                                      "--mount", "/=wsgi:order_app:application"],
                           [uwsgi_load, http_load], tmp)

        # The loads (uwsgi, WSGI over HTTP, the Rust apps'), then the starts.
        parts = [(served[1], "stackway-python"), (served[2], "stackway-python"),
                 (serve[1], "stackway"), (start[0], "stackway"), (start[1], "stackway"),
                 (serve[0], "stackway"), (served[0], "stackway-python")]
        seen, lines = set(), []
        for profile, binary in parts:
            for symbol in functions(profile, binary):
                if symbol not in seen:
                    seen.add(symbol)
                    lines.append(symbol)
    header = ["# The functions stackway runs, in the order the linker lays them out.",
              "# Written by cli/link-order.py (see there); build.rs hands it to lld.", ""]
    OUT.write_text("\n".join(header + lines) + "\n")
    print(f"link-order: {len(lines)} functions in {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    os.chdir(ROOT)
    if sys.argv[1:] == ["--check"]:
        check()
    else:
        main()
