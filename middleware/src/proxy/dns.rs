//! Pools from DNS: an upstream named by a host name is one member of the
//! pool per address the name has (A and AAAA), each with its own health and
//! connections, asked again on an interval (nginx's `resolve`). Members that
//! appear join the balance; members that disappear leave it at once and are
//! drained: requests already sent to them finish.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};

use super::Settings;
use super::health;
use super::upstream::{Resolve, Spec, Upstream};

/// The upstreams a proxy balances over now: each spec's, or for a name that
/// is resolved again and again, one per address it had last.
pub(crate) struct Members(RwLock<Arc<[Arc<Upstream>]>>);

impl Members {
    pub(crate) fn new(upstreams: Vec<Arc<Upstream>>) -> Self {
        Self(RwLock::new(upstreams.into()))
    }

    /// The members as they stand.
    pub(crate) fn now(&self) -> Arc<[Arc<Upstream>]> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes `members` the ones `spec` stands for, the others kept.
    fn replace(&self, spec: &Spec, members: Vec<Arc<Upstream>>) {
        let mut now = self.0.write().unwrap_or_else(|e| e.into_inner());
        let others = now.iter().filter(|u| u.spec != *spec).cloned();
        *now = others.chain(members).collect();
    }
}

/// Whom to ask: the nameservers given, or the system's (`/etc/resolv.conf`).
pub(crate) fn resolver(nameservers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match nameservers {
        [] => Resolver::builder(provider).map_err(|e| e.to_string())?,
        given => {
            let servers = given
                .iter()
                .map(|addr| {
                    let connections =
                        [ConnectionConfig::udp(), ConnectionConfig::tcp()].map(|mut c| {
                            c.port = addr.port();
                            c
                        });
                    NameServerConfig::new(addr.ip(), true, connections.into())
                })
                .collect();
            Resolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        }
    };
    // Asked on the proxy's own interval: an answer is used once.
    builder.options_mut().cache_size = 0;
    builder.build().map_err(|e| e.to_string())
}

/// Resolves `spec`'s host every `every`, on the current runtime, for as long
/// as the proxy's members live.
pub(crate) fn spawn(
    members: Weak<OnceLock<Members>>,
    spec: Spec,
    settings: Settings,
    resolver: Arc<TokioResolver>,
    every: Duration,
) {
    tokio::spawn(async move {
        let Some(host) = spec.host_name() else { return };
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut had = BTreeSet::new();
        loop {
            ticks.tick().await;
            let found: BTreeSet<IpAddr> = match resolver.lookup_ip(host.as_str()).await {
                Ok(found) => found.iter().collect(),
                Err(e) => {
                    tracing::warn!(upstream = %spec, "cannot resolve {host}, its last addresses kept: {e}");
                    continue;
                }
            };
            let Some(members) = members.upgrade() else {
                return;
            };
            let Some(members) = members.get() else { return };
            if found.is_empty() || found == had {
                continue;
            }
            let now = members.now();
            let mine = |ip: &IpAddr| {
                now.iter()
                    .find(|u| u.spec == spec && u.pinned == Some(*ip))
                    .cloned()
            };
            let next: Vec<Arc<Upstream>> = found
                .iter()
                .map(|ip| {
                    mine(ip).unwrap_or_else(|| {
                        let pinned = Resolve::Pinned(*ip);
                        let member = Arc::new(Upstream::new(spec.clone(), &settings, pinned));
                        if let Some(check) = &settings.health_check {
                            health::spawn(&member, check.clone());
                        }
                        member
                    })
                })
                .collect();
            tracing::info!(upstream = %spec, "{host} is now {found:?}");
            members.replace(&spec, next);
            had = found;
        }
    });
}
