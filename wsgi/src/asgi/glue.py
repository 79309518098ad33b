"""The asyncio side of stackway's ASGI bridge: one event loop on a thread of its own.

The server never waits for this loop and never takes the GIL: it queues events in the
bridge and writes a byte to `fd`; the loop reads the byte and takes the events. Each
request is a task running `app(scope, receive, send)`.
"""

import asyncio
import collections
import os
import traceback


class ClientDisconnected(OSError):
    """What `send` raises on a WebSocket whose client has gone (ASGI 2.4), so that an app that
    only sends learns it; on HTTP, as under uvicorn, what is sent then is dropped."""


class _Conn:
    __slots__ = ("id", "inbox", "waiting", "writable", "asked", "gone")

    def __init__(self, id):
        self.id = id
        self.inbox = collections.deque()
        self.waiting = None  # receive() awaiting a message
        self.writable = None  # send() awaiting room
        self.asked = False  # the server was asked for the next message
        self.gone = None  # the disconnect message, once the client is gone

    def deliver(self, message):
        self.inbox.append(message)
        self.asked = False
        if message["type"] in ("http.disconnect", "websocket.disconnect"):
            self.gone = message
            self.release()
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(None)

    def release(self):
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)


def serve(bridge, fd):
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    conns = {}
    lives = {}  # lifespan id: [its inbox, its state]

    async def run(conn, app, scope):
        async def receive():
            if conn.gone and not conn.inbox:
                return dict(conn.gone)  # again, for each later call
            while not conn.inbox:
                if not conn.asked:
                    conn.asked = True
                    bridge.want(conn.id)
                conn.waiting = loop.create_future()
                await conn.waiting
            return conn.inbox.popleft()

        async def send(message):
            if conn.gone:
                if conn.gone["type"] == "websocket.disconnect":
                    raise ClientDisconnected(f"the client has gone (code {conn.gone['code']})")
                return
            if bridge.send(conn.id, message):
                conn.writable = loop.create_future()
                await conn.writable
            elif message["type"].endswith("http.response.start"):
                # The head goes out with the next message, or once the task waits.
                loop.call_soon(bridge.flush, conn.id)

        error = None
        try:
            await app(scope, receive, send)
        except BaseException as e:  # SystemExit too: it must not stop the server
            error = "".join(traceback.format_exception(e)).rstrip()
        finally:
            conns.pop(conn.id, None)
            bridge.end(conn.id, error)

    async def lifespan(id, app):
        inbox, state = asyncio.Queue(), {}
        lives[id] = [inbox, state]
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
        await inbox.put({"type": "lifespan.startup"})

        async def send(message):
            kind = message["type"]
            if kind.startswith("lifespan.") and kind.endswith((".complete", ".failed")):
                outcome = "complete" if kind.endswith(".complete") else "failed"
                bridge.life(id, outcome, message.get("message", "") or kind)

        # Whatever phase is still waiting when the app ends gets "unsupported":
        # an answered one no longer listens.
        error = ""
        try:
            await app(scope, inbox.get, send)
        except BaseException as e:
            error = "".join(traceback.format_exception(e)).rstrip()
        lives[id][0] = None
        bridge.life(id, "unsupported", error)

    def wake():
        try:
            os.read(fd, 4096)
        except BlockingIOError:
            pass
        for event in bridge.take():
            kind, id = event[0], event[1]
            if kind == 0:
                conn = conns[id] = _Conn(id)
                scope, life = event[3], event[4]
                if life in lives:
                    scope["state"] = dict(lives[life][1])
                loop.create_task(run(conn, event[2], scope))
                continue
            if kind == 3:
                loop.create_task(lifespan(id, event[2]))
                continue
            if kind == 4:
                if lives.get(id, [None])[0] is not None:
                    lives[id][0].put_nowait({"type": "lifespan.shutdown"})
                else:
                    bridge.life(id, "unsupported", "")
                continue
            if kind == 5:  # the watchdog's tick: taking it was the point
                continue
            conn = conns.get(id)
            if conn is None:
                continue
            if kind == 1:
                conn.deliver(event[2])
            else:
                conn.release()

    loop.add_reader(fd, wake)
    loop.run_forever()
