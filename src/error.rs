//! The library's own errors: one opaque [`Error`] with predicates.

use std::fmt;

/// A boxed error from user code: a failing body stream, a listener, a reader.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `Result` with stackway's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from stackway: reading a body, or running the server.
///
/// Ask what it is with the `is_*` predicates, and for its cause with
/// [`source`](std::error::Error::source). The `Display` text is for people and
/// is not stable.
pub struct Error {
    kind: Kind,
    source: Option<BoxError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A body stream failed (a dropped connection, a failing reader).
    Body,
    /// A body was larger than the limit its reader set.
    TooLarge,
    /// A body yielded more or fewer bytes than it declared.
    Length,
    /// The client sent no byte of a request body for the server's body timeout.
    Timeout,
    /// The server could not listen on its address.
    Bind,
    /// A TLS certificate or key could not be loaded.
    Tls,
    /// The server failed for another reason (a thread, a runtime, a socket).
    Io,
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Self {
        Self { kind, source: None }
    }

    pub(crate) fn with(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// A body stream failed: the peer went away, or the stream or reader behind
    /// the body returned an error.
    pub fn is_body(&self) -> bool {
        self.kind == Kind::Body
    }

    /// A body was larger than the limit given to [`Body::collect`](crate::Body::collect).
    pub fn is_too_large(&self) -> bool {
        self.kind == Kind::TooLarge
    }

    /// A body yielded more or fewer bytes than it declared with
    /// [`Body::exact_size`](crate::Body::exact_size).
    pub fn is_length_mismatch(&self) -> bool {
        self.kind == Kind::Length
    }

    /// The client sent no byte of the request body for the server's
    /// [`body_timeout`](crate::Server::body_timeout); the app may answer 408.
    pub fn is_timeout(&self) -> bool {
        self.kind == Kind::Timeout
    }

    /// The server could not listen on its address: in use, not local, or not
    /// permitted. The source is the `io::Error`.
    pub fn is_bind(&self) -> bool {
        self.kind == Kind::Bind
    }

    /// A TLS certificate chain or private key could not be read, parsed, or
    /// did not match. The source says which and why.
    pub fn is_tls(&self) -> bool {
        self.kind == Kind::Tls
    }

    /// The server failed for another reason: a worker thread, its runtime, or the
    /// listening socket.
    pub fn is_io(&self) -> bool {
        self.kind == Kind::Io
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("stackway::Error");
        d.field("kind", &self.kind);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Body => "error reading a body",
            Kind::TooLarge => "body is larger than the limit",
            Kind::Length => "body length differs from the declared length",
            Kind::Timeout => "timed out waiting for the request body",
            Kind::Bind => "cannot listen on the address",
            Kind::Tls => "cannot load the TLS certificate and key",
            Kind::Io => "server I/O error",
        })?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}
