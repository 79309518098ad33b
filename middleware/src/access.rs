//! Access by client address, as nginx's `allow` and `deny`: rules checked
//! in order, the first that matches the client deciding; a client no rule
//! matches is let through (end with `deny all` to refuse the rest). A
//! refused request gets 403 before the app runs.
//!
//! A rule names an address (`192.0.2.7`, `2001:db8::1`), a network in CIDR
//! notation (`10.0.0.0/8`, `2001:db8::/32`), `unix` (clients on a unix
//! socket, which have no address) or `all`. The client is the one
//! [`Environ::remote_addr`](stackway::Environ::remote_addr) names: the
//! connection's peer, or the client a trusted proxy named (ProxyFix,
//! PROXY protocol). An IPv4 client on an IPv6 socket (`::ffff:192.0.2.7`)
//! is matched as the IPv4 address it is.
//!
//! [`Peers`] is the list of addresses alone, for other policies that trust
//! by peer ([`ProxyFix::trusted`](crate::ProxyFix::trusted)).
//!
//! # Example
//!
//! ```
//! use stackway::testing::Client;
//! use stackway_middleware::Access;
//!
//! let app = Access::new(|_req: stackway::Request| async { "inside" })
//!     .rule("allow 10.0.0.0/8")?
//!     .rule("deny all")?;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::new(app);
//! let inside = client.get("/").remote_addr("10.1.2.3:5000".parse().unwrap()).await;
//! inside.assert_text("inside");
//! let outside = client.get("/").remote_addr("192.0.2.1:5000".parse().unwrap()).await;
//! outside.assert_status(403);
//! # });
//! # Ok::<(), stackway_middleware::access::AccessError>(())
//! ```

use std::fmt;
use std::net::IpAddr;

use http::StatusCode;
use ipnet::IpNet;
use stackway::{App, IntoResponse, Request, RequestExt, Response};

/// Lets clients in or refuses them by address; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Access<A> {
    inner: A,
    rules: Vec<(bool, Peer)>,
}

/// What an [`Access`] rule or a [`Peers`] entry could not be read as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessError(String);

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AccessError {}

/// One client or a set of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Net(IpNet),
    Unix,
    All,
}

impl Peer {
    fn parse(text: &str) -> Result<Self, AccessError> {
        let text = text.trim();
        match text {
            "all" => return Ok(Self::All),
            "unix" | "unix:" => return Ok(Self::Unix),
            _ => {}
        }
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(Self::Net(net.trunc()));
        }
        match text.parse::<IpAddr>() {
            Ok(ip) => Ok(Self::Net(IpNet::from(ip.to_canonical()))),
            Err(_) => Err(AccessError(format!(
                "{text:?}: expected an address, a network (10.0.0.0/8, 2001:db8::/32), unix or all"
            ))),
        }
    }

    /// Whether the client at `addr` (`None`: on a unix socket) is this one.
    fn matches(self, addr: Option<IpAddr>) -> bool {
        match (self, addr) {
            (Self::All, _) => true,
            (Self::Unix, None) => true,
            (Self::Net(net), Some(ip)) => net.contains(&ip.to_canonical()),
            _ => false,
        }
    }
}

impl<A> Access<A> {
    /// Wraps `inner`, letting every client through until rules say otherwise.
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            rules: Vec::new(),
        }
    }

    /// Adds a rule as nginx writes it: `allow 10.0.0.0/8`, `deny all`.
    pub fn rule(self, rule: &str) -> Result<Self, AccessError> {
        match rule.trim().split_once(char::is_whitespace) {
            Some(("allow", peer)) => self.allow(peer),
            Some(("deny", peer)) => self.deny(peer),
            _ => Err(AccessError(format!(
                "{rule:?}: expected allow or deny, then an address, a network, unix or all"
            ))),
        }
    }

    /// Lets `peer` (an address, a network, `unix` or `all`) through, unless an earlier rule refused it.
    pub fn allow(mut self, peer: &str) -> Result<Self, AccessError> {
        self.rules.push((true, Peer::parse(peer)?));
        Ok(self)
    }

    /// Refuses `peer`, unless an earlier rule let it through.
    pub fn deny(mut self, peer: &str) -> Result<Self, AccessError> {
        self.rules.push((false, Peer::parse(peer)?));
        Ok(self)
    }

    /// Whether a client at `addr` (`None`: on a unix socket) is let through.
    pub fn allows(&self, addr: Option<IpAddr>) -> bool {
        (self.rules.iter())
            .find(|(_, peer)| peer.matches(addr))
            .is_none_or(|(allow, _)| *allow)
    }

    inner_accessors!();
}

impl<A: App> App for Access<A> {
    async fn call(&self, req: Request) -> Response {
        let addr = req.remote_addr().map(|addr| addr.ip());
        match self.allows(addr) {
            true => self.inner.call(req).await,
            false => StatusCode::FORBIDDEN.into_response(),
        }
    }
}

/// A list of clients by address: addresses, networks, `unix`, `all`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peers(Vec<Peer>);

impl Peers {
    /// The list of `peers`, each as an [`Access`] rule names one.
    pub fn new<I, S>(peers: I) -> Result<Self, AccessError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let peers = peers.into_iter().map(|peer| Peer::parse(peer.as_ref()));
        Ok(Self(peers.collect::<Result<_, _>>()?))
    }

    /// Whether the client at `addr` (`None`: on a unix socket) is listed.
    pub fn contains(&self, addr: Option<IpAddr>) -> bool {
        self.0.iter().any(|peer| peer.matches(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn the_first_rule_that_matches_decides_and_no_match_lets_through() {
        let access = Access::new(())
            .rule("deny 10.0.0.1")
            .and_then(|a| a.rule("allow 10.0.0.0/8"))
            .and_then(|a| a.rule("allow 2001:db8::/32"))
            .and_then(|a| a.rule("deny all"))
            .unwrap();
        assert!(!access.allows(ip("10.0.0.1")));
        assert!(access.allows(ip("10.200.0.1")));
        assert!(
            access.allows(ip("::ffff:10.9.9.9")),
            "an IPv4 client on an IPv6 socket"
        );
        assert!(access.allows(ip("2001:db8:1::5")));
        assert!(!access.allows(ip("2001:db9::1")));
        assert!(!access.allows(ip("192.0.2.1")));
        assert!(!access.allows(None), "all takes in unix clients");
        assert!(
            Access::new(()).allows(ip("192.0.2.1")),
            "no rules: everyone"
        );
        let unix = Access::new(())
            .rule("allow unix")
            .and_then(|a| a.rule("deny all"))
            .unwrap();
        assert!(unix.allows(None) && !unix.allows(ip("127.0.0.1")));
    }

    #[test]
    fn a_network_with_host_bits_set_is_the_network_and_bad_rules_say_why() {
        let access = Access::new(())
            .rule("allow 192.0.2.77/24")
            .unwrap()
            .rule("deny all")
            .unwrap();
        assert!(access.allows(ip("192.0.2.1")));
        for (rule, says) in [
            ("allow", "expected allow or deny"),
            ("permit 10.0.0.0/8", "expected allow or deny"),
            ("deny 10.0.0.0/33", "\"10.0.0.0/33\": expected an address"),
            ("allow example.com", "\"example.com\": expected an address"),
        ] {
            let error = Access::new(()).rule(rule).unwrap_err().to_string();
            assert!(error.contains(says), "{rule}: {error}");
        }
    }
}
