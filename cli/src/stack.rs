//! The stack `stackway serve` builds from its arguments: the mounts, the
//! static exports and the layers around them, checked before anything binds.

use std::path::Path;

use stackway::BoxApp;
use stackway_middleware::access::Peers;
use stackway_middleware::access_log::LogFormat;
use stackway_middleware::basic_auth::Htpasswd;
use stackway_middleware::cache::{CacheStats, Purger};
use stackway_middleware::proxy::ProxyStats;
use stackway_middleware::{
    AccessLog, Cache, Compress, Cors, Dispatcher, Proxy, ProxyFix, RequestIds, SetHeaders,
    SharedData, Timeout, TraceContext,
};

use crate::args::{Mount, ServeArgs, Static, Target};
use crate::policies::Policies;
use crate::python::{Harakiri, Mounted, Pool, Python, WsgiSettings};

/// The stack the flags describe, outermost first: ProxyFix → RequestIds →
/// AccessLog → Cors → SetHeaders → Compress → Timeout → SharedData →
/// Dispatcher; or why not.
///
/// With the app, what the metrics report beside it. The Python mounts are
/// `python`'s.
pub(crate) fn build_app(
    args: &ServeArgs,
    python: Option<&dyn Python>,
) -> Result<(BoxApp, Sources), String> {
    // Later --pythonpath flags end up first on sys.path, as each is put in front.
    match python {
        Some(python) => {
            for dir in args.python_path.iter().rev() {
                python.add_path(dir)?;
            }
        }
        // No Python here: they are a virtualenv's processes', checked all the same.
        None => {
            for dir in &args.python_path {
                std::fs::read_dir(dir).map_err(|e| format!("pythonpath {}: {e}", dir.display()))?;
            }
        }
    }
    for (prefix, _) in &args.venvs {
        let python = args
            .mounts
            .iter()
            .any(|m| m.prefix == *prefix && matches!(m.target, Target::Wsgi(..) | Target::Asgi(_)));
        if !python {
            return Err(format!(
                "--venv {prefix}: there is no wsgi: or asgi: mount at {prefix}"
            ));
        }
    }
    check_caches(args)?;
    let mut dispatcher = Dispatcher::default();
    let mut sources = Sources::default();
    for Mount {
        prefix,
        target,
        cache,
        cache_dir,
        policies,
    } in &args.mounts
    {
        if let Target::Wsgi(_, options) = target {
            let threads = options.threads.unwrap_or(args.wsgi_threads);
            if threads == 0 && (options.stream_input || args.wsgi_stream_input) {
                return Err(format!(
                    "mount {prefix}: stream_input needs Python threads: with 0 the body is read whole on the worker"
                ));
            }
        }
        let mut app = match (target, crate::venvs::socket(args, prefix)) {
            (Target::App(app), _) => app.clone(),
            (Target::Proxy(upstreams, options), _) => {
                let mut proxy = options.apply(
                    Proxy::balance(upstreams.iter().map(String::as_str))
                        .connect_timeout(args.proxy_connect_timeout)
                        .read_timeout(args.proxy_read_timeout),
                );
                let tls = options
                    .tls(args)
                    .map_err(|e| format!("mount {prefix}: {e}"))?;
                if let Some(tls) = tls {
                    proxy = proxy.tls(tls);
                }
                sources.proxies.push((prefix.clone(), proxy.stats()));
                BoxApp::new(proxy)
            }
            // A virtualenv of its own: its processes, reached over uwsgi (venvs.rs).
            (Target::Wsgi(..) | Target::Asgi(_), Some(sock)) => {
                // As long as the app in this process could take: its own
                // processes cut it off at --harakiri.
                let proxy = Proxy::to(&format!("uwsgi+unix:{}", sock.display()))
                    .read_timeout(std::time::Duration::from_secs(24 * 3600));
                sources.proxies.push((prefix.clone(), proxy.stats()));
                BoxApp::new(proxy)
            }
            (Target::Wsgi(spec, options), None) => {
                let threads = options.threads.unwrap_or(args.wsgi_threads).into();
                let settings = WsgiSettings {
                    threads,
                    stream_input: options.stream_input || args.wsgi_stream_input,
                    harakiri: harakiri(args),
                    // On the workers (0 threads), calls overlap when a process has
                    // more than one.
                    multithread: match threads {
                        0 => {
                            crate::supervisor::workers(args).unwrap_or_else(|| {
                                std::thread::available_parallelism().map_or(1, usize::from)
                            }) > 1
                        }
                        threads => threads > 1,
                    },
                    multiprocess: crate::supervisor::processes(args) > 1,
                };
                let wsgi = interpreter(python, prefix)?.wsgi(spec, settings)?;
                mounted(prefix, wsgi, &mut sources)
            }
            (Target::Asgi(spec), None) => {
                let asgi = interpreter(python, prefix)?.asgi(spec, harakiri(args))?;
                mounted(prefix, asgi, &mut sources)
            }
        };
        if let Some(capacity) = *cache {
            app = cached(app, capacity, cache_dir.as_deref(), prefix, &mut sources)?;
        }
        app = policies.wrap(app, &mut sources.htpasswds)?;
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
    // Inside Compress: one stored response serves every encoding.
    if let Some(capacity) = args.cache {
        app = cached(
            app,
            capacity,
            args.cache_dir.as_deref(),
            "serve",
            &mut sources,
        )?;
    }
    if args.compress {
        app = BoxApp::new(Compress::new(app));
    }
    if args.secure_headers {
        app = BoxApp::new(SetHeaders::secure(app));
    }
    if !args.cors.is_empty() {
        // What Flask-CORS allows by default: the usual methods, and any
        // request header a preflight names (a JSON POST's Content-Type).
        use stackway::http::Method;
        let methods = [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ];
        let mut cors = Cors::new(app).allow_methods(methods).allow_any_header();
        for origin in &args.cors {
            cors = match origin.as_str() {
                "*" => cors.allow_any_origin(),
                origin => cors.allow_origin(origin),
            };
        }
        app = BoxApp::new(cors);
    }
    // Inside the log and the metrics, which count what they refuse.
    let policies = Policies {
        access: args.access.clone(),
        rate_limit: args.rate_limit.clone(),
        basic_auth: args.basic_auth.clone(),
        basic_auth_realm: args.basic_auth_realm.clone(),
        forward_auth: args.forward_auth.clone(),
        forward_auth_copy: args.forward_auth_copy.clone(),
        forward_auth_remember: args.forward_auth_remember,
        error_pages: args.error_pages.clone(),
        maintenance: args.maintenance.clone(),
    };
    app = policies.wrap(app, &mut sources.htpasswds)?;
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
        let mut proxy_fix = ProxyFix::new(app)
            .x_for(x_for)
            .x_proto(x_proto)
            .x_host(x_host)
            .x_port(x_port)
            .x_prefix(x_prefix);
        if !args.trusted_proxies.is_empty() {
            let peers = Peers::new(&args.trusted_proxies).map_err(|e| e.to_string())?;
            proxy_fix = proxy_fix.trusted(peers);
        }
        app = BoxApp::new(proxy_fix);
    } else if !args.trusted_proxies.is_empty() {
        return Err("trusted_proxies needs proxy_fix, which reads what they forward".to_owned());
    }
    Ok((app, sources))
}

/// Whether a WSGI app of these processes runs on the server's workers
/// (`--wsgi-threads 0` or a mount's `threads = 0`, not in a virtualenv's
/// group of its own): a process is then busy in Python for as long as a
/// request takes, and accepts no connection meanwhile.
pub(crate) fn python_on_workers(args: &ServeArgs) -> bool {
    args.mounts.iter().any(|mount| match &mount.target {
        Target::Wsgi(_, options) => {
            options.threads.unwrap_or(args.wsgi_threads) == 0
                && crate::venvs::socket(args, &mount.prefix).is_none()
        }
        _ => false,
    })
}

/// The interpreter for the Python mount at `prefix`.
fn interpreter<'a>(python: Option<&'a dyn Python>, prefix: &str) -> Result<&'a dyn Python, String> {
    python.ok_or_else(|| {
        format!(
            "mount {prefix}: a Python app is served by {}",
            crate::python::BINARY
        )
    })
}

/// `--harakiri`: the stuck request goes on, and its process is replaced.
fn harakiri(args: &ServeArgs) -> Option<Harakiri> {
    args.harakiri.map(|limit| Harakiri {
        limit,
        then: || {
            crate::restart::report("RECYCLE=harakiri");
        },
    })
}

/// A Python app's own, with what the server keeps of it among the `sources`.
fn mounted(prefix: &str, mounted: Mounted, sources: &mut Sources) -> BoxApp {
    if let Some(pool) = mounted.pool {
        sources.pools.push((prefix.to_owned(), pool));
    }
    if let Some(shutdown) = mounted.shutdown {
        sources.lifespans.push(shutdown);
    }
    mounted.app
}

/// Whether the caches' directories are given with a size, each to one cache.
pub(crate) fn check_caches(args: &ServeArgs) -> Result<(), String> {
    if args.cache_dir.is_some() && args.cache.is_none() {
        return Err("cache_dir needs cache, the size to keep there".to_owned());
    }
    let mut dirs: Vec<&Path> = (args.mounts.iter())
        .filter_map(|mount| mount.cache_dir.as_deref())
        .chain(args.cache_dir.as_deref())
        .collect();
    dirs.sort();
    match dirs.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(twice) => Err(format!(
            "cache directory {} is given to two caches: each needs its own",
            twice[0].display()
        )),
        None => Ok(()),
    }
}

/// `app` behind an HTTP cache of `capacity` bytes (on disk in `dir`), its
/// counters and purger among the `sources` as `name`'s.
fn cached(
    app: BoxApp,
    capacity: usize,
    dir: Option<&Path>,
    name: &str,
    sources: &mut Sources,
) -> Result<BoxApp, String> {
    let mut cache = Cache::new(app, capacity);
    if let Some(dir) = dir {
        cache =
            (cache.on_disk(dir)).map_err(|e| format!("cache directory {}: {e}", dir.display()))?;
    }
    sources.caches.push((name.to_owned(), cache.stats()));
    sources.purgers.push(cache.purger());
    Ok(BoxApp::new(cache))
}

/// What the metrics report beside the requests: each proxy mount's
/// upstreams and each WSGI mount's Python threads, by prefix.
#[derive(Default)]
pub(crate) struct Sources {
    pub(crate) proxies: Vec<(String, ProxyStats)>,
    pub(crate) pools: Vec<(String, Pool)>,
    /// The ASGI apps' lifespan shutdowns, once the server has drained.
    pub(crate) lifespans: Vec<Box<dyn FnOnce() + Send>>,
    /// The HTTP caches' counters: `--cache`'s as `serve`, a mount's by its prefix.
    pub(crate) caches: Vec<(String, CacheStats)>,
    /// … and what purges them, for the admin listener.
    pub(crate) purgers: Vec<Purger>,
    /// The htpasswd files of `basic_auth`, read again on SIGHUP.
    pub(crate) htpasswds: Vec<Htpasswd>,
}
