//! `stackway serve --processes N`: the process the user starts binds the
//! listeners and supervises N server processes that share them, each with its
//! own interpreter for Python apps and its own worker threads, as gunicorn's
//! arbiter, uWSGI's master and granian's do. It never loads an app itself.
//!
//! ```text
//! supervisor: stackway serve ARGS --check    (the flags and the apps load, or exit 2)
//!             bind the listeners
//!             for each slot: stackway serve ARGS   fds 3.. = the listeners, then the pair it
//!                                                  reports on (as a restart hands over);
//!                                                  STACKWAY_WORKER=slot, STACKWAY_PARENT=pid
//!     ◀──── READY=1 ───── each process, once it serves (one that exits first stops it all)
//!     ◀──── RECYCLE=why ─ a process that has served --max-requests, and drains
//!     every 100 ms: a process that exited is started again (with backoff; a slot none
//!     serves whose start fails three times in a row stops the server); one that
//!     asked, or is over --max-rss or --max-lifetime, gets a replacement, and once that
//!     is ready it is sent SIGTERM and drains; killed if still there after the grace period
//!     SIGTERM/SIGINT: every process drains; SIGHUP: every process replaced once the new code
//!     loads (else passed on), and passed to the virtualenvs' groups; SIGUSR2: every process replaced
//! ```
//!
//! A process the supervisor starts ends with it, even when it is killed
//! (`PR_SET_PDEATHSIG`), so no server outlives it.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::process::{Command, ExitCode, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use stackway::server::{ListenAddr, Listener};

use crate::args::ServeArgs;
use crate::listen::{self, ListenSpec};
use crate::reload::Watch;
use crate::restart::{self, Handover, Spawned};
use crate::tree::{PARENT, WORKER, is_worker};
use crate::tree_metrics::{self, Ledger, Row};

/// How long a process may take to start (import its apps) before it counts
/// as failed.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the supervisor looks at its processes.
const TICK: Duration = Duration::from_millis(100);

/// How many starts in a row may fail while no process serves a slot before
/// the server stops: what waits in the slot's socket would wait for good.
/// (gunicorn's arbiter stops at the first worker that fails to boot.)
const EMPTY_SLOT_STARTS: u32 = 3;

/// Whether `args` ask for a supervisor: `--processes` (one too, as
/// gunicorn's master runs one worker), or processes that are replaced on a
/// limit. False in a process a supervisor started.
pub(crate) fn wanted(args: &ServeArgs) -> bool {
    let recycled = args.max_requests.is_some()
        || args.max_rss.is_some()
        || args.max_lifetime.is_some()
        || args.harakiri.is_some()
        || args.reload;
    (args.processes.is_some() || recycled) && !args.check && !is_worker()
}

/// How many server processes serve: `--processes`, else one.
pub(crate) fn processes(args: &ServeArgs) -> u16 {
    args.processes.unwrap_or(1)
}

/// The worker threads of each process: `--workers`, or the cores shared
/// out among the processes, at least one each.
pub(crate) fn workers(args: &ServeArgs) -> Option<usize> {
    match (args.workers, is_worker() && processes(args) > 1) {
        (Some(workers), _) => Some(workers.into()),
        (None, true) => {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            Some((cores / usize::from(processes(args))).max(1))
        }
        (None, false) => None,
    }
}

/// After how many requests this process asks to be replaced: `--max-requests`
/// plus a random `0..=--max-requests-jitter`.
pub(crate) fn request_limit(args: &ServeArgs) -> Option<u64> {
    use std::hash::{BuildHasher, RandomState};
    let limit = args.max_requests.filter(|_| is_worker())?;
    let jitter = match args.max_requests_jitter {
        0 => 0,
        most => RandomState::new().hash_one(std::process::id()) % (most + 1),
    };
    Some(limit.saturating_add(jitter))
}

/// Runs the supervisor until SIGTERM or SIGINT; `specs` and `admin` are the
/// listeners it binds and hands to every process.
pub(crate) fn run(args: &ServeArgs, specs: &[ListenSpec], admin: Option<&ListenSpec>) -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    // The flags and the apps are checked before the port is taken, in a
    // process of their own: this one never loads an app.
    match check(&argv) {
        Ok(status) if status.success() => {}
        Ok(status) => return exit_code(status),
        Err(e) => {
            eprintln!("stackway: cannot start a process to check the apps: {e}");
            return ExitCode::from(1);
        }
    }
    let signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR2]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("stackway: cannot watch for signals: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(message) = taken(specs) {
        eprintln!("stackway: {message}");
        return ExitCode::from(1);
    }
    // TCP listeners in SO_REUSEPORT groups: see `sockets`.
    let specs: Vec<ListenSpec> = specs
        .iter()
        .map(|spec| ListenSpec {
            reuse_port: true,
            ..spec.clone()
        })
        .collect();
    let opened = match listen::open(&specs, admin) {
        Ok(opened) => opened,
        Err(message) => {
            eprintln!("stackway: {message}");
            return ExitCode::from(1);
        }
    };
    let one_at_a_time = crate::stack::python_on_workers(args);
    let handovers = match sockets(&opened.listeners, processes(args).into(), one_at_a_time) {
        Ok(handovers) => handovers,
        Err(e) => {
            eprintln!("stackway: cannot share the listening sockets: {e}");
            return ExitCode::from(1);
        }
    };
    // Summed metrics: each process writes its share where this one keeps
    // what the ended ones counted; purges go to all through the same place.
    let observed = args.metrics.is_some() || args.status.is_some() || crate::purge::on_admin(args);
    let ledger = match observed.then(Ledger::create).transpose() {
        Ok(ledger) => ledger,
        Err(e) => {
            eprintln!("stackway: cannot make a directory for the processes' metrics: {e}");
            return ExitCode::from(1);
        }
    };
    let groups = match crate::venvs::Groups::start(args) {
        Ok(groups) => groups,
        Err(message) => {
            eprintln!("stackway: {message}");
            return ExitCode::from(1);
        }
    };
    let mut tree = Tree {
        groups,
        ledger,
        handovers,
        argv,
        limits: Limits::of(args),
        grace: args.grace_period + args.drain_delay.unwrap_or_default() + Duration::from_secs(1),
        slots: (0..processes(args)).map(|_| Slot::default()).collect(),
        draining: Vec::new(),
    };
    let booted = tree.boot();
    if let Err(code) = booted {
        tree.stop();
        return code;
    }
    for listener in &opened.listeners {
        println!("listening on {}", listen::shown(listener));
    }
    restart::notify_ready();
    tracing::info!(
        processes = processes(args),
        "supervising {} server processes",
        processes(args)
    );
    let watch = args.reload.then(|| Watch::new(&args.python_path));
    let code = tree.supervise(signals, watch);
    restart::notify_stopping();
    tree.stop();
    for file in &opened.unix_files {
        let _ = std::fs::remove_file(file);
    }
    code
}

/// The sockets of each slot. Each TCP listener gets a socket of its own per
/// slot, in the listener's SO_REUSEPORT group, so that the kernel spreads new
/// connections over the processes by their addresses: a shared socket gives
/// a burst (a client's pool opening its connections at once) to whichever
/// process wakes first, and one process then serves them all. A slot's
/// socket stays open here while its process is replaced, so what waits in it
/// is served by the next one. A unix socket, or a TCP one that cannot join a
/// group (one systemd passed without SO_REUSEPORT), is shared by all.
///
/// So is a uwsgi listener's when Python runs on the workers
/// (`one_at_a_time`), as uWSGI's processes share theirs: its connections
/// are one request each, and a process busy in Python accepts none (the
/// server's accept loop serves a uwsgi connection before the next), so what
/// waits goes to the first process free rather than behind a long request
/// in the process the kernel picked by its address. With Python threads a
/// process goes on accepting while they work, and both processes wake for
/// each connection: there the groups spread the load better.
fn sockets(listeners: &[Listener], slots: usize, one_at_a_time: bool) -> io::Result<Vec<Handover>> {
    let mut handovers = vec![Handover::new(listeners)?];
    for _ in 1..slots {
        let mut sockets = Vec::with_capacity(listeners.len());
        for listener in listeners {
            let own = match listener.local_addr() {
                ListenAddr::Tcp { addr, .. } if !(listener.is_uwsgi() && one_at_a_time) => {
                    Listener::bind_reuse_port(*addr).ok()
                }
                ListenAddr::Tcp { .. } | ListenAddr::Unix(_) => None,
            };
            let fd = match &own {
                Some(own) => own.as_fd().try_clone_to_owned()?,
                None => listener.as_fd().try_clone_to_owned()?,
            };
            sockets.push(fd);
        }
        handovers.push(Handover::of(sockets));
    }
    Ok(handovers)
}

/// Refuses an address another server listens on. Another server of this
/// user listening with SO_REUSEPORT would let the group of `sockets` join
/// it, and the kernel would hand each server a share of the other's
/// connections; `--reuse-port` asks for exactly that, so it is let through.
fn taken(specs: &[ListenSpec]) -> Result<(), String> {
    for spec in specs.iter().filter(|spec| !spec.reuse_port) {
        if let listen::Bind::Tcp(addr) = &spec.bind {
            if let Err(e) = std::net::TcpListener::bind(addr.as_str()) {
                if e.kind() == io::ErrorKind::AddrInUse {
                    return Err(format!("cannot listen on {}: {e}", spec.bind));
                }
            }
        }
    }
    Ok(())
}

/// `stackway serve ARGS --check`: imports every app, binds nothing.
fn check(argv: &[OsString]) -> io::Result<ExitStatus> {
    Command::new(std::env::current_exe()?)
        .args(argv)
        .arg("--check")
        .env(PARENT, std::process::id().to_string())
        .status()
}

fn exit_code(status: ExitStatus) -> ExitCode {
    let code = status.code().and_then(|c| u8::try_from(c).ok());
    ExitCode::from(code.filter(|c| *c != 0).unwrap_or(1))
}

/// When a process is replaced although it is well.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_rss: Option<u64>,
    max_lifetime: Option<Duration>,
}

impl Limits {
    fn of(args: &ServeArgs) -> Self {
        Self {
            max_rss: args.max_rss.map(|mib| mib << 20),
            max_lifetime: args.max_lifetime,
        }
    }

    /// Why `process` should be replaced, if it should.
    fn exceeded(&self, process: &Process) -> Option<String> {
        if let Some(max) = self.max_rss {
            let rss = rss(process.pid()).unwrap_or(0);
            if rss > max {
                return Some(format!("max-rss: {} MiB", rss >> 20));
            }
        }
        match self.max_lifetime {
            Some(max) if process.ready_at.is_some_and(|at| at.elapsed() > max) => {
                Some("max-lifetime".to_owned())
            }
            _ => None,
        }
    }
}

/// A server process.
#[derive(Debug)]
struct Process {
    spawned: Spawned,
    started: Instant,
    ready_at: Option<Instant>,
    /// Why it asked to be replaced (`RECYCLE=why`).
    asked: Option<String>,
}

impl Process {
    fn pid(&self) -> u32 {
        self.spawned.child.id()
    }

    fn signal(&self, signal: Signal) {
        if let Ok(pid) = i32::try_from(self.pid()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.spawned.child.try_wait().ok().flatten()
    }

    /// Reads what it reported since last asked: when it became ready, and
    /// why it asked to be replaced (which may come in the same breath, from
    /// a process that finds requests waiting).
    fn read_reports(&mut self) {
        for line in self.spawned.reports().unwrap_or_default() {
            if line == "READY=1" {
                self.ready_at.get_or_insert_with(Instant::now);
            } else if let Some(why) = line.strip_prefix("RECYCLE=") {
                self.asked.get_or_insert_with(|| why.to_owned());
            }
        }
    }
}

/// One place for a process: the one serving, and its replacement while it
/// starts.
#[derive(Debug, Default)]
struct Slot {
    current: Option<Process>,
    next: Option<Process>,
    /// Why the current one is to be replaced.
    recycle: Option<String>,
    /// Starts that failed in a row, and when to try again.
    failures: u32,
    retry_at: Option<Instant>,
}

struct Tree {
    /// The mounts with a virtualenv of their own, in processes of their own.
    groups: crate::venvs::Groups,
    /// Where the processes' metrics are summed, with `--metrics`.
    ledger: Option<Ledger>,
    /// The sockets each slot's processes get.
    handovers: Vec<Handover>,
    argv: Vec<OsString>,
    limits: Limits,
    /// How long a process may drain before it is killed.
    grace: Duration,
    slots: Vec<Slot>,
    /// Replaced processes, draining, with when they are killed.
    draining: Vec<(Process, Instant)>,
}

impl Tree {
    fn spawn(&self, slot: usize) -> io::Result<Process> {
        let mut env = vec![
            (WORKER, slot.to_string()),
            (PARENT, std::process::id().to_string()),
        ];
        if let Some(ledger) = &self.ledger {
            env.push((tree_metrics::DIR, ledger.dir().display().to_string()));
        }
        Ok(Process {
            spawned: self.handovers[slot].spawn(&self.argv, &env)?,
            started: Instant::now(),
            ready_at: None,
            asked: None,
        })
    }

    /// Starts every process and waits until each is ready; one that exits or
    /// hangs first is a failed boot, as gunicorn's "Worker failed to boot".
    fn boot(&mut self) -> Result<(), ExitCode> {
        for slot in 0..self.slots.len() {
            match self.spawn(slot) {
                Ok(process) => self.slots[slot].current = Some(process),
                Err(e) => {
                    eprintln!("stackway: cannot start a server process: {e}");
                    return Err(ExitCode::from(1));
                }
            }
        }
        loop {
            let mut ready = 0;
            for (n, slot) in self.slots.iter_mut().enumerate() {
                let process = slot.current.as_mut().expect("started");
                process.read_reports();
                if let Some(status) = process.exited() {
                    eprintln!(
                        "stackway: server process {n} (pid {}) failed to boot: {status}",
                        process.pid()
                    );
                    return Err(exit_code(status));
                }
                if process.started.elapsed() > START_TIMEOUT {
                    eprintln!(
                        "stackway: server process {n} (pid {}) was not ready within {START_TIMEOUT:?}",
                        process.pid()
                    );
                    return Err(ExitCode::from(1));
                }
                ready += usize::from(process.ready_at.is_some());
            }
            if ready == self.slots.len() {
                return Ok(());
            }
            std::thread::sleep(TICK);
        }
    }

    /// Looks after the processes until SIGTERM or SIGINT, or until a slot
    /// no process serves cannot get one; with `watch` (`--reload`), replaces
    /// them all when a Python file changes.
    fn supervise(
        &mut self,
        mut signals: signal_hook::iterator::Signals,
        mut watch: Option<Watch>,
    ) -> ExitCode {
        loop {
            if watch.as_mut().is_some_and(Watch::changed) {
                self.reload("a Python file changed");
            }
            for signal in signals.pending() {
                match signal {
                    SIGHUP => {
                        self.reload("SIGHUP");
                        self.groups.signal(Signal::SIGHUP);
                    }
                    SIGUSR2 => self.recycle_all("restart"),
                    _ => return ExitCode::SUCCESS,
                }
            }
            for n in 0..self.slots.len() {
                if let Err(code) = self.look_after(n) {
                    return code;
                }
            }
            self.groups.look_after();
            let ledger = &mut self.ledger;
            self.draining.retain_mut(|(process, deadline)| {
                if process.exited().is_some() {
                    if let Some(ledger) = ledger.as_mut() {
                        ledger.retire(process.pid());
                    }
                    return false;
                }
                if Instant::now() > *deadline {
                    tracing::warn!(
                        pid = process.pid(),
                        "killed: still draining after the grace period"
                    );
                    process.signal(Signal::SIGKILL);
                }
                true
            });
            if let Some(ledger) = &mut self.ledger {
                ledger.write_rows(&rows(&self.slots));
            }
            std::thread::sleep(TICK);
        }
    }

    /// Starts, replaces and retires the slot's processes; an error when its
    /// new process failed to boot `EMPTY_SLOT_STARTS` times while none serves.
    fn look_after(&mut self, n: usize) -> Result<(), ExitCode> {
        let limits = self.limits;
        let slot = &mut self.slots[n];
        if let Some(process) = &mut slot.current {
            process.read_reports();
            if slot.recycle.is_none() {
                slot.recycle.clone_from(&process.asked);
            }
            if let Some(status) = process.exited() {
                // A process that asked to be replaced drains and exits on
                // its own (`--max-requests`): its replacement is on the way.
                let why = match slot.recycle.take() {
                    Some(why) if status.success() => {
                        tracing::info!(pid = process.pid(), "server process {n} drained ({why})");
                        why
                    }
                    _ => {
                        tracing::warn!(
                            pid = process.pid(),
                            "server process {n} exited ({status}); starting another"
                        );
                        "exited".to_owned()
                    }
                };
                if let Some(ledger) = &mut self.ledger {
                    ledger.retire(process.pid());
                    ledger.replaced(&why);
                }
                slot.current = None;
            } else if slot.recycle.is_none() {
                slot.recycle = limits.exceeded(process);
            }
        }
        let wanted = slot.current.is_none() || slot.recycle.is_some();
        if wanted && slot.next.is_none() && slot.retry_at.is_none_or(|at| Instant::now() >= at) {
            slot.retry_at = None;
            match self.spawn(n) {
                Ok(process) => self.slots[n].next = Some(process),
                Err(e) => {
                    tracing::error!("cannot start a server process: {e}");
                    self.failed(n, ExitCode::from(1))?;
                }
            }
        }
        let slot = &mut self.slots[n];
        let Some(next) = &mut slot.next else {
            return Ok(());
        };
        next.read_reports();
        if next.ready_at.is_some() {
            let next = slot.next.take().expect("there");
            let why = slot.recycle.take();
            slot.failures = 0;
            if let Some(old) = slot.current.replace(next) {
                tracing::info!(
                    old = old.pid(),
                    new = slot.current.as_ref().map(Process::pid),
                    "server process {n} replaced ({})",
                    why.as_deref().unwrap_or("asked")
                );
                old.signal(Signal::SIGTERM);
                self.draining.push((old, Instant::now() + self.grace));
                if let Some(ledger) = &mut self.ledger {
                    ledger.replaced(why.as_deref().unwrap_or("asked"));
                }
            }
        } else if let Some(status) = next.exited() {
            tracing::error!(
                pid = next.pid(),
                "a new server process {n} exited before it was ready ({status})"
            );
            return self.failed_start(n, exit_code(status));
        } else if next.started.elapsed() > START_TIMEOUT {
            tracing::error!(
                pid = next.pid(),
                "a new server process {n} was not ready within {START_TIMEOUT:?}"
            );
            next.signal(Signal::SIGKILL);
            let _ = next.spawned.child.wait();
            return self.failed_start(n, ExitCode::from(1));
        }
        Ok(())
    }

    /// Replaces every process once the new code loads (`--check`), as
    /// gunicorn's SIGHUP and uWSGI's graceful reload do: the new ones read
    /// the apps, certificates and htpasswd files again. Code that does not
    /// load is reported, and the processes go on serving the old code,
    /// reading their files again in place.
    fn reload(&mut self, why: &str) {
        eprintln!("stackway: reload: {why}; checking the new code");
        match check(&self.argv) {
            Ok(status) if status.success() => self.recycle_all("reload"),
            _ => {
                eprintln!(
                    "stackway: reload: the new code does not load; still serving the old code"
                );
                self.each(|p| p.signal(Signal::SIGHUP));
            }
        }
    }

    fn recycle_all(&mut self, why: &str) {
        tracing::info!("replacing every server process: {why}");
        for slot in &mut self.slots {
            slot.recycle.get_or_insert_with(|| why.to_owned());
        }
    }

    /// The slot's new process did not become ready: what it wrote is not
    /// counted as a serving process's.
    fn failed_start(&mut self, n: usize, code: ExitCode) -> Result<(), ExitCode> {
        if let Some(next) = self.slots[n].next.take() {
            if let Some(ledger) = &mut self.ledger {
                ledger.retire(next.pid());
            }
        }
        self.failed(n, code)
    }

    /// A start failed: the next waits 0.5 s, doubled for each failure in a
    /// row, up to 30 s; `code` when it was the last an empty slot gets.
    fn failed(&mut self, n: usize, code: ExitCode) -> Result<(), ExitCode> {
        let slot = &mut self.slots[n];
        slot.failures = slot.failures.saturating_add(1);
        if slot.current.is_none() && slot.failures >= EMPTY_SLOT_STARTS {
            eprintln!(
                "stackway: server process {n} failed to start {} times in a row with none \
                 serving its socket; stopping",
                slot.failures
            );
            return Err(code);
        }
        let wait = Duration::from_millis(500) * 2u32.saturating_pow(slot.failures - 1);
        slot.retry_at = Some(Instant::now() + wait.min(Duration::from_secs(30)));
        Ok(())
    }

    fn each(&self, mut f: impl FnMut(&Process)) {
        let slots = self.slots.iter();
        let live = slots.flat_map(|slot| slot.current.iter().chain(&slot.next));
        live.chain(self.draining.iter().map(|(p, _)| p))
            .for_each(&mut f);
    }

    /// SIGTERM to every process, and waits while they drain; SIGKILL to any
    /// still there after the grace period.
    /// Drains every server process, then the virtualenvs' processes they
    /// may still have been waiting for.
    fn stop(&mut self) {
        self.stop_servers();
        self.groups.stop();
    }

    fn stop_servers(&mut self) {
        self.each(|p| p.signal(Signal::SIGTERM));
        let deadline = Instant::now() + self.grace;
        let mut all: Vec<Process> = self
            .slots
            .iter_mut()
            .flat_map(|slot| slot.current.take().into_iter().chain(slot.next.take()))
            .chain(self.draining.drain(..).map(|(p, _)| p))
            .collect();
        while !all.is_empty() {
            all.retain_mut(|p| p.exited().is_none());
            if Instant::now() > deadline {
                for p in &mut all {
                    tracing::warn!(
                        pid = p.pid(),
                        "killed: still draining after the grace period"
                    );
                    p.signal(Signal::SIGKILL);
                    let _ = p.spawned.child.wait();
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Each serving process, for the supervisor's rows.
fn rows(slots: &[Slot]) -> Vec<Row> {
    let serving = slots
        .iter()
        .enumerate()
        .filter_map(|(slot, s)| Some((slot, s.current.as_ref()?)));
    serving
        .map(|(slot, process)| Row {
            slot,
            pid: process.pid(),
            uptime: process.ready_at.map_or(Duration::ZERO, |at| at.elapsed()),
            rss: rss(process.pid()).unwrap_or(0),
        })
        .collect()
}

/// A process's resident memory in bytes, from `/proc/PID/status`.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}
