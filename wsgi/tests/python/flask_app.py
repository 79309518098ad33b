"""A Flask app, mounted under a prefix by the tests."""

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
