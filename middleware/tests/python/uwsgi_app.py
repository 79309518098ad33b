"""A WSGI app for tests/proxy_uwsgi.rs, served by a real uWSGI (from PyPI)."""

import json


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/big":
        mib = 10
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(mib << 20))])
        return (b"b" * (1 << 20) for _ in range(mib))
    if path == "/coded":
        # A transfer coding named and not used: uWSGI passes the header on.
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Transfer-Encoding", "chunked")])
        return [b"not chunked"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"chunk {n}\n".encode() for n in range(3))
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    shown = {key: environ.get(key, "") for key in (
        "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REQUEST_URI",
        "REMOTE_ADDR", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "CONTENT_TYPE",
        "HTTP_X_TRACE", "wsgi.url_scheme")}
    # PEP 3333: the bytes as latin-1; as UTF-8 here, for the test to read.
    shown["PATH_INFO"] = path.encode("latin-1").decode("utf-8")
    shown["body"] = len(body)
    shown["body_sum"] = sum(body) % 251
    answer = json.dumps(shown).encode()
    start_response("404 Not Found" if path == "/missing" else "200 OK",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
    return [answer]
