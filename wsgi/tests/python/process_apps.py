"""WSGI apps for the tests of `stackway serve --processes`: each says which
process answered, and some misbehave as production apps do."""

import os
import time

if os.environ.get("FAIL_TO_BOOT_IN_WORKERS") and os.environ.get("STACKWAY_WORKER"):
    raise RuntimeError("this app does not start in a server process")
_broken = os.environ.get("FAIL_TO_BOOT_ONCE_THERE")
if _broken and os.environ.get("STACKWAY_WORKER") and os.path.exists(_broken):
    raise RuntimeError("this app no longer starts")


def _answer(start_response, body, status="200 OK"):
    body = body.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def pid(environ, start_response):
    """The answering process's pid."""
    return _answer(start_response, str(os.getpid()))


def burn(environ, start_response):
    """About 2.5 ms of pure Python, then the pid."""
    end = time.perf_counter() + 0.0025
    n = 0
    while time.perf_counter() < end:
        n += 1
    return _answer(start_response, str(os.getpid()))


def crash(environ, start_response):
    """Ends the process, as a segfaulting extension or os._exit would."""
    os._exit(1)


_leaked = []


def leak(environ, start_response):
    """Keeps 4 MiB more for each request, then says the pid."""
    _leaked.append(bytearray(4 << 20))
    return _answer(start_response, str(os.getpid()))


def spin(environ, start_response):
    """Never returns, busy in Python."""
    while True:
        pass


def nap(environ, start_response):
    """Never returns, asleep."""
    time.sleep(1000)


def stall(environ, start_response):
    """Sends its head and a first chunk, then never returns."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first"
    time.sleep(1000)


def upload(environ, start_response):
    """The length of the request body, read whole."""
    return _answer(start_response, str(len(environ["wsgi.input"].read())))


def eight_mib(environ, start_response):
    """8 MiB in 64 KiB chunks."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return (b"x" * 65536 for _ in range(128))


def fails_late(environ, start_response):
    """1 MiB, then an exception: the response must end aborted."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    for _ in range(16):
        yield b"y" * 65536
    raise RuntimeError("late failure")
