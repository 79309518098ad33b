//! The `http` and `websocket` scopes (ASGI 3, spec version 2.4) from a
//! stackway request.
//!
//! `root_path` is the mount (with a trusted proxy's prefix); `path` is the
//! whole path percent-decoded (as UTF-8, bad bytes replaced, as uvicorn
//! does) and starts with `root_path`, as the spec and Starlette ≥ 0.35 want;
//! `raw_path` is the path as the client sent it (a front's prefix before it,
//! as uvicorn puts its `--root-path`). `extensions` names those
//! the bridge serves: trailers and `pathsend` for `http`, denial responses
//! for `websocket`.

use percent_encoding::percent_decode_str;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use stackway::environ::ip_text;
use stackway::{Request, RequestExt};

/// What the scope needs from a request, taken on the server's side.
pub(crate) struct Scope {
    /// A `websocket` scope, for a handshake; else `http`.
    websocket: bool,
    http_version: &'static str,
    method: String,
    scheme: &'static str,
    path: String,
    raw_path: Vec<u8>,
    query_string: Vec<u8>,
    root_path: String,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    client: Option<(String, u16)>,
    /// The address the connection came in on, as the spec and uvicorn have
    /// it; none over a unix socket.
    server: Option<(String, u16)>,
}

/// The path as the client sent it: a front's REQUEST_URI where it gave one
/// (over uwsgi), else the path with a front's prefix before it, as uvicorn
/// puts its `--root-path` before the raw path.
fn raw_path(req: &Request) -> Vec<u8> {
    let path = req.uri().path().as_bytes();
    let Some(front) = req.extensions().get::<stackway::Forwarded>() else {
        return path.to_vec();
    };
    match (&front.request_uri, &front.prefix) {
        (Some(uri), _) => uri.split('?').next().unwrap_or_default().into(),
        (None, Some(prefix)) => [prefix.as_bytes(), path].concat(),
        (None, None) => path.to_vec(),
    }
}

fn decoded(path: &str) -> String {
    percent_decode_str(path).decode_utf8_lossy().into_owned()
}

impl Scope {
    pub(crate) fn new(req: &Request, websocket: bool) -> Self {
        let env = req.environ();
        let mount = env.mount_path();
        Self {
            websocket,
            http_version: match req.version() {
                http::Version::HTTP_10 => "1.0",
                http::Version::HTTP_2 => "2",
                _ => "1.1",
            },
            method: req.method().as_str().to_owned(),
            scheme: if env.url_scheme() == &http::uri::Scheme::HTTPS {
                "https"
            } else {
                "http"
            },
            path: decoded(&format!("{mount}{}", env.path_info())),
            raw_path: raw_path(req),
            query_string: env.query_string().as_bytes().to_vec(),
            root_path: decoded(&mount),
            headers: (req.headers().iter())
                .map(|(name, value)| (name.as_str().as_bytes().to_vec(), value.as_bytes().to_vec()))
                .collect(),
            client: env
                .remote_addr()
                .map(|addr| (ip_text(addr.ip()), addr.port())),
            server: (env.local_addr()).map(|addr| (ip_text(addr.ip()), addr.port())),
        }
    }

    pub(crate) fn into_dict(self, py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
        let scope = PyDict::new(py);
        let asgi = PyDict::new(py);
        asgi.set_item("version", "3.0")?;
        asgi.set_item("spec_version", "2.4")?;
        scope.set_item("asgi", asgi)?;
        scope.set_item("http_version", self.http_version)?;
        match self.websocket {
            true => {
                scope.set_item("type", "websocket")?;
                scope.set_item("scheme", if self.scheme == "https" { "wss" } else { "ws" })?;
                let offered = (self.headers.iter())
                    .filter(|(name, _)| name == b"sec-websocket-protocol")
                    .flat_map(|(_, value)| {
                        String::from_utf8_lossy(value)
                            .split(',')
                            .map(|p| p.trim().to_owned())
                            .collect::<Vec<_>>()
                    })
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>();
                scope.set_item("subprotocols", offered)?;
            }
            false => {
                scope.set_item("type", "http")?;
                scope.set_item("method", self.method)?;
                scope.set_item("scheme", self.scheme)?;
            }
        }
        scope.set_item("path", self.path)?;
        scope.set_item("raw_path", PyBytes::new(py, &self.raw_path))?;
        scope.set_item("query_string", PyBytes::new(py, &self.query_string))?;
        scope.set_item("root_path", self.root_path)?;
        let headers = PyList::empty(py);
        for (name, value) in &self.headers {
            headers.append((PyBytes::new(py, name), PyBytes::new(py, value)))?;
        }
        scope.set_item("headers", headers)?;
        let extensions = PyDict::new(py);
        let served: &[&str] = match self.websocket {
            true => &["websocket.http.response"],
            false => &["http.response.trailers", "http.response.pathsend"],
        };
        for extension in served {
            extensions.set_item(extension, PyDict::new(py))?;
        }
        scope.set_item("extensions", extensions)?;
        scope.set_item("client", self.client)?;
        scope.set_item("server", self.server)?;
        Ok(scope)
    }
}
