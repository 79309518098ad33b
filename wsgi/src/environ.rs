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
            Head::Request(head) => fill(py, &environ, &(head.environ(), head.method()))?,
            Head::Packet(packet) => fill(py, &environ, &**packet)?,
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

/// Called with a variable's name and value, and whether it is the front's
/// (or a header's).
type EachVar<'f> = &'f mut dyn FnMut(&[u8], &[u8], bool) -> PyResult<()>;

/// What an environ's CGI variables are read from: a request's
/// [`Environ`](stackway::Environ), or a uwsgi [`Packet`], whose views are the
/// request's it would make.
trait Source {
    fn method(&self) -> &http::Method;
    fn mount_path(&self) -> Cow<'_, str>;
    fn path_info(&self) -> &str;
    fn query_string(&self) -> &str;
    fn request_target(&self) -> &[u8];
    fn server_name(&self) -> Cow<'_, [u8]>;
    fn server_port(&self) -> u16;
    fn server_protocol(&self) -> &'static str;
    fn remote_addr(&self) -> Option<std::net::SocketAddr>;
    fn ssl_client(&self) -> Vec<(&'static str, String)>;
    fn https(&self) -> bool;
    /// Calls `f` with each header's CGI variable, then (`front`) with each of
    /// the front's variables, until `f` fails.
    fn each_var(&self, f: EachVar<'_>) -> PyResult<()>;
}

impl Source for (stackway::Environ<'_>, &http::Method) {
    fn method(&self) -> &http::Method {
        self.1
    }
    fn mount_path(&self) -> Cow<'_, str> {
        self.0.mount_path()
    }
    fn path_info(&self) -> &str {
        self.0.path_info()
    }
    fn query_string(&self) -> &str {
        self.0.query_string()
    }
    fn request_target(&self) -> &[u8] {
        self.0.request_target().as_bytes()
    }
    fn server_name(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.server_name().into_bytes())
    }
    fn server_port(&self) -> u16 {
        self.0.server_port()
    }
    fn server_protocol(&self) -> &'static str {
        self.0.server_protocol()
    }
    fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        self.0.remote_addr()
    }
    fn ssl_client(&self) -> Vec<(&'static str, String)> {
        self.0.ssl_client()
    }
    fn https(&self) -> bool {
        self.0.url_scheme() == &http::uri::Scheme::HTTPS
    }
    fn each_var(&self, f: EachVar<'_>) -> PyResult<()> {
        let mut fields = Ok(());
        self.0.for_each_cgi_header(|name, value| {
            if fields.is_ok() {
                fields = f(name.as_bytes(), value, false);
            }
        });
        fields?;
        (self.0.front_vars().iter()).try_for_each(|(name, value)| f(name, value, true))
    }
}

impl Source for Packet {
    fn method(&self) -> &http::Method {
        self.method()
    }
    fn mount_path(&self) -> Cow<'_, str> {
        self.mount_path()
    }
    fn path_info(&self) -> &str {
        self.path_info()
    }
    fn query_string(&self) -> &str {
        self.query_string()
    }
    fn request_target(&self) -> &[u8] {
        self.request_target()
    }
    fn server_name(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.server_name())
    }
    fn server_port(&self) -> u16 {
        self.server_port()
    }
    fn server_protocol(&self) -> &'static str {
        self.server_protocol()
    }
    fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        Some(self.remote_addr())
    }
    fn ssl_client(&self) -> Vec<(&'static str, String)> {
        self.ssl_client()
    }
    fn https(&self) -> bool {
        self.url_scheme() == &http::uri::Scheme::HTTPS
    }
    fn each_var(&self, f: EachVar<'_>) -> PyResult<()> {
        (self.cgi_headers()).try_for_each(|(name, value)| f(name, value, false))?;
        (self.front_vars()).try_for_each(|(name, value)| f(name, value, true))
    }
}

/// Sets the environ's CGI variables from `source`; whether the request came
/// over TLS.
fn fill<'py>(
    py: Python<'py>,
    environ: &Bound<'py, PyDict>,
    source: &impl Source,
) -> PyResult<bool> {
    let set = |name: &Bound<'py, PyString>, value: &[u8]| environ.set_item(name, latin1(py, value));
    environ.set_item(intern!(py, "REQUEST_METHOD"), method(py, source.method()))?;
    let mount = source.mount_path();
    set(
        intern!(py, "SCRIPT_NAME"),
        &Cow::from(percent_decode_str(&mount)),
    )?;
    set(
        intern!(py, "PATH_INFO"),
        &Cow::from(percent_decode_str(source.path_info())),
    )?;
    set(
        intern!(py, "QUERY_STRING"),
        source.query_string().as_bytes(),
    )?;
    let target = latin1(py, source.request_target());
    environ.set_item(intern!(py, "REQUEST_URI"), &target)?;
    environ.set_item(intern!(py, "RAW_URI"), target)?;
    set(intern!(py, "SERVER_NAME"), &source.server_name())?;
    // Numbers by itoa, as `ip_text` writes the address: not through `fmt`.
    let mut digits = itoa::Buffer::new();
    set(
        intern!(py, "SERVER_PORT"),
        digits.format(source.server_port()).as_bytes(),
    )?;
    let protocol = match source.server_protocol() {
        "HTTP/1.1" => intern!(py, "HTTP/1.1"),
        "HTTP/1.0" => intern!(py, "HTTP/1.0"),
        other => &PyString::new(py, other),
    };
    environ.set_item(intern!(py, "SERVER_PROTOCOL"), protocol)?;
    match source.remote_addr() {
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
    for (name, value) in source.ssl_client() {
        environ.set_item(name, latin1(py, value.as_bytes()))?;
    }
    source.each_var(&mut |name, value, front| match front {
        false => environ.set_item(field_name(py, name), latin1(py, value)),
        true => front_var(py, environ, name, value),
    })?;
    Ok(source.https())
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
