//! `stackway-python`: `stackway` with the Python interpreter linked in, for
//! the `wsgi:` and `asgi:` mounts. `stackway` hands such a command over to it.

use std::path::Path;

use stackway::BoxApp;
use stackway_cli::{Harakiri, Mounted, Pool, Python, WsgiSettings};
use stackway_wsgi::{Asgi, Wsgi};

/// The interpreter this binary embeds.
struct Embedded;

impl Python for Embedded {
    fn add_path(&self, dir: &Path) -> Result<(), String> {
        stackway_wsgi::python_path(dir).map_err(|e| e.to_string())
    }

    fn wsgi(&self, spec: &str, settings: WsgiSettings) -> Result<Mounted, String> {
        let mut wsgi = Wsgi::import(spec)
            .map_err(|e| e.to_string())?
            .threads(settings.threads)
            .stream_input(settings.stream_input)
            .multithread(settings.multithread)
            .multiprocess(settings.multiprocess);
        if let Some(Harakiri { limit, then }) = settings.harakiri {
            wsgi = wsgi.harakiri(limit, then);
        }
        let stats = wsgi.stats();
        Ok(Mounted {
            app: BoxApp::new(wsgi),
            pool: Some(Pool {
                threads: stats.threads(),
                reading: Box::new(move || stats.reading()),
            }),
            shutdown: None,
        })
    }

    fn asgi(&self, spec: &str, harakiri: Option<Harakiri>) -> Result<Mounted, String> {
        let mut asgi = Asgi::import(spec).map_err(|e| e.to_string())?;
        if let Some(Harakiri { limit, then }) = harakiri {
            asgi = asgi.harakiri(limit, then);
        }
        asgi.startup().map_err(|e| e.to_string())?;
        Ok(Mounted {
            app: BoxApp::new(asgi.clone()),
            pool: None,
            shutdown: Some(Box::new(move || asgi.shutdown())),
        })
    }

    fn worker_context(&self, serve: &mut (dyn FnMut() + Send)) {
        stackway_wsgi::worker_context(serve);
    }
}

fn main() -> std::process::ExitCode {
    stackway_cli::main(Some(&Embedded))
}
