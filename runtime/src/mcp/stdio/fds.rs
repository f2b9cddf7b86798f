//! This process's stdin and stdout, read and written by the thread that
//! serves the calls.
//!
//! tokio's `stdin()` and `stdout()` hand every read and every write to a
//! thread of its blocking pool, and each hand-over (and its answer) is a
//! wake-up of another thread: four or more a call, where a pipe's own round
//! trip (`cat`) has two. On a virtual machine a cross-CPU wake-up costs tens
//! of microseconds, more than the call. A pipe or a connected stream socket
//! (Node's child processes get socket pairs) is instead set non-blocking and
//! waited on by the runtime's reactor, so the serving thread reads a
//! request, runs it and writes its answer itself.
//!
//! Everything else keeps tokio's pool: a terminal (its mode is shared with
//! the shell), a file (which cannot be polled), a listening or datagram
//! socket (reading it fails at once, as it did before), and a stream that
//! stderr shares (stderr's writes, a panic message included, would then be
//! non-blocking too, and fail when the reader is slow).
//!
//! Non-blocking mode belongs to the open file, which the client's other
//! processes may share. An anonymous pipe is therefore opened anew
//! (`/proc/self/fd`): a file of this process's own on the same pipe, and
//! only that one is made non-blocking, so the client's stays as it was,
//! even if this process is killed with SIGKILL. A socket cannot be opened
//! anew (nor a pipe without `/proc`, or one another user owns), and a
//! named FIFO is not (see [`reopened`]): [`Restore`] puts blocking mode
//! back on those, if they were blocking before, when serving ends; a
//! process killed with SIGKILL cannot, and leaves them non-blocking.

use rustix::fs::{FileType, OFlags};
use rustix::net::SocketType;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
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

/// stdin and stdout, each on the reactor if it can be (see the module).
pub(super) fn open() -> (Input, Output, Restore) {
    let mut restore = Restore(Vec::new());
    let stderr = std::io::stderr();
    let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
    let input = polled(
        stdin.as_fd(),
        OFlags::RDONLY,
        stderr.as_fd(),
        &mut restore,
        |fd, kind| -> std::io::Result<Input> {
            Ok(match kind {
                Kind::Pipe => Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?),
                Kind::Socket => Box::new(socket(fd)?),
            })
        },
    );
    let output = polled(
        stdout.as_fd(),
        OFlags::WRONLY,
        stderr.as_fd(),
        &mut restore,
        |fd, kind| -> std::io::Result<Output> {
            Ok(match kind {
                Kind::Pipe => Box::new(tokio::net::unix::pipe::Sender::from_owned_fd(fd)?),
                Kind::Socket => Box::new(socket(fd)?),
            })
        },
    );
    (
        input.unwrap_or_else(|| Box::new(tokio::io::stdin())),
        output.unwrap_or_else(|| Box::new(tokio::io::stdout())),
        restore,
    )
}

#[derive(Clone, Copy)]
enum Kind {
    Pipe,
    Socket,
}

/// `fd` registered by `make`, if it is a pipe or a connected stream socket
/// that stderr does not share: a pipe opened anew for `access` where it
/// can be, else `fd` itself made non-blocking. Then blocking mode is put
/// back at once if `make` fails (the caller then falls back to tokio's
/// pool, which needs it), else by `restore` when serving ends.
fn polled<T>(
    fd: BorrowedFd<'_>,
    access: OFlags,
    stderr: BorrowedFd<'_>,
    restore: &mut Restore,
    make: impl FnOnce(OwnedFd, Kind) -> std::io::Result<T>,
) -> Option<T> {
    let stat = rustix::fs::fstat(fd).ok()?;
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::Fifo => Kind::Pipe,
        FileType::Socket
            if rustix::net::sockopt::socket_type(fd).ok()? == SocketType::STREAM
                && !rustix::net::sockopt::socket_acceptconn(fd).ok()? =>
        {
            Kind::Socket
        }
        _ => return None,
    };
    if rustix::fs::fstat(stderr).is_ok_and(|e| (e.st_dev, e.st_ino) == (stat.st_dev, stat.st_ino)) {
        return None;
    }
    if let Kind::Pipe = kind
        && let Some(own) = reopened(fd, access, &stat)
    {
        return make(own, kind)
            .inspect_err(|e| {
                tracing::debug!("MCP over stdio: not polling fd {}: {e}", fd.as_raw_fd())
            })
            .ok();
    }
    let was_blocking = !rustix::fs::fcntl_getfl(fd).ok()?.contains(OFlags::NONBLOCK);
    let keep = fd.try_clone_to_owned().ok()?;
    let ours = fd.try_clone_to_owned().ok()?;
    match make(ours, kind) {
        Ok(made) => {
            if was_blocking {
                restore.0.push(keep);
            }
            Some(made)
        }
        Err(e) => {
            tracing::debug!("MCP over stdio: not polling fd {}: {e}", fd.as_raw_fd());
            if was_blocking {
                let _ = rustix::io::ioctl_fionbio(&keep, false);
            }
            None
        }
    }
}

/// A new non-blocking open file, for `access`, of the anonymous pipe `fd`
/// is (whose status is `stat`), if `fd` itself is open for `access`.
/// `None` without `/proc`, where the pipe is another user's, or for a
/// named FIFO: one opened anew without a writer never reports the hang-up
/// of the writers before it (`EPOLLHUP`), so its end would never be seen.
fn reopened(fd: BorrowedFd<'_>, access: OFlags, stat: &rustix::fs::Stat) -> Option<OwnedFd> {
    const PIPEFS_MAGIC: i64 = 0x5049_5045;
    if rustix::fs::fstatfs(fd).ok()?.f_type as i64 != PIPEFS_MAGIC {
        return None;
    }
    // Opened anew, a read end could be written through (and a write end
    // read): only the access `fd` already has.
    let mode = rustix::fs::fcntl_getfl(fd).ok()? & OFlags::ACCMODE;
    if mode != access && mode != OFlags::RDWR {
        return None;
    }
    let own = rustix::fs::open(
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        access | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        rustix::fs::Mode::empty(),
    )
    .ok()?;
    // The link names the open file itself; checked all the same.
    let new = rustix::fs::fstat(&own).ok()?;
    ((new.st_dev, new.st_ino) == (stat.st_dev, stat.st_ino)).then_some(own)
}

/// A stream socket on the reactor (tokio's Unix stream reads and writes
/// any stream socket with `recv` and `send`).
fn socket(fd: OwnedFd) -> std::io::Result<tokio::net::UnixStream> {
    let s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(s)
}
