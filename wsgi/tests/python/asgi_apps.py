"""ASGI 3 apps for tests/asgi.rs, in plain asyncio: what FastAPI and Starlette do underneath."""

import asyncio
import json
import os

# What the apps saw, read back through `report`.
seen = {"disconnects": 0, "sent": 0}


async def _body(receive):
    chunks, total = 0, 0
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        total += len(message["body"])
        chunks += 1
        if not message.get("more_body", False):
            return chunks, total


async def _answer(send, status, body, content_type=b"application/json"):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def scope(scope, receive, send):
    """The scope, as JSON (bytes as latin-1 text)."""
    chunks, total = await _body(receive)
    shown = {k: v for k, v in scope.items() if k not in ("headers", "state")}
    for key in ("raw_path", "query_string"):
        shown[key] = scope[key].decode("latin-1")
    shown["headers"] = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]]
    shown["body"] = [chunks, total]
    await _answer(send, 200, json.dumps(shown).encode())


async def stream(scope, receive, send):
    """A first chunk at once, the second a second later."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
    await asyncio.sleep(1)
    await send({"type": "http.response.body", "body": b"second\n"})


async def upload(scope, receive, send):
    """How many chunks and bytes the body came in."""
    chunks, total = await _body(receive)
    await _answer(send, 200, f"{chunks} {total}".encode(), b"text/plain")


async def nap(scope, receive, send):
    await asyncio.sleep(0.5)
    await _answer(send, 200, b"rested", b"text/plain")


async def fails(scope, receive, send):
    raise RuntimeError("the app failed on purpose")


async def bad_length(scope, receive, send):
    """A content-length that is no length."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"-1")]})
    await send({"type": "http.response.body", "body": b"x"})


async def fails_late(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    await asyncio.sleep(0.2)  # the head and the first chunk are out
    raise RuntimeError("the app failed after its head")


async def silent(scope, receive, send):
    """Returns without a response."""


async def long_poll(scope, receive, send):
    """Waits for its client to go, then returns without a word: a long poll given up."""
    if scope["type"] != "http":
        return
    while (await receive())["type"] != "http.disconnect":
        pass
    seen["long_polls_given_up"] = seen.get("long_polls_given_up", 0) + 1


async def endless(scope, receive, send):
    """64 KiB chunks until the client goes away; counts what send accepted, and the disconnect."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    listening = asyncio.ensure_future(receive_disconnect(receive))
    chunk = b"x" * 65536
    while not listening.done():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        seen["sent"] += len(chunk)
        await asyncio.sleep(0)


async def receive_disconnect(receive):
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # Asked again, receive() says it again.
            if (await receive())["type"] == "http.disconnect":
                seen["disconnects"] += 1
            return


async def report(scope, receive, send):
    await _answer(send, 200, json.dumps(seen).encode())


async def lifespan(scope, receive, send):
    """Greets with what its lifespan startup put in the state; counts its shutdowns, and
    writes a file named by $ASGI_SHUTDOWN_FILE when it shuts down (or raises then, with
    $ASGI_SHUTDOWN_RAISES set)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["greeting"] = "started"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                seen["shutdowns"] = seen.get("shutdowns", 0) + 1
                path = __import__("os").environ.get("ASGI_SHUTDOWN_FILE")
                if path:
                    open(path, "w").write("shut down")
                if __import__("os").environ.get("ASGI_SHUTDOWN_RAISES"):
                    raise RuntimeError("the cache would not flush")
                await send({"type": "lifespan.shutdown.complete"})
                return
    await _answer(send, 200, scope.get("state", {}).get("greeting", "no state").encode(), b"text/plain")


async def broken_startup(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "the database is not there"})
        return
    await _answer(send, 200, b"never", b"text/plain")


async def events(scope, receive, send):
    """Server-Sent Events: three, a tenth of a second apart."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
    for n in range(3):
        await send({"type": "http.response.body", "body": f"id: {n}\ndata: tick {n}\n\n".encode(),
                    "more_body": True})
        await asyncio.sleep(0.1)
    await send({"type": "http.response.body", "body": b""})


async def spin(scope, receive, send):
    """Computes forever without an await: the loop is stuck."""
    if scope["type"] != "http":
        return
    while True:
        pass


async def echo(scope, receive, send):
    """A WebSocket echo: accepts with the `chat` subprotocol when offered; `close-me` closes
    with 4001; counts the close codes it hears in `seen["closed"]`, their reasons in
    `seen["reasons"]`."""
    assert (await receive())["type"] == "websocket.connect"
    chat = "chat" if "chat" in scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": chat,
                "headers": [(b"x-echo", scope["path"].encode())]})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            seen.setdefault("closed", []).append(message["code"])
            seen.setdefault("reasons", []).append(message["reason"])
            return
        if message.get("text") == "close-me":
            await send({"type": "websocket.close", "code": 4001, "reason": "asked"})
            return
        await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})


async def push(scope, receive, send):
    """Accepts, then sends `tick` every 20 ms for 5 s, never asking for a message; says in
    `seen["push"]` how it ended."""
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    try:
        for _ in range(250):
            await send({"type": "websocket.send", "text": "tick"})
            await asyncio.sleep(0.02)
    except OSError as e:
        seen["push"] = f"OSError: {e}"
        return
    seen["push"] = "sent them all"


async def refuse(scope, receive, send):
    """Closes before accepting: the handshake is refused."""
    await receive()
    await send({"type": "websocket.close"})


async def trailers(scope, receive, send):
    """A body in two pieces, then its trailers in two messages; `x-undeclared` is not named in
    `Trailer`, so HTTP/1.1 leaves it out."""
    await send({"type": "http.response.start", "status": 200, "trailers": True,
                "headers": [(b"content-type", b"text/plain"), (b"trailer", b"x-checksum, x-count")]})
    await send({"type": "http.response.body", "body": b"one ", "more_body": True})
    await send({"type": "http.response.body", "body": b"two"})
    await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")], "more_trailers": True})
    await send({"type": "http.response.trailers", "headers": [(b"x-count", b"2"), (b"x-undeclared", b"1")]})


async def pathsend(scope, receive, send):
    """The file named by the query string, by `http.response.pathsend`, as Starlette's
    FileResponse sends one."""
    from urllib.parse import unquote

    path = unquote(scope["query_string"].decode())
    assert "http.response.pathsend" in scope["extensions"]
    try:
        length = os.stat(path).st_size
    except OSError:
        length = 0
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"content-length", str(length).encode())]})
    await send({"type": "http.response.pathsend", "path": path})


async def held(scope, receive, send):
    """Starts, then waits before its body: the head goes out meanwhile."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.sleep(0.6)
    await send({"type": "http.response.body", "body": b"late"})


async def fails_after_start(scope, receive, send):
    """Starts, then raises before any body: nothing went out, so the client gets 500."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise RuntimeError("the app failed right after its start")


async def shapes(scope, receive, send):
    """`/lists`: headers as lists and a bytearray body, as the spec's iterables allow and
    uvicorn takes; `/text`: a body of text, no bytes."""
    if scope["type"] == "lifespan":
        return
    if scope["path"].endswith("/lists"):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [[b"content-type", b"text/plain"], [b"x-listed", b"yes"]]})
        await send({"type": "http.response.body", "body": bytearray(b"from a bytearray")})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": "text, not bytes"})
