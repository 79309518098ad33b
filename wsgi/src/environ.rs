//! The WSGI environ (PEP 3333) from a stackway request.
//!
//! Native strings are `str` holding bytes as latin-1, as every WSGI server
//! gives them: SCRIPT_NAME and PATH_INFO are percent-decoded once and read as
//! latin-1, so `/caf%C3%A9` arrives as `'/cafÃ©'`, which an app turns back
//! into `'/café'` with `.encode('latin-1').decode('utf-8')` (Werkzeug and
//! Django do). The raw target stays in `REQUEST_URI` and `RAW_URI`.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple};
use stackway::environ::Packet;
use stackway::environ::ip_text;
use stackway::{Request, RequestExt};

use crate::objects::{Errors, FileWrapper};

/// Bytes as a latin-1 `str`: each byte one code point. ASCII (nearly every
/// value), which reads the same as UTF-8, goes straight to Python's decoder,
/// checked once.
pub(crate) fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    match bytes.is_ascii() {
        true => PyString::from_bytes(py, bytes).expect("ASCII is UTF-8"),
        false => {
            let text: String = bytes.iter().map(|&b| char::from(b)).collect();
            PyString::new(py, &text)
        }
    }
}

/// The request an environ is made from, its body taken: read where the dict
/// is made (on the Python thread), straight into Python strings. The names
/// of the CGI variables every request has are Python strings made once
/// (`intern!`), so a request makes only its values and its fields' names.
pub(crate) struct Cgi {
    head: Head,
    /// `wsgi.multithread` and `wsgi.multiprocess`, the app's to say.
    pub(crate) multithread: bool,
    pub(crate) multiprocess: bool,
}

/// What the environ is made from: a request, or the uwsgi packet the
/// server took none from.
#[expect(
    clippy::large_enum_variant,
    reason = "the request's head is kept where the job is, as before; the packet comes boxed"
)]
enum Head {
    Request(http::Request<()>),
    Packet(Box<Packet>),
}

impl Cgi {
    pub(crate) fn new(req: Request) -> Self {
        let (head, _body) = req.into_parts();
        Self::of(Head::Request(http::Request::from_parts(head, ())))
    }

    pub(crate) fn packet(packet: Box<Packet>) -> Self {
        Self::of(Head::Packet(packet))
    }

    fn of(head: Head) -> Self {
        Self {
            head,
            multithread: true,
            multiprocess: false,
        }
    }

    /// The CGI variables and the `wsgi.*` keys, as a dict; `input` is
    /// `wsgi.input`.
    ///
    /// The dict is a copy of [`template`]'s, which holds every key a request
    /// always has: CPython copies a dict's table at once, so a request only
    /// replaces values and adds its fields, never growing the table.
    pub(crate) fn into_dict<'py>(
        self,
        py: Python<'py>,
        input: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let environ = template(py)?.copy()?;
        let https = match &self.head {
            Head::Request(head) => from_request(py, &environ, head)?,
            Head::Packet(packet) => from_packet(py, &environ, packet)?,
        };
        let scheme = match https {
            true => intern!(py, "https"),
            false => intern!(py, "http"),
        };
        environ.set_item(intern!(py, "wsgi.url_scheme"), scheme)?;
        environ.set_item(intern!(py, "wsgi.input"), input)?;
        // The template's are true and false.
        if !self.multithread {
            environ.set_item(intern!(py, "wsgi.multithread"), false)?;
        }
        if self.multiprocess {
            environ.set_item(intern!(py, "wsgi.multiprocess"), true)?;
        }
        Ok(environ)
    }
}

/// Sets the environ's CGI variables from a request; whether it came over TLS.
fn from_request<'py>(
    py: Python<'py>,
    environ: &Bound<'py, PyDict>,
    head: &http::Request<()>,
) -> PyResult<bool> {
    let env = head.environ();
    let set = |name: &Bound<'py, PyString>, value: &[u8]| environ.set_item(name, latin1(py, value));
    environ.set_item(intern!(py, "REQUEST_METHOD"), method(py, head.method()))?;
    let mount = env.mount_path();
    set(
        intern!(py, "SCRIPT_NAME"),
        &Cow::from(percent_decode_str(&mount)),
    )?;
    set(
        intern!(py, "PATH_INFO"),
        &Cow::from(percent_decode_str(env.path_info())),
    )?;
    set(intern!(py, "QUERY_STRING"), env.query_string().as_bytes())?;
    let target = latin1(py, env.request_target().as_bytes());
    environ.set_item(intern!(py, "REQUEST_URI"), &target)?;
    environ.set_item(intern!(py, "RAW_URI"), target)?;
    set(intern!(py, "SERVER_NAME"), env.server_name().as_bytes())?;
    // Numbers by itoa, as `ip_text` writes the address: not through `fmt`.
    let mut digits = itoa::Buffer::new();
    set(
        intern!(py, "SERVER_PORT"),
        digits.format(env.server_port()).as_bytes(),
    )?;
    environ.set_item(
        intern!(py, "SERVER_PROTOCOL"),
        protocol(py, env.server_protocol()),
    )?;
    match env.remote_addr() {
        Some(remote) => {
            set(intern!(py, "REMOTE_ADDR"), ip_text(remote.ip()).as_bytes())?;
            set(
                intern!(py, "REMOTE_PORT"),
                digits.format(remote.port()).as_bytes(),
            )?;
        }
        None => {
            environ.del_item(intern!(py, "REMOTE_ADDR"))?;
            environ.del_item(intern!(py, "REMOTE_PORT"))?;
        }
    }
    for (name, value) in env.ssl_client() {
        environ.set_item(name, latin1(py, value.as_bytes()))?;
    }
    let mut fields = Ok(());
    env.for_each_cgi_header(|name, value| {
        if fields.is_ok() {
            fields = environ.set_item(field_name(py, name.as_bytes()), latin1(py, value));
        }
    });
    fields?;
    for (name, value) in env.front_vars() {
        front_var(py, environ, name, value)?;
    }
    Ok(env.url_scheme() == &http::uri::Scheme::HTTPS)
}

/// Sets the environ's CGI variables from a uwsgi packet, as
/// [`from_request`] sets them from the request the server would make of
/// it; whether it came over TLS.
fn from_packet<'py>(
    py: Python<'py>,
    environ: &Bound<'py, PyDict>,
    packet: &Packet,
) -> PyResult<bool> {
    let set = |name: &Bound<'py, PyString>, value: &[u8]| environ.set_item(name, latin1(py, value));
    environ.set_item(intern!(py, "REQUEST_METHOD"), method(py, packet.method()))?;
    let mount = packet.mount_path();
    set(
        intern!(py, "SCRIPT_NAME"),
        &Cow::from(percent_decode_str(&mount)),
    )?;
    set(
        intern!(py, "PATH_INFO"),
        &Cow::from(percent_decode_str(packet.path_info())),
    )?;
    set(
        intern!(py, "QUERY_STRING"),
        packet.query_string().as_bytes(),
    )?;
    let target = latin1(py, packet.request_target());
    environ.set_item(intern!(py, "REQUEST_URI"), &target)?;
    environ.set_item(intern!(py, "RAW_URI"), target)?;
    set(intern!(py, "SERVER_NAME"), packet.server_name())?;
    let mut digits = itoa::Buffer::new();
    set(
        intern!(py, "SERVER_PORT"),
        digits.format(packet.server_port()).as_bytes(),
    )?;
    environ.set_item(
        intern!(py, "SERVER_PROTOCOL"),
        protocol(py, packet.server_protocol()),
    )?;
    let remote = packet.remote_addr();
    set(intern!(py, "REMOTE_ADDR"), ip_text(remote.ip()).as_bytes())?;
    set(
        intern!(py, "REMOTE_PORT"),
        digits.format(remote.port()).as_bytes(),
    )?;
    for (name, value) in packet.ssl_client() {
        environ.set_item(name, latin1(py, value.as_bytes()))?;
    }
    for (name, value) in packet.cgi_headers() {
        environ.set_item(field_name(py, name), latin1(py, value))?;
    }
    for (name, value) in packet.front_vars() {
        front_var(py, environ, name, value)?;
    }
    Ok(packet.url_scheme() == &http::uri::Scheme::HTTPS)
}

/// A variable the front set for the app, unless the environ has its name.
fn front_var<'py>(
    py: Python<'py>,
    environ: &Bound<'py, PyDict>,
    name: &[u8],
    value: &[u8],
) -> PyResult<()> {
    // nginx's uwsgi_params send these on every request (the two CONTENT_*
    // here when empty).
    let name = match name {
        b"DOCUMENT_ROOT" => intern!(py, "DOCUMENT_ROOT").clone(),
        b"REQUEST_SCHEME" => intern!(py, "REQUEST_SCHEME").clone(),
        b"CONTENT_TYPE" => intern!(py, "CONTENT_TYPE").clone(),
        b"CONTENT_LENGTH" => intern!(py, "CONTENT_LENGTH").clone(),
        name => latin1(py, name),
    };
    if !environ.contains(&name)? {
        environ.set_item(name, latin1(py, value))?;
    }
    Ok(())
}

/// SERVER_PROTOCOL as a `str`: the common ones made once.
fn protocol<'py>(py: Python<'py>, protocol: &str) -> Bound<'py, PyString> {
    match protocol {
        "HTTP/1.1" => intern!(py, "HTTP/1.1").clone(),
        "HTTP/1.0" => intern!(py, "HTTP/1.0").clone(),
        other => PyString::new(py, other),
    }
}

/// A field's CGI name as a `str`: the names browsers, proxies and nginx's
/// `uwsgi_params` send made once. Made once, a key's hash is known, and an
/// app's `environ["HTTP_HOST"]` finds the same object at once.
fn field_name<'py>(py: Python<'py>, name: &[u8]) -> Bound<'py, PyString> {
    let common = match name {
        b"HTTP_HOST" => intern!(py, "HTTP_HOST"),
        b"HTTP_USER_AGENT" => intern!(py, "HTTP_USER_AGENT"),
        b"HTTP_ACCEPT" => intern!(py, "HTTP_ACCEPT"),
        b"HTTP_ACCEPT_ENCODING" => intern!(py, "HTTP_ACCEPT_ENCODING"),
        b"HTTP_ACCEPT_LANGUAGE" => intern!(py, "HTTP_ACCEPT_LANGUAGE"),
        b"HTTP_CONNECTION" => intern!(py, "HTTP_CONNECTION"),
        b"HTTP_COOKIE" => intern!(py, "HTTP_COOKIE"),
        b"HTTP_REFERER" => intern!(py, "HTTP_REFERER"),
        b"HTTP_ORIGIN" => intern!(py, "HTTP_ORIGIN"),
        b"HTTP_AUTHORIZATION" => intern!(py, "HTTP_AUTHORIZATION"),
        b"HTTP_CACHE_CONTROL" => intern!(py, "HTTP_CACHE_CONTROL"),
        b"HTTP_IF_NONE_MATCH" => intern!(py, "HTTP_IF_NONE_MATCH"),
        b"HTTP_IF_MODIFIED_SINCE" => intern!(py, "HTTP_IF_MODIFIED_SINCE"),
        b"HTTP_UPGRADE_INSECURE_REQUESTS" => intern!(py, "HTTP_UPGRADE_INSECURE_REQUESTS"),
        b"HTTP_SEC_FETCH_DEST" => intern!(py, "HTTP_SEC_FETCH_DEST"),
        b"HTTP_SEC_FETCH_MODE" => intern!(py, "HTTP_SEC_FETCH_MODE"),
        b"HTTP_SEC_FETCH_SITE" => intern!(py, "HTTP_SEC_FETCH_SITE"),
        b"HTTP_X_FORWARDED_FOR" => intern!(py, "HTTP_X_FORWARDED_FOR"),
        b"HTTP_X_FORWARDED_PROTO" => intern!(py, "HTTP_X_FORWARDED_PROTO"),
        b"HTTP_X_REAL_IP" => intern!(py, "HTTP_X_REAL_IP"),
        b"CONTENT_TYPE" => intern!(py, "CONTENT_TYPE"),
        b"CONTENT_LENGTH" => intern!(py, "CONTENT_LENGTH"),
        _ => return latin1(py, name),
    };
    common.clone()
}

/// The request method as a `str`: the common ones made once.
fn method<'py>(py: Python<'py>, method: &http::Method) -> Bound<'py, PyString> {
    let common = match *method {
        http::Method::GET => intern!(py, "GET"),
        http::Method::POST => intern!(py, "POST"),
        http::Method::HEAD => intern!(py, "HEAD"),
        http::Method::PUT => intern!(py, "PUT"),
        http::Method::DELETE => intern!(py, "DELETE"),
        http::Method::PATCH => intern!(py, "PATCH"),
        http::Method::OPTIONS => intern!(py, "OPTIONS"),
        _ => return latin1(py, method.as_str().as_bytes()),
    };
    common.clone()
}

/// The environ's keys that every request has, with the values that never
/// change (`wsgi.errors` is one object: it keeps no state); the others are
/// `None` until a request's copy replaces them.
///
/// Its 21 keys fill a table of 32 slots: one more key grows it to 64, and
/// deleted again leaves it there, so that the table (and so each copy's,
/// which keeps its size and its free slots) has room for twenty fields.
fn template(py: Python<'_>) -> PyResult<&Bound<'_, PyDict>> {
    static TEMPLATE: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
    let template = TEMPLATE.get_or_try_init(py, || -> PyResult<_> {
        let environ = PyDict::new(py);
        let none = py.None();
        for name in [
            "REQUEST_METHOD",
            "SCRIPT_NAME",
            "PATH_INFO",
            "QUERY_STRING",
            "REQUEST_URI",
            "RAW_URI",
            "SERVER_NAME",
            "SERVER_PORT",
            "SERVER_PROTOCOL",
            "REMOTE_ADDR",
            "REMOTE_PORT",
            "wsgi.url_scheme",
            "wsgi.input",
        ] {
            environ.set_item(PyString::intern(py, name), &none)?;
        }
        environ.set_item(intern!(py, "SERVER_SOFTWARE"), intern!(py, "stackway"))?;
        environ.set_item(intern!(py, "wsgi.version"), PyTuple::new(py, [1, 0])?)?;
        environ.set_item(intern!(py, "wsgi.errors"), Bound::new(py, Errors)?)?;
        environ.set_item(intern!(py, "wsgi.multithread"), true)?;
        environ.set_item(intern!(py, "wsgi.multiprocess"), false)?;
        environ.set_item(intern!(py, "wsgi.run_once"), false)?;
        environ.set_item(intern!(py, "wsgi.input_terminated"), true)?;
        environ.set_item(
            intern!(py, "wsgi.file_wrapper"),
            py.get_type::<FileWrapper>(),
        )?;
        environ.set_item(intern!(py, "stackway.room"), &none)?;
        environ.del_item(intern!(py, "stackway.room"))?;
        Ok(environ.unbind())
    })?;
    Ok(template.bind(py))
}
