//! A request without a body that came as a uwsgi packet of plain CGI
//! variables: each view gives what [`Environ`](super::Environ) gives for the
//! request the server would otherwise make of it, read from the packet.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::ops::Range;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Version};

use super::is_segment_prefix;

/// A uwsgi request without a body, as its variables tell it, for an app that
/// makes its environ from them ([`App::call_packet`](crate::App::call_packet)):
/// a WSGI app, and the middleware that only choose one (the Dispatcher).
///
/// The server makes one only of a packet it would read the same either way:
/// no field or front variable named twice, every field's name spelled as
/// its `HTTP_*` variable gives it back, a host, a target, the server's name
/// and port and the client's address given. Every view here is what
/// [`Environ`](super::Environ)'s namesake gives for the request the server
/// makes of the same packet for an app that takes none.
#[derive(Debug, Clone)]
pub struct Packet {
    /// The variables' block.
    pub(crate) vars: Bytes,
    /// Where the fields (`HTTP_*`, a `CONTENT_*` with a value) and the
    /// front's word for the app beyond the request's own (DOCUMENT_ROOT,
    /// an empty `CONTENT_*`) lie in the block, in order: the first `count`.
    pub(crate) places: [Place; PLACES],
    pub(crate) count: usize,
    /// Which of those are the front's (by place), the others being fields.
    pub(crate) front: u32,
    pub(crate) method: Method,
    /// The request's target, as the request made of the packet has it.
    pub(crate) target: PathAndQuery,
    /// Where the front mounted this server (its SCRIPT_NAME), raw.
    pub(crate) prefix: Option<String>,
    /// How much of the target's path the mounts took (SCRIPT_NAME).
    pub(crate) script_end: usize,
    pub(crate) request_uri: Range<usize>,
    pub(crate) server_name: Range<usize>,
    pub(crate) server_port: u16,
    pub(crate) version: Version,
    pub(crate) remote_addr: SocketAddr,
    pub(crate) scheme: Scheme,
}

/// The most fields and front variables a packet taken as it is has: a
/// browser's fields and nginx's `uwsgi_params` fit.
pub(crate) const PLACES: usize = 32;

/// Where a variable lies in its block: its name's start and end, and its
/// value's end (the value starts after its 2-byte length, at the name's end).
pub(crate) type Place = [u16; 3];

/// A uwsgi packet's variables, in order: each a 16-bit little-endian
/// length and bytes, name then value. Read where they lie, never gathered;
/// the iteration ends at the first that runs past the block, which is left
/// from it on.
#[derive(Clone, Copy)]
pub(crate) struct Vars<'a>(pub(crate) &'a [u8]);

impl<'a> Vars<'a> {
    fn item(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len));
        let item = rest.get(..len)?;
        self.0 = &rest[len..];
        Some(item)
    }
}

impl<'a> Iterator for Vars<'a> {
    /// A variable: its name and its value.
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let mut rest = *self;
        let var = (rest.item()?, rest.item()?);
        *self = rest;
        Some(var)
    }
}

impl Packet {
    /// The variables at the places `front` says are (`true`) or are not the
    /// front's, each a name and a value.
    fn placed(&self, front: bool) -> impl Iterator<Item = (&[u8], &[u8])> {
        let vars = &self.vars[..];
        (self.places[..self.count].iter().enumerate())
            .filter(move |(i, _)| (self.front >> i) & 1 == u32::from(front))
            .map(move |(_, &[start, end, value_end])| {
                let (start, end, value_end) = (start.into(), end.into(), usize::from(value_end));
                (&vars[start..end], &vars[end + 2..value_end])
            })
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The target of the request made of the packet, as
    /// [`Request::uri`](http::Request::uri) has its path and query: PATH_INFO
    /// (REQUEST_URI's bytes where they say the same) and QUERY_STRING, encoded.
    pub fn target(&self) -> &PathAndQuery {
        &self.target
    }

    /// The HTTP version SERVER_PROTOCOL names, as [`Request::version`](http::Request::version) has it.
    pub fn version(&self) -> Version {
        self.version
    }

    /// SCRIPT_NAME as the mounts in this server set it, raw (percent-encoded):
    /// a prefix of the target's path.
    pub fn script_name(&self) -> &str {
        &self.target.path()[..self.script_end]
    }

    /// PATH_INFO, raw: the rest of the target's path.
    pub fn path_info(&self) -> &str {
        &self.target.path()[self.script_end..]
    }

    /// Where the app is mounted, raw: the front's mount of this server
    /// followed by [`script_name`](Self::script_name).
    pub fn mount_path(&self) -> Cow<'_, str> {
        match &self.prefix {
            Some(prefix) => Cow::Owned(format!("{prefix}{}", self.script_name())),
            None => Cow::Borrowed(self.script_name()),
        }
    }

    /// Moves the first `len` bytes of PATH_INFO to SCRIPT_NAME, as
    /// [`RequestExt::push_script_name`](super::RequestExt::push_script_name)
    /// does: whole segments only, else nothing moves and `false` is returned.
    pub fn push_script_name(&mut self, len: usize) -> bool {
        let path = self.target.path();
        let Some(script) = path.get(..self.script_end + len) else {
            return false;
        };
        let whole_segments = len > 0 && !script.ends_with('/') && is_segment_prefix(script, path);
        if whole_segments {
            self.script_end += len;
        }
        whole_segments
    }

    /// QUERY_STRING, raw: empty without one.
    pub fn query_string(&self) -> &str {
        self.target.query().unwrap_or("")
    }

    /// REQUEST_URI: the target as the client sent it.
    pub fn request_target(&self) -> &[u8] {
        &self.vars[self.request_uri.clone()]
    }

    /// SERVER_NAME, as the front passed it.
    pub fn server_name(&self) -> &[u8] {
        &self.vars[self.server_name.clone()]
    }

    /// SERVER_PORT, as the front passed it.
    pub fn server_port(&self) -> u16 {
        self.server_port
    }

    /// SERVER_PROTOCOL, as [`Environ::server_protocol`](super::Environ::server_protocol) names it.
    pub fn server_protocol(&self) -> &'static str {
        super::protocol_name(self.version)
    }

    /// The client's address (REMOTE_ADDR, REMOTE_PORT).
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// `http` or `https` (wsgi.url_scheme).
    pub fn url_scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// What [`Environ::ssl_client`](super::Environ::ssl_client) gives: over
    /// uwsgi no client certificate is seen, so `SSL_CLIENT_VERIFY=NONE` on
    /// HTTPS and nothing otherwise.
    pub fn ssl_client(&self) -> Vec<(&'static str, String)> {
        super::ssl_client_unverified(&self.scheme)
    }

    /// Each header's CGI variable, its name (ASCII: `A-Z`, `0-9` and `_`)
    /// and value, as
    /// [`Environ::for_each_cgi_header`](super::Environ::for_each_cgi_header)
    /// gives them: `HTTP_*`, `CONTENT_TYPE` and `CONTENT_LENGTH`.
    pub fn cgi_headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.placed(false)
    }

    /// The variables the front set for the app beyond the request's own, as
    /// [`Environ::front_vars`](super::Environ::front_vars) gives them.
    pub fn front_vars(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.placed(true)
    }
}
