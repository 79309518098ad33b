"""The apps `run.py` serves from stackway and from the reference alike."""

import asyncio
import json

seen = {}


async def _lifespan(receive, send):
    """Starts at once, and shuts down when told."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


async def websocket(scope, receive, send):
    """A WebSocket app whose path says how it behaves; plain HTTP `/report` answers `seen`."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    if scope["type"] == "http":
        body = json.dumps(seen, sort_keys=True).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    path = scope["path"]
    if path == "/crash-before":
        raise RuntimeError("boom")
    assert (await receive())["type"] == "websocket.connect"
    if path in ("/reject", "/reject-4001"):
        code = 4001 if path == "/reject-4001" else 1000
        await send({"type": "websocket.close", "code": code})
        return
    if path == "/no-accept-return":
        return
    if path == "/deny":
        await send({"type": "websocket.http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "websocket.http.response.body", "body": b"nope"})
        return
    subprotocols = scope.get("subprotocols") or []
    chosen = subprotocols[-1] if path == "/accept-sub" and subprotocols else None
    await send({"type": "websocket.accept", "subprotocol": chosen, "headers": [(b"x-extra", b"1")]})
    if path == "/scope":
        keep = {k: scope.get(k) for k in ["type", "path", "raw_path", "query_string", "root_path", "scheme",
                                          "subprotocols", "http_version", "asgi"]}
        keep = {k: v.decode("latin-1") if isinstance(v, bytes) else v for k, v in keep.items()}
        keep["headers"] = sorted(name.decode() for name, _ in scope["headers"])
        keep["extensions"] = sorted(scope.get("extensions") or {})
        await send({"type": "websocket.send", "text": json.dumps(keep, sort_keys=True)})
    elif path == "/crash-after":
        await send({"type": "websocket.send", "text": "before the crash"})
        raise RuntimeError("boom after")
    elif path == "/close-reason":
        await send({"type": "websocket.close", "code": 4000, "reason": "bye"})
        return
    elif path == "/return":
        await send({"type": "websocket.send", "text": "then return"})
        return
    elif path == "/send-both":
        await send({"type": "websocket.send", "text": "a", "bytes": b"b"})
        return
    elif path == "/send-neither":
        await send({"type": "websocket.send"})
        return
    elif path == "/double-accept":
        await send({"type": "websocket.accept"})
        return
    elif path == "/big":
        await send({"type": "websocket.send", "bytes": b"x" * (1 << 20)})
    elif path == "/push":
        # Sends without ever asking for a message: the client's close must still be answered,
        # and `send` must say once the client has gone.
        try:
            for _ in range(250):
                await send({"type": "websocket.send", "text": "tick"})
                await asyncio.sleep(0.02)
            seen["push"] = "sent them all"
        except OSError:
            seen["push"] = "send raised OSError"
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            seen[path] = {"code": message["code"], "reason": message.get("reason")}
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


def wsgi_input(environ, start_response):
    """Reads its body as its path says, and answers what it read."""
    stream, mode = environ["wsgi.input"], environ["PATH_INFO"][1:]
    text = lambda data: data.decode("latin-1")
    reads = {
        "read": lambda: text(stream.read()),
        "read(3)": lambda: [text(b) for b in iter(lambda: stream.read(3), b"")],
        "readline": lambda: [text(stream.readline()) for _ in range(4)],
        "readline(2)": lambda: [text(stream.readline(2)) for _ in range(5)],
        "readlines": lambda: [text(line) for line in stream.readlines()],
        "readlines(3)": lambda: [text(line) for line in stream.readlines(3)],
        "iter": lambda: [text(line) for line in stream],
        "read(-1)": lambda: text(stream.read(-1)),
        "read(None)": lambda: text(stream.read(None)),
        "read(0)": lambda: [text(stream.read(0)), text(stream.read())],
        "read past": lambda: [text(stream.read(int(environ.get("CONTENT_LENGTH") or 0))), text(stream.read(5))],
        "read twice": lambda: [text(stream.read()), text(stream.read())],
        "errors": lambda: sorted(a for a in ["write", "writelines", "flush"] if hasattr(environ["wsgi.errors"], a)),
    }
    out = {"CONTENT_LENGTH": environ.get("CONTENT_LENGTH"), "input_terminated": environ.get("wsgi.input_terminated")}
    try:
        out["read"] = reads[mode]()
    except Exception as e:
        out["raised"] = type(e).__name__
    body = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def scope(scope, receive, send):
    """Answers its `http` scope as JSON (bytes as latin-1 text), with the body it was sent."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    plain = lambda v: v.decode("latin-1") if isinstance(v, bytes) else list(map(plain, v)) \
        if isinstance(v, (list, tuple)) else v
    out = {k: plain(v) for k, v in scope.items() if k not in ("app", "state", "extensions")}
    out["body"] = body.decode("latin-1")
    answer = json.dumps(out, sort_keys=True).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


async def root_scope(scope, receive, send):
    """What answers beside a mount of `scope`: a 404 that says it is not the mount."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b"not the mount"})


def fallthrough(environ, start_response):
    """What a request no file answers reaches: `app` and the path it was given."""
    body = f"app {environ['PATH_INFO']}".encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def pid(environ, start_response):
    """The answering process's pid."""
    import os
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def shared(environ, start_response):
    """Werkzeug's SharedDataMiddleware exporting $STACKWAY_DIFF_STATIC at /static, in front of `fallthrough`."""
    global _shared
    if "_shared" not in globals():
        import os
        from werkzeug.middleware.shared_data import SharedDataMiddleware
        _shared = SharedDataMiddleware(fallthrough, {"/static": os.environ["STACKWAY_DIFF_STATIC"]})
    return _shared(environ, start_response)


def environ(environ, start_response):
    """Answers its environ's plain values as JSON, with the body it was sent."""
    out = {k: v for k, v in environ.items() if isinstance(v, (str, int, bool, tuple))}
    out["body"] = environ["wsgi.input"].read().decode("latin-1")
    body = json.dumps(out, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def wsgi_response(environ, start_response):
    """Answers as its path says: statuses, fields, bodies and failures, some of them against
    PEP 3333."""
    how = environ["PATH_INFO"][1:]
    plain = [("Content-Type", "text/plain")]
    if how == "raise-before":
        raise RuntimeError("before start_response")
    if how == "no-start-response":
        return [b"never started"]
    statuses = {"status-no-reason": "200", "status-lower": "404 not found", "status-invalid": "abc",
                "status-999": "999 Odd", "status-bytes": b"200 OK", "status-099": "099 Odd",
                "204-with-body": "204 No Content", "304-with-body": "304 Not Modified",
                "status-extra-space": "200  OK", "status-tab": "200\tOK"}
    fields = {"hop-by-hop": plain + [("Connection", "close"), ("Keep-Alive", "timeout=5")],
              "transfer-encoding": plain + [("Transfer-Encoding", "chunked")],
              "header-crlf": plain + [("X-A", "a\r\nX-Injected: 1")],
              "header-lf": plain + [("X-A", "a\nX-Injected: 1")],
              "header-non-latin1": plain + [("X-A", "\u20ac")],
              "header-latin1": plain + [("X-A", "caf\u00e9")],
              "header-name-space": plain + [("X A", "1")],
              "header-name-colon": plain + [("X:A", "1")],
              "header-name-empty": plain + [("", "1")],
              "header-value-int": plain + [("X-A", 1)],
              "header-lists": [["Content-Type", "text/plain"]],
              "header-upgrade": plain + [("Upgrade", "websocket")],
              "two-set-cookie": plain + [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
              "date-server": plain + [("Date", "Mon, 01 Jan 2001 00:00:00 GMT"), ("Server", "app/1")],
              "cl-short": plain + [("Content-Length", "10")], "cl-long": plain + [("Content-Length", "2")],
              "cl-invalid": plain + [("Content-Length", "abc")], "cl-twice": plain + [("Content-Length", "5")] * 2,
              "cl-negative": plain + [("Content-Length", "-1")],
              "header-trailing-space": plain + [("X-A", "v ")], "no-content-type": []}
    status = statuses.get(how, "200 OK")
    headers = fields.get(how, plain)
    if how == "start-twice":
        start_response("200 OK", plain)
        start_response("201 Created", plain)
        return [b"twice"]
    if how == "exc-info":
        start_response("200 OK", plain)
        try:
            raise ValueError("changed my mind")
        except ValueError:
            import sys
            start_response("500 Internal Server Error", plain, sys.exc_info())
        return [b"replaced"]
    if how == "exc-info-after":
        def after():
            yield b"first"
            try:
                raise ValueError("too late")
            except ValueError:
                import sys
                start_response("500 Internal Server Error", plain, sys.exc_info())
            yield b"never"
        start_response("200 OK", plain)
        return after()
    write = start_response(status, headers)
    if how == "raise-after-start":
        raise RuntimeError("after start_response")
    if how == "raise-mid-body":
        def body():
            yield b"part one,"
            raise RuntimeError("mid body")
        return body()
    if how == "write":
        write(b"written, ")
        return [b"then returned"]
    if how == "write-only":
        write(b"written alone")
        return []
    if how == "str-body":
        return ["text, not bytes"]
    if how == "str-second":
        return [b"bytes, ", "then text"]
    if how == "bytearray":
        return [bytearray(b"a bytearray")]
    if how == "memoryview":
        return [memoryview(b"a memoryview")]
    if how == "generator":
        return (piece for piece in [b"one ", b"", b"two ", b"three"])
    if how == "empty":
        return []
    if how == "empty-strings":
        return [b"", b""]
    if how == "none-body":
        return None
    if how == "bytes-body":
        return b"bytes, not a list"
    if how == "file-wrapper":
        import io
        return environ["wsgi.file_wrapper"](io.BytesIO(b"from a file wrapper " * 10), 7)
    if how == "big":
        return [b"x" * (1 << 20)]
    return [b"hello"]


async def asgi_response(scope, receive, send):
    """Answers as its path says: statuses, headers, bodies and failures, some of them against
    the ASGI spec."""
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    how = scope["path"][1:]
    plain = [(b"content-type", b"text/plain")]
    start = lambda status=200, headers=plain: send({"type": "http.response.start", "status": status,
                                                   "headers": headers})
    body = lambda data=b"hello", more=False: send({"type": "http.response.body", "body": data, "more_body": more})
    if how == "raise-before":
        raise RuntimeError("before the start")
    if how == "return-before":
        return
    if how == "body-before-start":
        return await body()
    statuses = {"status-099": 99, "status-999": 999, "status-str": "200", "204-with-body": 204,
                "304-with-body": 304, "status-1xx": 103}
    headers = {"hop-by-hop": plain + [(b"connection", b"close"), (b"keep-alive", b"timeout=5")],
               "transfer-encoding": plain + [(b"transfer-encoding", b"chunked")],
               "header-crlf": plain + [(b"x-a", b"a\r\nx-injected: 1")],
               "header-name-space": plain + [(b"x a", b"1")],
               "header-name-upper": plain + [(b"X-Upper", b"1")],
               "header-lists": [[b"content-type", b"text/plain"]],
               "header-upgrade": plain + [(b"upgrade", b"websocket")],
               "two-set-cookie": plain + [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")],
               "date-server": plain + [(b"date", b"Mon, 01 Jan 2001 00:00:00 GMT"), (b"server", b"app/1")],
               "cl-short": plain + [(b"content-length", b"10")], "cl-long": plain + [(b"content-length", b"2")],
               "cl-invalid": plain + [(b"content-length", b"abc")],
               "cl-twice": plain + [(b"content-length", b"5")] * 2, "no-content-type": [],
               "header-value-latin1": plain + [(b"x-a", "caf\u00e9".encode("latin-1"))],
               "header-trailing-space": plain + [(b"x-a", b"v ")]}
    if how == "start-twice":
        await start()
        await start(201)
        return await body()
    if how == "raise-after-start":
        await start()
        raise RuntimeError("after the start")
    if how == "return-after-start":
        return await start()
    if how == "raise-mid-body":
        await start()
        await body(b"part one,", True)
        raise RuntimeError("mid body")
    if how == "return-mid-body":
        await start()
        return await body(b"part one,", True)
    if how == "send-after-end":
        await start()
        await body()
        return await body(b"more")
    if how == "pieces":
        await start()
        for piece in [b"one ", b"", b"two ", b"three"]:
            await body(piece, True)
        return await body(b"")
    if how == "no-body-key":
        await start()
        return await send({"type": "http.response.body"})
    if how == "body-str":
        await start()
        return await body("text, not bytes")
    if how == "bytearray":
        await start()
        return await body(bytearray(b"a bytearray"))
    if how == "unknown-message":
        await start()
        return await send({"type": "http.response.nonsense"})
    if how == "trailers-unasked":
        await start(200, plain)
        await body(b"hello")
        return await send({"type": "http.response.trailers", "headers": [(b"x-t", b"1")]})
    await start(statuses.get(how, 200), headers.get(how, plain))
    await body()


def _where(name):
    """An app that answers its name, SCRIPT_NAME and PATH_INFO."""
    def app(environ, start_response):
        body = json.dumps({"app": name, "SCRIPT_NAME": environ.get("SCRIPT_NAME"),
                           "PATH_INFO": environ.get("PATH_INFO")}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    return app


# The mounts of the dispatch battery, each app its own callable for stackway's --mount.
MOUNTS = {"/a": "a", "/a/b": "ab", "/c": "c", "/x y": "space", "/caf\u00e9": "cafe", "/d/e/f": "def"}
where_root = _where("root")
for _prefix, _name in MOUNTS.items():
    globals()[f"where_{_name}"] = _where(_name)


def dispatched(environ, start_response):
    """Werkzeug's DispatcherMiddleware over the same apps."""
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    global _dispatcher
    if "_dispatcher" not in globals():
        # Its keys are compared with PATH_INFO, which is latin-1 text of the path's bytes (PEP 3333).
        _dispatcher = DispatcherMiddleware(where_root, {p.encode().decode("latin-1"): globals()[f"where_{n}"]
                                                        for p, n in MOUNTS.items()})
    return _dispatcher(environ, start_response)


def _flask(cors):
    """A Flask app of two routes, with Flask-CORS's defaults when `cors`."""
    from flask import Flask
    app = Flask(__name__)
    app.add_url_rule("/", "index", lambda: "ok", methods=["GET", "POST", "PUT", "DELETE"])
    app.add_url_rule("/header", "header", lambda: ("ok", 200, {"X-Custom": "1"}))
    if cors is not None:
        from flask_cors import CORS
        CORS(app, **cors)
    return app


def __getattr__(name):
    """`flask_plain`, `flask_cors_any`, `flask_cors_one` and `fixed_NAME` (`fixed` behind
    Werkzeug's ProxyFix trusting as PROXY_FIX[NAME] says), made when first asked for."""
    from werkzeug.middleware.proxy_fix import ProxyFix
    made = {"flask_plain": lambda: _flask(None), "flask_cors_any": lambda: _flask({}),
            "flask_cors_one": lambda: _flask({"origins": ["https://a.example"]}),
            **{f"fixed_{name}": (lambda trust: lambda: ProxyFix(fixed, *trust))(trust)
               for name, trust in PROXY_FIX.items()}}
    if name in made:
        globals()[name] = app = made[name]()
        return app
    raise AttributeError(name)


def fixed(environ, start_response):
    """Answers what ProxyFix changes, and the URLs Werkzeug's request builds from it."""
    from werkzeug.wrappers import Request
    request = Request(environ)
    keys = ["REMOTE_ADDR", "wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "SCRIPT_NAME", "PATH_INFO"]
    out = {key: environ.get(key) for key in keys}
    out.update(url=request.url, host_url=request.host_url, url_root=request.url_root, host=request.host)
    body = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


# The trust of the proxy-fix battery's configurations: x_for, x_proto, x_host, x_port, x_prefix.
PROXY_FIX = {"default": (1, 1, 0, 0, 0), "one": (1, 1, 1, 1, 1), "two": (2, 2, 2, 2, 2), "mixed": (2, 0, 1, 0, 1)}
