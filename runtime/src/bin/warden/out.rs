//! Standard output for every command.
//!
//! `println!` panics when stdout is a closed pipe (`warden describe T | head
//! -1`). Commands print through [`outln!`] and [`out!`] instead: a closed
//! pipe ends the command quietly with status 141 (what a shell reports for a
//! process ended by SIGPIPE, as `cat` would be), any other write error is a
//! host failure (status 3) naming stdout.

use crate::Failure;
use std::fmt;
use std::io::Write as _;

/// The reader of stdout went away: the command stops, and nothing is
/// printed about it.
#[derive(Debug)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for Closed {}

/// The status a command ends with when its stdout was closed.
pub const CLOSED_STATUS: u8 = 141;

/// Writes to stdout and flushes; see the module doc for errors.
pub fn write(args: fmt::Arguments<'_>) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_fmt(args)
        .and_then(|()| stdout.flush())
        .map_err(failure)
}

/// The failure a write error on stdout maps to.
pub fn failure(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Failure {
            code: CLOSED_STATUS,
            error: Closed.into(),
        }
    } else {
        Failure {
            code: 3,
            error: anyhow::anyhow!("cannot write to stdout: {e}"),
        }
    }
}

/// `println!` for commands: `outln!(...)?`.
macro_rules! outln {
    () => {
        $crate::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for commands: `out!(...)?`.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*))
    };
}

pub(crate) use {out, outln};
