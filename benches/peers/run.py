#!/usr/bin/env python3
"""stackway side by side with axum + tower-http, actix-web + actix-files, raw hyper and nginx.

Run from the repository root:  python3 benches/peers/run.py  (see BENCHMARKS.md)

Builds every server in release mode, then for each scenario and each repeat starts each server
in turn (A B C D, B C D A, ...) on a free loopback port with the same flags, checks that it
answers the scenario correctly, drives it with wrk, reads its peak RSS and how its CPU fell on
its threads, and stops it. Prints medians, p99 latencies, peak RSS, the busiest thread's share
of the CPU and each server's ratio to axum as Markdown tables.
"""

import argparse
import itertools
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "benches" / "peers"
DEEP_MOUNTS = [f"/api{i}/v{i % 10}/svc{i}" for i in range(100)]  # 100 apps, 3 segments deep
DEEP_PATH = DEEP_MOUNTS[-1] + "/users/42"
HELLO = ["hello-root", "hello-deep", "idle-5k"]
STATIC = ["static-1k", "static-64k", "static-1m", "static-20m", "static-304", "static-range"]
COMPRESSED = ["compressed-64k-gzip", "compressed-64k-br"]
WSGI = ["wsgi-hello", "wsgi-cpu"]
ASGI = ["asgi-hello", "ws-echo"]
# uwsgi-flask: nginx in front (uwsgi_pass) of stackway or uWSGI serving the same Flask app.
PYTHON_SCENARIOS = WSGI + ASGI + ["uwsgi-flask"]
SCENARIOS = HELLO[:2] + ["hello-param"] + STATIC + COMPRESSED + ["idle-5k", "slow-1g", "proxy", "proxy-https", "cache-hit", "cache-hit-disk"] + PYTHON_SCENARIOS
# proxy: to the raw hyper peer; proxy-https: to a stackway over TLS (a test certificate for
# localhost, checked by both proxies), each over a keep-alive pool; cache-hit: a response of
# the hyper peer's with max-age, answered from the proxy's cache (stackway --cache 64MiB,
# nginx proxy_cache in memory-backed files); cache-hit-disk: the same with stackway's cache on
# disk (--cache-dir), as nginx's is.
CACHE_HIT = ["cache-hit", "cache-hit-disk"]
PROXY = ["proxy", "proxy-https"] + CACHE_HIT
PYTHON_SERVERS = ["gunicorn-sync", "gunicorn-gthread", "granian", "uvicorn", "uwsgi"]
# `stackway-before`: another stackway binary (--before PATH), for a before/after in one run
# (in the Python scenarios with its stackway-python beside it);
# `stackway-1p`: stackway with one process, for what --processes adds in the Python scenarios;
# `stackway-t0`: stackway with `--wsgi-threads 0`, Python run on the workers (uWSGI's model);
# `stackway-before-t0`: the --before binary so;
# `stackway-pgo`, `stackway-pgo-t0`: the binaries cli/pgo.py built with their profile
# (target/pgo/release), as stackway and stackway-t0.
SERVERS = ["stackway", "stackway-before", "stackway-pgo", "stackway-1p", "stackway-t0",
           "stackway-before-t0", "stackway-pgo-t0", "axum", "actix", "hyper", "nginx"] + PYTHON_SERVERS
BEFORE = None  # the binary of stackway-before, set from --before
SERVE_FLAGS = []  # more flags for every stackway server, from --serve-flags
PGO = ROOT / "target" / "pgo" / "release" / "stackway"
# --instructions: the Rust servers and uWSGI run under callgrind, which counts the
# instructions each request costs in user space: the same in every run, where CPU time on two
# shared cores is not. Its dumps stay in target/peers/callgrind for callgrind.py to break down.
CALLGRIND = None  # that folder, set from --instructions
COUNTED_SERVERS = ("stackway", "stackway-before", "stackway-pgo", "stackway-1p", "stackway-t0",
                   "stackway-before-t0", "stackway-pgo-t0", "axum", "actix", "hyper", "uwsgi")
# The same Python WSGI apps under every server of the WSGI scenarios: `application` for
# wsgi-hello, `cpu` (about 2.5 ms of pure Python a request, as a real view spends) for wsgi-cpu.
WSGI_APP = """
import time

def cpu(environ, start_response):
    end = time.perf_counter() + 0.0025
    n = 0
    while time.perf_counter() < end:
        n += 1
    body = str(n).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

def application(environ, start_response):
    name = environ["PATH_INFO"].encode("latin-1").decode("utf-8").strip("/") or "world"
    body = f"Hello, {name}!".encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]

try:
    from flask import Flask

    flask_app = Flask(__name__)

    @flask_app.get("/<name>")
    def flask_hello(name):
        return f"Hello, {name}!"
except ImportError:  # only uwsgi-flask needs it
    pass

async def asgi_hello(scope, receive, send):
    name = scope["path"].rsplit("/", 1)[-1] or "world"
    body = ('{"message": "Hello, %s!"}' % name).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

async def ws_echo(scope, receive, send):
    if scope["type"] == "http":
        return await asgi_hello(scope, receive, send)
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
"""
PYDEPS = ROOT / "target" / "peers" / "pydeps"
UWSGI = ROOT / "target" / "peers" / "uwsgi" / "bin" / "uwsgi"
# The interpreter stackway-wsgi embeds (.cargo/config.toml), so every server runs the same Python.
PYTHON = "/usr/bin/python3.11"


# The other stackway binaries: the server each runs as, and its binary (None: not here).
VARIANTS = {
    "stackway-before": lambda: ("stackway", BEFORE),
    "stackway-before-t0": lambda: ("stackway-t0", BEFORE),
    "stackway-pgo": lambda: ("stackway", PGO if PGO.exists() else None),
    "stackway-pgo-t0": lambda: ("stackway-t0", PGO if PGO.exists() else None),
}


def applies(server, scenario):
    """hyper has no static files and nginx no hello app; proxy compares stackway with nginx;
    wsgi-hello compares stackway with the Python servers, which serve nothing else."""
    if server in VARIANTS:
        base, binary = VARIANTS[server]()
        return binary is not None and applies(base, scenario)
    if server == "stackway-1p":
        return scenario in PYTHON_SCENARIOS
    if server == "stackway-t0":
        return scenario in WSGI + ["uwsgi-flask"]
    if scenario in PYTHON_SCENARIOS:
        # gunicorn serves the WSGI scenarios, uvicorn the ASGI ones, granian both but
        # uwsgi-flask, which is uWSGI's alone.
        speaks = {"uvicorn": ASGI, "granian": WSGI + ASGI, "uwsgi": ["uwsgi-flask"]}.get(server, WSGI)
        return server == "stackway" or (server in PYTHON_SERVERS and scenario in speaks
                                        and python_server_installed(server))
    if server in PYTHON_SERVERS:
        return False
    if scenario == "hello-param":
        return server in ("stackway", "axum", "actix")
    if scenario in COMPRESSED:
        # nginx-light has gzip but no brotli; actix is left out.
        return server in ("stackway", "axum") or (server == "nginx" and scenario.endswith("gzip"))
    if scenario in PROXY:
        return server in ("stackway", "nginx")
    if server == "hyper":
        return scenario in HELLO
    if server == "nginx":
        return scenario in STATIC or scenario == "slow-1g"
    return True


def sh(*cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def ensure_tools():
    missing = [t for t in ("wrk", "nginx") if not shutil.which(t) and not Path("/usr/sbin/" + t).exists()]
    if missing:
        if os.geteuid() != 0:
            sys.exit(f"run.py: please install {' '.join(missing)} (Debian: apt-get install wrk nginx-light)")
        sh("apt-get", "update", "-q")
        # Installing nginx would start the system's nginx on port 80; policy-rc.d
        # forbids that for the install, so no process but our own is ever stopped.
        policy = Path("/usr/sbin/policy-rc.d")
        had_policy = policy.exists()
        if not had_policy:
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        try:
            sh("apt-get", "install", "-y", "-q", "wrk", "nginx-light",
               env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        finally:
            if not had_policy:
                policy.unlink()


def ensure_python_servers():
    """gunicorn, granian and uvicorn (with uvloop and httptools, as deployed) from PyPI into
    target/peers/pydeps, for the interpreter stackway embeds."""
    if not all(python_server_installed(s) for s in ("gunicorn-sync", "granian", "uvicorn")):
        subprocess.run([PYTHON, "-m", "pip", "install", "-q", "--target", str(PYDEPS),
                        "gunicorn", "granian", "uvicorn[standard]"], check=False)
    # uWSGI builds against this Python (gcc and its headers); its own target, for its bin/.
    if not python_server_installed("uwsgi"):
        subprocess.run([PYTHON, "-m", "pip", "install", "-q", "--target", str(UWSGI.parents[1]),
                        "uwsgi"], check=False)


def python_server_installed(server):
    if server == "uwsgi":
        return UWSGI.exists()
    module = server.split("-")[0]
    return (PYDEPS / module).is_dir()


def build():
    sh("cargo", "build", "--release", "-q", "-p", "stackway-cli", cwd=ROOT)
    sh("cargo", "build", "--release", "-q", cwd=PEERS)


def fixtures(tmp):
    static = tmp / "static"
    static.mkdir()
    for name, size in [("1k.bin", 1024), ("64k.bin", 64 * 1024), ("1m.bin", 1024 * 1024),
                       ("20m.bin", 20 * 1024 * 1024)]:
        (static / name).write_bytes(os.urandom(size))
    # A 64 KiB HTML page, as compressible as real ones (a table of varied rows).
    rows = "".join(f"<tr><td>{i}</td><td>item {i * 7919 % 1000}</td><td>{'ok' if i % 3 else 'late'}</td></tr>\n"
                   for i in range(2000))
    (static / "64k.html").write_text(("<html><body><table>\n" + rows)[:64 * 1024])
    with open(static / "1g.bin", "wb") as f:  # sparse: 1 GiB long, nothing on disk
        f.truncate(1 << 30)
    return static


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_conf(tmp, port, static, upstream=None, scenario=None):
    conf = tmp / f"nginx-{port}.conf"
    # The proxy scenario: a keep-alive pool to the upstream, as a production config has, and
    # the X-Forwarded-* fields a production config sets, which stackway's proxy sends unasked:
    # both send the upstream the same head.
    upstream_block = f"upstream up {{ server 127.0.0.1:{upstream}; keepalive 32; }}" if upstream else ""
    forwarded = ('proxy_set_header Connection ""; '
                 'proxy_set_header X-Forwarded-Prefix /proxy; '
                 'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; '
                 'proxy_set_header X-Forwarded-Proto $scheme; '
                 'proxy_set_header X-Forwarded-Host $http_host; '
                 'proxy_set_header X-Forwarded-Port $server_port;')
    proxy_location = (f'location /proxy/ {{ proxy_pass http://up/; proxy_http_version 1.1; '
                      f'{forwarded} }}') if upstream else ""
    if scenario == "proxy-https":
        proxy_location = (f'location /proxy/ {{ proxy_pass https://up/; proxy_http_version 1.1; '
                          f'{forwarded} proxy_ssl_verify on; '
                          f'proxy_ssl_trusted_certificate {upstream_certificate(tmp)[0]}; '
                          'proxy_ssl_name localhost; proxy_ssl_server_name on; '
                          'proxy_ssl_session_reuse on; }')
    cache_zone = ""
    if scenario in CACHE_HIT:
        cache_zone = f"proxy_cache_path {tmp}/nginx-cache-{port} keys_zone=hits:10m;"
        proxy_location = proxy_location.replace("proxy_pass http://up/;", "proxy_pass http://up/; proxy_cache hits;")
    access_log = "access_log off;"
    if scenario == "uwsgi-flask":
        # nginx as the front of a uWSGI deployment: uwsgi_params, uwsgi_pass (no keep-alive:
        # nginx opens a connection a request to a uwsgi backend). Two upstreams (`--paired`):
        # every other request to each, each one's logged to count them.
        upstream_block, to = "", f"127.0.0.1:{upstream}"
        if isinstance(upstream, list):
            servers = " ".join(f"server 127.0.0.1:{each};" for each in upstream)
            upstream_block, to = f"upstream pair {{ {servers} }}", "pair"
            access_log = (f'log_format upstream "$upstream_addr"; '
                          f'access_log {tmp}/nginx-{port}-upstreams.log upstream;')
        proxy_location = f"location / {{ include /etc/nginx/uwsgi_params; uwsgi_pass {to}; }}"
    # Level 6: what flate2's default, and so stackway's and tower-http's gzip, uses.
    gzip = "gzip on; gzip_comp_level 6; gzip_min_length 256; gzip_types text/html;" if scenario in COMPRESSED else ""
    conf.write_text(f"""
worker_processes {os.cpu_count()};
daemon off;
pid {tmp}/nginx-{port}.pid;
error_log stderr error;
events {{ worker_connections 20000; }}
http {{
    include /etc/nginx/mime.types;
    {access_log}
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    {upstream_block}
    {cache_zone}
    {gzip}
    server {{
        listen 127.0.0.1:{port};
        location /static/ {{ alias {static}/; }}
        {proxy_location}
    }}
}}
""")
    return ["nginx", "-p", str(tmp), "-c", str(conf)]


def upstream_certificate(tmp):
    """A self-signed certificate for localhost (and its key), made once a run."""
    cert, key = tmp / "upstream.crt", tmp / "upstream.key"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost", "-days", "2",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def command(server, port, static, tmp, upstream=None, scenario=None, counted=False):
    binary = ROOT / "target/release/stackway"
    if server == "tls-upstream":
        # proxy-https's upstream: stackway's hello over TLS, one worker.
        cert, key = upstream_certificate(tmp)
        return [str(binary), "serve", "--bind", f"127.0.0.1:{port}", "--tls-cert", str(cert),
                "--tls-key", str(key), "--mount", "/=hello", "--workers", "1"]
    if server in VARIANTS:
        server, binary = VARIANTS[server]()
    if server == "nginx":
        return nginx_conf(tmp, port, static, upstream, scenario)
    bind = f"127.0.0.1:{port}"
    app = {"wsgi-cpu": "bench_app:cpu", "asgi-hello": "bench_app:asgi_hello",
           "ws-echo": "bench_app:ws_echo"}.get(scenario, "bench_app:application")
    # Counted, a Python scenario's server is one process (stackway's with one worker, uWSGI
    # without its master), so that callgrind sees every request: a supervisor's count would
    # leave out the processes that serve.
    workers = "1" if counted else str(os.cpu_count())
    processes = []
    # Counted, the process callgrind runs serves: one worker and no --processes, which would
    # make it a supervisor (even of one).
    supervised = ["--workers", "1"] if counted else ["--processes", workers]
    # One Python thread a process in uwsgi-flask, as uWSGI runs there.
    python_threads = "1" if scenario == "uwsgi-flask" else None
    if server == "stackway-1p":
        server = "stackway"
    elif server == "stackway-t0":
        server, python_threads = "stackway", "0"
        processes = list(supervised)
    elif server == "stackway" and scenario in PYTHON_SCENARIOS:
        processes = list(supervised)
    if python_threads:
        processes += ["--wsgi-threads", python_threads]
    if server == "gunicorn-sync":
        return [PYTHON, "-m", "gunicorn", "-w", workers, "-k", "sync", "--chdir", str(tmp),
                "-b", bind, "--log-level", "warning", app]
    if server == "gunicorn-gthread":
        return [PYTHON, "-m", "gunicorn", "-w", workers, "-k", "gthread", "--threads", "8",
                "--chdir", str(tmp), "-b", bind, "--log-level", "warning", app]
    if server == "uvicorn":
        return [PYTHON, "-m", "uvicorn", "--workers", workers, "--host", "127.0.0.1",
                "--port", str(port), "--app-dir", str(tmp), "--log-level", "warning",
                "--no-access-log", app]
    if server == "uwsgi":
        # uWSGI as its docs deploy it behind nginx: a master, a process per core, one
        # thread each (threads only add GIL traffic to a hello), no request logging.
        return [str(UWSGI), "--socket", bind, "--chdir", str(tmp), "--module", "bench_app:flask_app",
                "--processes", workers, "--disable-logging", "--lazy-apps"] + ([] if counted else ["--master"])
    if server == "stackway" and scenario == "uwsgi-flask":
        return [str(binary), "serve", "--bind", f"uwsgi://{bind}", "--pythonpath", str(tmp),
                "--mount", "/=wsgi:bench_app:flask_app"] + processes + SERVE_FLAGS
    if server == "granian":
        interface = "asgi" if scenario in ASGI else "wsgi"
        return [PYTHON, "-m", "granian", "--interface", interface, "--workers", workers,
                "--host", "127.0.0.1", "--port", str(port), "--working-dir", str(tmp),
                "--log-level", "warning", app]
    # stackway routes /users/{id} with its Router (the built-in `routes` app at the root);
    # the peers have the route in their own routers in every scenario.
    root = "routes" if server == "stackway" and scenario == "hello-param" else "hello"
    flags = ["--bind", f"127.0.0.1:{port}", "--mount", f"/={root}", "--static", f"/static={static}"]
    if upstream and server == "stackway" and scenario == "proxy-https":
        flags += ["--mount", f"/proxy=https://localhost:{upstream}",
                  "--proxy-ca", str(upstream_certificate(tmp)[0])]
    elif upstream and server == "stackway":
        flags += ["--mount", f"/proxy=http://127.0.0.1:{upstream}"]
    if server == "stackway" and scenario in CACHE_HIT:
        flags += ["--cache", "64MiB"]
    if server == "stackway" and scenario == "cache-hit-disk":
        cache_dir = tmp / f"stackway-cache-{port}"
        shutil.rmtree(cache_dir, ignore_errors=True)
        flags += ["--cache-dir", str(cache_dir)]
    for prefix in DEEP_MOUNTS:
        flags += ["--mount", f"{prefix}=hello"]
    if scenario in COMPRESSED:
        flags.append("--compress")
    if server == "stackway" and scenario in WSGI:
        flags += ["--pythonpath", str(tmp), "--mount", f"/wsgi=wsgi:{app}"] + processes
    if server == "stackway" and scenario in ASGI:
        # PYDEPS for uvloop, which uvicorn runs on too.
        flags += ["--pythonpath", str(PYDEPS), "--pythonpath", str(tmp),
                  "--mount", f"/asgi=asgi:{app}"] + processes
    if server == "stackway":
        return [str(binary), "serve"] + flags + SERVE_FLAGS
    return [str(PEERS / f"target/release/{server}-peer")] + flags


class Server:
    def __init__(self, name, static, tmp, upstream=None, scenario=None, measured=False):
        self.name = name
        self.port = free_port()
        # /usr/bin first: the embedded interpreter (and uWSGI's) finds its home by the first
        # python3 on PATH, which a pyenv-run python3 sets to its own.
        env = {**os.environ, "PATH": "/usr/bin:" + os.environ.get("PATH", "")}
        if name in PYTHON_SERVERS:
            env["PYTHONPATH"] = str(PYDEPS)
        # The server measured, never the upstream or the front beside it.
        self.counted = CALLGRIND is not None and measured and name in COUNTED_SERVERS
        cmd = command(name, self.port, static, tmp, upstream, scenario, self.counted)
        if self.counted:
            # Followed through the exec into the binary with Python (stackway-python).
            cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes",
                   f"--callgrind-out-file={CALLGRIND}/{name}.%p"] + cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True, env=env)
        deadline = time.time() + (120 if self.counted else 20)
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"{name} did not start")
                time.sleep(0.05)

    def pids(self):
        kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        return [self.proc.pid] + [int(k) for k in kids]

    def memory_kib(self, field):
        """VmHWM (peak) or VmRSS (now), summed over the process and its children (nginx workers)."""
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total

    def cpu_seconds(self):
        """User + system CPU time so far, summed over the process and its children."""
        ticks = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
            except OSError:
                pass
        return ticks / os.sysconf("SC_CLK_TCK")

    def per_thread(self, read):
        """`read(task)` of each thread of the process and its children, by thread id (a
        thread gone meanwhile left out)."""
        values = {}
        for pid in self.pids():
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    values[task.name] = read(task)
                except OSError:
                    pass
        return values

    def run_ns(self):
        """Nanoseconds on a CPU so far, summed over the threads of the process and its
        children: the scheduler's exact account (`schedstat`), not sampled at the tick."""
        return sum(self.per_thread(lambda task: int((task / "schedstat").read_text().split()[0])).values())

    def thread_ticks(self):
        """CPU ticks so far of each thread of the process and its children, by thread id."""
        def ticks(task):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime, stime
        return self.per_thread(ticks)

    def instructions(self, command):
        """`zero` the counts, or `dump` them and return the instructions counted since and
        the dump that holds them."""
        subprocess.run(["callgrind_control", f"--{command}", str(self.proc.pid)], check=True,
                       capture_output=True)
        if command == "zero":
            return None
        dumps = sorted(Path(CALLGRIND).glob(f"{self.name}.{self.proc.pid}.*"), key=lambda f: f.stat().st_mtime)
        text = dumps[-1].read_text(errors="replace")
        return int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1)), dumps[-1]

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def request(port, path, headers=()):
    """One request over a fresh connection: (status, headers dict, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        extra = "".join(f"{h}\r\n" for h in headers)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(l.split(":", 1) for l in lines[1:] if ":" in l)
    return int(lines[0].split()[1]), {k.strip().lower(): v.strip() for k, v in fields.items()}, body


def scenario_request(scenario, port):
    """The path, extra headers and expected status of one scenario's requests."""
    if scenario in ("hello-root", "idle-5k"):
        return "/", [], 200
    if scenario == "hello-deep":
        return DEEP_PATH, [], 200
    if scenario == "hello-param":
        return "/users/42", [], 200
    if scenario in COMPRESSED:
        return "/static/64k.html", [f"Accept-Encoding: {scenario.rsplit('-', 1)[1]}"], 200
    if scenario in CACHE_HIT:
        return "/proxy/cached/users/42", [], 200
    if scenario in PROXY:
        return "/proxy/users/42", [], 200
    if scenario in PYTHON_SCENARIOS:
        return None, [], 200  # the path depends on the server: see run_once
    if scenario == "static-304":
        _, fields, _ = request(port, "/static/1k.bin")
        return "/static/1k.bin", [f"If-None-Match: {fields.get('etag', 'none')}"], 304
    if scenario == "static-range":
        return "/static/1m.bin", ["Range: bytes=1000-1999"], 206
    return "/static/" + scenario.split("-")[1] + ".bin", [], 200


def ws_load(port, path, args, seconds):
    """The ws-echo scenario's load: echo round trips over args.connections WebSockets."""
    out = subprocess.run([str(PEERS / "target/release/ws-load"), f"ws://127.0.0.1:{port}{path}",
                          str(args.connections), str(seconds)],
                         capture_output=True, text=True, check=True).stdout
    return {**json.loads(out), "non_2xx_3xx": 0, "socket_errors": None}


def wrk(port, path, headers, args, seconds):
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--latency"]
    for h in list(headers) + args.header:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    value, unit = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
    p99_ms = float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p99_ms": p99_ms, "non_2xx_3xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1) if errors else None}


def idle_connections(port, n):
    """n keep-alive connections that have each had one response and now sit idle."""
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        conns.append(s)
    for s in conns:
        if not s.recv(65536):
            raise RuntimeError("an idle connection was closed")
    return conns


def slow_reader(server, seconds):
    """Streams /static/1g.bin to a reader taking 16 KiB every 5 ms; the server's RSS growth in KiB."""
    time.sleep(0.2)
    baseline = server.memory_kib("VmRSS")
    peak = baseline
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(b"GET /static/1g.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        end = time.time() + seconds
        while time.time() < end and s.recv(16 * 1024):
            time.sleep(0.005)
            peak = max(peak, server.memory_kib("VmRSS"))
    return peak - baseline


def run_once(server_name, scenario, static, tmp, args):
    # The proxy scenarios' upstream, the same for both proxies.
    upstream = {"proxy": "hyper", "proxy-https": "tls-upstream", "cache-hit": "hyper", "cache-hit-disk": "hyper"}.get(scenario)
    upstream = Server(upstream, static, tmp) if upstream else None
    server = Server(server_name, static, tmp, upstream.port if upstream else None, scenario,
                    measured=True)
    # uwsgi-flask: the load goes to nginx, in front of the server measured.
    front = Server("nginx", static, tmp, server.port, scenario) if scenario == "uwsgi-flask" else None
    port = front.port if front else server.port
    try:
        if scenario == "slow-1g":
            return {"rss_growth_kib": slow_reader(server, args.slow_seconds)}
        path, headers, expected = scenario_request(scenario, server.port)
        if scenario == "uwsgi-flask":
            path = "/you"
        elif scenario in PYTHON_SCENARIOS:
            # stackway mounts the app at /wsgi or /asgi beside its others; the Python servers
            # serve only it.
            mount = "/asgi" if scenario in ASGI else "/wsgi"
            path = f"{mount}/you" if server_name.startswith("stackway") else "/you"
        status, fields, _ = request(port, path, headers)
        if status != expected:
            return {"error": f"answered {status}, expected {expected}"}
        if scenario in COMPRESSED and fields.get("content-encoding") != scenario.rsplit("-", 1)[1]:
            return {"error": f"not compressed: {fields.get('content-encoding')}"}
        conns, per_conn = [], None
        if scenario == "idle-5k":
            before = server.memory_kib("VmRSS")
            conns = idle_connections(server.port, args.idle)
            time.sleep(0.5)
            per_conn = (server.memory_kib("VmRSS") - before) / args.idle
        load = wrk if scenario != "ws-echo" else lambda port, path, _headers, args, seconds: ws_load(port, path, args, seconds)
        load(port, path, headers, args, 1)  # warm up
        if server.counted:
            server.instructions("zero")
        cpu, threads = server.cpu_seconds(), server.thread_ticks()
        result = load(port, path, headers, args, args.duration)
        cpu = server.cpu_seconds() - cpu
        spent = [ticks - threads.get(tid, 0) for tid, ticks in server.thread_ticks().items()]
        requests = result["rps"] * args.duration
        result["cpu_us_per_req"] = cpu * 1e6 / requests
        # How the load fell on the server's threads: a worker a core, each with the
        # connections it accepted, costs more a request when they split and take
        # turns on a core shared with the client than when one took them all.
        result["busiest_thread_share"] = max(spent, default=0) / max(sum(spent), 1)
        if server.counted:
            instructions, dump = server.instructions("dump")
            result["instructions_per_req"] = instructions / requests
            result.update(callgrind=str(dump.relative_to(ROOT)), requests=round(requests))
        result["peak_rss_kib"] = server.memory_kib("VmHWM")
        if per_conn is not None:
            result["kib_per_idle_conn"] = per_conn
        for c in conns:
            c.close()
        return result
    finally:
        server.stop()
        for other in (upstream, front):
            if other:
                other.stop()


def paired(names, static, tmp, args):
    """uwsgi-flask with two servers behind one nginx that sends each every other request:
    one load and the machine's noise of the moment on both, where runs one after the other
    differ by more than a change is worth. A round reads each server's CPU time and the
    requests nginx logged to it over the middle `--duration` seconds of a longer load."""
    started = []

    def served():
        lines = log.read_text().splitlines() if log.exists() else []
        return [lines.count(f"127.0.0.1:{server.port}") for server in (a, b)]

    rounds = []
    try:
        for name in names:
            started.append(Server(name, static, tmp, scenario="uwsgi-flask"))
        a, b = started
        front = Server("nginx", static, tmp, [a.port, b.port], "uwsgi-flask")
        started.append(front)
        log = tmp / f"nginx-{front.port}-upstreams.log"
        status, _, _ = request(front.port, "/you")
        if status != 200:
            sys.exit(f"run.py: the pair answered {status}")
        for _ in range(args.repeats):
            load = subprocess.Popen(
                ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration + 4}s",
                 f"http://127.0.0.1:{front.port}/you"], stdout=subprocess.DEVNULL)
            time.sleep(2)
            ran, counted = [a.run_ns(), b.run_ns()], served()
            time.sleep(args.duration)
            ran = [server.run_ns() - before for server, before in zip((a, b), ran)]
            counted = [now - before for now, before in zip(served(), counted)]
            load.wait()
            us = [ns / 1e3 / max(n, 1) for ns, n in zip(ran, counted)]
            rounds.append({names[0]: us[0], names[1]: us[1], "ratio": us[1] / us[0],
                           "requests": counted})
            print(f"paired: {names[0]} {us[0]:.1f} µs, {names[1]} {us[1]:.1f} µs a request, "
                  f"{names[1]}/{names[0]} {us[1] / us[0]:.3f} ({counted[0]} and {counted[1]} "
                  f"requests)", file=sys.stderr)
    finally:
        for server in reversed(started):
            server.stop()
    ratios = [r["ratio"] for r in rounds]
    table = (f"| uwsgi-flask, paired | {names[0]} | {names[1]} | {names[1]} / {names[0]} |\n"
             f"|---|---|---|---|\n"
             f"| CPU µs a request, median of {len(rounds)} | "
             f"{median(rounds, names[0]):.1f} | {median(rounds, names[1]):.1f} | "
             f"{median(rounds, 'ratio'):.3f} ({min(ratios):.3f}–{max(ratios):.3f}) |")
    return rounds, table


def median(runs, key):
    values = [r[key] for r in runs if key in r]
    return statistics.median(values) if values else None


def tables(results, args, servers):
    cell_servers = [s for s in servers]
    shapes = ", ".join(f"-t{t} -c{c}" for t, c in args.shapes)
    lines = [f"Machine: {os.cpu_count()} cores, {mem_gib():.0f} GiB, {platform.platform()}; {date.today()}.",
             f"wrk {shapes} -d{args.duration}s, {args.repeats} runs each, interleaved; "
             "medians (ratio to axum).", ""]

    def table(title, key, fmt, ratio, scenarios):
        out = [f"### {title}", "", "| scenario | " + " | ".join(cell_servers) + " |",
               "|---|" + "---|" * len(cell_servers)]
        for sc in scenarios:
            row = [sc]
            base = median(results.get(sc, {}).get("axum", []), key)
            for s in cell_servers:
                runs = results.get(sc, {}).get(s)
                if not runs:
                    row.append("—")
                    continue
                err = next((r["error"] for r in runs if "error" in r), None)
                value = median(runs, key) if not err else None
                if value is None:
                    row.append(f"n/a ({err})" if err else "—")
                    continue
                text = fmt(value)
                if ratio and base:
                    text += f" ({value / base:.2f}×)"
                row.append(text)
            out.append("| " + " | ".join(row) + " |")
        return out + [""]

    measured = [s for s in results if not s.startswith("slow-1g")]
    lines += table("Requests per second", "rps", lambda v: f"{v:,.0f}", True, measured)
    lines += table("Server CPU time per request (µs)", "cpu_us_per_req", lambda v: f"{v:.1f}", True, measured)
    lines += table("Busiest thread's share of the server's CPU (%)", "busiest_thread_share",
                   lambda v: f"{v * 100:.0f}", False, measured)
    lines += table("p99 latency (ms)", "p99_ms", lambda v: f"{v:.2f}", False, measured)
    lines += table("Peak RSS (MiB)", "peak_rss_kib", lambda v: f"{v / 1024:.1f}", False, measured)
    if CALLGRIND:
        lines += table("Instructions per request in user space (callgrind)", "instructions_per_req",
                       lambda v: f"{v:,.0f}", False, measured)
    memory = []
    idle = [s for s in results if s.startswith("idle-5k")]
    if idle:
        memory += table("Memory per idle keep-alive connection (KiB), idle-5k", "kib_per_idle_conn",
                        lambda v: f"{v:.1f}", False, idle)
    slow = [s for s in results if s.startswith("slow-1g")]
    if slow:
        memory += table("RSS growth streaming a 1 GiB file to a slow reader (MiB)", "rss_growth_kib",
                        lambda v: f"{v / 1024:.2f}", False, slow)
    return "\n".join(lines + memory)


def shape(text):
    """`1x32`: wrk's threads and connections."""
    try:
        threads, connections = (int(n) for n in text.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected THREADSxCONNECTIONS, as 2x64")
    return threads, connections


def mem_gib():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / (1 << 20)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=SCENARIOS)
    p.add_argument("--servers", nargs="+", choices=SERVERS, default=SERVERS)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--duration", type=int, default=5, help="seconds of load per run")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--connections", type=int, default=64, help="wrk connections")
    p.add_argument("--shapes", nargs="+", metavar="TxC", type=shape,
                   help="load shapes as wrk threads x connections (1x32 2x64): every scenario runs "
                        "under each, reported as 'scenario -tT -cC' [default: --threads x --connections]")
    p.add_argument("--header", action="append", default=[], metavar="FIELD",
                   help="a field wrk adds to every request ('User-Agent: Mozilla/5.0'), repeatable, "
                        "for requests shaped like a browser's")
    p.add_argument("--idle", type=int, default=5000, help="idle connections in idle-5k")
    p.add_argument("--slow-seconds", type=int, default=10, help="how long slow-1g reads")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--before", type=Path, help="another stackway binary, run as stackway-before")
    p.add_argument("--serve-flags", default="", metavar="FLAGS",
                   help="more flags for every stackway server (`stackway serve`), as one string: "
                        "'--access-log --max-requests 100000'")
    p.add_argument("--instructions", action="store_true",
                   help="run the Rust servers and uWSGI under callgrind (a Python scenario's as "
                        "one process) and report instructions per request "
                        "(valgrind; the other figures of those runs are valgrind's, not the server's); "
                        "the dumps stay in target/peers/callgrind for callgrind.py")
    p.add_argument("--paired", nargs=2, metavar=("A", "B"), choices=SERVERS,
                   help="uwsgi-flask with A and B behind one nginx, every other request to "
                        "each, for --repeats rounds: each one's CPU a request over the same "
                        "seconds, and B's to A's (the other scenario flags are ignored)")
    p.add_argument("--out", type=Path, default=ROOT / "target/peers/results.json")
    args = p.parse_args()
    args.shapes = args.shapes or [(args.threads, args.connections)]
    global BEFORE, CALLGRIND, SERVE_FLAGS
    BEFORE = args.before and args.before.resolve()
    SERVE_FLAGS = shlex.split(args.serve_flags)
    if BEFORE and not {"stackway-before", "stackway-before-t0"} & set(args.servers):
        args.servers = ["stackway-before"] + args.servers

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    ensure_tools()
    if not args.no_build:
        build()
    results = {}
    with tempfile.TemporaryDirectory(prefix="stackway-peers-") as tmp:
        tmp = Path(tmp)
        tmp.chmod(0o755)  # nginx's workers run as another user
        if args.instructions:
            if not shutil.which("valgrind"):
                sys.exit("run.py: --instructions needs valgrind (Debian: apt-get install valgrind)")
            CALLGRIND = ROOT / "target" / "peers" / "callgrind"
            shutil.rmtree(CALLGRIND, ignore_errors=True)
            CALLGRIND.mkdir(parents=True)
        static = fixtures(tmp)
        (tmp / "bench_app.py").write_text(WSGI_APP)
        if args.paired:
            ensure_python_servers()
            rounds, table = paired(args.paired, static, tmp, args)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"uwsgi-flask, paired": rounds}, indent=1))
            print(table)
            return
        if set(PYTHON_SCENARIOS) & set(args.scenarios):
            ensure_python_servers()
        for scenario, (threads, connections) in itertools.product(args.scenarios, args.shapes):
            label = scenario if len(args.shapes) == 1 else f"{scenario} -t{threads} -c{connections}"
            shaped = argparse.Namespace(**{**vars(args), "threads": threads, "connections": connections})
            servers = [s for s in args.servers if applies(s, scenario)]
            for rep in range(args.repeats):
                # A B C D, then B C D A, ...: drift, and whatever the first run of a
                # round pays, fall on every server alike.
                for server in servers[rep % len(servers):] + servers[:rep % len(servers)]:
                    result = run_once(server, scenario, static, tmp, shaped)
                    print(f"{label:13} run {rep + 1} {server:9} {json.dumps(result)}", file=sys.stderr)
                    results.setdefault(label, {}).setdefault(server, []).append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(tables(results, args, [s for s in SERVERS if s in args.servers]))


if __name__ == "__main__":
    main()
