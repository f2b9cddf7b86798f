//! Where another writer left the trail: a file sink continues the chain
//! from the trail's last complete record, reading only its tail, and cuts
//! off a line whose write never completed.

use super::{Head, Shared};
use crate::audit::line::GENESIS;
use crate::audit::{AuditError, Event, Record};
use std::fs::File;

/// The last complete chained record of a trail of `len` bytes, reading only
/// its tail (a trail grows for as long as it is kept; appending must not
/// read it all).
fn last_record(mut file: &File, len: u64) -> std::io::Result<Option<Record>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut window: u64 = 64 << 10;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        file.take(len - start).read_to_end(&mut tail)?;
        let text = String::from_utf8_lossy(&tail);
        // The first line of a window that does not start the file may be cut.
        let lines = text.lines().skip(usize::from(start > 0));
        let found = lines.collect::<Vec<_>>().into_iter().rev().find_map(|l| {
            serde_json::from_str::<Record>(l)
                .ok()
                .filter(|r| r.seq.is_some())
        });
        if found.is_some() || start == 0 {
            return Ok(found);
        }
        window *= 4;
    }
}

/// How a trail is opened: for appending and reading, made with mode 0600,
/// and not as a terminal to wait for or take as the process's own (its
/// type is checked once it is open).
pub(super) fn options() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.append(true).create(true).read(true).mode(0o600);
    opts.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    opts
}

/// A trail is a regular file: records appended to `/dev/null` (a symlink
/// swapped in for the trail, or `--audit /dev/null`) would be lost while
/// every invocation ran as if recorded, and a FIFO or a device holds no
/// chain to continue.
pub(super) fn regular(file: &File) -> std::io::Result<()> {
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(());
    }
    let what = crate::files::special(kind).unwrap_or("a directory");
    Err(std::io::Error::other(format!(
        "it is {what}: a trail is a regular file (records written elsewhere would be lost)"
    )))
}

/// After a write: the trail holds what was written, `want` bytes in all,
/// and is still where it was named. A file that takes writes and keeps
/// none (`/proc/self/comm` reads as a regular file of no length), or a
/// trail removed after it was opened, would lose every record while
/// appends succeed.
pub(super) fn kept(file: &File, want: u64) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = file.metadata()?;
    if meta.nlink() == 0 {
        return Err(std::io::Error::other(
            "it was removed after it was opened: records written to it would be lost",
        ));
    }
    if meta.len() != want {
        return Err(std::io::Error::other(format!(
            "it holds {} bytes after a write that should have left {want}: it does not keep what is written to it (or another process wrote without its lock)",
            meta.len()
        )));
    }
    Ok(())
}

impl Shared {
    /// With the trail's lock held: when it is not as this sink left it,
    /// continues the chain from its last record (a checkpoint there covers
    /// everything before it, this sink's records too).
    pub(super) fn catch_up(&self, at: &mut Head) -> Result<u64, AuditError> {
        let len = self.file.metadata().map_err(|e| self.io(e))?.len();
        match at.len {
            Some(left) if left == len => Ok(len),
            // Cut or rewritten since: what this sink wrote (and perhaps
            // signed) is gone, and a chain continued from what is there
            // now would be signed as if it were the trail.
            Some(left) if len < left => Err(self.io(std::io::Error::other(format!(
                "it holds {len} bytes, fewer than the {left} this sink left: another process cut or rewrote it; nothing was written (`warden audit verify` shows where)"
            )))),
            // Longer: another writer appended after this sink's last line,
            // which is still where this sink left it (a rewrite as long or
            // longer would otherwise be continued and signed).
            Some(left) if !self.ends_with_head(left, &at.head) => {
                Err(self.io(std::io::Error::other(format!(
                    "the line this sink wrote last, ending at byte {left}, is not there any more: another process rewrote it; nothing was written (`warden audit verify` shows where)"
                ))))
            }
            _ => self.resync(at, len),
        }
    }

    /// [`Shared::catch_up`] when another writer appended: a call of its own,
    /// so that its frame (a record read back, ~3 KiB) is not on the stack of
    /// every append, which may be a waiting tool's fiber stack.
    #[cold]
    #[inline(never)]
    fn resync(&self, at: &mut Head, len: u64) -> Result<u64, AuditError> {
        const EDITED: &str = "its last record's seq or hash was edited (expected a seq below the largest and 64 hex digits): `warden audit verify` shows where";
        let len = self.cut_torn_tail(len)?;
        let last = last_record(&self.file, len).map_err(|e| self.io(e))?;
        (at.seq, at.head) = match &last {
            // Chained onto raw: an edited hash or seq must not break (or
            // overflow into) the next line.
            Some(r) => match (r.seq.unwrap_or(0).checked_add(1), r.hash.as_deref()) {
                (Some(seq), None) => (seq, GENESIS.to_owned()),
                (Some(seq), Some(h))
                    if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    (seq, h.to_owned())
                }
                _ => return Err(self.io(std::io::Error::other(EDITED))),
            },
            None => (0, GENESIS.to_owned()),
        };
        match last {
            None => at.unsigned = 0,
            Some(r) if r.event == Event::Checkpoint => at.unsigned = 0,
            Some(r) => {
                at.unsigned = at.unsigned.max(1);
                at.ids
                    .get_or_insert([r.invocation, r.task, r.tool, r.identity]);
            }
        }
        if at.unsigned == 0 {
            at.unsigned_since = None;
        }
        at.len = Some(len);
        Ok(len)
    }

    /// With the trail's lock held: a trail that does not end with a newline ends in
    /// a record whose write never completed (its writer was killed
    /// mid-`write`, or the disk filled). That record was never written, so
    /// the action it would have allowed never ran: the torn line is cut off,
    /// so that the next record starts a line of its own instead of merging
    /// into it. Returns the trail's length after.
    fn cut_torn_tail(&self, len: u64) -> Result<u64, AuditError> {
        use std::os::unix::fs::FileExt;
        let mut last = [0u8; 1];
        if len == 0 {
            return Ok(0);
        }
        self.file
            .read_exact_at(&mut last, len - 1)
            .map_err(|e| self.io(e))?;
        if last[0] == b'\n' {
            self.first_line_is_a_record()?;
            return Ok(len);
        }
        // Find the start of the torn line, reading back in blocks.
        let mut end = len;
        let mut block = vec![0u8; 64 << 10];
        let keep = loop {
            let start = end.saturating_sub(block.len() as u64);
            let chunk = &mut block[..(end - start) as usize];
            self.file
                .read_exact_at(chunk, start)
                .map_err(|e| self.io(e))?;
            if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
                break start + i as u64 + 1;
            }
            if start == 0 {
                break 0;
            }
            end = start;
        };
        // Only a record cut short is cut off: a file whose last line is
        // something else (a trail path pointed at another file, which may
        // end without a line break) is not a trail to truncate. A crash
        // can leave zeros where a write's bytes did not reach the disk:
        // after the record's start, or instead of all of it but the bytes
        // of its start that did reach it. Zeros after other bytes are a
        // program's or a key's, not a crash's.
        if !self.cut_short(keep, len).map_err(|e| self.io(e))? {
            return Err(self.io(std::io::Error::other(
                "its last line is neither complete nor a record cut short (expected a line starting {\"v\":): not an audit trail? nothing was cut or written",
            )));
        }
        if keep > 0 {
            self.first_line_is_a_record()?;
        }
        tracing::warn!(
            "audit trail {}: cut off a torn last line ({} bytes) left by a write that never completed",
            self.path.display(),
            len - keep
        );
        self.file.set_len(keep).map_err(|e| self.io(e))?;
        Ok(keep)
    }

    /// Whether the line ending at byte `end` is the record whose hash is
    /// `head` (its last field), as this sink wrote it.
    fn ends_with_head(&self, end: u64, head: &str) -> bool {
        use std::os::unix::fs::FileExt;
        if head == GENESIS {
            return true;
        }
        let want = format!(",\"hash\":\"{head}\"}}\n");
        let mut tail = vec![0u8; want.len()];
        let Some(start) = end.checked_sub(want.len() as u64) else {
            return false;
        };
        self.file.read_exact_at(&mut tail, start).is_ok() && tail == want.as_bytes()
    }

    /// Whether the bytes from `keep` to `len` are a record cut short: a
    /// record's start (`{"v":`), or the first bytes of one followed by
    /// nothing but zeros.
    fn cut_short(&self, keep: u64, len: u64) -> std::io::Result<bool> {
        use std::os::unix::fs::FileExt;
        const START: &[u8; 5] = b"{\"v\":";
        // No write Warden makes is this long (a batch written behind, a
        // checkpoint with it, zeroed by a crash, is well under): a file
        // this long without a line break (an image, a sparse file) is not
        // a write cut short.
        const LONGEST: u64 = 64 << 20;
        if len - keep > LONGEST {
            return Ok(false);
        }
        let mut head = [0u8; 5];
        let head = &mut head[..(len - keep).min(5) as usize];
        self.file.read_exact_at(head, keep)?;
        if head == START {
            return Ok(true);
        }
        let written = head.iter().position(|&b| b == 0).unwrap_or(head.len());
        if !START.starts_with(&head[..written]) {
            return Ok(false);
        }
        let mut block = vec![0u8; 64 << 10];
        let mut at = keep + written as u64;
        while at < len {
            let chunk = &mut block[..(len - at).min(64 << 10) as usize];
            self.file.read_exact_at(chunk, at)?;
            if chunk.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += chunk.len() as u64;
        }
        Ok(true)
    }

    /// A trail's first line is a record. A file that starts otherwise (a
    /// shell's startup file, a key, a program: a trail path pointed at
    /// another file, by mistake or through a symlink) is not a trail,
    /// however it ends: records appended to it could be run or read as
    /// something else (a record's text is the tools').
    fn first_line_is_a_record(&self) -> Result<(), AuditError> {
        use std::os::unix::fs::FileExt;
        let mut head = [0u8; 5];
        let read = self.file.read_exact_at(&mut head, 0);
        if read.is_err() || &head != b"{\"v\":" {
            return Err(self.io(std::io::Error::other(
                "its first line is not a record (expected a line starting {\"v\":): not an audit trail? nothing was cut or written",
            )));
        }
        Ok(())
    }
}
