//! The signals `stackway serve` answers: SIGINT and SIGTERM stop it, SIGHUP
//! reloads TLS certificates and htpasswd files, SIGUSR2 restarts it with its
//! sockets handed over. (A supervisor answers SIGHUP by replacing its
//! processes; see `supervisor.rs`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use stackway::server::Tls;
use stackway_middleware::basic_auth::Htpasswd;

use crate::{listen, restart};

/// SIGINT, SIGTERM, SIGHUP and SIGUSR2, caught from the start.
pub(crate) struct Signals(tokio::sync::mpsc::UnboundedReceiver<i32>);

impl Signals {
    pub(crate) fn new() -> std::io::Result<Self> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR2])?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("stackway-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if tx.send(signal).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self(rx))
    }

    /// Completes when the server should stop: on SIGINT or SIGTERM, or once
    /// SIGUSR2 has started a new process that took the sockets over. SIGHUP
    /// reloads the TLS certificates and the htpasswd files.
    pub(crate) async fn until_stop(
        mut self,
        tls: Vec<Tls>,
        htpasswds: Vec<Htpasswd>,
        handover: std::io::Result<restart::Handover>,
        handed_over: Arc<AtomicBool>,
    ) {
        use signal_hook::consts::{SIGHUP, SIGUSR2};
        let handover = handover.map(Arc::new);
        while let Some(signal) = self.0.recv().await {
            match signal {
                SIGHUP => {
                    for tls in &tls {
                        match tls.reload() {
                            Ok(()) => tracing::info!("reloaded the TLS certificate: {tls:?}"),
                            Err(e) => tracing::error!(
                                "kept the old TLS certificate: {}",
                                listen::cause(&e)
                            ),
                        }
                    }
                    for users in &htpasswds {
                        match users.reload() {
                            Ok(()) => tracing::info!(
                                "reloaded the htpasswd file {}",
                                users.path().display()
                            ),
                            Err(e) => tracing::error!("kept the old users: {e}"),
                        }
                    }
                }
                SIGUSR2 if crate::tree::is_worker() => {
                    tracing::warn!("SIGUSR2 restarts the supervisor's processes: send it there");
                }
                SIGUSR2 => {
                    let handover = match &handover {
                        Ok(handover) => handover.clone(),
                        Err(e) => {
                            tracing::error!(
                                "cannot restart: the sockets cannot be handed over: {e}"
                            );
                            continue;
                        }
                    };
                    let args: Vec<_> = std::env::args_os().skip(1).collect();
                    tracing::info!("restarting: starting a new process with the listening sockets");
                    match tokio::task::spawn_blocking(move || handover.restart(&args)).await {
                        Ok(Ok(pid)) => {
                            tracing::info!(pid, "the new process is ready; draining and stopping");
                            handed_over.store(true, Ordering::Relaxed);
                            return;
                        }
                        Ok(Err(e)) => tracing::error!("restart failed, still serving: {e}"),
                        Err(e) => tracing::error!("restart failed, still serving: {e}"),
                    }
                }
                _ => break,
            }
        }
        restart::notify_stopping();
    }
}
