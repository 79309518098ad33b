"""A gRPC service of raw bytes (no generated code), and a client that calls it.

    python grpc_echo.py serve          prints its port, serves test.Echo
    python grpc_echo.py call HOST:PORT calls each method, prints JSON

test.Echo: Unary (b"fail" aborts with NOT_FOUND; the caller's `x_user_id`
metadata is named in the answer), Stream (server-streaming:
the count asked for), Chat (both ways: each message upper-cased), Slow
(answers after three seconds).
"""

import json
import sys
import time
from concurrent import futures

import grpc


def unary(request, context):
    if request == b"fail":
        context.set_trailing_metadata((("why", "asked to"),))
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    # Metadata keys may hold `_`: the proxy passes them in a call.
    user = dict(context.invocation_metadata()).get("x_user_id")
    return b"hello " + request + (b" from " + user.encode() if user else b"")


def stream(request, context):
    for i in range(int(request)):
        yield b"part %d" % i


def chat(requests, context):
    for message in requests:
        yield message.upper()


def slow(request, context):
    time.sleep(3)
    return b"late"


def serve():
    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def status(call):
    try:
        return {"ok": call().decode()}
    except grpc.RpcError as e:
        return {"code": e.code().name, "details": e.details(),
                "trailers": dict(e.trailing_metadata() or ())}


def call(target):
    with grpc.insecure_channel(target) as channel:
        method = lambda name, kind="unary_unary": getattr(channel, kind)("/test." + name)
        unary_call = method("Echo/Unary")
        print(json.dumps({
            "unary": status(lambda: unary_call(b"world", timeout=10, metadata=(("x_user_id", "42"),))),
            "fail": status(lambda: unary_call(b"fail", timeout=10)),
            "stream": [m.decode() for m in method("Echo/Stream", "unary_stream")(b"5", timeout=10)],
            "chat": [m.decode() for m in method("Echo/Chat", "stream_stream")(
                iter([b"one", b"two", b"three"]), timeout=10)],
            "down": status(lambda: method("Down/Unary")(b"x", timeout=10)),
        }))


if __name__ == "__main__":
    {"serve": lambda: serve(), "call": lambda: call(sys.argv[2])}[sys.argv[1]]()
