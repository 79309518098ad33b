//! What the peer servers share: the command line of `stackway serve` (the
//! flags the benchmark passes) and the `hello` app's exact response.

use std::io::Write;

use clap::Parser;
use percent_encoding::percent_decode_str;

/// `--bind HOST:PORT --mount PREFIX=hello ... --static PREFIX=DIR ...`
#[derive(Debug, Parser)]
pub struct Flags {
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub bind: String,
    /// `PREFIX=hello`; the only app the peers have is hello.
    #[arg(long = "mount", value_parser = parse_mount)]
    pub mounts: Vec<String>,
    /// `PREFIX=DIR`.
    #[arg(long = "static", value_parser = parse_pair)]
    pub statics: Vec<(String, String)>,
    /// Compress responses on the fly, as `stackway serve --compress` does.
    #[arg(long)]
    pub compress: bool,
}

fn parse_pair(value: &str) -> Result<(String, String), String> {
    let (prefix, target) = value.split_once('=').ok_or("expected PREFIX=VALUE")?;
    Ok((prefix.trim_end_matches('/').to_owned(), target.to_owned()))
}

fn parse_mount(value: &str) -> Result<String, String> {
    match parse_pair(value)? {
        (prefix, app) if app == "hello" => Ok(prefix),
        (_, app) => Err(format!("unknown app {app:?}: the peers only have hello")),
    }
}

/// The body stackway's `hello` answers for a path below its mount:
/// `<h1>Hello, NAME!</h1>`, NAME decoded, without its leading `/`, escaped.
pub fn hello_body(path_info: &str) -> String {
    let decoded = percent_decode_str(path_info).decode_utf8_lossy();
    let name = decoded.strip_prefix('/').unwrap_or(&decoded);
    let name = if name.is_empty() { "web" } else { name };
    let mut escaped = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#x27;"),
            c => escaped.push(c),
        }
    }
    format!("<h1>Hello, {escaped}!</h1>")
}

/// Prints the line the benchmark waits for, as `stackway serve` does.
pub fn ready(addr: std::net::SocketAddr) {
    println!("listening on http://{addr}");
    let _ = std::io::stdout().flush();
}
