//! Where a stored body is (in memory, or in a file of the cache's
//! directory), and the body it is served as.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use stackway::{Body, FilePart};

/// Where a stored body is.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Memory(Bytes),
    /// `len` bytes from `offset` in a file of the cache's directory.
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    /// The same in a file written and not yet in place: read through its
    /// descriptor meanwhile.
    Open {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
}

impl Payload {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Self::Memory(bytes) => bytes.len() as u64,
            Self::File { len, .. } | Self::Open { len, .. } => *len,
        }
    }

    /// Opened to be served: fails when another process has removed its file.
    pub(crate) fn open(&self) -> io::Result<Contents> {
        Ok(match self {
            Self::Memory(bytes) => Contents::Memory(bytes.clone()),
            Self::File { path, offset, .. } => Contents::File(Arc::new(File::open(path)?), *offset),
            Self::Open { file, offset, .. } => Contents::File(file.clone(), *offset),
        })
    }

    pub(crate) fn path(&self) -> Option<&Path> {
        match self {
            Self::File { path, .. } => Some(path),
            Self::Memory(_) | Self::Open { .. } => None,
        }
    }
}

/// A stored body ready to be served, whatever becomes of the store.
pub(crate) enum Contents {
    Memory(Bytes),
    /// An open file and where the body starts in it.
    File(Arc<File>, u64),
}

impl Contents {
    /// A body of `parts`: ranges of the stored body, and bytes between them.
    pub(crate) fn body(&self, parts: Vec<FilePart>) -> Body {
        match self {
            Self::Memory(bytes) => {
                let len = parts.iter().map(FilePart::len).sum();
                let chunks = parts.into_iter().map(|part| match part {
                    FilePart::Range(range) => bytes.slice(range.start as usize..range.end as usize),
                    FilePart::Bytes(between) => between,
                });
                Body::from_chunks(chunks.collect::<Vec<_>>()).exact_size(len)
            }
            Self::File(file, offset) => {
                let parts = parts.into_iter().map(|part| match part {
                    FilePart::Range(range) => {
                        FilePart::Range(offset + range.start..offset + range.end)
                    }
                    between => between,
                });
                Body::from_file_parts(file.clone(), parts.collect())
            }
        }
    }
}
