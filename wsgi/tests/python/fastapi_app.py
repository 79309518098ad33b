"""A FastAPI app for tests/fastapi.rs, installed from PyPI into the tests' venv."""

import asyncio
import contextlib

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect, WebSocketException, status
from fastapi.responses import FileResponse, StreamingResponse


@contextlib.asynccontextmanager
async def lifespan(app):
    yield {"greeting": "hello from the lifespan"}


app = FastAPI(lifespan=lifespan)


@app.get("/items/{item_id}")
async def item(item_id: int, request: Request):
    return {"id": item_id, "url": str(request.url_for("item", item_id=item_id)),
            "greeting": request.state.greeting}


@app.get("/stream")
async def stream():
    async def chunks():
        yield b"first\n"
        await asyncio.sleep(1)
        yield b"second\n"

    return StreamingResponse(chunks(), media_type="text/plain")


@app.post("/upload")
async def upload(request: Request):
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
    return {"bytes": total}


@app.get("/download/{mib}")
async def download(mib: int):
    chunk = b"d" * (1 << 20)

    async def chunks():
        for _ in range(mib):
            yield chunk

    return StreamingResponse(chunks(), media_type="application/octet-stream")


@app.get("/source")
async def source():
    """This file, by the server's `http.response.pathsend`, which Starlette uses when offered."""
    return FileResponse(__file__, media_type="text/x-python")


heard = []  # the close codes the WebSocket route heard


@app.websocket("/echo")
async def echo(websocket: WebSocket):
    """Echoes text and bytes; `close-me` closes with 4001; `/echo?deny=1` is refused."""
    if websocket.query_params.get("deny"):
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION)
    await websocket.accept(subprotocol="chat" if "chat" in websocket.scope["subprotocols"] else None)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                heard.append(message["code"])
                return
            if message.get("text") == "close-me":
                await websocket.close(code=4001, reason="asked")
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect as gone:
        heard.append(gone.code)


@app.get("/heard")
async def closes():
    return heard
