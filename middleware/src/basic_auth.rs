//! HTTP Basic authentication against an htpasswd file, as nginx's
//! `auth_basic` and `auth_basic_user_file`: a request without a user and
//! password the file accepts gets 401 with `WWW-Authenticate: Basic
//! realm="…"`, and never reaches the app; one that passes reaches it with
//! its user in the environ's `REMOTE_USER` (and `AUTH_TYPE` `Basic`), as
//! nginx's `$remote_user` reaches a uwsgi app.
//!
//! The file is Apache's (`htpasswd -B`, `-m`, `-2`, `-5`, `-s`): each line
//! `user:hash`, the hash bcrypt (`$2y$`, `$2b$`, `$2a$`), Apache's MD5
//! (`$apr1$`) or MD5-crypt (`$1$`), SHA-256- or SHA-512-crypt (`$5$`,
//! `$6$`), or SHA-1 (`{SHA}`). A line in another scheme is refused when the
//! file is read, with its line number: DES crypt (`htpasswd -d`) keeps 8
//! characters of a password and plain text (`-p`) none of it secret. Digests
//! are compared in constant time; bcrypt and SHA-crypt, slow on purpose, run
//! on the blocking pool rather than a server worker; an unknown user costs
//! a bcrypt check too, so that the time does not tell which users exist.
//! [`Htpasswd::reload`] reads the file again (`stackway serve` does on
//! SIGHUP), keeping the users it had when the new file is bad.
//!
//! # Example
//!
//! ```
//! use stackway::testing::Client;
//! use stackway_middleware::BasicAuth;
//! use stackway_middleware::basic_auth::Htpasswd;
//!
//! let file = tempfile::NamedTempFile::new().unwrap();
//! std::fs::write(&file, "bob:$apr1$RsCv331c$.VV9elrCAIrqUC2S/WMGN1\n").unwrap();
//! let users = Htpasswd::load(file.path())?;
//! let app = BasicAuth::new(|_req: stackway::Request| async { "staff only" }, users, "Staff");
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::new(app);
//! client.get("/").await.assert_status(401).assert_header("www-authenticate", "Basic realm=\"Staff\", charset=\"UTF-8\"");
//! // bob:secret
//! client.get("/").header("authorization", "Basic Ym9iOnNlY3JldA==").await.assert_text("staff only");
//! # });
//! # Ok::<(), stackway_middleware::basic_auth::HtpasswdError>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use md5::{Digest as _, Md5};
use sha1::Sha1;
use stackway::{App, Forwarded, IntoResponse, Request, Response};
use subtle::ConstantTimeEq;

/// Lets through requests whose user and password an htpasswd file accepts;
/// see the [module docs](self).
#[derive(Debug, Clone)]
pub struct BasicAuth<A> {
    inner: A,
    users: Htpasswd,
    challenge: HeaderValue,
}

/// The users of an htpasswd file, shared by clones and reloaded in place.
#[derive(Debug, Clone)]
pub struct Htpasswd {
    path: PathBuf,
    users: Arc<RwLock<Arc<HashMap<String, Hash>>>>,
}

/// Why an htpasswd file could not be read.
#[derive(Debug)]
pub struct HtpasswdError(String);

impl fmt::Display for HtpasswdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HtpasswdError {}

/// A stored password, in one of the schemes accepted.
#[derive(Debug, Clone)]
enum Hash {
    Bcrypt(String),
    /// MD5-crypt with its magic (`$apr1$` or `$1$`), salt and digest.
    Md5 {
        magic: &'static str,
        salt: String,
        digest: String,
    },
    ShaCrypt(String),
    Sha1([u8; 20]),
}

/// Checked for a user the file does not have: bcrypt at htpasswd's cost.
const NOBODY: &str = "$2y$05$abuc/XL3uttj3yyh78qVm.7brKid/OphOdxPuDJrw1zRivAJWg4Mi";

impl Htpasswd {
    /// Reads the file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, HtpasswdError> {
        let path = path.as_ref().to_owned();
        let users = read(&path)?;
        Ok(Self {
            path,
            users: Arc::new(RwLock::new(Arc::new(users))),
        })
    }

    /// Reads the file again; when it cannot be read, the users stay as they were.
    pub fn reload(&self) -> Result<(), HtpasswdError> {
        let users = read(&self.path)?;
        *self.users.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(users);
        Ok(())
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `user` has `password`. Slow on purpose for bcrypt and
    /// SHA-crypt (blocking: [`BasicAuth`] calls it off the server's workers).
    pub fn check(&self, user: &str, password: &str) -> bool {
        verify(self.hash(user).as_ref(), password)
    }

    /// `user`'s stored password.
    fn hash(&self, user: &str) -> Option<Hash> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users.get(user).cloned()
    }
}

/// Whether `password` is the one `hash` keeps; with no hash (an unknown
/// user), false after as long as a bcrypt check takes.
fn verify(hash: Option<&Hash>, password: &str) -> bool {
    match hash {
        Some(hash) => hash.check(password),
        None => {
            let _ = bcrypt::verify(password, NOBODY);
            false
        }
    }
}

impl Hash {
    fn parse(hash: &str) -> Result<Self, String> {
        if ["$2y$", "$2b$", "$2a$"]
            .iter()
            .any(|id| hash.starts_with(id))
        {
            return Ok(Self::Bcrypt(hash.to_owned()));
        }
        for magic in ["$apr1$", "$1$"] {
            if let Some(rest) = hash.strip_prefix(magic) {
                let (salt, digest) = rest.split_once('$').ok_or("an MD5 hash without its salt")?;
                return Ok(Self::Md5 {
                    magic,
                    salt: salt.to_owned(),
                    digest: digest.to_owned(),
                });
            }
        }
        if hash.starts_with("$5$") || hash.starts_with("$6$") {
            return Ok(Self::ShaCrypt(hash.to_owned()));
        }
        if let Some(digest) = hash.strip_prefix("{SHA}") {
            let digest = STANDARD
                .decode(digest)
                .map_err(|_| "a {SHA} hash not in base64")?;
            return Ok(Self::Sha1(
                digest.try_into().map_err(|_| "a {SHA} hash not 20 bytes")?,
            ));
        }
        Err(match hash.len() {
            13 => {
                "a DES crypt hash (htpasswd -d), which keeps 8 characters of a password: \
                   use htpasswd -B (bcrypt)"
            }
            _ => "not a hash stackway reads (plain text?): use htpasswd -B (bcrypt), -5, -2 or -m",
        }
        .to_owned())
    }

    fn check(&self, password: &str) -> bool {
        match self {
            Self::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            Self::Md5 {
                magic,
                salt,
                digest,
            } => {
                let computed = md5_crypt(password.as_bytes(), salt.as_bytes(), magic);
                computed.as_bytes().ct_eq(digest.as_bytes()).into()
            }
            Self::ShaCrypt(hash) => match &hash[..3] {
                "$5$" => sha_crypt::sha256_check(password, hash).is_ok(),
                _ => sha_crypt::sha512_check(password, hash).is_ok(),
            },
            Self::Sha1(digest) => Sha1::digest(password.as_bytes()).ct_eq(digest).into(),
        }
    }

    /// Whether checking takes long enough to belong on the blocking pool.
    fn is_slow(&self) -> bool {
        matches!(self, Self::Bcrypt(_) | Self::ShaCrypt(_))
    }
}

fn read(path: &Path) -> Result<HashMap<String, Hash>, HtpasswdError> {
    let at = |what: String| HtpasswdError(format!("{}: {what}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, hash) = (line.split_once(':'))
            .ok_or_else(|| at(format!("line {}: expected user:hash", n + 1)))?;
        let hash =
            Hash::parse(hash).map_err(|why| at(format!("line {} ({user}): {why}", n + 1)))?;
        users.insert(user.to_owned(), hash);
    }
    Ok(users)
}

/// MD5-crypt (Poul-Henning Kamp's, and Apache's `$apr1$` variant of it):
/// the digest part of the hash, in crypt's base64.
fn md5_crypt(password: &[u8], salt: &[u8], magic: &str) -> String {
    let salt = &salt[..salt.len().min(8)];
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut context = Md5::new()
        .chain_update(password)
        .chain_update(magic.as_bytes())
        .chain_update(salt);
    for chunk in password.chunks(16) {
        context.update(&alternate[..chunk.len()]);
    }
    let mut bits = password.len();
    while bits > 0 {
        match bits & 1 {
            1 => context.update([0]),
            _ => context.update(&password[..1]),
        }
        bits >>= 1;
    }
    let mut digest = context.finalize();
    for round in 0..1000 {
        let mut context = Md5::new();
        match round & 1 {
            1 => context.update(password),
            _ => context.update(digest),
        }
        if round % 3 != 0 {
            context.update(salt);
        }
        if round % 7 != 0 {
            context.update(password);
        }
        match round & 1 {
            1 => context.update(digest),
            _ => context.update(password),
        }
        digest = context.finalize();
    }
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(22);
    let mut put = |value: u32, chars: usize| {
        let mut value = value;
        for _ in 0..chars {
            out.push(ITOA64[(value & 0x3f) as usize] as char);
            value >>= 6;
        }
    };
    let d = |i: usize| u32::from(digest[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put((d(a) << 16) | (d(b) << 8) | d(c), 4);
    }
    put(d(11), 2);
    out
}

impl<A> BasicAuth<A> {
    /// Lets through to `inner` the users of `users`, asking the others to
    /// log in to `realm`.
    pub fn new(inner: A, users: Htpasswd, realm: &str) -> Self {
        let realm = realm.replace(['"', '\\'], "");
        let challenge = format!("Basic realm=\"{realm}\", charset=\"UTF-8\"");
        Self {
            inner,
            users,
            challenge: HeaderValue::from_str(&challenge)
                .unwrap_or(HeaderValue::from_static("Basic")),
        }
    }

    inner_accessors!();
}

/// The user and password of `Authorization: Basic …`.
fn credentials(req: &Request) -> Option<(String, String)> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

impl<A: App> App for BasicAuth<A> {
    async fn call(&self, mut req: Request) -> Response {
        let allowed = match credentials(&req) {
            None => None,
            Some((user, password)) => {
                let allowed = match self.users.hash(&user) {
                    Some(hash) if !hash.is_slow() => hash.check(&password),
                    hash => tokio::task::spawn_blocking(move || verify(hash.as_ref(), &password))
                        .await
                        .unwrap_or(false),
                };
                allowed.then_some(user)
            }
        };
        if let Some(user) = allowed {
            // The app is told who it is, as nginx's `auth_basic` tells a
            // uwsgi app (`$remote_user`) and CGI says it (RFC 3875 §4.1.11).
            let front = req.extensions_mut().get_or_insert_default::<Forwarded>();
            front
                .vars
                .retain(|(name, _)| name != "REMOTE_USER" && name != "AUTH_TYPE");
            front.vars.push(("REMOTE_USER".into(), user.into()));
            front.vars.push(("AUTH_TYPE".into(), "Basic".into()));
            return self.inner.call(req).await;
        }
        let mut res = StatusCode::UNAUTHORIZED.into_response();
        res.headers_mut()
            .insert(WWW_AUTHENTICATE, self.challenge.clone());
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_crypt_gives_what_htpasswd_and_crypt_give() {
        assert_eq!(
            md5_crypt(b"secret", b"RsCv331c", "$apr1$"),
            ".VV9elrCAIrqUC2S/WMGN1"
        );
        assert_eq!(
            md5_crypt(b"password", b"lZL6V/ci", "$apr1$"),
            "eIMz/iKDkbtys/uU7LEK00"
        );
        // openssl passwd -1 -salt saltsalt password
        assert_eq!(
            md5_crypt(b"password", b"saltsalt", "$1$"),
            "qjXMvbEw8oaL.CzflDtaK/"
        );
    }

    #[test]
    fn a_file_in_a_scheme_refused_names_its_line() {
        for (line, says) in [
            ("frank:ZYzkUPb0dAg3s", "line 2 (frank): a DES crypt hash"),
            ("gina:secret", "line 2 (gina): not a hash stackway reads"),
            ("nocolon", "line 2: expected user:hash"),
        ] {
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(&file, format!("# staff\n{line}\n")).unwrap();
            let error = Htpasswd::load(file.path()).unwrap_err().to_string();
            assert!(error.contains(says), "{error}");
        }
    }
}
