//! The `stackway` command line: `stackway serve` mounts built-in apps under URL
//! prefixes with the Dispatcher, serves static folders with SharedData in front
//! of them, and runs the stack on the stackway server.
//!
//! ```text
//! stackway serve --mount /=hello --mount /env=demo --static /static=./public --access-log
//!
//! AccessLog → SharedData (/static) → Dispatcher (/, /env)
//! ```

mod config;
mod listen;
mod reload;
mod restart;
mod telemetry;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand};
use stackway::server::Tls;
use stackway::{App, Connection, Request, Response, response};
use stackway::{BoxApp, Server};
use stackway_middleware::access_log::LogFormat;
use stackway_middleware::metrics::{Exposition, PoolReading, StatusPage};
use stackway_middleware::proxy::ProxyStats;
use stackway_middleware::router::{RouteParams, Router, get};
use stackway_middleware::shared_data::Export;
use stackway_middleware::{
    AccessLog, Compress, Cors, Dispatcher, Metrics, Proxy, ProxyFix, RequestIds, SetHeaders,
    SharedData, Timeout, TraceContext,
};
use stackway_wsgi::{Wsgi, WsgiStats};

#[derive(Debug, Parser)]
#[command(
    name = "stackway",
    version,
    about = "Serve stackway apps over HTTP/1.1 and HTTP/2."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve built-in apps under URL prefixes until SIGINT or SIGTERM.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Read settings from a TOML file (see stackway.example.toml); flags given replace the
    /// file's keys of the same name.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// The listeners a config file describes (its bind and [[listen]] keys).
    #[arg(skip)]
    listen: Vec<listen::ListenSpec>,

    /// Where to listen, repeatable: HOST:PORT (port 0 picks a free port), unix:PATH, or
    /// fd:N for a socket passed by systemd socket activation. Sockets systemd passes
    /// (LISTEN_FDS) are served without it [default: 127.0.0.1:8000].
    #[arg(long, value_name = "ADDRESS", value_parser = listen::parse_bind)]
    bind: Vec<listen::Bind>,

    /// Permission bits of unix socket files made by --bind unix:PATH, in octal (as 660).
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    socket_mode: Option<u32>,

    /// Listen on TCP addresses with SO_REUSEPORT, so that other processes may listen there
    /// too.
    #[arg(long)]
    reuse_port: bool,

    /// Speak TLS on the TCP listeners with this certificate chain (PEM, the server's
    /// certificate first); reloaded on SIGHUP.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Expect a PROXY protocol header (v1 or v2) on every connection, as HAProxy's
    /// send-proxy sends, and take the client's address from it.
    #[arg(long)]
    proxy_protocol: bool,

    /// Answer requests for PATH with 200 while serving and 503 once shutting down, for a
    /// balancer's health checks.
    #[arg(long, value_name = "PATH", value_parser = parse_path)]
    health: Option<String>,

    /// Seconds to drain after SIGTERM before refusing new connections: the health check
    /// says 503, and requests are still served (with Connection: close).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    drain_delay: Option<Duration>,

    /// Seconds a new connection may take to send its PROXY header and finish its TLS
    /// handshake.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    handshake_timeout: Duration,

    /// Mount at PREFIX through the Dispatcher, repeatable: a built-in app (hello, demo,
    /// routes: a Router with /users/{id} and /files/{*path}), a
    /// Python WSGI app (wsgi:MODULE:CALLABLE), or an upstream to proxy to
    /// (http://HOST:PORT[/base], unix:/PATH[:/base]; several, comma-separated, for a
    /// round-robin pool). `/` mounts at the root; the longest matching prefix wins; no match
    /// is a 404.
    #[arg(long = "mount", value_name = "PREFIX=SPEC", value_parser = parse_mount)]
    mounts: Vec<Mount>,

    /// Serve the files under directory (or the one file) PATH at PREFIX with SharedData,
    /// in front of the mounts; repeatable. Misses go on to the mounts.
    #[arg(long = "static", value_name = "PREFIX=PATH", value_parser = parse_static)]
    statics: Vec<Static>,

    /// Worker threads, each with its own runtime [default: one per core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,

    /// Trust X-Forwarded-* headers from proxies in front (Werkzeug's ProxyFix): counts of
    /// trusted proxies per header, as in for=1,proto=1,host=1,port=0,prefix=1; bare
    /// --proxy-fix trusts one proxy for For and Proto, as Werkzeug [default: off].
    #[arg(long, value_name = "TRUST", num_args = 0..=1, default_missing_value = "", value_parser = parse_proxy_fix)]
    proxy_fix: Option<[usize; 5]>,

    /// The least severe log events printed: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: tracing::Level,

    /// How log events are printed to standard error: text for people, json (one object a
    /// line) for log collectors; with json, the access log is JSON too.
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,

    /// Allow pages from ORIGIN to call the apps from a browser (CORS); repeatable; `*` for
    /// any origin.
    #[arg(long = "cors", value_name = "ORIGIN")]
    cors: Vec<String>,

    /// Compress responses on the fly (br, zstd, gzip, deflate) for clients that accept it.
    #[arg(long)]
    compress: bool,

    /// Seconds an app may take to answer a request before it gets 503.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,

    /// Give each request an id (X-Request-Id, in the response and the logs); an incoming
    /// one is kept when --proxy-fix is on, as a proxy in front is trusted then.
    #[arg(long)]
    request_id: bool,

    /// Read each request's W3C traceparent (or start a trace), log inside a span with its
    /// trace and span ids, and pass the trace on to upstreams.
    #[arg(long)]
    trace_context: bool,

    /// Export each request's span to an OpenTelemetry collector over OTLP/HTTP at URL
    /// (`http://collector:4318`), service.name from OTEL_SERVICE_NAME or `stackway`;
    /// implies --trace-context. Needs a build with `--features otel`.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,

    /// Add the usual security headers to responses (nosniff, Referrer-Policy,
    /// X-Frame-Options, and HSTS over https).
    #[arg(long)]
    secure_headers: bool,

    /// Serve Prometheus metrics at PATH (requests by mount, method and status class,
    /// latency histograms, bytes, connections, SharedData hits) [default: off].
    #[arg(long, value_name = "PATH", value_parser = parse_path)]
    metrics: Option<String>,

    /// Serve a live status page at PATH (its JSON at PATH.json): uptime, listeners, requests,
    /// rates and p50/p99 per mount with sparklines, the last errors [default: off].
    #[arg(long, value_name = "PATH", value_parser = parse_path)]
    status: Option<String>,

    /// Serve --status and --metrics only on this extra listener (HOST:PORT, unix:PATH or
    /// fd:N, as 127.0.0.1:9901), which serves nothing else, so that they never face the
    /// clients of the other listeners (the app keeps its --bind, or 127.0.0.1:8000).
    #[arg(long, value_name = "ADDRESS", value_parser = listen::parse_bind)]
    admin_bind: Option<listen::Bind>,

    /// Log one line per request to standard error, in the Common Log Format [default: off].
    #[arg(long)]
    access_log: bool,

    /// Seconds a client may take to send a request head, from its first byte.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    header_timeout: Duration,

    /// Seconds a connection may stay open with no request in flight.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    idle_timeout: Duration,

    /// Seconds a response may go without the client reading a byte of it before the
    /// connection is closed (on HTTP/2, the stream is reset).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    send_timeout: Duration,

    /// Seconds an app reading a request body may wait for its next byte; then the read
    /// fails and the connection is closed after the response.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    body_timeout: Duration,

    /// A directory to put on Python's sys.path for wsgi: mounts (the working directory is
    /// there already); repeatable.
    #[arg(long = "pythonpath", value_name = "DIR")]
    python_path: Vec<std::path::PathBuf>,

    /// Threads that run Python, per wsgi: mount (gunicorn's --threads).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    wsgi_threads: u16,

    /// For development: restart the server when a Python file under the working directory
    /// or a --pythonpath changes (new code that does not load is reported, and the old
    /// code keeps serving).
    #[arg(long)]
    reload: bool,

    /// Import and check everything, then exit without serving (used by --reload).
    #[arg(long, hide = true)]
    check: bool,

    /// Seconds connecting to an upstream may take; then 502.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    proxy_connect_timeout: Duration,

    /// Seconds an upstream may take to send its response head; then 504.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    proxy_read_timeout: Duration,

    /// Seconds in-flight requests get to finish after SIGINT or SIGTERM.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    grace_period: Duration,

    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    max_body_size: u64,

    /// Largest request head accepted, in bytes (at least 8192); larger ones get 431.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u32).range(8192..).map(|n| n as usize))]
    max_header_size: usize,

    /// Most connections open at once; more wait in the listen queue.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    max_connections: usize,
}

/// `PREFIX=SPEC` from `--mount`.
#[derive(Debug, Clone)]
struct Mount {
    prefix: String,
    target: Target,
}

#[derive(Debug, Clone)]
enum Target {
    /// A built-in app.
    App(BoxApp),
    /// Upstreams to proxy to, checked, and options from a config file.
    Proxy(Vec<String>, config::ProxyOptions),
    /// A Python WSGI app, `module:callable`, imported once the paths are set,
    /// and its threads when a config file says.
    Wsgi(String, Option<u16>),
}

fn parse_mount(value: &str) -> Result<Mount, String> {
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
            app => Target::Wsgi(app.to_owned(), None),
        },
        _ if spec.contains(':') => {
            let upstreams: Vec<String> = spec.split(',').map(str::to_owned).collect();
            Proxy::try_balance(upstreams.iter().map(String::as_str)).map_err(|e| e.to_string())?;
            Target::Proxy(upstreams, config::ProxyOptions::default())
        }
        _ => {
            return Err(format!(
                "unknown app {spec:?} (the built-in apps are hello, demo and routes; \
                 upstreams are http://HOST:PORT[/base] or unix:/PATH[:/base])"
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
    })
}

/// The built-in `routes` app: a Router showing parameters. `/users/{id}`
/// greets `id` as `hello` greets a name; `/files/{*path}` echoes its path.
fn routes() -> Router {
    let user = |req: Request| async move {
        let id = response::escape_html(req.param("id").unwrap_or_default());
        response::html(format!("<h1>Hello, {id}!</h1>"))
    };
    let file = |req: Request| async move {
        response::text(req.param("path").unwrap_or_default().to_owned())
    };
    Router::new()
        .route("/users/{id}", get(user))
        .route("/files/{*path}", get(file))
}

/// `PREFIX=PATH` from `--static`, checked: the path exists.
#[derive(Debug, Clone)]
struct Static {
    prefix: String,
    export: Export,
}

fn parse_static(value: &str) -> Result<Static, String> {
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

/// `for=1,proto=1,host=0,port=0,prefix=0`: trusted proxies per header, in
/// that order; unnamed ones keep Werkzeug's defaults (1, 1, 0, 0, 0).
fn parse_proxy_fix(value: &str) -> Result<[usize; 5], String> {
    let mut trust = [1, 1, 0, 0, 0];
    for pair in value.split(',').filter(|p| !p.is_empty()) {
        let (name, count) = pair
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=COUNT, not {pair:?}"))?;
        let at = ["for", "proto", "host", "port", "prefix"]
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| format!("unknown header {name:?} (for, proto, host, port, prefix)"))?;
        trust[at] = count
            .parse()
            .map_err(|_| format!("{name}={count:?}: expected a number of proxies"))?;
    }
    Ok(trust)
}

fn parse_mode(value: &str) -> Result<u32, String> {
    u32::from_str_radix(value, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("expected permission bits in octal, as in 660, not {value:?}"))
}

fn parse_path(value: &str) -> Result<String, String> {
    match value.starts_with('/') {
        true => Ok(value.to_owned()),
        false => Err(format!("expected a path, as in /healthz, not {value:?}")),
    }
}

fn parse_secs(value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("expected a positive number of seconds, not {value:?}"))
}

fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let Command::Serve(mut args) = cli.command;
    if let Some(path) = args.config.clone() {
        let serve = matches
            .subcommand_matches("serve")
            .expect("the only command");
        if let Err(message) = config::apply(&path, &mut args, serve) {
            eprintln!("stackway: {message}");
            return ExitCode::from(2);
        }
    }
    reload::follow_supervisor();
    let otlp = match args.otlp_endpoint.as_deref().filter(|_| !args.reload) {
        Some(endpoint) => match telemetry::exporter(endpoint) {
            Ok(otlp) => Some(otlp),
            Err(message) => {
                eprintln!("stackway: --otlp-endpoint: {message}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    args.trace_context |= args.otlp_endpoint.is_some();
    telemetry::init(&args.log_format, args.log_level, otlp.as_ref());
    if args.reload {
        let child_args: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| a != "--reload")
            .collect();
        let mut roots = vec![std::path::PathBuf::from(".")];
        roots.extend(args.python_path.iter().cloned());
        return reload::supervise(child_args, &args.bind, &roots);
    }
    // Everything the flags say is checked before the port is taken, so a
    // wrong flag is never reported as a busy port.
    let (mut app, sources) = match build_app(&args) {
        Ok(built) => built,
        Err(message) => {
            eprintln!("stackway: {message}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        return ExitCode::SUCCESS;
    }
    // Installed before anything listens, so that no signal finds its default action.
    let signals = match Signals::new() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("stackway: cannot watch for signals: {e}");
            return ExitCode::from(1);
        }
    };
    let admin = args.admin_bind.as_ref().map(|bind| listen::ListenSpec {
        bind: bind.clone(),
        tls: None,
        proxy_protocol: false,
        reuse_port: false,
        mode: args.socket_mode,
    });
    let opened = match listen::open(&listen_specs(&args), admin.as_ref()) {
        Ok(opened) => opened,
        Err(message) => {
            eprintln!("stackway: {message}");
            return ExitCode::from(1);
        }
    };
    let handover = restart::Handover::new(&opened.listeners);
    let server = match Server::new(opened.listeners) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("stackway: {}", listen::cause(&e));
            return ExitCode::from(1);
        }
    };
    if args.metrics.is_some() || args.status.is_some() {
        app = observed(app, &args, &server, opened.admin, sources);
    }
    let handed_over = Arc::new(AtomicBool::new(false));
    let mut server = server
        .header_read_timeout(args.header_timeout)
        .idle_timeout(args.idle_timeout)
        .send_timeout(args.send_timeout)
        .body_timeout(args.body_timeout)
        .handshake_timeout(args.handshake_timeout)
        .grace_period(args.grace_period)
        .drain_delay(args.drain_delay.unwrap_or_default())
        .max_body_size(Some(args.max_body_size))
        .max_header_size(args.max_header_size)
        .max_connections(args.max_connections)
        .shutdown_on(signals.until_stop(opened.tls, handover, handed_over.clone()))
        .when_ready(|addrs| {
            // Whoever reads this may have gone (a restart's new process
            // outlives the old one's reader): a closed stdout is no failure.
            let mut out = std::io::stdout().lock();
            for addr in addrs {
                let _ = writeln!(out, "listening on {addr}");
            }
            let _ = out.flush();
            restart::notify_ready();
        });
    if let Some(path) = &args.health {
        server = server.health_path(path);
    }
    if let Some(workers) = args.workers {
        server = server.workers(workers.into());
    }
    let served = server.run(app);
    if !handed_over.load(Ordering::Relaxed) {
        for file in &opened.unix_files {
            let _ = std::fs::remove_file(file);
        }
    }
    if let Some(otlp) = otlp {
        if let Err(e) = otlp.shutdown() {
            tracing::warn!("{e}");
        }
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stackway: {e}");
            ExitCode::from(1)
        }
    }
}

/// The stack inside `Metrics`, with the status page and the exposition in
/// front of it, or on the admin listener alone.
fn observed(
    app: BoxApp,
    args: &ServeArgs,
    server: &Server,
    admin: Option<usize>,
    sources: Sources,
) -> BoxApp {
    let mut metrics = Metrics::new(app).server(server.stats()).no_endpoint();
    for (mount, stats) in sources.proxies {
        metrics = metrics.proxy(&mount, stats);
    }
    for (mount, stats) in sources.pools {
        metrics = metrics.pool(&mount, move || PoolReading {
            threads: stats.threads(),
            busy: stats.busy(),
            queued: stats.queued(),
            jobs: stats.jobs(),
            waited_seconds: stats.waited_seconds(),
        });
    }
    let listeners = server
        .local_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    let status = args
        .status
        .as_deref()
        .map(|path| metrics.status_page().path(path).listeners(listeners));
    let exposition = args.metrics.as_deref().map(|path| metrics.exposition(path));
    BoxApp::new(Observed {
        metrics,
        status,
        exposition,
        admin,
    })
}

/// The stack inside `Metrics`, with the status page and the exposition
/// answered first: on the admin listener alone when there is one, which
/// answers nothing else.
struct Observed {
    metrics: Metrics<BoxApp>,
    status: Option<StatusPage>,
    exposition: Option<Exposition>,
    /// The admin listener's place among the server's.
    admin: Option<usize>,
}

impl App for Observed {
    async fn call(&self, req: Request) -> Response {
        let listener = req.extensions().get::<Connection>().map(|c| c.listener);
        let on_admin = self.admin.is_some() && listener == self.admin;
        if on_admin || self.admin.is_none() {
            if let Some(status) = self.status.as_ref().filter(|s| s.serves(&req)) {
                return status.call(req).await;
            }
            if let Some(exposition) = self.exposition.as_ref().filter(|e| e.serves(&req)) {
                return exposition.call(req).await;
            }
        }
        if on_admin {
            return response::status(stackway::http::StatusCode::NOT_FOUND);
        }
        self.metrics.call(req).await
    }
}

/// The listeners the flags (or the config file) ask for.
fn listen_specs(args: &ServeArgs) -> Vec<listen::ListenSpec> {
    if !args.listen.is_empty() {
        return args.listen.clone();
    }
    let tls = args.tls_cert.clone().zip(args.tls_key.clone());
    args.bind
        .iter()
        .map(|bind| listen::ListenSpec {
            bind: bind.clone(),
            tls: tls
                .clone()
                .filter(|_| !matches!(bind, listen::Bind::Unix(_))),
            proxy_protocol: args.proxy_protocol,
            reuse_port: args.reuse_port,
            mode: args.socket_mode,
        })
        .collect()
}

/// SIGINT, SIGTERM, SIGHUP and SIGUSR2, caught from the start.
struct Signals(tokio::sync::mpsc::UnboundedReceiver<i32>);

impl Signals {
    fn new() -> std::io::Result<Self> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR2])?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("stackway-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if tx.send(signal).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self(rx))
    }

    /// Completes when the server should stop: on SIGINT or SIGTERM, or once
    /// SIGUSR2 has started a new process that took the sockets over. SIGHUP
    /// reloads the TLS certificates.
    async fn until_stop(
        mut self,
        tls: Vec<Tls>,
        handover: std::io::Result<restart::Handover>,
        handed_over: Arc<AtomicBool>,
    ) {
        use signal_hook::consts::{SIGHUP, SIGUSR2};
        let handover = handover.map(Arc::new);
        while let Some(signal) = self.0.recv().await {
            match signal {
                SIGHUP => {
                    for tls in &tls {
                        match tls.reload() {
                            Ok(()) => tracing::info!("reloaded the TLS certificate: {tls:?}"),
                            Err(e) => tracing::error!(
                                "kept the old TLS certificate: {}",
                                listen::cause(&e)
                            ),
                        }
                    }
                }
                SIGUSR2 => {
                    let handover = match &handover {
                        Ok(handover) => handover.clone(),
                        Err(e) => {
                            tracing::error!(
                                "cannot restart: the sockets cannot be handed over: {e}"
                            );
                            continue;
                        }
                    };
                    let args: Vec<_> = std::env::args_os().skip(1).collect();
                    tracing::info!("restarting: starting a new process with the listening sockets");
                    match tokio::task::spawn_blocking(move || handover.restart(&args)).await {
                        Ok(Ok(pid)) => {
                            tracing::info!(pid, "the new process is ready; draining and stopping");
                            handed_over.store(true, Ordering::Relaxed);
                            return;
                        }
                        Ok(Err(e)) => tracing::error!("restart failed, still serving: {e}"),
                        Err(e) => tracing::error!("restart failed, still serving: {e}"),
                    }
                }
                _ => break,
            }
        }
        restart::notify_stopping();
    }
}

/// The stack the flags describe, outermost first: ProxyFix → RequestIds →
/// AccessLog → Cors → SetHeaders → Compress → Timeout → SharedData →
/// Dispatcher; or why not.
///
/// With the app, what the metrics report beside it.
fn build_app(args: &ServeArgs) -> Result<(BoxApp, Sources), String> {
    // Later --pythonpath flags end up first on sys.path, as each is put in front.
    for dir in args.python_path.iter().rev() {
        stackway_wsgi::python_path(dir).map_err(|e| e.to_string())?;
    }
    let mut dispatcher = Dispatcher::default();
    let mut sources = Sources::default();
    for Mount { prefix, target } in &args.mounts {
        let app = match target {
            Target::App(app) => app.clone(),
            Target::Proxy(upstreams, options) => {
                let proxy = options.apply(
                    Proxy::balance(upstreams.iter().map(String::as_str))
                        .connect_timeout(args.proxy_connect_timeout)
                        .read_timeout(args.proxy_read_timeout),
                );
                sources.proxies.push((prefix.clone(), proxy.stats()));
                BoxApp::new(proxy)
            }
            Target::Wsgi(spec, threads) => {
                let wsgi = Wsgi::import(spec)
                    .map_err(|e| e.to_string())?
                    .threads(threads.unwrap_or(args.wsgi_threads).into());
                sources.pools.push((prefix.clone(), wsgi.stats()));
                BoxApp::new(wsgi)
            }
        };
        dispatcher = dispatcher
            .try_mount(prefix, app)
            .map_err(|e| e.to_string())?;
    }
    let mut shared_data = SharedData::new(dispatcher);
    for Static { prefix, export } in &args.statics {
        shared_data = shared_data
            .try_export(prefix, export.clone())
            .map_err(|e| e.to_string())?;
    }
    let mut app = BoxApp::new(shared_data);
    // Inside out: the first wrapped is the innermost.
    if let Some(deadline) = args.timeout {
        app = BoxApp::new(Timeout::new(app, deadline));
    }
    if args.compress {
        app = BoxApp::new(Compress::new(app));
    }
    if args.secure_headers {
        app = BoxApp::new(SetHeaders::secure(app));
    }
    if !args.cors.is_empty() {
        let mut cors = Cors::new(app);
        for origin in &args.cors {
            cors = match origin.as_str() {
                "*" => cors.allow_any_origin(),
                origin => cors.allow_origin(origin),
            };
        }
        app = BoxApp::new(cors);
    }
    if args.access_log {
        app = BoxApp::new(match args.log_format.as_str() {
            // One object a line, through the JSON log.
            "json" => AccessLog::new(app).format(LogFormat::Json),
            // The Common Log Format, alone on its line as web servers write it.
            _ => AccessLog::new(app).sink(|line: &str| eprintln!("{line}")),
        });
    }
    if args.trace_context {
        app = BoxApp::new(TraceContext::new(app));
    }
    if args.request_id {
        app = BoxApp::new(RequestIds::new(app).trust_incoming(args.proxy_fix.is_some()));
    }
    // Outermost, so that the log and every app see the client the proxies name.
    if let Some([x_for, x_proto, x_host, x_port, x_prefix]) = args.proxy_fix {
        app = BoxApp::new(
            ProxyFix::new(app)
                .x_for(x_for)
                .x_proto(x_proto)
                .x_host(x_host)
                .x_port(x_port)
                .x_prefix(x_prefix),
        );
    }
    Ok((app, sources))
}

/// What the metrics report beside the requests: each proxy mount's
/// upstreams and each WSGI mount's Python threads, by prefix.
#[derive(Debug, Default)]
struct Sources {
    proxies: Vec<(String, ProxyStats)>,
    pools: Vec<(String, WsgiStats)>,
}
