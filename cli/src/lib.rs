//! The `stackway` command line: `stackway serve` mounts built-in apps under URL
//! prefixes with the Dispatcher, serves static folders with SharedData in front
//! of them, and runs the stack on the stackway server.
//!
//! ```text
//! stackway serve --mount /=hello --mount /env=demo --static /static=./public --access-log
//!
//! AccessLog → SharedData (/static) → Dispatcher (/, /env)
//! ```
//!
//! Two binaries run it: `stackway`, and `stackway-python` with the Python
//! interpreter linked in for the Python mounts ([`Python`]).

/// The binaries' allocator for their Rust side (Python's objects stay on the C
/// library's): jemalloc, whose per-thread caches hold every size a request
/// allocates, hyper's 8 KiB read buffers among them, where glibc's stop at
/// 1,032 bytes. An idle keep-alive connection holds a third less with it
/// (BENCHMARKS.md, "jemalloc for the binaries"). Its options are compiled in
/// from `.cargo/config.toml`: the 8 KiB class in slabs of four regions, since
/// a proxied request takes two fresh read buffers ("jemalloc's 8 KiB slabs").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod admin;
mod args;
mod config;
mod listen;
mod policies;
mod purge;
mod python;
mod recycle;
mod reload;
mod restart;
mod signals;
mod stack;
mod supervisor;
mod telemetry;
mod tree;
mod tree_metrics;
mod values;
mod venvs;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use stackway::{BoxApp, Server};

use crate::admin::observed;
use crate::args::{Cli, Command, ServeArgs};
use crate::signals::Signals;
use crate::stack::build_app;

pub use crate::python::{BINARY, Harakiri, Mounted, Pool, Python, WsgiSettings};

/// `stackway`'s `main`, with the Python mounts `python` provides: without
/// them, a command that mounts a Python app is handed over to [`BINARY`].
pub fn main(python: Option<&'static dyn Python>) -> ExitCode {
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
    if python.is_none() && python::needed(&args) {
        return python::hand_over();
    }
    tree::follow_parent();
    // A supervisor serves nothing: its processes export.
    let otlp = match args
        .otlp_endpoint
        .as_deref()
        .filter(|_| !supervisor::wanted(&args))
    {
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
    let admin = admin_spec(&args);
    if supervisor::wanted(&args) {
        return supervisor::run(&args, &listen_specs(&args), admin.as_ref());
    }
    // Everything the flags say is checked before the port is taken, so a
    // wrong flag is never reported as a busy port.
    let (mut app, mut sources) = match build_app(&args, python) {
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
    // The mounts with a virtualenv of their own, in processes of their own.
    let groups = match venvs::Groups::start(&args) {
        Ok(groups) => Arc::new(Mutex::new(groups)),
        Err(message) => {
            eprintln!("stackway: {message}");
            return ExitCode::from(1);
        }
    };
    if !groups
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_empty()
    {
        let looked_after = groups.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(100));
                looked_after
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .look_after();
            }
        });
    }
    let opened = match listen::open(&listen_specs(&args), admin.as_ref()) {
        Ok(opened) => opened,
        Err(message) => {
            eprintln!("stackway: {message}");
            return ExitCode::from(1);
        }
    };
    let handover = restart::Handover::new(&opened.listeners);
    let shown: Vec<String> = opened.listeners.iter().map(listen::shown).collect();
    let server = match Server::new(opened.listeners) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("stackway: {}", listen::cause(&e));
            return ExitCode::from(1);
        }
    };
    // --wsgi-threads 0: Python runs on the workers, which stay attached to it.
    let python_on_workers = sources.pools.iter().any(|(_, pool)| pool.threads == 0);
    let lifespans = std::mem::take(&mut sources.lifespans);
    let htpasswds = std::mem::take(&mut sources.htpasswds);
    // The app's requests count towards --max-requests; --metrics and
    // --status, answered outside it, do not.
    if let Some(limit) = supervisor::request_limit(&args) {
        app = BoxApp::new(recycle::AfterRequests::new(
            app,
            limit,
            server.shutdown_handle(),
        ));
    }
    let mut tree_metrics = None;
    if admin::wanted(&args) {
        (app, tree_metrics) = observed(app, &args, &server, opened.admin, sources);
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
        .shutdown_on(signals.until_stop(opened.tls, htpasswds, handover, handed_over.clone()))
        .when_ready(move |_| {
            // Whoever reads this may have gone (a restart's new process
            // outlives the old one's reader): a closed stdout is no failure.
            // A supervised process's supervisor says where the tree listens.
            if !tree::is_worker() {
                let mut out = std::io::stdout().lock();
                for addr in &shown {
                    let _ = writeln!(out, "listening on {addr}");
                }
                let _ = out.flush();
            }
            restart::notify_ready();
        });
    if let Some(path) = &args.health {
        server = server.health_path(path);
    }
    if let Some(workers) = supervisor::workers(&args) {
        server = server.workers(workers);
    }
    if let Some(python) = python.filter(|_| python_on_workers) {
        server = server.worker_context(move |serve| python.worker_context(serve));
    }
    let server = match policies::server_pages(server, &args.error_pages) {
        Ok(server) => server,
        Err(message) => {
            eprintln!("stackway: {message}");
            return ExitCode::from(1);
        }
    };
    let served = server.run(app);
    for shutdown in lifespans {
        shutdown();
    }
    groups.lock().unwrap_or_else(PoisonError::into_inner).stop();
    // What this process served to the end, for its supervisor's sums.
    if let Some(tree) = tree_metrics {
        tree.write_own();
    }
    // The sockets' files are the supervisor's, or the next process's.
    if !handed_over.load(Ordering::Relaxed) && !tree::is_worker() {
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

/// The admin listener `--admin-bind` asks for.
fn admin_spec(args: &ServeArgs) -> Option<listen::ListenSpec> {
    args.admin_bind.as_ref().map(|bind| listen::ListenSpec {
        bind: bind.clone(),
        tls: None,
        client_ca: None,
        proxy_protocol: false,
        uwsgi: false,
        reuse_port: false,
        mode: args.socket_mode,
    })
}

/// The listeners the flags (or the config file) ask for.
fn listen_specs(args: &ServeArgs) -> Vec<listen::ListenSpec> {
    if !args.listen.is_empty() {
        return args.listen.clone();
    }
    let tls = args.tls_cert.clone().zip(args.tls_key.clone());
    args.bind
        .iter()
        .map(|address| listen::ListenSpec {
            bind: address.bind.clone(),
            // Not on unix sockets, nor to a uwsgi front.
            tls: tls
                .clone()
                .filter(|_| !matches!(address.bind, listen::Bind::Unix(_)) && !address.uwsgi),
            client_ca: (args.tls_client_ca.clone()).map(|ca| (ca, !args.tls_client_optional)),
            proxy_protocol: args.proxy_protocol,
            uwsgi: address.uwsgi,
            reuse_port: args.reuse_port,
            mode: args.socket_mode,
        })
        .collect()
}
