//! `stackway serve --config FILE`: a TOML file that says what the flags say,
//! and what flags cannot say comfortably: listeners each with their own TLS
//! and PROXY protocol, proxy pools with their options, static exports with
//! all of theirs. A flag given on the command line replaces the file's key of
//! the same name. `stackway.example.toml` shows every key.
//!
//! Errors name the file, the line and column, and the key:
//! `stackway.toml:7:11: mount[1].proxy: expected http://HOST:PORT[/base] …`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;
use stackway_middleware::SharedData;
use stackway_middleware::shared_data::Export;
use toml::Spanned;

use crate::args::{Mount, ProxyOptions, ServeArgs, Static, Target};
use crate::listen::{Address, Bind, ListenSpec};
use crate::policies::{ErrorPageSpec, Policies, RateSpec, access, error_pages, peers, rate_limit};
use crate::values::{
    addresses, at_least_one, bind, header_size, level, log_format, octal, path, processes,
    proxy_fix, required_address, secs, size, upstreams,
};

/// Declares the file's struct and how its flag keys reach the arguments.
///
/// `flags` are the keys that are flags of `stackway serve` by the same name,
/// each said once here with the flag's parser (`deserialize_with`); `plain`
/// flags have a default, `optional` ones are an `Option`. The test
/// `the_flags_the_keys_and_the_example_file_agree` holds this list, the
/// flags and `stackway.example.toml` to each other.
macro_rules! config_file {
    (
        other { $( $(#[$oattr:meta])* $oname:ident: $oty:ty, )* }
        flags { $( $(#[$attr:meta])* $kind:ident $name:ident: $ty:ty, )* }
    ) => {
        /// The file, as written: every key is optional.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            $( $(#[$oattr])* $oname: $oty, )*
            $( $(#[$attr])* $name: Option<$ty>, )*
        }

        impl File {
            /// Moves each flag key given into `args`, unless the flag itself
            /// was given on the command line: a flag given replaces the key,
            /// a key given replaces the flag's default.
            fn apply_flags(&mut self, args: &mut ServeArgs, given: impl Fn(&str) -> bool) {
                $(
                    if let Some(value) = self.$name.take() {
                        if !given(stringify!($name)) {
                            config_file!(@set $kind args.$name, value);
                        }
                    }
                )*
            }
        }
    };
    (@set plain $target:expr, $value:expr) => { $target = $value };
    (@set optional $target:expr, $value:expr) => { $target = Some($value) };
}

config_file! {
    other {
        #[serde(default, deserialize_with = "addresses")]
        bind: Option<Vec<Address>>,
        #[serde(default)]
        listen: Vec<Spanned<Listen>>,
        pythonpath: Option<Vec<PathBuf>>,
        #[serde(default)]
        mount: Vec<Spanned<MountTable>>,
        #[serde(default, rename = "static")]
        statics: Vec<Spanned<StaticTable>>,
    }
    flags {
        #[serde(default, deserialize_with = "octal")]
        optional socket_mode: u32,
        plain reuse_port: bool,
        optional tls_cert: PathBuf,
        optional tls_key: PathBuf,
        optional tls_client_ca: PathBuf,
        plain tls_client_optional: bool,
        plain proxy_protocol: bool,
        optional workers: u16,
        #[serde(default, deserialize_with = "processes")]
        optional processes: u16,
        optional max_requests: u64,
        plain max_requests_jitter: u64,
        optional max_rss: u64,
        #[serde(default, deserialize_with = "secs")]
        optional max_lifetime: Duration,
        #[serde(default, deserialize_with = "path")]
        optional health: String,
        #[serde(default, deserialize_with = "secs")]
        optional drain_delay: Duration,
        #[serde(default, deserialize_with = "secs")]
        plain grace_period: Duration,
        #[serde(default, deserialize_with = "secs")]
        plain header_timeout: Duration,
        #[serde(default, deserialize_with = "secs")]
        plain idle_timeout: Duration,
        #[serde(default, deserialize_with = "secs")]
        plain send_timeout: Duration,
        #[serde(default, deserialize_with = "secs")]
        plain body_timeout: Duration,
        #[serde(default, deserialize_with = "secs")]
        plain handshake_timeout: Duration,
        plain max_body_size: u64,
        #[serde(default, deserialize_with = "header_size")]
        plain max_header_size: usize,
        #[serde(default, deserialize_with = "at_least_one")]
        plain max_connections: usize,
        #[serde(default, deserialize_with = "level")]
        plain log_level: tracing::Level,
        #[serde(default, deserialize_with = "log_format")]
        plain log_format: String,
        plain access_log: bool,
        #[serde(default, deserialize_with = "path")]
        optional metrics: String,
        #[serde(default, deserialize_with = "path")]
        optional status: String,
        #[serde(default, deserialize_with = "bind")]
        optional admin_bind: Bind,
        #[serde(default, deserialize_with = "proxy_fix")]
        optional proxy_fix: [usize; 5],
        #[serde(default, deserialize_with = "peers")]
        plain trusted_proxies: Vec<String>,
        #[serde(default, deserialize_with = "access")]
        plain access: Vec<String>,
        #[serde(default, deserialize_with = "rate_limit")]
        optional rate_limit: RateSpec,
        optional basic_auth: PathBuf,
        optional basic_auth_realm: String,
        optional forward_auth: String,
        plain forward_auth_copy: Vec<String>,
        #[serde(default, deserialize_with = "secs")]
        optional forward_auth_remember: Duration,
        #[serde(default, deserialize_with = "error_pages")]
        plain error_pages: Vec<ErrorPageSpec>,
        optional maintenance: PathBuf,
        plain request_id: bool,
        plain trace_context: bool,
        optional otlp_endpoint: String,
        plain cors: Vec<String>,
        plain secure_headers: bool,
        plain compress: bool,
        #[serde(default, deserialize_with = "size")]
        optional cache: usize,
        optional cache_dir: PathBuf,
        #[serde(default, deserialize_with = "secs")]
        optional timeout: Duration,
        plain wsgi_threads: u16,
        plain wsgi_stream_input: bool,
        #[serde(default, deserialize_with = "secs")]
        optional harakiri: Duration,
        #[serde(default, deserialize_with = "secs")]
        plain proxy_connect_timeout: Duration,
        #[serde(default, deserialize_with = "secs")]
        plain proxy_read_timeout: Duration,
        optional proxy_ca: PathBuf,
        optional proxy_client_cert: PathBuf,
        optional proxy_client_key: PathBuf,
    }
}

/// `[[listen]]`: one listener with its own options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Listen {
    #[serde(deserialize_with = "required_address")]
    bind: Address,
    /// `uwsgi` speaks the uwsgi protocol (as a `uwsgi://` bind does).
    #[serde(default)]
    protocol: Protocol,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    /// Mutual TLS on this listener: its CA, and whether a client may go without.
    tls_client_ca: Option<PathBuf>,
    tls_client_optional: Option<bool>,
    #[serde(default)]
    proxy_protocol: bool,
    #[serde(default)]
    reuse_port: bool,
    #[serde(default, deserialize_with = "octal")]
    socket_mode: Option<u32>,
}

/// `[[mount]]`: an app at a prefix, exactly one of `app`, `wsgi`, `asgi`, `proxy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MountTable {
    prefix: String,
    app: Option<String>,
    wsgi: Option<String>,
    asgi: Option<String>,
    /// One upstream, or a pool.
    #[serde(default, deserialize_with = "upstreams")]
    proxy: Option<Vec<String>>,
    proxy_options: Option<ProxyOptions>,
    /// Threads that run Python, for `wsgi`.
    threads: Option<u16>,
    /// For `wsgi`: the body as it arrives.
    #[serde(default)]
    stream_input: bool,
    /// For `wsgi` and `asgi`: a virtualenv of its own.
    venv: Option<PathBuf>,
    /// With `venv`: the mount's own `pythonpath`, in place of the server's.
    pythonpath: Option<Vec<PathBuf>>,
    /// An HTTP cache of its own, of this size.
    #[serde(default, deserialize_with = "size")]
    cache: Option<usize>,
    /// Its bodies in files under this directory.
    cache_dir: Option<PathBuf>,
    /// Access by address, nginx's rules in order.
    #[serde(default, deserialize_with = "access")]
    access: Option<Vec<String>>,
    /// A rate limit of its own.
    #[serde(default, deserialize_with = "rate_limit")]
    rate_limit: Option<RateSpec>,
    /// Its users, in an htpasswd file, and their realm.
    basic_auth: Option<PathBuf>,
    basic_auth_realm: Option<String>,
    /// Its auth service, and the fields taken from its yes.
    forward_auth: Option<String>,
    #[serde(default)]
    forward_auth_copy: Vec<String>,
    #[serde(default, deserialize_with = "secs")]
    forward_auth_remember: Option<Duration>,
    /// Its error pages, and its maintenance switch.
    #[serde(default, deserialize_with = "error_pages")]
    error_pages: Option<Vec<ErrorPageSpec>>,
    maintenance: Option<PathBuf>,
}

/// `[[static]]`: a folder or file at a prefix, with SharedData's options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticTable {
    prefix: String,
    path: PathBuf,
    cache_control: Option<String>,
    #[serde(default, deserialize_with = "secs")]
    max_age: Option<Duration>,
    #[serde(default)]
    immutable: bool,
    /// A file name, or `false` for none.
    index: Option<Index>,
    listing: Option<bool>,
    hidden_files: Option<bool>,
    precompressed: Option<bool>,
    spa_fallback: Option<String>,
    fallback_content_type: Option<String>,
    /// Served only for an app's `X-Accel-Redirect`.
    #[serde(default)]
    internal: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Index {
    File(String),
    Off(bool),
}

/// Reads `path` into `args`, keeping every flag given on the command line.
pub(crate) fn apply(path: &Path, args: &mut ServeArgs, matches: &ArgMatches) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
    let mut file = parse(&text).map_err(|e| e.at(path, &text))?;
    let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    file.apply_flags(args, given);
    if let Some(dirs) = file.pythonpath {
        if !given("python_path") {
            args.python_path = dirs;
        }
    }
    // What the tables say is checked as a whole; a failure names the table's line.
    let table = |span: std::ops::Range<usize>, message: String| {
        Error {
            key: String::new(),
            span: Some(span),
            message,
        }
        .at(path, &text)
    };
    if !given("bind") {
        let mut listen = Vec::new();
        for bind in file.bind.unwrap_or_default() {
            let flagged = Listen {
                bind,
                protocol: Protocol::Http,
                tls_cert: None,
                tls_key: None,
                tls_client_ca: None,
                tls_client_optional: None,
                proxy_protocol: args.proxy_protocol,
                reuse_port: args.reuse_port,
                socket_mode: None,
            };
            listen.push(
                flagged
                    .spec(args)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            );
        }
        for spanned in file.listen {
            let span = spanned.span();
            listen.push(
                spanned
                    .into_inner()
                    .spec(args)
                    .map_err(|e| table(span, e))?,
            );
        }
        args.listen = listen;
    }
    if !given("mounts") && !file.mount.is_empty() {
        let mut venvs = Vec::new();
        args.mounts = file
            .mount
            .into_iter()
            .map(|m| (m.span(), m.into_inner()))
            .map(|(span, mut m)| {
                let paths = m.pythonpath.take();
                let (mount, venv) = m.mount().map_err(|e| table(span.clone(), e))?;
                match (venv, paths) {
                    (Some(venv), paths) => {
                        venvs.push((mount.prefix.clone(), venv));
                        let paths = paths.into_iter().map(|p| (mount.prefix.clone(), p));
                        args.mount_paths.extend(paths);
                    }
                    (None, Some(_)) => {
                        let why = "pythonpath needs the mount's venv (a mount without one \
                                   shares the server's sys.path)";
                        return Err(table(span, format!("mount {}: {why}", mount.prefix)));
                    }
                    (None, None) => {}
                }
                Ok(mount)
            })
            .collect::<Result<_, String>>()?;
        if !given("venvs") {
            args.venvs = venvs;
        }
    }
    if !given("statics") && !file.statics.is_empty() {
        args.statics = file
            .statics
            .into_iter()
            .map(|s| (s.span(), s.into_inner()))
            .map(|(span, s)| s.export().map_err(|e| table(span, e)))
            .collect::<Result<_, _>>()?;
    }
    crate::stack::check_caches(args).map_err(|e| format!("{}: {e}", path.display()))
}

/// What a `[[listen]]` speaks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    #[default]
    Http,
    Uwsgi,
}

impl Listen {
    /// The listener, with the file's (or the flags') TLS files and mode
    /// where it names none of its own.
    fn spec(self, args: &ServeArgs) -> Result<ListenSpec, String> {
        let uwsgi = self.bind.uwsgi || self.protocol == Protocol::Uwsgi;
        let bind = self.bind.bind;
        let own_tls = self.tls_cert.is_some() || self.tls_key.is_some();
        if uwsgi && own_tls {
            return Err(format!(
                "listener {bind}: a uwsgi listener speaks to its front in the clear, without tls_cert"
            ));
        }
        let cert = self.tls_cert.or_else(|| args.tls_cert.clone());
        let key = self.tls_key.or_else(|| args.tls_key.clone());
        let tls = match (cert, key) {
            (Some(cert), Some(key)) if !matches!(bind, Bind::Unix(_)) && !uwsgi => {
                Some((cert, key))
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(format!("listener {bind}: tls_cert and tls_key go together"));
            }
            _ => None,
        };
        let ca = self.tls_client_ca.or_else(|| args.tls_client_ca.clone());
        let optional = self.tls_client_optional.unwrap_or(args.tls_client_optional);
        let client_ca = ca.filter(|_| tls.is_some()).map(|ca| (ca, !optional));
        Ok(ListenSpec {
            bind,
            tls,
            client_ca,
            proxy_protocol: self.proxy_protocol,
            uwsgi,
            reuse_port: self.reuse_port,
            mode: self.socket_mode.or(args.socket_mode),
        })
    }
}

impl MountTable {
    /// The mount, and its virtualenv.
    fn mount(self) -> Result<(Mount, Option<PathBuf>), String> {
        let at = |what: &str| format!("mount {}: {what}", self.prefix);
        let spec = match (&self.app, &self.wsgi, &self.asgi, &self.proxy) {
            (Some(app), None, None, None) => app.clone(),
            (None, Some(wsgi), None, None) => format!("wsgi:{wsgi}"),
            (None, None, Some(asgi), None) => format!("asgi:{asgi}"),
            (None, None, None, Some(pool)) => pool.join(","),
            _ => return Err(at("give exactly one of app, wsgi, asgi and proxy")),
        };
        if self.proxy.is_none() && self.proxy_options.is_some() {
            return Err(at("proxy_options need a proxy"));
        }
        if self.wsgi.is_none() && (self.threads.is_some() || self.stream_input) {
            return Err(at("threads and stream_input need a wsgi app"));
        }
        if self.wsgi.is_none() && self.asgi.is_none() && self.venv.is_some() {
            return Err(at("venv needs a wsgi or asgi app"));
        }
        if self.cache_dir.is_some() && self.cache.is_none() {
            return Err(at("cache_dir needs cache, the size to keep there"));
        }
        let venv = self
            .venv
            .as_deref()
            .map(crate::args::venv)
            .transpose()
            .map_err(|e| at(&format!("venv: {e}")))?;
        let mut mount =
            crate::args::parse_mount(&format!("{}={spec}", self.prefix)).map_err(|e| at(&e))?;
        match &mut mount.target {
            Target::Proxy(_, options) => **options = self.proxy_options.unwrap_or_default(),
            Target::Wsgi(_, options) => {
                options.threads = self.threads;
                options.stream_input = self.stream_input;
            }
            Target::App(_) | Target::Asgi(_) => {}
        }
        mount.cache = self.cache;
        mount.cache_dir = self.cache_dir;
        mount.policies = Policies {
            access: self.access.unwrap_or_default(),
            rate_limit: self.rate_limit,
            basic_auth: self.basic_auth,
            basic_auth_realm: self.basic_auth_realm,
            forward_auth: self.forward_auth,
            forward_auth_copy: self.forward_auth_copy,
            forward_auth_remember: self.forward_auth_remember,
            error_pages: self.error_pages.unwrap_or_default(),
            maintenance: self.maintenance,
        };
        Ok((mount, venv))
    }
}

impl StaticTable {
    fn export(self) -> Result<Static, String> {
        let mut export = Export::path(&self.path);
        if let Some(value) = &self.cache_control {
            export = export.cache_control(value);
        }
        if let Some(max_age) = self.max_age {
            export = export.max_age(max_age);
        }
        if self.immutable {
            export = export.immutable();
        }
        match &self.index {
            Some(Index::File(name)) => export = export.index_file(Some(name)),
            Some(Index::Off(false)) => export = export.index_file(None),
            Some(Index::Off(true)) | None => {}
        }
        if let Some(on) = self.listing {
            export = export.listing(on);
        }
        if let Some(on) = self.hidden_files {
            export = export.hidden_files(on);
        }
        if let Some(on) = self.precompressed {
            export = export.precompressed(on);
        }
        if let Some(file) = &self.spa_fallback {
            export = export.spa_fallback(file);
        }
        if let Some(content_type) = &self.fallback_content_type {
            export = export.fallback_content_type(content_type);
        }
        if self.internal {
            export = export.internal();
        }
        SharedData::new(())
            .try_export(&self.prefix, export.clone())
            .map_err(|e| format!("static {}: {e}", self.prefix))?;
        Ok(Static {
            prefix: self.prefix,
            export,
        })
    }
}

/// A config file error: where, which key, and what.
#[derive(Debug)]
struct Error {
    key: String,
    span: Option<std::ops::Range<usize>>,
    message: String,
}

impl Error {
    fn at(&self, path: &Path, text: &str) -> String {
        let (line, column) = self.span.as_ref().map_or((1, 1), |span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
            (line, column)
        });
        let key = match self.key.as_str() {
            "" | "." => String::new(),
            key => format!("{key}: "),
        };
        format!("{}:{line}:{column}: {key}{}", path.display(), self.message)
    }
}

fn parse(text: &str) -> Result<File, Error> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| Error {
        key: String::new(),
        span: e.span(),
        message: e.message().to_owned(),
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| Error {
        // A table read with its position shows as a private name in the path.
        key: e
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", ""),
        span: e.inner().span(),
        message: e.inner().message().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        parse(text)
            .map(drop)
            .unwrap_err()
            .at(Path::new("s.toml"), text)
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let typo = error("workers = 2\nwokers = 3\n");
        assert!(
            typo.starts_with("s.toml:2:1: wokers: unknown field `wokers`, expected one of `bind`"),
            "{typo}"
        );
        assert_eq!(
            error("\n\nidle_timeout = -1\n"),
            "s.toml:3:16: idle_timeout: expected a positive number of seconds, not \"-1\""
        );
        assert_eq!(
            error("[[listen]]\nbind = \"unix:\"\n"),
            "s.toml:2:8: listen[0].bind: expected unix:PATH, as in unix:/run/stackway.sock"
        );
        assert_eq!(
            error("bind = [\"uwsgi+unix:\"]\n"),
            "s.toml:1:8: bind: expected uwsgi+unix:PATH, as in uwsgi+unix:/run/app.sock"
        );
        assert_eq!(
            error("bind = [\"uwsgi://unix:/x\"]\n"),
            "s.toml:1:8: bind: expected uwsgi://HOST:PORT, as in uwsgi://127.0.0.1:3031, not \"uwsgi://unix:/x\""
        );
        assert_eq!(
            error("workers = \"two\"\n"),
            "s.toml:1:11: workers: invalid type: string \"two\", expected u16"
        );
        assert!(
            error("workers = \n").starts_with("s.toml:1:"),
            "{}",
            error("workers = \n")
        );
    }

    /// The keys a table takes, as serde lists them when it meets one it does not.
    fn keys_of(table: &str) -> Vec<String> {
        let message = error(&format!("{table}zzz_unknown = 1\n"));
        let listed = message
            .split("expected one of ")
            .nth(1)
            .unwrap_or_else(|| panic!("{message}"));
        listed
            .split(", ")
            .map(|key| key.trim().trim_matches('`').to_owned())
            .collect()
    }

    /// Every key of the config file is shown in `stackway.example.toml`, and
    /// every flag of `stackway serve` is a key (or a table) of the file: a
    /// setting added in one place and not the others fails here.
    #[test]
    fn the_flags_the_keys_and_the_example_file_agree() {
        let example = include_str!("../../stackway.example.toml");
        // `key = ` at the start of a line (commented out or not), inside an
        // inline table or a comment (`or key = `), or as a table's name.
        let shown = |key: &str| {
            let assigned = format!("{key} = ");
            example.lines().any(|line| {
                let line = line.trim_start_matches(['#', ' ']);
                line.starts_with(&assigned)
                    || [" ", "{", "("]
                        .iter()
                        .any(|before| line.contains(&format!("{before}{assigned}")))
                    || line.starts_with(&format!("[[{key}]]"))
                    || line.contains(&format!(".{key}]"))
            })
        };
        let tables = [
            "",
            "[[listen]]\nbind = \"127.0.0.1:1\"\n",
            "[[mount]]\nprefix = \"/\"\n",
            "[[mount]]\nprefix = \"/\"\n[mount.proxy_options]\n",
            "[[static]]\nprefix = \"/\"\npath = \".\"\n",
        ];
        let mut top = Vec::new();
        for table in tables {
            let keys = keys_of(table);
            assert!(keys.len() > 3, "{table}: {keys:?}");
            for key in &keys {
                assert!(
                    shown(key),
                    "stackway.example.toml does not show `{key}` ({table:?})"
                );
            }
            if table.is_empty() {
                top = keys;
            }
        }
        let command = <crate::args::Cli as clap::CommandFactory>::command();
        let serve = command.find_subcommand("serve").expect("serve");
        // Flags that are about the command line itself, or named otherwise in the file.
        let renamed = [
            ("python_path", "pythonpath"),
            ("mounts", "mount"),
            ("statics", "static"),
            ("venvs", "mount"),
        ];
        let command_line_only = ["config", "reload", "check", "help", "version", "listen"];
        for arg in serve.get_arguments() {
            let id = arg.get_id().as_str();
            if command_line_only.contains(&id) {
                continue;
            }
            let key = renamed
                .iter()
                .find(|(flag, _)| *flag == id)
                .map_or(id, |(_, key)| key);
            assert!(
                top.iter().any(|k| k == key),
                "--{id} has no key `{key}` in the config file"
            );
        }
    }
}
