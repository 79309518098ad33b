//! The Python threads and the queue in front of them.
//!
//! Requests are taken in the order they came. A thread that ends a request
//! takes the next one while it still holds the GIL. An idle thread takes a
//! waiting request only when no busy thread is computing a young request:
//! running or ready to run (not blocked) on a request it took less than
//! [`YOUNG`] ago. Python runs one thread at a time, so a thread started beside
//! a computing one only takes turns with it on the GIL, in no fair order, and
//! every request in flight waits for all the others: on an app that computes
//! 2.5 ms a request, eight threads that all took requests gave a p99 of 180 ms
//! where one thread gave 28 ms. A request blocked on I/O (a database,
//! `time.sleep`), or one that has computed for longer than `YOUNG`, holds
//! nobody back: threads still overlap their waits, and a long request does
//! not stall the short ones behind it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::run::{self, Job};
use crate::{Counters, harakiri};

/// How long a computing request holds the queue back.
const YOUNG: Duration = Duration::from_millis(20);
/// How often an idle thread looks at the busy ones while requests wait.
const POLL: Duration = Duration::from_millis(1);

/// The queue and its threads; they end when this is dropped.
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

/// Why a request was not queued.
pub(crate) enum Refused {
    Full,
    Closed,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a request is queued, and when the pool closes.
    work: Condvar,
    bound: usize,
    /// Each thread as the kernel sees it, by its number, set as it starts.
    tasks: Vec<OnceLock<Task>>,
    /// Each thread that has taken a request and waits for the GIL to run it:
    /// computing, as far as the others are concerned.
    entering: Vec<AtomicBool>,
}

struct State {
    queue: VecDeque<Job>,
    /// When each thread took the request it runs, if it runs one.
    busy: Vec<Option<Instant>>,
    /// Requests taken, since the start: a look at the threads is stale once this moves.
    taken: u64,
    /// Threads not yet attached to the interpreter. None takes a request
    /// before all have: a thread attaching waits for the GIL, and would keep
    /// a busy one waiting too, which would then look blocked.
    starting: usize,
    open: bool,
    /// An idle thread is watching the busy ones for a chance to start.
    watched: bool,
}

impl Pool {
    /// Starts `threads` Python threads that run `app` for the requests queued, at most `bound` waiting.
    pub(crate) fn start(
        app: &Arc<Py<PyAny>>,
        threads: usize,
        bound: usize,
        counters: &Arc<Counters>,
    ) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                busy: vec![None; threads],
                taken: 0,
                starting: threads,
                open: true,
                watched: false,
            }),
            work: Condvar::new(),
            bound,
            tasks: (0..threads).map(|_| OnceLock::new()).collect(),
            entering: (0..threads).map(|_| AtomicBool::new(false)).collect(),
        });
        for n in 0..threads {
            let (app, thread, counters) = (app.clone(), shared.clone(), counters.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("stackway-python-{n}"))
                .spawn(move || thread.serve(n, &app, &counters));
            if let Err(e) = spawned {
                shared.attached();
                tracing::error!("cannot start a Python thread: {e}");
            }
        }
        Self { shared }
    }

    pub(crate) fn push(&self, job: Job) -> Result<(), Refused> {
        let mut state = self.shared.lock();
        if !state.open {
            return Err(Refused::Closed);
        }
        if state.queue.len() >= self.shared.bound {
            return Err(Refused::Full);
        }
        state.queue.push_back(job);
        // With a thread watching the busy ones, the request waits for its poll.
        let wake = !state.watched || state.busy.iter().all(Option::is_none);
        drop(state);
        if wake {
            self.shared.work.notify_one();
        }
        Ok(())
    }

    /// Requests waiting for a thread.
    pub(crate) fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.open = false;
        state.queue.clear();
        drop(state);
        self.shared.work.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Thread `n`: one request after another, until the pool closes.
    ///
    /// The thread stays attached to the interpreter for its whole life
    /// (attaching per request would create and destroy a Python thread state
    /// each time) and keeps the GIL from one request to the next while there
    /// are more: handing the GIL to another thread costs two context switches.
    fn serve(&self, n: usize, app: &Py<PyAny>, counters: &Counters) {
        if let Some(task) = Task::of_this_thread() {
            let _ = self.tasks[n].set(task);
        }
        Python::attach(|py| {
            let ident = harakiri::ident(py);
            let mut next = py.detach(|| {
                self.attached();
                self.wait(n)
            });
            loop {
                let mut job = match next.take() {
                    Some(job) => job,
                    None => match py.detach(|| self.wait(n)) {
                        Some(job) => job,
                        None => return,
                    },
                };
                self.entering[n].store(false, Ordering::Relaxed);
                let waited = u64::try_from(job.queued_at.elapsed().as_nanos()).unwrap_or(u64::MAX);
                counters.waited_nanos.fetch_add(waited, Ordering::Relaxed);
                counters.jobs.fetch_add(1, Ordering::Relaxed);
                counters.busy.fetch_add(1, Ordering::Relaxed);
                if let Some(started) = job.started.take() {
                    let _ = started.send(ident);
                }
                run::run(py, app, job);
                counters.busy.fetch_sub(1, Ordering::Relaxed);
                next = self.next(n);
            }
        });
    }

    /// One more thread attached, or one that will never be.
    fn attached(&self) {
        let mut state = self.lock();
        state.starting -= 1;
        if state.starting == 0 {
            self.work.notify_all();
        }
    }

    /// The next request for thread `n`, which has just ended one, or `None` (it is idle).
    fn next(&self, n: usize) -> Option<Job> {
        let mut state = self.lock();
        match state.queue.is_empty() {
            true => {
                state.busy[n] = None;
                None
            }
            false => self.take(&mut state, n),
        }
    }

    /// Waits, without the GIL, until thread `n` may take a request; `None` once the pool closes.
    fn wait(&self, n: usize) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if !state.open {
                return None;
            }
            if state.queue.is_empty() || state.watched || state.starting > 0 {
                state = self
                    .work
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let now = Instant::now();
            let young: Vec<usize> = (state.busy.iter().enumerate())
                .filter(|(_, since)| since.is_some_and(|since| now.duration_since(since) < YOUNG))
                .map(|(thread, _)| thread)
                .collect();
            if young.is_empty() {
                return self.take(&mut state, n);
            }
            // Looked at without the lock: a thread ending its request would
            // wait for it, and look blocked.
            state.watched = true;
            let taken = state.taken;
            drop(state);
            let computing = young.iter().any(|&thread| {
                self.entering[thread].load(Ordering::Relaxed)
                    || self.tasks[thread].get().is_some_and(Task::runnable)
            });
            state = self.lock();
            if !computing && state.taken == taken && state.open && !state.queue.is_empty() {
                state.watched = false;
                return self.take(&mut state, n);
            }
            if computing {
                state = (self.work.wait_timeout(state, POLL))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            state.watched = false;
        }
    }

    /// The first request waiting, for thread `n`, which waits for the GIL
    /// if it was idle.
    fn take(&self, state: &mut State, n: usize) -> Option<Job> {
        let job = state.queue.pop_front()?;
        state.busy[n] = Some(Instant::now());
        self.entering[n].store(true, Ordering::Relaxed);
        state.taken += 1;
        if !state.queue.is_empty() && !state.watched {
            self.work.notify_one();
        }
        Some(job)
    }
}

/// A thread as the kernel sees it: its `/proc` stat file, opened by the
/// thread itself and read by the others.
struct Task(std::fs::File);

impl Task {
    fn of_this_thread() -> Option<Self> {
        std::fs::File::open("/proc/thread-self/stat").ok().map(Self)
    }

    /// Whether the thread is running or waiting for a CPU (`R`), not blocked.
    fn runnable(&self) -> bool {
        use std::os::unix::fs::FileExt;
        let mut stat = [0; 512];
        let Ok(read) = self.0.read_at(&mut stat, 0) else {
            return false;
        };
        // `tid (name) state ...`; the name may hold spaces and parentheses.
        let stat = &stat[..read];
        let after_name = stat
            .iter()
            .rposition(|&b| b == b')')
            .map_or(read, |i| i + 2);
        stat.get(after_name) == Some(&b'R')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_reads_as_runnable_while_it_computes_and_not_while_it_sleeps() {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            tx.send(Task::of_this_thread()).unwrap();
            let end = Instant::now() + Duration::from_millis(300);
            while Instant::now() < end {}
            std::thread::sleep(Duration::from_millis(300));
        });
        let task = rx.recv().unwrap().expect("/proc/thread-self/stat");
        std::thread::sleep(Duration::from_millis(100));
        assert!(task.runnable(), "computing");
        std::thread::sleep(Duration::from_millis(350));
        assert!(!task.runnable(), "sleeping");
        thread.join().unwrap();
    }
}
