#!/usr/bin/env python3
"""Builds the release binaries with profile-guided optimisation, in target/pgo/release.

A request runs about 20k instructions of the server's own code, a little of
each of many functions, and on a core shared with its front (nginx) and the
client those instructions cost several times what the app's do: the code is
read back into caches that the others emptied. The compiler lays code out
well only when it knows which branches a request takes. This script tells it:

1. builds `stackway` and `stackway-python` instrumented (`-Cprofile-generate`),
   in target/pgo-train;
2. runs them on a training load: `stackway serve` answering hello, a route
   among many mounts, static files (small and large, 304, HEAD, a range, 404),
   a few compressed responses and a request proxied over HTTP and over TLS,
   on kept-alive and new connections; hello over TLS in HTTP/1.1 and HTTP/2;
   `stackway-python serve` answering a WSGI app over HTTP (on Python threads)
   and over uwsgi as nginx's `uwsgi_pass` sends it (on the workers,
   `--wsgi-threads 0`), and an ASGI app. Code no request ran is taken for
   cold and made small, so the load has every kind the benchmarks measure;
3. merges the profiles, each binary's weighing the same, with the
   `llvm-profdata` of rustc's own LLVM (`rustup component add llvm-tools`);
4. builds the binaries again with them (`-Cprofile-use`), in target/pgo;
5. lays their code out again by where the same load runs it, with BOLT (Debian's
   `bolt-16`: `llvm-bolt`, `merge-fdata`), when it is installed: each binary
   instrumented (`llvm-bolt -instrument`), run on the load, and rewritten with its
   hot code together and its cold code apart. The compiler's layout is per function;
   BOLT's is the whole binary's, which a request crossing a few hundred functions
   once each, on cores where nginx and Python empty the caches, reads back from fewer
   lines and pages (about 2.5 % of the server's CPU on the Flask hello behind
   `uwsgi_pass`, BENCHMARKS.md). Without BOLT the binaries stay as step 4 made them
   (under CI, a missing BOLT is an error);
6. checks that the result serves.

    python3 cli/pgo.py        # about 15 minutes on 2 cores

The profile is made fresh from the source at hand each time, never kept: a
stale one only costs its effect, but a fresh one costs no more than a build.
The figures are in BENCHMARKS.md ("The binaries built with their profile").
"""

import hashlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "target" / "pgo-train"
RAW = TRAIN / "profiles"
OUT = ROOT / "target" / "pgo"
FDATA = TRAIN / "bolt"  # BOLT's counts, a file a process
BINARIES = ("stackway", "stackway-python")
ROUNDS = 3000  # requests of each kind in the load: enough to weigh the branches

APP = '''\
def application(environ, start_response):
    body = ("Hello, %s!" % environ["PATH_INFO"].strip("/")).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = ('{"message": "Hello, %s!"}' % scope["path"].strip("/")).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
'''

# What nginx's uwsgi_params (Debian's, as shipped) sends for a GET, with a browser's Host.
UWSGI_PARAMS = {
    "QUERY_STRING": "", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "", "CONTENT_LENGTH": "",
    "REQUEST_URI": "/you", "PATH_INFO": "/you", "DOCUMENT_ROOT": "/usr/share/nginx/html",
    "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": "http", "REMOTE_ADDR": "127.0.0.1",
    "REMOTE_PORT": "40000", "SERVER_PORT": "80", "SERVER_NAME": "localhost",
    "HTTP_HOST": "localhost", "HTTP_USER_AGENT": "curl/7.88.1", "HTTP_ACCEPT": "*/*",
}


def fail(message):
    sys.exit(f"pgo: {message}")


def llvm_profdata():
    """rustc's own llvm-profdata: profiles are read by the LLVM that wrote them."""
    rustc = os.environ.get("RUSTC", "rustc")
    sysroot = subprocess.run([rustc, "--print", "sysroot"], capture_output=True, text=True,
                             check=True).stdout.strip()
    host = next(line.split()[1] for line in subprocess.run(
        [rustc, "-vV"], capture_output=True, text=True, check=True).stdout.splitlines()
        if line.startswith("host:"))
    tool = Path(sysroot) / "lib" / "rustlib" / host / "bin" / "llvm-profdata"
    if not tool.exists():
        fail(f"{tool} is missing; rustup component add llvm-tools")
    return tool


def bolt():
    """`llvm-bolt` and `merge-fdata`: on PATH, or Debian's (the newest of
    /usr/lib/llvm-*/bin); None without them."""
    on_path = shutil.which("llvm-bolt")
    candidates = [Path(on_path).parent] if on_path else []
    candidates += sorted(Path("/usr/lib").glob("llvm-*/bin"),
                         key=lambda d: int(d.parent.name.split("-")[1]), reverse=True)
    for directory in candidates:
        tools = directory / "llvm-bolt", directory / "merge-fdata"
        if all(tool.exists() for tool in tools):
            return tools
    if os.environ.get("CI") == "true":
        fail("llvm-bolt is missing (Debian: apt-get install bolt-16)")
    print("pgo: llvm-bolt is missing (Debian: apt-get install bolt-16): "
          "the binaries keep the compiler's layout")
    return None


def lay_out(tools, binaries):
    """Rewrites each binary with BOLT by the counts of its instrumented copy on the
    training load."""
    llvm_bolt, merge_fdata = tools
    shutil.rmtree(FDATA, ignore_errors=True)
    instrumented = FDATA / "instrumented"
    instrumented.mkdir(parents=True)

    def run(*command):
        done = subprocess.run([str(part) for part in command], capture_output=True, text=True)
        if done.returncode != 0:
            fail(f"{Path(command[0]).name} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    for name in BINARIES:
        run(llvm_bolt, binaries / name, "-instrument", "-o", instrumented / name,
            f"--instrumentation-file={FDATA / name}", "--instrumentation-file-append-pid")
    with tempfile.TemporaryDirectory(prefix="stackway-bolt-") as tmp:
        train(instrumented, Path(tmp))
    for name in BINARIES:
        counts = sorted(FDATA.glob(f"{name}.*.fdata"))
        if not counts:
            fail(f"the instrumented {name} wrote no counts")
        merged = FDATA / f"{name}.fdata"
        merged.write_text(run(merge_fdata, *counts))
        laid_out = binaries / f"{name}.bolt"
        run(llvm_bolt, binaries / name, "-o", laid_out, f"-data={merged}",
            "-reorder-blocks=ext-tsp", "-reorder-functions=hfsort+", "-split-functions",
            "-split-all-cold", "-split-eh", "-icf=1", "-use-gnu-stack")
        laid_out.replace(binaries / name)


def build(target_dir, flags):
    """The two binaries, release, with `flags` added to RUSTFLAGS."""
    env = dict(os.environ)
    env["RUSTFLAGS"] = " ".join(filter(None, [env.get("RUSTFLAGS", ""), flags]))
    subprocess.run(["cargo", "build", "--release", "-p", "stackway-cli", "--bins",
                    "--target-dir", str(target_dir)], env=env, check=True)
    return target_dir / "release"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(command, port):
    """Starts `command` and waits until `port` takes a connection. An instrumented
    binary writes its counts to a profile of its own (`merge` weighs them)."""
    profile = RAW / f"{Path(command[0]).name}.%m.profraw"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True,
                               env={**os.environ, "LLVM_PROFILE_FILE": str(profile)})
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                fail(f"{command[0]} did not start listening on {port}")
            time.sleep(0.05)


def stop(process):
    """A graceful stop: the profile is written as the process exits."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        fail("a trained server did not stop on SIGTERM")


def get(connection, path, headers=None, method="GET"):
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    response.read()
    if response.status >= 500:
        fail(f"{method} {path} answered {response.status}: the load would train an error's path")
    return response


def http_load(port, paths, rounds):
    """`paths` in turn, `rounds` times: kept-alive, with a new connection every 50."""
    connection = None
    for i in range(rounds):
        if i % 50 == 0:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for path in paths:
            if isinstance(path, tuple):
                get(connection, *path)
            else:
                get(connection, path)


def uwsgi_request(port, params):
    """One request in the uwsgi protocol, a connection each, as nginx's uwsgi_pass sends it."""
    body = b"".join(len(k).to_bytes(2, "little") + k.encode() + len(v).to_bytes(2, "little")
                    + v.encode() for k, v in params.items())
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"\0" + len(body).to_bytes(2, "little") + b"\0" + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    if not answer.startswith(b"HTTP/1.1 200"):
        fail(f"the uwsgi listener answered {answer[:40]!r}")


def curl_tls(version, cert, urls):
    """`urls` over one TLS connection, in `version` (curl's --http1.1 or --http2)."""
    outputs = [arg for url in urls for arg in ("-o", "/dev/null", url)]
    subprocess.run(["curl", "-sf", version, "--cacert", str(cert), *outputs], check=True)


def concurrently(*loads):
    """Runs the loads on threads of their own, as clients at once."""
    threads = [threading.Thread(target=load) for load in loads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def certificate(tmp):
    """A self-signed certificate for localhost, and its key."""
    cert, key = tmp / "localhost.crt", tmp / "localhost.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-days", "2",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def train(binaries, tmp):
    static = tmp / "static"
    static.mkdir()
    (static / "a.txt").write_text("static\n" * 100)
    (static / "page.html").write_text("<tr><td>stackway</td><td>%d</td></tr>\n" * 2000)
    (static / "large.bin").write_bytes(os.urandom(1 << 20))
    (tmp / "pgo_app.py").write_text(APP)
    cert, key = certificate(tmp)

    port, tls = free_port(), free_port()
    tls_server = serving([str(binaries / "stackway"), "serve", "--bind", f"127.0.0.1:{tls}",
                          "--tls-cert", str(cert), "--tls-key", str(key), "--mount", "/=hello"],
                         tls)
    mounts = [arg for i in range(100) for arg in ("--mount", f"/api{i}/v{i % 10}/svc{i}=hello")]
    server = serving([str(binaries / "stackway"), "serve", "--bind", f"127.0.0.1:{port}",
                      "--mount", "/=hello", "--mount", "/routes=routes",
                      "--static", f"/static={static}", *mounts, "--compress",
                      "--mount", f"/proxy=http://127.0.0.1:{port}",
                      "--mount", f"/proxy-tls=https://localhost:{tls}", "--proxy-ca", str(cert)],
                     port)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    etag = get(connection, "/static/a.txt").getheader("etag")
    paths = ["/", "/you", "/api99/v9/svc99/users/42", "/routes/users/42", "/static/a.txt",
             ("/static/a.txt", {"If-None-Match": etag}), ("/static/a.txt", None, "HEAD"),
             ("/static/large.bin", {"Range": "bytes=1000-1999"}), "/static/none",
             "/proxy/you", "/proxy-tls/you"]
    # A compressed response runs a thousand times a hello's instructions: a few of them,
    # or their loops would be all the profile counts as hot and a request's code lukewarm.
    rarely = ["/static/large.bin", ("/static/page.html", {"Accept-Encoding": "gzip"}),
              ("/static/page.html", {"Accept-Encoding": "br"})]
    tls_urls = [f"https://localhost:{tls}/you"] * 100
    try:
        concurrently(*(lambda: http_load(port, paths, ROUNDS // 2) for _ in range(2)),
                     lambda: http_load(port, rarely, 10),
                     *(lambda version=version: [curl_tls(version, cert, tls_urls)
                                                for _ in range(ROUNDS // 200)]
                       for version in ("--http1.1", "--http2")))
    finally:
        stop(server)
        stop(tls_server)

    port, uwsgi = free_port(), free_port()
    python = [str(binaries / "stackway-python"), "serve", "--pythonpath", str(tmp),
              "--mount", "/asgi=asgi:pgo_app:asgi", "--mount", "/=wsgi:pgo_app:application"]
    on_threads = serving(python + ["--bind", f"127.0.0.1:{port}"], port)
    on_workers = serving(python + ["--bind", f"uwsgi://127.0.0.1:{uwsgi}", "--wsgi-threads", "0"],
                         uwsgi)
    try:
        concurrently(lambda: http_load(port, ["/you", "/you/again", "/asgi/you"], ROUNDS // 2),
                     *(lambda: [uwsgi_request(uwsgi, UWSGI_PARAMS) for _ in range(ROUNDS // 2)]
                       for _ in range(2)))
    finally:
        stop(on_threads)
        stop(on_workers)


def check(binaries):
    """The optimised binary serves."""
    port = free_port()
    server = serving([str(binaries / "stackway"), "serve", "--bind", f"127.0.0.1:{port}",
                      "--mount", "/=hello"], port)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        response = get(connection, "/pgo")
        if response.status != 200:
            fail(f"the optimised binary answered {response.status}")
    finally:
        stop(server)


def total_count(profdata, profile):
    """The sum of a profile's counts, as `llvm-profdata show` reports it."""
    shown = subprocess.run([str(profdata), "show", "--detailed-summary", str(profile)],
                           capture_output=True, text=True, check=True).stdout
    return int(next(line.split(":")[1] for line in shown.splitlines()
                    if line.startswith("Total count:")))


def merge(profdata):
    """One profile for both binaries, each binary's load weighing the same: their
    libraries are one build, and `stackway`'s load counts about ten times what
    `stackway-python`'s does, which would make the code only the latter's requests
    run (the uwsgi listener's path) look cold beside it."""
    own = []
    for binary in BINARIES:
        raw = sorted(RAW.glob(f"{binary}.*.profraw"))
        if not raw:
            fail(f"the trained {binary} wrote no profile")
        merged = TRAIN / f"own-{binary}.profdata"
        subprocess.run([str(profdata), "merge", "-o", str(merged), *map(str, raw)], check=True)
        own.append((merged, total_count(profdata, merged)))
    largest = max(count for _, count in own)
    weighted = [f"--weighted-input={max(1, round(largest / count))},{merged}"
                for merged, count in own]
    merged = TRAIN / "merged.profdata"
    subprocess.run([str(profdata), "merge", "-o", str(merged), *weighted], check=True)
    return merged


def main():
    for tool in ("cargo", "curl", "openssl"):
        if not shutil.which(tool):
            fail(f"{tool} is missing")
    profdata = llvm_profdata()
    # The instrumented build's flags stay the same from run to run, so that a second
    # run rebuilds only what changed; the profile's name is its content's, so that
    # every crate is built again with a new one (cargo looks at the flags, not the file).
    shutil.rmtree(RAW, ignore_errors=True)
    trained = build(TRAIN, f"-Cprofile-generate={RAW}")
    with tempfile.TemporaryDirectory(prefix="stackway-pgo-") as tmp:
        train(trained, Path(tmp))
    merged = merge(profdata)
    for old in TRAIN.glob("stackway-*.profdata"):
        old.unlink()
    digest = hashlib.sha256(merged.read_bytes()).hexdigest()[:16]
    profile = merged.rename(TRAIN / f"stackway-{digest}.profdata")
    tools = bolt()
    # BOLT moves functions only in a binary that keeps its relocations.
    relocations = " -Clink-arg=-Wl,--emit-relocs" if tools else ""
    optimised = build(OUT, f"-Cprofile-use={profile}{relocations}")
    if tools:
        lay_out(tools, optimised)
    check(optimised)
    how = "built with their profile" + (" and laid out by BOLT" if tools else "")
    print(f"pgo: {optimised.relative_to(ROOT)}/stackway and stackway-python, {how}")


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
