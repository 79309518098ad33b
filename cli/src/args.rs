//! The command line's arguments: `stackway serve`'s flags, and the parsers
//! of their values (`--mount PREFIX=SPEC`, `--static PREFIX=PATH`,
//! `--proxy-fix TRUST`, seconds, modes, paths), which the config file's keys
//! share.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use stackway::{BoxApp, Html, Request, response};
use stackway_middleware::proxy::{Balance, UpstreamTls};
use stackway_middleware::router::{RouteParams, Router, get};
use stackway_middleware::shared_data::Export;
use stackway_middleware::{Dispatcher, Proxy, SharedData};

use crate::listen;
use crate::policies::{
    ErrorPageSpec, Policies, RateSpec, parse_access, parse_error_page, parse_peer, parse_rate_limit,
};
use crate::values::{
    balance, nameservers, parse_mode, parse_path, parse_processes, parse_proxy_fix, parse_secs,
    parse_size, required_secs, secs,
};

#[derive(Debug, Parser)]
#[command(
    name = "stackway",
    version,
    about = "Serve stackway apps over HTTP/1.1 and HTTP/2."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve built-in apps under URL prefixes until SIGINT or SIGTERM.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Read settings from a TOML file (see stackway.example.toml); flags given replace the
    /// file's keys of the same name.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// The listeners a config file describes (its bind and [[listen]] keys).
    #[arg(skip)]
    pub(crate) listen: Vec<listen::ListenSpec>,

    /// Where to listen, repeatable: HOST:PORT (port 0 picks a free port), unix:PATH, or
    /// fd:N for a socket passed by systemd socket activation; uwsgi://HOST:PORT and
    /// uwsgi+unix:PATH speak the uwsgi protocol to a front such as nginx's uwsgi_pass.
    /// Sockets systemd passes (LISTEN_FDS) are served without it [default: 127.0.0.1:8000].
    #[arg(long, value_name = "ADDRESS", value_parser = listen::parse_address)]
    pub(crate) bind: Vec<listen::Address>,

    /// Permission bits of unix socket files made by --bind unix:PATH, in octal (as 660).
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub(crate) socket_mode: Option<u32>,

    /// Listen on TCP addresses with SO_REUSEPORT, so that other processes may listen there
    /// too.
    #[arg(long)]
    pub(crate) reuse_port: bool,

    /// Speak TLS on the TCP listeners with this certificate chain (PEM, the server's
    /// certificate first); reloaded on SIGHUP.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,

    /// Mutual TLS: ask clients for a certificate signed by a CA of this PEM file, and refuse
    /// those without one (nginx's ssl_verify_client on); apps see SSL_CLIENT_S_DN,
    /// SSL_CLIENT_VERIFY and SSL_CLIENT_FINGERPRINT.
    #[arg(long, value_name = "PEM")]
    pub(crate) tls_client_ca: Option<PathBuf>,

    /// With --tls-client-ca, let in clients without a certificate too (SSL_CLIENT_VERIFY=NONE),
    /// as nginx's ssl_verify_client optional.
    #[arg(long)]
    pub(crate) tls_client_optional: bool,

    /// Expect a PROXY protocol header (v1 or v2) on every connection, as HAProxy's
    /// send-proxy sends, and take the client's address from it.
    #[arg(long)]
    pub(crate) proxy_protocol: bool,

    /// Answer requests for PATH with 200 while serving and 503 once shutting down, for a
    /// balancer's health checks.
    #[arg(long, value_name = "PATH", value_parser = parse_path)]
    pub(crate) health: Option<String>,

    /// Seconds to drain after SIGTERM before refusing new connections: the health check
    /// says 503, and requests are still served (with Connection: close).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub(crate) drain_delay: Option<Duration>,

    /// Seconds a new connection may take to send its PROXY header and finish its TLS
    /// handshake (on a uwsgi listener, to send its packet).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub(crate) handshake_timeout: Duration,

    /// Mount at PREFIX through the Dispatcher, repeatable: a built-in app (hello, demo,
    /// routes: a Router with /users/{id} and /files/{*path}), a
    /// Python WSGI app (wsgi:MODULE:CALLABLE), a Python ASGI app (asgi:MODULE:APP), or an
    /// upstream to proxy to (http://HOST:PORT[/base], https://HOST:PORT[/base],
    /// http+srv://NAME[/base], unix:/PATH[:/base], uWSGI's protocol with
    /// uwsgi://HOST:PORT[/base] or uwsgi+unix:/PATH[:/base], FastCGI with fastcgi://HOST:PORT
    /// or fastcgi+unix:/PATH; several, comma-separated, for a round-robin pool, each followed
    /// by nginx's server parameters if need be: "http://10.0.0.2:80 weight=3", backup, down,
    /// max_conns=N, max_fails=N, fail_timeout=T). `/` mounts at the root; the longest matching prefix wins;
    /// no match is a 404.
    #[arg(long = "mount", value_name = "PREFIX=SPEC", value_parser = parse_mount)]
    pub(crate) mounts: Vec<Mount>,

    /// Serve the files under directory (or the one file) PATH at PREFIX with SharedData,
    /// in front of the mounts; repeatable. Misses go on to the mounts.
    #[arg(long = "static", value_name = "PREFIX=PATH", value_parser = parse_static)]
    pub(crate) statics: Vec<Static>,

    /// Worker threads, each with its own runtime, in each process; with --processes, the
    /// cores are shared out among them [default: one per core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) workers: Option<u16>,

    /// Server processes, each with its own interpreter for Python apps, run by this one as
    /// their supervisor (gunicorn's and granian's --workers, uWSGI's --processes): replaced
    /// when one exits, drained on SIGTERM; `auto` is one per core [default: none, this
    /// process serves alone]
    #[arg(long, value_name = "N|auto", value_parser = parse_processes)]
    pub(crate) processes: Option<u16>,

    /// Replace a process once it has served N requests: it drains at once, its last
    /// response closing its connection, and what comes meanwhile waits for the other
    /// processes or the replacement (gunicorn's --max-requests) [default: never].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_requests: Option<u64>,

    /// Add a random 0..=J to each process's --max-requests, so that processes started
    /// together are not replaced together (gunicorn's --max-requests-jitter).
    #[arg(long, value_name = "J", default_value = "0")]
    pub(crate) max_requests_jitter: u64,

    /// Replace a process whose resident memory exceeds MIB mebibytes, checked ten times
    /// a second (uWSGI's --reload-on-rss, granian's --workers-max-rss) [default: never].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_rss: Option<u64>,

    /// Replace a process once it has run SECS seconds (granian's --workers-lifetime)
    /// [default: never].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub(crate) max_lifetime: Option<Duration>,

    /// Trust X-Forwarded-* headers from proxies in front (Werkzeug's ProxyFix): counts of
    /// trusted proxies per header, as in for=1,proto=1,host=1,port=0,prefix=1; bare
    /// --proxy-fix trusts one proxy for For and Proto, as Werkzeug [default: off].
    #[arg(long, value_name = "TRUST", num_args = 0..=1, default_missing_value = "", value_parser = parse_proxy_fix)]
    pub(crate) proxy_fix: Option<[usize; 5]>,

    /// With --proxy-fix, read X-Forwarded-* only from a connection whose peer is PEER: an
    /// address, a network (10.0.0.0/8) or unix; repeatable (gunicorn's forwarded_allow_ips,
    /// nginx's set_real_ip_from) [default: any peer].
    #[arg(long = "trusted-proxy", value_name = "PEER", value_parser = parse_peer)]
    pub(crate) trusted_proxies: Vec<String>,

    /// Let clients in or refuse them (403) by address, as nginx's allow and deny: "allow
    /// 10.0.0.0/8", "deny all"; repeatable, the first rule that matches deciding.
    #[arg(long = "access", value_name = "RULE", value_parser = parse_access)]
    pub(crate) access: Vec<String>,

    /// Limit each client's requests as nginx's limit_req: "10r/s burst=20 nodelay" (429 with
    /// Retry-After beyond the burst; without nodelay the burst is spaced out at the rate),
    /// conn=N requests in flight (limit_conn), key=header:NAME or key=mount to count by.
    #[arg(long, value_name = "SPEC", value_parser = parse_rate_limit)]
    pub(crate) rate_limit: Option<RateSpec>,

    /// Let in only the users of an htpasswd FILE (Apache's: bcrypt, $apr1$, SHA-crypt,
    /// {SHA}), as nginx's auth_basic_user_file: 401 for the others; SIGHUP reads it again.
    #[arg(long, value_name = "FILE")]
    pub(crate) basic_auth: Option<PathBuf>,

    /// The realm --basic-auth's users log in to, which browsers show [default: Restricted].
    #[arg(long, value_name = "REALM")]
    pub(crate) basic_auth_realm: Option<String>,

    /// Ask the auth service at URL (http://127.0.0.1:9000/verify) about each request first, as
    /// nginx's auth_request: a 2xx lets it through, a 401, 403 or redirect goes back to the
    /// client, anything else (the service down) is 503.
    #[arg(long, value_name = "URL")]
    pub(crate) forward_auth: Option<String>,

    /// Fields of the auth service's yes taken into the request (X-User), in place of any the
    /// client sent; repeatable.
    #[arg(long = "forward-auth-copy", value_name = "FIELD")]
    pub(crate) forward_auth_copy: Vec<String>,

    /// Remember a yes of the auth service for SECS: the same method, target, Authorization,
    /// Cookie and client address go through without asking again (a no is never remembered).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub(crate) forward_auth_remember: Option<Duration>,

    /// Serve FILE for the error responses with these codes that say only their status (a
    /// dead upstream's 502, a 404, a 429), as nginx's error_page: 502,503,504=/srv/50x.html or
    /// 500-599=…, or what the server itself serves at a path: 502=uri:/errors/50x.html;
    /// repeatable. A file also stands in for the server's own 400, 413 and 500.
    #[arg(long = "error-page", value_name = "CODES=FILE", value_parser = parse_error_page)]
    pub(crate) error_pages: Vec<ErrorPageSpec>,

    /// While FILE exists, answer every request 503 with Retry-After and the 503 error page:
    /// touch it to start maintenance, remove it to end it (every process sees it in a second),
    /// or PUT and DELETE /maintenance on the admin listener.
    #[arg(long, value_name = "FILE")]
    pub(crate) maintenance: Option<PathBuf>,

    /// The least severe log events printed: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub(crate) log_level: tracing::Level,

    /// How log events are printed to standard error: text for people, json (one object a
    /// line) for log collectors; with json, the access log is JSON too.
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub(crate) log_format: String,

    /// Allow pages from ORIGIN to call the apps from a browser (CORS): GET, HEAD, POST, PUT,
    /// PATCH and DELETE with any request header, as Flask-CORS allows by default; repeatable;
    /// `*` for any origin.
    #[arg(long = "cors", value_name = "ORIGIN")]
    pub(crate) cors: Vec<String>,

    /// Compress responses on the fly (br, zstd, gzip, deflate) for clients that accept it.
    #[arg(long)]
    pub(crate) compress: bool,

    /// Keep responses that HTTP lets a shared cache keep (RFC 9111), in SIZE of memory
    /// (`64MiB`), and answer from there while they are fresh (nginx's proxy_cache).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) cache: Option<usize>,

    /// Keep `--cache`'s bodies in files under DIR, SIZE then bounding the bytes there:
    /// they outlive a restart, and the processes share them (nginx's proxy_cache_path).
    #[arg(long, value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,

    /// Seconds an app may take to answer a request before it gets 503.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub(crate) timeout: Option<Duration>,

    /// Give each request an id (X-Request-Id, in the response and the logs); an incoming
    /// one is kept when --proxy-fix is on, as a proxy in front is trusted then.
    #[arg(long)]
    pub(crate) request_id: bool,

    /// Read each request's W3C traceparent (or start a trace), log inside a span with its
    /// trace and span ids, and pass the trace on to upstreams.
    #[arg(long)]
    pub(crate) trace_context: bool,

    /// Export each request's span to an OpenTelemetry collector over OTLP/HTTP at URL
    /// (`http://collector:4318`), service.name from OTEL_SERVICE_NAME or `stackway`;
    /// implies --trace-context. Needs a build with `--features otel`.
    #[arg(long, value_name = "URL")]
    pub(crate) otlp_endpoint: Option<String>,

    /// Add the usual security headers to responses (nosniff, Referrer-Policy,
    /// X-Frame-Options, and HSTS over https).
    #[arg(long)]
    pub(crate) secure_headers: bool,

    /// Serve Prometheus metrics at PATH (requests by mount, method and status class,
    /// latency histograms, bytes, connections, SharedData hits) [default: off].
    #[arg(long, value_name = "PATH", value_parser = parse_path)]
    pub(crate) metrics: Option<String>,

    /// Serve a live status page at PATH (its JSON at PATH.json): uptime, listeners, requests,
    /// rates and p50/p99 per mount with sparklines, the last errors [default: off].
    #[arg(long, value_name = "PATH", value_parser = parse_path)]
    pub(crate) status: Option<String>,

    /// Serve --status and --metrics only on this extra listener (HOST:PORT, unix:PATH or
    /// fd:N, as 127.0.0.1:9901), which serves nothing else, so that they never face the
    /// clients of the other listeners (the app keeps its --bind, or 127.0.0.1:8000).
    #[arg(long, value_name = "ADDRESS", value_parser = listen::parse_bind)]
    pub(crate) admin_bind: Option<listen::Bind>,

    /// Log one line per request to standard error, in the Common Log Format [default: off].
    #[arg(long)]
    pub(crate) access_log: bool,

    /// Seconds a client may take to send a request head, from its first byte.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub(crate) header_timeout: Duration,

    /// Seconds a connection may stay open with no request in flight.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    pub(crate) idle_timeout: Duration,

    /// Seconds a response may go without the client reading a byte of it before the
    /// connection is closed (on HTTP/2, the stream is reset).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    pub(crate) send_timeout: Duration,

    /// Seconds an app reading a request body may wait for its next byte; then the read
    /// fails and the connection is closed after the response.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    pub(crate) body_timeout: Duration,

    /// A directory to put on Python's sys.path for wsgi: mounts (the working directory is
    /// there already); repeatable.
    #[arg(long = "pythonpath", value_name = "DIR")]
    pub(crate) python_path: Vec<std::path::PathBuf>,

    /// Serve the wsgi: or asgi: mount at PREFIX from the virtualenv at PATH (uWSGI's
    /// --home), in processes of its own that scale and are recycled on their own;
    /// repeatable, as PREFIX=PATH. Mounts without one share the server's environment.
    #[arg(long = "venv", value_name = "PREFIX=PATH", value_parser = parse_venv)]
    pub(crate) venvs: Vec<(String, PathBuf)>,

    /// A `[[mount]]`'s own `pythonpath` (with its `venv`), by prefix.
    #[arg(skip)]
    pub(crate) mount_paths: Vec<(String, Vec<PathBuf>)>,

    /// Threads that run Python, per wsgi: mount (gunicorn's --threads); 0 runs Python on the
    /// worker threads themselves, as uWSGI's processes do: no hand-off, but a worker serves
    /// nothing else while Python runs, and responses go out once the app returns.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub(crate) wsgi_threads: u16,

    /// Every wsgi: mount's wsgi.input reads the body as it arrives, not once it is whole
    /// (`stream_input` in a `[[mount]]` for one): for apps that answer before an upload ends.
    #[arg(long)]
    pub(crate) wsgi_stream_input: bool,

    /// Cut off a request that has run in Python for SECS seconds: 504 (or an aborted
    /// response once its head is out), the stuck thread's stack logged, and its process
    /// replaced (uWSGI's --harakiri, gunicorn's --timeout); for asgi: mounts, an asyncio loop
    /// that takes no event for SECS is stuck the same way [default: never].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub(crate) harakiri: Option<Duration>,

    /// For development: replace the server processes when a Python file under the working
    /// directory or a --pythonpath changes, the port kept open by their supervisor (new code
    /// that does not load is reported, and the old code keeps serving).
    #[arg(long)]
    pub(crate) reload: bool,

    /// Import and check everything, then exit without serving (used by --reload).
    #[arg(long, hide = true)]
    pub(crate) check: bool,

    /// Seconds connecting to an upstream may take; then 502.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    pub(crate) proxy_connect_timeout: Duration,

    /// Seconds an upstream may take to send its response head; then 504, or, for an
    /// idempotent request, the pool's next upstream (nginx's `proxy_next_upstream timeout`).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    pub(crate) proxy_read_timeout: Duration,

    /// PEM file of the CAs that https:// upstreams' certificates must come from, in place of
    /// the system's roots.
    #[arg(long, value_name = "FILE")]
    pub(crate) proxy_ca: Option<PathBuf>,

    /// PEM certificate chain shown to https:// upstreams that ask for one (mutual TLS).
    #[arg(long, value_name = "FILE")]
    pub(crate) proxy_client_cert: Option<PathBuf>,

    /// PEM private key of --proxy-client-cert.
    #[arg(long, value_name = "FILE")]
    pub(crate) proxy_client_key: Option<PathBuf>,

    /// Seconds in-flight requests get to finish after SIGINT or SIGTERM.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub(crate) grace_period: Duration,

    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    pub(crate) max_body_size: u64,

    /// Largest request head accepted, in bytes (at least 8192); larger ones get 431.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u32).range(8192..).map(|n| n as usize))]
    pub(crate) max_header_size: usize,

    /// Most connections open at once; more wait in the listen queue.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub(crate) max_connections: usize,
}

/// `PREFIX=SPEC` from `--mount`.
#[derive(Debug, Clone)]
pub(crate) struct Mount {
    pub(crate) prefix: String,
    pub(crate) target: Target,
    /// A `[[mount]]`'s own HTTP cache, of this many bytes.
    pub(crate) cache: Option<usize>,
    /// And the directory it keeps its bodies in.
    pub(crate) cache_dir: Option<PathBuf>,
    /// A `[[mount]]`'s own access rules and rate limit.
    pub(crate) policies: Policies,
}

#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// A built-in app.
    App(BoxApp),
    /// Upstreams to proxy to, checked, and options from a config file.
    Proxy(Vec<String>, Box<ProxyOptions>),
    /// A Python WSGI app, `module:callable`, imported once the paths are set,
    /// and what a config file says of it.
    Wsgi(String, WsgiOptions),
    /// A Python ASGI app, `module:app`, imported once the paths are set.
    Asgi(String),
}

/// A `[[mount]]` table's options for a WSGI app.
#[derive(Debug, Clone, Default)]
pub(crate) struct WsgiOptions {
    /// Threads that run Python, instead of --wsgi-threads.
    pub(crate) threads: Option<u16>,
    /// `wsgi.input` reads the body as it arrives, not once it is whole.
    pub(crate) stream_input: bool,
}

pub(crate) fn parse_venv(value: &str) -> Result<(String, PathBuf), String> {
    let (prefix, path) = value
        .split_once('=')
        .ok_or("expected PREFIX=PATH, as in /blog=/srv/blog/.venv")?;
    Ok((prefix.to_owned(), venv(path.as_ref())?))
}

/// `path` as a virtualenv: absolute, with its `bin/python3`.
pub(crate) fn venv(path: &std::path::Path) -> Result<PathBuf, String> {
    let path = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !path.join("bin/python3").exists() {
        return Err(format!(
            "{} is not a virtualenv: it has no bin/python3 (python3.11 -m venv makes one)",
            path.display()
        ));
    }
    Ok(path)
}

pub(crate) fn parse_mount(value: &str) -> Result<Mount, String> {
    let (prefix, spec) = value
        .split_once('=')
        .ok_or("expected PREFIX=SPEC, as in /hello=hello or /api=http://127.0.0.1:9000")?;
    let target = match spec {
        "hello" => Target::App(BoxApp::new(stackway::apps::hello)),
        "demo" => Target::App(BoxApp::new(stackway::apps::demo)),
        "routes" => Target::App(BoxApp::new(routes())),
        _ if spec.starts_with("wsgi:") => match &spec["wsgi:".len()..] {
            "" => {
                return Err(
                    "expected wsgi:MODULE:CALLABLE, as in wsgi:mysite.wsgi:application".into(),
                );
            }
            app => Target::Wsgi(app.to_owned(), WsgiOptions::default()),
        },
        _ if spec.starts_with("asgi:") => match &spec["asgi:".len()..] {
            "" => return Err("expected asgi:MODULE:APP, as in asgi:main:app".into()),
            app => Target::Asgi(app.to_owned()),
        },
        _ if spec.contains(':') => {
            let upstreams: Vec<String> = spec.split(',').map(str::to_owned).collect();
            Proxy::try_balance(upstreams.iter().map(String::as_str)).map_err(|e| e.to_string())?;
            Target::Proxy(upstreams, Box::default())
        }
        _ => {
            return Err(format!(
                "unknown app {spec:?} (the built-in apps are hello, demo and routes; \
                 upstreams are http://HOST:PORT[/base], https://HOST:PORT[/base], \
                 http+srv://NAME[/base], unix:/PATH[:/base], uwsgi://HOST:PORT[/base], \
                 uwsgi+unix:/PATH[:/base], fastcgi://HOST:PORT or fastcgi+unix:/PATH)"
            ));
        }
    };
    // Check the prefix alone now, so that clap's message names the flag's value.
    Dispatcher::default()
        .try_mount(prefix, stackway::apps::hello)
        .map_err(|e| e.to_string())?;
    Ok(Mount {
        prefix: prefix.to_owned(),
        target,
        cache: None,
        cache_dir: None,
        policies: Policies::default(),
    })
}

/// `PREFIX=PATH` from `--static`, checked: the path exists.
#[derive(Debug, Clone)]
pub(crate) struct Static {
    pub(crate) prefix: String,
    pub(crate) export: Export,
}

pub(crate) fn parse_static(value: &str) -> Result<Static, String> {
    let (prefix, path) = value
        .split_once('=')
        .ok_or("expected PREFIX=PATH, as in /static=./public")?;
    let export = Export::path(path);
    SharedData::new(())
        .try_export(prefix, export.clone())
        .map_err(|e| e.to_string())?;
    Ok(Static {
        prefix: prefix.to_owned(),
        export,
    })
}

/// A proxy mount's options, each as its `Proxy` method.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProxyOptions {
    #[serde(default, deserialize_with = "secs")]
    connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "secs")]
    read_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "secs")]
    body_timeout: Option<Duration>,
    max_idle: Option<usize>,
    http2: Option<bool>,
    #[serde(default, deserialize_with = "balance")]
    balance: Option<Balance>,
    max_fails: Option<u32>,
    #[serde(default, deserialize_with = "secs")]
    fail_timeout: Option<Duration>,
    preserve_host: Option<bool>,
    forwarded: Option<bool>,
    rewrite_cookie_paths: Option<bool>,
    buffer_request: Option<bool>,
    buffer_response: Option<bool>,
    fastcgi_root: Option<std::path::PathBuf>,
    health_check: Option<HealthCheck>,
    #[serde(default, deserialize_with = "secs")]
    resolve: Option<Duration>,
    #[serde(default, deserialize_with = "nameservers")]
    nameservers: Option<Vec<std::net::SocketAddr>>,
    ca: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthCheck {
    path: String,
    #[serde(deserialize_with = "required_secs")]
    interval: Duration,
}

impl ProxyOptions {
    pub(crate) fn apply(&self, mut proxy: Proxy) -> Proxy {
        let o = self;
        if let Some(t) = o.connect_timeout {
            proxy = proxy.connect_timeout(t);
        }
        if let Some(t) = o.read_timeout {
            proxy = proxy.read_timeout(t);
        }
        if let Some(t) = o.body_timeout {
            proxy = proxy.body_timeout(t);
        }
        if let Some(n) = o.max_idle {
            proxy = proxy.max_idle(n);
        }
        if let Some(on) = o.http2 {
            proxy = proxy.http2(on);
        }
        if let Some(balance) = &o.balance {
            proxy = proxy.balance_by(balance.clone());
        }
        if let Some(n) = o.max_fails {
            proxy = proxy.max_fails(n);
        }
        if let Some(t) = o.fail_timeout {
            proxy = proxy.fail_timeout(t);
        }
        if let Some(on) = o.preserve_host {
            proxy = proxy.preserve_host(on);
        }
        if let Some(on) = o.forwarded {
            proxy = proxy.forwarded(on);
        }
        if let Some(on) = o.rewrite_cookie_paths {
            proxy = proxy.rewrite_cookie_paths(on);
        }
        if let Some(on) = o.buffer_request {
            proxy = proxy.buffer_request(on);
        }
        if let Some(on) = o.buffer_response {
            proxy = proxy.buffer_response(on);
        }
        if let Some(root) = &o.fastcgi_root {
            proxy = proxy.fastcgi_root(root);
        }
        if let Some(check) = &o.health_check {
            proxy = proxy.health_check(&check.path, check.interval);
        }
        if let Some(every) = o.resolve {
            proxy = proxy.resolve(every);
        }
        if let Some(nameservers) = &o.nameservers {
            proxy = proxy.nameservers(nameservers.iter().copied());
        }
        proxy
    }

    /// What the mount's `https://` upstreams are checked against and shown:
    /// its own `ca`, `client_cert` and `client_key`, else the server's
    /// `--proxy-*` flags; `None` for the system's roots and no certificate.
    pub(crate) fn tls(&self, args: &ServeArgs) -> Result<Option<UpstreamTls>, String> {
        let ca = self.ca.as_ref().or(args.proxy_ca.as_ref());
        let pair = |cert: &Option<PathBuf>, key: &Option<PathBuf>, names: &str| match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some((cert.clone(), key.clone()))),
            (None, None) => Ok(None),
            _ => Err(format!("give {names} together")),
        };
        let client = match pair(
            &self.client_cert,
            &self.client_key,
            "client_cert and client_key",
        )? {
            Some(client) => Some(client),
            None => pair(
                &args.proxy_client_cert,
                &args.proxy_client_key,
                "--proxy-client-cert and --proxy-client-key",
            )?,
        };
        if ca.is_none() && client.is_none() {
            return Ok(None);
        }
        let tls = match ca {
            Some(ca) => UpstreamTls::from_ca_file(ca),
            None => Ok(UpstreamTls::system_roots()),
        };
        let tls = match client {
            Some((cert, key)) => tls.and_then(|tls| tls.client_certificate(cert, key)),
            None => tls,
        };
        tls.map(Some).map_err(|e| format!("proxy TLS: {e}"))
    }
}

/// The built-in `routes` app: a Router showing parameters. `/users/{id}`
/// greets `id` as `hello` greets a name; `/files/{*path}` echoes its path.
fn routes() -> Router {
    let user = |req: Request| async move {
        let id = response::escape_html(req.param("id").unwrap_or_default());
        Html(format!("<h1>Hello, {id}!</h1>"))
    };
    let file = |req: Request| async move { req.param("path").unwrap_or_default().to_owned() };
    Router::new()
        .route("/users/{id}", get(user))
        .route("/files/{*path}", get(file))
}
