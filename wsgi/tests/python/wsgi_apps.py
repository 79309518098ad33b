"""WSGI apps the stackway-wsgi tests serve over real sockets."""

import io
import sys
import threading
import time
import warnings
import wsgiref.validate

# A complaint from the validator is an error, so a test sees it as a 500.
warnings.simplefilter("error", wsgiref.validate.WSGIWarning)


def hello(environ, start_response):
    """The seed documents' application: a greeting for PATH_INFO."""
    name = environ["PATH_INFO"].encode("latin-1").decode("utf-8").strip("/") or "world"
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [f"Hello, {name}!".encode()]


def _describe(environ, start_response):
    if environ["PATH_INFO"] == "/error":
        raise RuntimeError("the app failed on purpose")
    if environ["PATH_INFO"] == "/exit":
        sys.exit(3)  # a SystemExit must not stop the server
    stream = environ["wsgi.input"]
    body = b""
    while True:
        chunk = stream.read(8192)
        if not chunk:
            break
        body += chunk
    lines = [
        f"method={environ['REQUEST_METHOD']}",
        f"script_name={environ['SCRIPT_NAME'].encode('latin-1').decode('utf-8')}",
        f"path_info={environ['PATH_INFO'].encode('latin-1').decode('utf-8')}",
        f"query={environ['QUERY_STRING']}",
        f"request_uri={environ['REQUEST_URI']}",
        f"content_type={environ.get('CONTENT_TYPE', '-')}",
        f"content_length={environ.get('CONTENT_LENGTH', '-')}",
        f"body={len(body)}:{body[:40]!r}",
        f"scheme={environ['wsgi.url_scheme']}",
        f"host={environ.get('HTTP_HOST', '-')}",
        f"fields={'|'.join(f'{k}:{v}' for k, v in sorted(environ.items()) if k.startswith('HTTP_'))}",
        f"concurrency=thread:{environ['wsgi.multithread']} process:{environ['wsgi.multiprocess']}",
        # What a request added to its environ never reaches the next one's.
        f"fresh={'describe.seen' not in environ}",
        f"keys={','.join(sorted(k for k in environ if not k.startswith(('HTTP_', 'CONTENT_'))))}",
    ]
    environ["describe.seen"] = True
    text = ("\n".join(lines) + "\n").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(text)))])
    if environ["REQUEST_METHOD"] == "HEAD":
        return []
    return [text]


describe = wsgiref.validate.validator(_describe)

closed = []


class Chunks:
    """An iterable response that notes its close()."""

    def __init__(self, count, delay):
        self.count, self.delay = count, delay

    def __iter__(self):
        for i in range(self.count):
            time.sleep(self.delay)
            yield f"chunk {i}\n".encode()

    def close(self):
        closed.append(self.count)


def generator(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    if environ["PATH_INFO"] == "/endless":
        return Chunks(10**9, 0.01)
    return Chunks(3, 0)


def closed_count(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(len(closed)).encode()]


def writer(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written, ")
    return [b"then returned"]


def exc_info_before_the_head(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("changed my mind")
    except ValueError:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"replaced"]


def exc_info_after_the_head(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"partial")
    try:
        raise ValueError("too late")
    except ValueError:
        start_response("500 Internal Server Error", [], sys.exc_info())  # re-raises
    return [b"never"]


def start_twice(environ, start_response):
    start_response("200 OK", [])
    start_response("200 OK", [])
    return [b"never"]


def file_wrapper(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    if environ["PATH_INFO"] == "/bytesio":
        return environ["wsgi.file_wrapper"](io.BytesIO(b"from memory"), 4)
    handle = open(__file__, "rb")
    handle.seek(3)
    return environ["wsgi.file_wrapper"](handle, 4096)


def lines(environ, start_response):
    stream = environ["wsgi.input"]
    first = stream.readline()
    rest = [line for line in stream]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{first!r} then {rest!r}".encode()]


def sleepy(environ, start_response):
    time.sleep(0.2)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [threading.current_thread().name.encode()]


def napper(environ, start_response):
    """Sleeps as many seconds as the query string says."""
    time.sleep(float(environ["QUERY_STRING"]))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"awake"]


_in_python = 0
_most_in_python = 0
_count_lock = threading.Lock()


def counted(environ, start_response):
    """Computes for 10 ms (`/compute`) or sleeps 200 ms (`/sleep`); `/most` answers the most
    requests that were in here at once, since the last `/most`."""
    global _in_python, _most_in_python
    if environ["PATH_INFO"] == "/most":
        with _count_lock:
            most, _most_in_python = _most_in_python, 0
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(most).encode()]
    with _count_lock:
        _in_python += 1
        _most_in_python = max(_most_in_python, _in_python)
    try:
        if environ["PATH_INFO"] == "/compute":
            end = time.perf_counter() + 0.01
            while time.perf_counter() < end:
                pass
        else:
            time.sleep(0.2)
    finally:
        with _count_lock:
            _in_python -= 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done"]


def bad_status(environ, start_response):
    start_response("20 OK", [])
    return [b""]


def bad_length(environ, start_response):
    """A Content-Length that is no length: the query's, or two that differ."""
    query = environ["QUERY_STRING"]
    lengths = query.split(",") if query else ["abc"]
    start_response("200 OK", [("Content-Length", n) for n in lengths])
    return [b"x"]


def big(environ, start_response):
    """GET: 256 MiB in 64 KiB chunks; POST: reads the body in chunks and counts it."""
    if environ["REQUEST_METHOD"] == "POST":
        total, stream = 0, environ["wsgi.input"]
        while True:
            chunk = stream.read(65536)
            if not chunk:
                break
            total += len(chunk)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(total).encode()]
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(256 << 20))])
    block = b"\0" * 65536
    return (block for _ in range(4096))


def client_cert(environ, start_response):
    """What a mutual-TLS client showed, as the environ names it."""
    names = ["SSL_CLIENT_VERIFY", "SSL_CLIENT_S_DN", "SSL_CLIENT_I_DN", "SSL_CLIENT_FINGERPRINT"]
    text = "".join(f"{name}={environ.get(name, '-')}\n" for name in names).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(text)))])
    return [text]


def reasons(environ, start_response):
    """The status line PATH_INFO names: /404 → Werkzeug's "404 NOT FOUND"."""
    status = {
        "/404": "404 NOT FOUND",
        "/299": "299 Whatever",
        "/200": "200 OK",
        "/bad": "200 Fine\x7f",
        "/bare": "204",
    }[environ["PATH_INFO"]]
    start_response(status, [("Content-Type", "text/plain")])
    return [b""]


def connection_fields(environ, start_response):
    """Names its connection's fields, and gives its headers as lists, not tuples."""
    start_response("200 OK", [["Content-Type", "text/plain"], ["Keep-Alive", "timeout=600"],
                              ["Upgrade", "h2c"], ["Proxy-Connection", "keep-alive"], ["X-Kept", "yes"]])
    return [b"fields"]


def environ(environ, start_response):
    """The environ's text values, one `name=repr(value)` a line, and the
    types of the others."""
    lines = []
    for name, value in sorted(environ.items()):
        if isinstance(value, str):
            lines.append(f"{name}={value!r}")
        elif name not in ("wsgi.input", "wsgi.errors", "wsgi.file_wrapper"):
            lines.append(f"{name}={value!r}")
        else:
            lines.append(f"{name}:{type(value).__name__}")
    body = "\n".join(lines).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
