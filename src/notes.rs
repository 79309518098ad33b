//! What the middleware inside a stack note about how a request was answered
//! (which mount answered it, how a static file was served) for the observers
//! outside it, such as metrics, to read once the answer comes.
//!
//! # Example
//!
//! ```
//! use stackway::notes::{Mount, Notes};
//! use stackway::{App, Request, Response, testing::Client};
//!
//! /// A mounting middleware: notes which mount answered.
//! struct Tagged<A>(&'static Mount, A);
//!
//! impl<A: App> App for Tagged<A> {
//!     async fn call(&self, req: Request) -> Response {
//!         self.0.answered();
//!         self.1.call(req).await
//!     }
//! }
//!
//! /// An observer: reads the notes when the answer comes.
//! struct Observer<A>(A);
//!
//! impl<A: App> App for Observer<A> {
//!     async fn call(&self, req: Request) -> Response {
//!         let mut noting = std::pin::pin!(Notes::scope(self.0.call(req)));
//!         let mut res = noting.as_mut().await;
//!         let notes = noting.as_mut().take_value().unwrap_or_default();
//!         let mount = notes.mount().map_or("none", Mount::as_str);
//!         res.headers_mut().insert("x-mount", mount.parse().unwrap());
//!         res
//!     }
//! }
//!
//! let app = Observer(Tagged(Mount::named("/api"), |_req| async { "hi" }));
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! Client::new(app).get("/api/x").await.assert_header("x-mount", "/api");
//! # });
//! ```
//!
//! Notes are a task local: noting costs no allocation, and outside a
//! [`Notes::scope`] nothing at all. A mounting middleware outside this
//! repository notes its mounts exactly as the Dispatcher does.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, Mutex};

/// A future run under fresh [`Notes`]; `take_value` on it, once it is done,
/// gives them.
pub type Noting<F> = tokio::task::futures::TaskLocalFuture<Notes, F>;

tokio::task_local! {
    static NOTES: Notes;
}

/// The notes taken while one request was answered; see the [module docs](self).
#[derive(Debug, Default)]
pub struct Notes {
    mount: Cell<Option<&'static Mount>>,
    served: Cell<Option<Served>>,
}

impl Notes {
    /// Runs `future` under fresh notes, which the middleware inside fill.
    pub fn scope<F: Future>(future: F) -> Noting<F> {
        NOTES.scope(Self::default(), future)
    }

    /// The mount that answered: the outermost one noted.
    pub fn mount(&self) -> Option<&'static Mount> {
        self.mount.get()
    }

    /// How a static-file middleware answered, if one looked at the request.
    pub fn served(&self) -> Option<Served> {
        self.served.get()
    }

    /// Notes how a static-file middleware answered the request being
    /// observed (the last note counts).
    pub fn note_served(served: Served) {
        let _ = NOTES.try_with(|notes| notes.served.set(Some(served)));
    }
}

/// How a static-file middleware answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// With a file read from disk (or sent from the page cache).
    File,
    /// With a file kept in memory.
    Memory,
    /// It had no file for the request and passed it on.
    Passed,
}

/// A mount's prefix as configured (`/api`, `http://admin.example/`): the
/// name observers give what a mount answered. There is one `Mount` per name
/// for the life of the process, so a request notes a `&'static` one without
/// touching a reference count; a program configures few.
pub struct Mount {
    name: Box<str>,
    index: usize,
}

impl Mount {
    /// The mount named `name`, made the first time it is asked for.
    pub fn named(name: &str) -> &'static Self {
        static MOUNTS: LazyLock<Mutex<HashMap<Box<str>, &'static Mount>>> =
            LazyLock::new(Mutex::default);
        let mut mounts = MOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let index = mounts.len();
        mounts.entry(name.into()).or_insert_with(|| {
            Box::leak(Box::new(Self {
                name: name.into(),
                index,
            }))
        })
    }

    /// The prefix as configured.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// A number of its own, counted from 0 in the order mounts are first
    /// named, for observers that keep a table by mount.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Notes that this mount answers the request being observed; a mount
    /// noted before (an outer one) is kept.
    pub fn answered(&'static self) {
        let _ = NOTES.try_with(|notes| {
            if notes.mount.get().is_none() {
                notes.mount.set(Some(self));
            }
        });
    }
}

impl fmt::Debug for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Mount").field(&self.name).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outermost_mount_is_kept_and_nothing_is_noted_outside_a_scope() {
        let (outer, inner) = (Mount::named("/a"), Mount::named("/a/b"));
        assert!(std::ptr::eq(outer, Mount::named("/a")), "one per name");
        assert_ne!(outer.index(), inner.index());
        outer.answered(); // no scope: no effect, no panic
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut noting = std::pin::pin!(Notes::scope(async {
            outer.answered();
            inner.answered();
            Notes::note_served(Served::Passed);
            Notes::note_served(Served::Memory);
        }));
        rt.block_on(noting.as_mut());
        let notes = noting.as_mut().take_value().unwrap();
        assert_eq!(notes.mount().map(Mount::as_str), Some("/a"));
        assert_eq!(notes.served(), Some(Served::Memory));
    }
}
