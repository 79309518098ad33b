//! Pools from DNS: an upstream named by a host name is one member of the
//! pool per address the name has (A and AAAA), each with its own health and
//! connections, asked again on an interval (nginx's `resolve`). Members that
//! appear join the balance; members that disappear leave it at once and are
//! drained: requests already sent to them finish. An `http+srv://` name's
//! SRV records give the members instead: each target's addresses at the
//! record's port, with the record's priority (nginx's `service=`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
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

/// A member of a pool from DNS: an SRV record's priority and weight (for an
/// address of a name, its spec's: 1 if a backup, else 0, and its weight), and
/// the address (port 0: the spec's).
pub(crate) type Found = (u16, u16, SocketAddr);

/// Where the SRV records of `name` say its service is: each target's
/// addresses at the record's port, lowest priority first. A target that does
/// not resolve is left out, with a log line.
pub(crate) async fn srv(resolver: &TokioResolver, name: &str) -> Result<BTreeSet<Found>, String> {
    let records = (resolver.srv_lookup(name).await).map_err(|e| e.to_string())?;
    let mut found = BTreeSet::new();
    for record in records.answers() {
        let RData::SRV(srv) = &record.data else {
            continue;
        };
        // A target of "." says the service is not offered (RFC 2782).
        if srv.target.is_root() {
            continue;
        }
        match resolver.lookup_ip(srv.target.clone()).await {
            Ok(ips) => found.extend(
                ips.iter()
                    .map(|ip| (srv.priority, srv.weight, SocketAddr::new(ip, srv.port))),
            ),
            Err(e) => tracing::warn!("cannot resolve {}, a target of {name}: {e}", srv.target),
        }
    }
    if found.is_empty() {
        return Err(format!("{name} has no SRV record with an address"));
    }
    Ok(found)
}

/// Where `spec`'s host is now: its addresses, or for an `http+srv://` spec
/// its SRV records' targets.
async fn addresses(
    resolver: &TokioResolver,
    spec: &Spec,
    host: &str,
) -> Result<BTreeSet<Found>, String> {
    if spec.srv {
        return srv(resolver, host).await;
    }
    let found = (resolver.lookup_ip(host).await).map_err(|e| e.to_string())?;
    let (priority, weight) = (spec.member.backup.into(), spec.member.weight);
    let weight = u16::try_from(weight).expect("a weight is at most 65535");
    Ok(found
        .iter()
        .map(|ip| (priority, weight, SocketAddr::new(ip, 0)))
        .collect())
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
            let found = match addresses(&resolver, &spec, &host).await {
                Ok(found) => found,
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
            let mine = |&(priority, weight, addr): &Found| {
                now.iter()
                    .find(|u| {
                        (u.spec == spec && u.pinned == Some(addr))
                            && (u.priority, u.weight) == (priority, weight.into())
                    })
                    .cloned()
            };
            let next: Vec<Arc<Upstream>> = found
                .iter()
                .map(|found| {
                    mine(found).unwrap_or_else(|| {
                        let (priority, weight, addr) = *found;
                        let mut member =
                            Upstream::new(spec.clone(), &settings, Resolve::Pinned(addr));
                        (member.priority, member.weight) = (priority, weight.into());
                        let member = Arc::new(member);
                        if let Some(check) = &settings.health_check {
                            health::spawn(&member, check.clone());
                        }
                        member
                    })
                })
                .collect();
            let names: Vec<&str> = next.iter().map(|u| &*u.name).collect();
            tracing::info!(upstream = %spec, "{host} is now {names:?}");
            members.replace(&spec, next);
            had = found;
        }
    });
}
