//! This process's stdin and stdout, read and written by the thread that
//! serves the calls.
//!
//! tokio's `stdin()` and `stdout()` hand every read and every write to a
//! thread of its blocking pool, and each hand-over (and its answer) is a
//! wake-up of another thread: four or more a call, where a pipe's own round
//! trip (`cat`) has two. On a virtual machine a cross-CPU wake-up costs tens
//! of microseconds, more than the call. A pipe or a socket (Node's child
//! processes get socket pairs) is instead set non-blocking and waited on by
//! the runtime's reactor, so the serving thread reads a request, runs it and
//! writes its answer itself. A terminal (its mode is shared with the shell)
//! or a file (which cannot be polled) keeps tokio's pool.
//!
//! Non-blocking mode belongs to the open file, which the client's other
//! processes may share: [`Restore`] puts blocking mode back when serving
//! ends.

use rustix::fs::FileType;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use tokio::io::{AsyncRead, AsyncWrite};

pub(super) type Input = Box<dyn AsyncRead + Send + Unpin>;
pub(super) type Output = Box<dyn AsyncWrite + Send + Unpin>;

/// Puts blocking mode back on the open files this process made
/// non-blocking, when dropped.
pub(super) struct Restore(Vec<OwnedFd>);

impl Drop for Restore {
    fn drop(&mut self) {
        for fd in &self.0 {
            let _ = rustix::io::ioctl_fionbio(fd, false);
        }
    }
}

/// stdin and stdout, each on the reactor if it is a pipe or a socket.
pub(super) fn open() -> (Input, Output, Restore) {
    let mut restore = Restore(Vec::new());
    let input = match polled(std::io::stdin().as_fd(), &mut restore) {
        Some(Polled::Pipe(fd)) => tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
            .ok()
            .map(|r| Box::new(r) as Input),
        Some(Polled::Socket(s)) => socket(s).map(|s| Box::new(s) as Input),
        None => None,
    };
    let output = match polled(std::io::stdout().as_fd(), &mut restore) {
        Some(Polled::Pipe(fd)) => tokio::net::unix::pipe::Sender::from_owned_fd(fd)
            .ok()
            .map(|w| Box::new(w) as Output),
        Some(Polled::Socket(s)) => socket(s).map(|s| Box::new(s) as Output),
        None => None,
    };
    (
        input.unwrap_or_else(|| Box::new(tokio::io::stdin())),
        output.unwrap_or_else(|| Box::new(tokio::io::stdout())),
        restore,
    )
}

enum Polled {
    Pipe(OwnedFd),
    Socket(std::os::unix::net::UnixStream),
}

/// A copy of `fd` to poll, if it is a pipe or a socket; a second copy goes
/// to `restore` first, so a failed conversion half-way is undone too.
fn polled(fd: BorrowedFd<'_>, restore: &mut Restore) -> Option<Polled> {
    let kind = FileType::from_raw_mode(rustix::fs::fstat(fd).ok()?.st_mode);
    if kind != FileType::Fifo && kind != FileType::Socket {
        return None;
    }
    let ours = fd.try_clone_to_owned().ok()?;
    restore.0.push(fd.try_clone_to_owned().ok()?);
    Some(match kind {
        FileType::Fifo => Polled::Pipe(ours),
        _ => Polled::Socket(ours.into()),
    })
}

/// A socket on the reactor (tokio's Unix stream reads and writes any
/// stream socket with `recv` and `send`).
fn socket(s: std::os::unix::net::UnixStream) -> Option<tokio::net::UnixStream> {
    s.set_nonblocking(true).ok()?;
    tokio::net::UnixStream::from_std(s).ok()
}
