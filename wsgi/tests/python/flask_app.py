"""A Flask app, mounted under a prefix by the tests."""

import os
import time

from flask import Flask, redirect, request, url_for

app = Flask(__name__)


@app.route("/")
def index():
    return f"index links to {url_for('hello', name='x')}"


@app.route("/hello/<name>")
def hello(name):
    return f"hello {name} at {request.script_root}{request.path}"


@app.route("/go")
def go():
    return redirect(url_for("hello", name="there"))


@app.route("/form", methods=["POST"])
def form():
    return f"posted {request.form['a']}"


@app.route("/external")
def external():
    return url_for("hello", name="x", _external=True)


@app.route("/go-external")
def go_external():
    return redirect(url_for("hello", name="there", _external=True))


@app.route("/host")
def host():
    return f"{request.host} {request.environ['HTTP_HOST']} {request.url_root}"


@app.route("/whoami")
def whoami():
    return f"{request.remote_addr} {request.scheme} {request.environ['SERVER_PROTOCOL']}"


@app.route("/server")
def server():
    environ = request.environ
    return f"{environ['SERVER_NAME']} {environ['SERVER_PORT']} {url_for('hello', name='x', _external=True)}"


@app.route("/cookies")
def cookies():
    return " ".join(f"{k}={v}" for k, v in sorted(request.cookies.items()))


@app.route("/front")
def front():
    return f"{request.remote_user} {request.environ.get('DOCUMENT_ROOT', '-')}"


@app.route("/pid")
def pid():
    time.sleep(float(request.args.get("wait", "0")))
    return str(os.getpid())


@app.route("/uri")
def uri():
    return request.environ["REQUEST_URI"]


@app.route("/upload", methods=["POST"])
def upload():
    total = 0
    while chunk := request.stream.read(1 << 16):
        total += len(chunk)
    return f"{total} bytes"


@app.route("/download/<int:mib>")
def download(mib):
    chunk = b"d" * (1 << 20)
    return app.response_class((chunk for _ in range(mib)), mimetype="application/octet-stream")


_cached_calls = 0


@app.route("/cached")
def cached():
    """A page worth caching: fresh for a minute, a variant per Accept-Encoding."""
    global _cached_calls
    _cached_calls += 1
    body = f"computed {_cached_calls} times\n" + "x" * 4096
    return body, 200, {"Cache-Control": "max-age=60", "Vary": "Accept-Encoding"}
