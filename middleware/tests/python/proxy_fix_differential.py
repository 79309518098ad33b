"""stackway's ProxyFix against Werkzeug's, request by request.

The server under test mounts the `demo` app (the CGI view, as JSON) at /raw,
and behind stackway's ProxyFix with trust settings number i at /t<i>. For each
Host and set of X-Forwarded-* lines, this sends the request to /raw, applies
Werkzeug's ProxyFix with the same settings to that environ, and compares what
Werkzeug makes of it with what /t<i> says.

Usage: proxy_fix_differential.py HOST:PORT TRUSTS_JSON
Prints "N agree" and exits 0, or prints each difference and exits 1.
"""

import http.client
import json
import sys

from werkzeug.middleware.proxy_fix import ProxyFix

ADDR, TRUSTS = sys.argv[1], json.loads(sys.argv[2])

HOSTS = ["spam", "spam:9000", "[2001:db8::a]", "[2001:db8::a]:9000"]

FOR, PROTO, HOST, PORT, PREFIX = (
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "X-Forwarded-Port",
    "X-Forwarded-Prefix",
)

# Valid values only: where stackway refuses a value Werkzeug takes as it is
# (a host that is no authority, a scheme other than http and https), the
# difference is documented and tested on its own.
HEADER_SETS = [
    [],
    [(FOR, "192.168.0.1")],
    [(FOR, "10.0.0.1, 10.0.0.2, 10.0.0.3")],
    [(FOR, "10.0.0.1"), (FOR, "10.0.0.2")],
    [(FOR, "2001:db8::1")],
    [(FOR, ", 10.0.0.2, ")],
    [(PROTO, "https")],
    [(PROTO, "http, https")],
    [(PROTO, "https, http")],
    [(HOST, "eggs")],
    [(HOST, "eggs:8443")],
    [(HOST, "ham, eggs")],
    [(HOST, "eggs, , ham")],
    [(HOST, '"eggs"')],
    [(HOST, '"ham", "eggs:81"')],
    [(HOST, '"eggs')],
    [(HOST, "[2001:db8::b]")],
    [(HOST, "[2001:db8::b]:8443")],
    [(HOST, "eggs:443"), (PROTO, "https")],
    [(PORT, "8080")],
    [(PORT, "443"), (PROTO, "https")],
    [(PORT, "80")],
    [(PORT, "9000, 8080")],
    [(HOST, "eggs"), (PORT, "8080")],
    [(HOST, "eggs:8443"), (PORT, "9443")],
    [(HOST, "[2001:db8::b]"), (PORT, "8080")],
    [(HOST, "[2001:db8::b]:8443"), (PORT, "8080")],
    [(PREFIX, "/ham")],
    [(PREFIX, "/ham/")],
    [(PREFIX, "/a, /b")],
    [
        (FOR, "192.168.0.1"),
        (PROTO, "https"),
        (HOST, "eggs"),
        (PORT, "443"),
        (PREFIX, "/ham"),
    ],
    [
        (FOR, "10.0.0.1, 192.168.0.1"),
        (PROTO, "http, https"),
        (HOST, "ham, eggs:8443"),
        (PORT, "1, 2"),
        (PREFIX, "/x, /y"),
    ],
]


def fetch(path, host, lines):
    name, port = ADDR.rsplit(":", 1)
    conn = http.client.HTTPConnection(name, int(port), timeout=10)
    conn.putrequest("GET", path + "?format=json", skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host)
    for header, value in lines:
        conn.putheader(header, value)
    conn.endheaders()
    res = conn.getresponse()
    body = res.read()
    conn.close()
    assert res.status == 200, (path, host, lines, res.status, body)
    return json.loads(body)


def werkzeug(environ, trust):
    x_for, x_proto, x_host, x_port, x_prefix = trust
    seen = {}

    def app(env, start_response):
        seen.update(env)
        return []

    fix = ProxyFix(app, x_for=x_for, x_proto=x_proto, x_host=x_host, x_port=x_port, x_prefix=x_prefix)
    env = dict(environ, **{"wsgi.url_scheme": environ["REQUEST_SCHEME"]})
    fix(env, lambda *a: None)
    host_given = fix._get_real_value(x_host, env.get("HTTP_X_FORWARDED_HOST"))
    port_given = fix._get_real_value(x_port, env.get("HTTP_X_FORWARDED_PORT"))
    prefix_given = fix._get_real_value(x_prefix, env.get("HTTP_X_FORWARDED_PREFIX"))
    return seen, host_given, port_given, prefix_given


def compare(raw, ours, trust, mount):
    theirs, host_given, port_given, prefix_given = werkzeug(raw, trust)
    scheme = theirs["wsgi.url_scheme"]
    port = theirs["SERVER_PORT"]
    if host_given and not port_given and (":" not in host_given or host_given.endswith("]")):
        # Documented: a forwarded host without a port means the scheme's
        # default port, where Werkzeug keeps the one the proxy connected to.
        port = "443" if scheme == "https" else "80"
    script = theirs["SCRIPT_NAME"].rstrip("/") + mount if prefix_given else mount
    want = {
        "HTTP_HOST": theirs.get("HTTP_HOST"),
        "SERVER_NAME": theirs["SERVER_NAME"].lower(),
        "SERVER_PORT": port,
        "REMOTE_ADDR": theirs["REMOTE_ADDR"],
        "REQUEST_SCHEME": scheme,
        "SCRIPT_NAME": script,
    }
    have = {key: ours.get(key) for key in want}
    return want, have


def main():
    agreed, differ = 0, []
    for host in HOSTS:
        for lines in HEADER_SETS:
            raw = fetch("/raw", host, lines)
            for i, trust in enumerate(TRUSTS):
                mount = f"/t{i}"
                ours = fetch(mount, host, lines)
                want, have = compare(raw, ours, trust, mount)
                if want == have:
                    agreed += 1
                else:
                    differ.append((host, lines, trust, want, have))
    for host, lines, trust, want, have in differ:
        print(f"Host: {host} {lines} trust {trust}")
        for key in want:
            if want[key] != have[key]:
                print(f"  {key}: Werkzeug {want[key]!r}, stackway {have[key]!r}")
    print(f"{agreed} agree, {len(differ)} differ")
    sys.exit(1 if differ else 0)


main()
