"""A Flask app that says which Flask serves it, for cli/tests/venvs.rs: the same module in
two virtualenvs with different Flask majors."""

import importlib.metadata
import os

import flask

app = flask.Flask(__name__)


@app.get("/")
def which():
    request = flask.request
    return (f"flask {importlib.metadata.version('flask')} pid {os.getpid()} "
            f"at {request.script_root} for {request.remote_addr}")
