//! The WSGI environ (PEP 3333) from a stackway request.
//!
//! Native strings are `str` holding bytes as latin-1, as every WSGI server
//! gives them: SCRIPT_NAME and PATH_INFO are percent-decoded once and read as
//! latin-1, so `/caf%C3%A9` arrives as `'/cafÃ©'`, which an app turns back
//! into `'/café'` with `.encode('latin-1').decode('utf-8')` (Werkzeug and
//! Django do). The raw target stays in `REQUEST_URI` and `RAW_URI`.

use percent_encoding::percent_decode_str;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use stackway::{Request, RequestExt};

/// Bytes as a latin-1 `str`: each byte one code point.
pub(crate) fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    let text: String = bytes.iter().map(|&b| char::from(b)).collect();
    PyString::new(py, &text)
}

/// What the environ needs from a request, taken on the server's side so that
/// the Python thread does not need the request itself.
pub(crate) struct Cgi {
    vars: Vec<(String, Vec<u8>)>,
    scheme: &'static str,
}

impl Cgi {
    pub(crate) fn new(req: &Request) -> Self {
        let env = req.environ();
        let mut vars: Vec<(String, Vec<u8>)> = Vec::with_capacity(24);
        let mut set = |name: &str, value: Vec<u8>| vars.push((name.to_owned(), value));
        set("REQUEST_METHOD", req.method().as_str().into());
        set(
            "SCRIPT_NAME",
            percent_decode_str(&env.mount_path()).collect(),
        );
        set("PATH_INFO", percent_decode_str(env.path_info()).collect());
        set("QUERY_STRING", env.query_string().into());
        let target = match req.uri().query() {
            Some(query) => format!("{}?{query}", req.uri().path()),
            None => req.uri().path().to_owned(),
        };
        set("REQUEST_URI", target.clone().into());
        set("RAW_URI", target.into());
        set("SERVER_NAME", env.server_name().into());
        set("SERVER_PORT", env.server_port().to_string().into());
        set("SERVER_PROTOCOL", env.server_protocol().into());
        set("SERVER_SOFTWARE", b"stackway".to_vec());
        if let Some(remote) = env.remote_addr() {
            set("REMOTE_ADDR", remote.ip().to_string().into());
            set("REMOTE_PORT", remote.port().to_string().into());
        }
        for (name, value) in env.ssl_client() {
            set(name, value.into());
        }
        vars.extend(env.cgi_headers());
        Self {
            vars,
            scheme: if env.url_scheme() == &http::uri::Scheme::HTTPS {
                "https"
            } else {
                "http"
            },
        }
    }

    /// The CGI variables and the `wsgi.*` keys, as a dict; `input`, `errors`
    /// and `file_wrapper` are the objects for those keys.
    pub(crate) fn into_dict<'py>(
        self,
        py: Python<'py>,
        input: Bound<'py, PyAny>,
        errors: Bound<'py, PyAny>,
        file_wrapper: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let environ = PyDict::new(py);
        for (name, value) in &self.vars {
            environ.set_item(name, latin1(py, value))?;
        }
        environ.set_item("wsgi.version", (1, 0))?;
        environ.set_item("wsgi.url_scheme", self.scheme)?;
        environ.set_item("wsgi.input", input)?;
        environ.set_item("wsgi.errors", errors)?;
        environ.set_item("wsgi.multithread", true)?;
        environ.set_item("wsgi.multiprocess", false)?;
        environ.set_item("wsgi.run_once", false)?;
        environ.set_item("wsgi.input_terminated", true)?;
        environ.set_item("wsgi.file_wrapper", file_wrapper)?;
        Ok(environ)
    }
}
