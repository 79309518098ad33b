//! Sending a file body from the page cache to the socket with `sendfile`,
//! beneath hyper, which writes bytes it holds and knows nothing of files.
//!
//! A file body ([`Body::from_file_parts`](crate::Body::from_file_parts))
//! that reaches a plain HTTP/1 connection unchanged gives hyper, for each
//! chunk the page cache holds, a stand-in: `Bytes` of the chunk's length in
//! a slot of a block of zeros no one writes. The connection notes which
//! file and offset each slot stands for; when hyper writes the slot to the
//! socket, or the part of it a short write left, the socket sends that much
//! of the file instead.
//!
//! ```text
//! body:   head, slot 3 = file @ 0 (256 KiB), slot 4 = file @ 256 KiB, …
//! hyper:  writev([head, slot 3])
//! socket: writev([head]) → 212, then sendfile(file @ 0, 256 KiB) → 180 KiB,
//!         then sendfile(file @ 180 KiB, 76 KiB) when hyper writes the rest of slot 3
//! ```
//!
//! Only where nothing but the socket reads the stand-ins: a plain socket
//! (TLS would encrypt them), HTTP/1 (HTTP/2 copies small frames into a
//! buffer of its own), and hyper queueing body bytes rather than copying
//! them into its buffer, which it does for a socket that writes vectored
//! (the server's always does, and never turns hyper's `writev` off). A body
//! a middleware changed reads its file itself and is never stood in for.

use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use crate::body::FILE_CHUNK as CHUNK;

/// How many chunks a connection can have stood in for at once: more than
/// hyper queues (16 buffers) before it writes.
const SLOTS: usize = 32;

/// The zeros the stand-ins point into: `SLOTS` chunks, allocated (and never
/// touched, so they take no memory) the first time a file is sent.
static STAND_INS: OnceLock<Box<[u8]>> = OnceLock::new();

fn stand_ins() -> &'static [u8] {
    STAND_INS.get_or_init(|| vec![0; SLOTS * CHUNK].into_boxed_slice())
}

/// Which file bytes a connection's stand-ins stand for.
#[derive(Default)]
pub(super) struct StandIns {
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    next: usize,
    /// Slots handed out and not yet sent (or given out again).
    live: Vec<Slot>,
}

struct Slot {
    index: usize,
    file: Arc<File>,
    offset: u64,
}

/// Where hyper's next write starts, for the socket.
pub(super) enum Write {
    /// Bytes to write as they are: the buffers before the first stand-in.
    Bytes(usize),
    /// A stand-in first: send what it stands for instead.
    File(FileWrite),
}

/// Bytes of a file to send in place of a stand-in.
pub(super) struct FileWrite {
    pub(super) file: Arc<File>,
    pub(super) offset: u64,
    pub(super) len: usize,
    slot: usize,
}

impl StandIns {
    /// Takes `len` bytes of `file` at `offset` to send, and returns their
    /// stand-in.
    pub(super) fn stand_in(&self, file: &Arc<File>, offset: u64, len: usize) -> Bytes {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let index = slots.next;
        slots.next = (index + 1) % SLOTS;
        // A slot given out again is no longer queued by hyper (it queues
        // fewer than `SLOTS` chunks), or was never written (a response cut short).
        slots.live.retain(|slot| slot.index != index);
        slots.live.push(Slot {
            index,
            file: file.clone(),
            offset,
        });
        let start = index * CHUNK;
        Bytes::from_static(&stand_ins()[start..start + len])
    }

    /// What of `bufs` the socket writes next.
    pub(super) fn next(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<Write> {
        let Some(block) = STAND_INS.get() else {
            return Ok(Write::Bytes(bufs.len()));
        };
        let place = |buf: &[u8]| {
            let at = (buf.as_ptr() as usize).checked_sub(block.as_ptr() as usize)?;
            (at < block.len()).then_some(at)
        };
        match bufs.iter().position(|buf| place(buf).is_some()) {
            None => Ok(Write::Bytes(bufs.len())),
            Some(first @ 1..) => Ok(Write::Bytes(first)),
            Some(0) => {
                let at = place(&bufs[0]).unwrap_or_default();
                let (index, into) = (at / CHUNK, at % CHUNK);
                let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
                // Never zeros for a file's bytes: an unknown stand-in fails the write.
                let slot =
                    (slots.live.iter().find(|slot| slot.index == index)).ok_or_else(|| {
                        io::Error::other("a stand-in for file bytes that are not known")
                    })?;
                Ok(Write::File(FileWrite {
                    file: slot.file.clone(),
                    offset: slot.offset + into as u64,
                    len: bufs[0].len(),
                    slot: index,
                }))
            }
        }
    }

    /// `sent` bytes of `write` were sent: a stand-in sent to its end lets
    /// go of its file.
    pub(super) fn sent(&self, write: &FileWrite, sent: usize) {
        if sent == write.len {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.live.retain(|slot| slot.index != write.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;

    use super::*;

    /// An open file: only which one it is matters here.
    fn file() -> Arc<File> {
        Arc::new(File::open("/dev/null").unwrap())
    }

    fn file_write(write: Write) -> FileWrite {
        match write {
            Write::File(write) => write,
            Write::Bytes(n) => panic!("bytes first ({n} buffers), not a file"),
        }
    }

    #[test]
    fn bytes_before_a_stand_in_are_written_first_then_the_file_from_where_a_short_write_left_it() {
        let stand_ins = StandIns::default();
        let (a, b) = (file(), file());
        let first = stand_ins.stand_in(&a, 1000, 5000);
        let second = stand_ins.stand_in(&b, 0, 10);
        let head = b"HTTP/1.1 200 OK\r\n\r\n";
        let bufs = [
            IoSlice::new(head),
            IoSlice::new(&first),
            IoSlice::new(&second),
        ];
        assert!(matches!(stand_ins.next(&bufs).unwrap(), Write::Bytes(1)));

        let write = file_write(stand_ins.next(&bufs[1..]).unwrap());
        assert!(Arc::ptr_eq(&write.file, &a));
        assert_eq!((write.offset, write.len), (1000, 5000));
        stand_ins.sent(&write, 1200);
        // hyper writes the rest of the stand-in: the file from 1200 bytes on.
        let rest = [IoSlice::new(&first[1200..]), IoSlice::new(&second)];
        let write = file_write(stand_ins.next(&rest).unwrap());
        assert_eq!((write.offset, write.len), (2200, 3800));
        stand_ins.sent(&write, 3800);
        // Sent to its end, the slot lets go of its file.
        assert!(stand_ins.next(&rest[..1]).is_err());
        let write = file_write(stand_ins.next(&rest[1..]).unwrap());
        assert!(Arc::ptr_eq(&write.file, &b));
        assert_eq!((write.offset, write.len), (0, 10));
    }

    #[test]
    fn a_slot_given_out_again_stands_for_the_new_bytes_only() {
        let stand_ins = StandIns::default();
        let (old, new) = (file(), file());
        let first = stand_ins.stand_in(&old, 0, 100);
        for _ in 1..SLOTS {
            stand_ins.stand_in(&old, 0, 1);
        }
        let again = stand_ins.stand_in(&new, 500, 100);
        assert_eq!(first.as_ptr(), again.as_ptr());
        let write = file_write(stand_ins.next(&[IoSlice::new(&again)]).unwrap());
        assert!(Arc::ptr_eq(&write.file, &new));
        assert_eq!(write.offset, 500);
        assert_eq!(stand_ins.slots.lock().unwrap().live.len(), SLOTS);
    }

    #[test]
    fn bytes_that_are_no_stand_in_are_written_as_they_are() {
        let stand_ins = StandIns::default();
        stand_ins.stand_in(&file(), 0, 10);
        let own = vec![0u8; 64];
        let bufs = [IoSlice::new(&own), IoSlice::new(b"static")];
        assert!(matches!(stand_ins.next(&bufs).unwrap(), Write::Bytes(2)));
    }
}
