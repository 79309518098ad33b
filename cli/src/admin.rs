//! The admin side of `stackway serve`: Metrics around the stack, and the
//! status page and the exposition answered first, on the admin listener
//! alone when there is one; there, too, the caches' purges and the
//! maintenance switch.

use std::path::{Path, PathBuf};

use futures_util::future::Either;
use serde_json::json;
use stackway::app::BoxFuture;
use stackway::environ::Packet;
use stackway::http::{HeaderValue, Method, StatusCode, header};
use stackway::{App, BoxApp, Connection, IntoResponse, Request, Response, Server};
use stackway_middleware::Metrics;
use stackway_middleware::metrics::{Exposition, StatusPage};

use crate::args::ServeArgs;
use crate::purge::{self, Purges};
use crate::stack::Sources;
use crate::tree_metrics::TreeMetrics;

/// Whether `observed` has anything to do: metrics, a status page, or an
/// admin listener with caches to purge or a maintenance switch.
pub(crate) fn wanted(args: &ServeArgs) -> bool {
    let switch = args.admin_bind.is_some() && args.maintenance.is_some();
    args.metrics.is_some() || args.status.is_some() || purge::on_admin(args) || switch
}

/// The stack inside `Metrics`, with the status page and the exposition in
/// front of it, or on the admin listener alone; and, in a process whose
/// supervisor sums metrics, what writes this process's share.
pub(crate) fn observed(
    app: BoxApp,
    args: &ServeArgs,
    server: &Server,
    admin: Option<usize>,
    sources: Sources,
) -> (BoxApp, Option<TreeMetrics>) {
    let stats = server.stats();
    let mut metrics = Metrics::new(app)
        .server(move || stats.reading())
        .no_endpoint();
    for (mount, stats) in sources.proxies {
        metrics = metrics.upstreams(&mount, move || stats.upstreams());
    }
    for (mount, pool) in sources.pools {
        metrics = metrics.pool(&mount, pool.reading);
    }
    for (name, stats) in sources.caches {
        metrics = metrics.cache(&name, move || stats.reading());
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
    let tree = (exposition.is_some() || status.is_some())
        .then(|| TreeMetrics::start(exposition.clone(), status.clone()))
        .flatten();
    let purges = admin.is_some().then(|| Purges::new(sources.purgers));
    let maintenance = admin.and(args.maintenance.clone());
    let observed = BoxApp::new(Observed {
        metrics,
        status,
        exposition,
        tree: tree.clone(),
        admin,
        purges,
        maintenance,
    });
    (observed, tree)
}

/// The stack inside `Metrics`, with the status page and the exposition
/// answered first: on the admin listener alone when there is one, which
/// answers nothing else.
struct Observed {
    metrics: Metrics<BoxApp>,
    status: Option<StatusPage>,
    exposition: Option<Exposition>,
    /// Under a supervisor that sums metrics: the whole tree's, for a scrape.
    tree: Option<TreeMetrics>,
    /// The admin listener's place among the server's.
    admin: Option<usize>,
    /// The caches' purges, answered on the admin listener alone.
    purges: Option<Purges>,
    /// The maintenance file (`--maintenance`), made and removed on the
    /// admin listener alone.
    maintenance: Option<PathBuf>,
}

impl App for Observed {
    // Not an `async fn`: every request passes here, and its future is boxed on
    // every request. Only what passes on to the stack is not boxed again;
    // the status page's, the exposition's and the admin listener's answers
    // are, so that their room is not in every request's future.
    fn call(&self, req: Request) -> impl Future<Output = Response> + Send {
        let listener = req.extensions().get::<Connection>().map(|c| c.listener);
        let on_admin = self.admin.is_some() && listener == self.admin;
        let answered =
            |answer: Response| -> BoxFuture<'_, Response> { Box::pin(std::future::ready(answer)) };
        if on_admin || self.admin.is_none() {
            if let Some(status) = self.status.as_ref().filter(|s| s.serves(&req)) {
                return Either::Left(match &self.tree {
                    Some(tree) => Box::pin(tree.status(req)) as BoxFuture<'_, Response>,
                    None => Box::pin(status.call(req)),
                });
            }
            if let Some(exposition) = self.exposition.as_ref().filter(|e| e.serves(&req)) {
                return Either::Left(match &self.tree {
                    Some(tree) => Box::pin(tree.metrics()) as BoxFuture<'_, Response>,
                    None => Box::pin(exposition.call(req)),
                });
            }
        }
        if on_admin {
            if let Some(purges) = self.purges.as_ref().filter(|_| Purges::serves(&req)) {
                return Either::Left(answered(purges.answer(&req)));
            }
            if let Some(flag) = self
                .maintenance
                .as_ref()
                .filter(|_| req.uri().path() == SWITCH)
            {
                return Either::Left(answered(switch(flag, &req)));
            }
            return Either::Left(answered(StatusCode::NOT_FOUND.into_response()));
        }
        Either::Right(self.metrics.call(req))
    }

    /// A uwsgi packet comes from none but the server's own listeners (the
    /// admin listener speaks HTTP): it goes to the stack unless it asks for
    /// the status page or the exposition there, which answer requests.
    fn call_packet(&self, packet: Box<Packet>) -> Result<BoxFuture<'_, Response>, Box<Packet>> {
        let path = packet.target().path();
        let asks_here = self.admin.is_none()
            && (self.status.as_ref().is_some_and(|s| s.serves_path(path))
                || self
                    .exposition
                    .as_ref()
                    .is_some_and(|e| e.serves_path(path)));
        if asks_here {
            return Err(packet);
        }
        self.metrics.call_packet(packet)
    }

    fn takes_packets(&self) -> bool {
        self.metrics.takes_packets()
    }
}

/// Where the admin listener answers the maintenance switch.
const SWITCH: &str = "/maintenance";

/// The maintenance switch: `PUT` makes the file, `DELETE` removes it, `GET`
/// says which it is; `{"maintenance": true|false}`. Every process looks at
/// the file, so every one follows within a second.
fn switch(flag: &Path, req: &Request) -> Response {
    let changed = match *req.method() {
        Method::GET | Method::HEAD => Ok(()),
        Method::PUT => std::fs::write(flag, b""),
        Method::DELETE => match std::fs::remove_file(flag) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            done => done,
        },
        _ => {
            let mut res = StatusCode::METHOD_NOT_ALLOWED.into_response();
            let allow = HeaderValue::from_static("GET, HEAD, PUT, DELETE");
            res.headers_mut().insert(header::ALLOW, allow);
            return res;
        }
    };
    if let Err(e) = changed {
        tracing::error!("maintenance file {}: {e}", flag.display());
        let why = format!("maintenance file {}: {e}\n", flag.display());
        return (StatusCode::INTERNAL_SERVER_ERROR, why).into_response();
    }
    let on = flag.exists();
    stackway::response::Json(json!({ "maintenance": on })).into_response()
}
