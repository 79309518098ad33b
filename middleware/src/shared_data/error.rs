//! Why an export could not be added.

use std::fmt;

use crate::prefix::Invalid;

/// Why an export could not be added: ask with the `is_*` predicates; the
/// `Display` text is a sentence for people, and not stable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportError {
    prefix: String,
    reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reason {
    Invalid(Invalid),
    Host,
    Duplicate,
    /// The path exported is missing, or not what the export says.
    Root(String),
    /// An option names something invalid.
    Setting(String),
}

impl ExportError {
    pub(super) fn new(prefix: &str, reason: Reason) -> Self {
        Self {
            prefix: prefix.to_owned(),
            reason,
        }
    }

    /// The prefix that was refused.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the prefix breaks [the prefix grammar](crate::prefix), or names
    /// a host.
    pub fn is_invalid_prefix(&self) -> bool {
        matches!(self.reason, Reason::Invalid(_) | Reason::Host)
    }

    /// Whether something is exported at the prefix already.
    pub fn is_duplicate(&self) -> bool {
        self.reason == Reason::Duplicate
    }

    /// Whether the path exported is missing, unreadable, or not the kind of
    /// thing the export says (a directory, a file).
    pub fn is_root(&self) -> bool {
        matches!(self.reason, Reason::Root(_))
    }

    /// Whether an option of the export names something invalid: an index or
    /// SPA fallback file, a header value, an embedded file name.
    pub fn is_setting(&self) -> bool {
        matches!(self.reason, Reason::Setting(_))
    }
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match &self.reason {
            Reason::Invalid(invalid) => invalid.rule(),
            Reason::Host => {
                "exports are not per host: mount the SharedData under the host with a Dispatcher"
            }
            Reason::Duplicate => "something is exported there already",
            Reason::Root(why) | Reason::Setting(why) => why,
        };
        write!(f, "cannot export at {:?}: {why}", self.prefix)
    }
}

impl std::error::Error for ExportError {}
