//! Standard output for every command.
//!
//! `println!` panics when stdout is a closed pipe (`warden describe T | head
//! -1`). Commands print through [`outln!`] and [`out!`] instead: a closed
//! pipe ends the command quietly with status 141 (what a shell reports for a
//! process ended by SIGPIPE, as `cat` would be), any other write error is a
//! host failure (status 3) naming stdout.

use crate::{Failure, shown};
use std::fmt;
use std::io::Write as _;
use warden::manifest::ManifestError;

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

/// `eprintln!` for commands: `errln!(...)`. A closed or failing stderr
/// (`warden audit verify T 2>&1 | head -1`) is not a panic: there is nowhere
/// left to say anything, so the write is dropped and the command ends with
/// its own status.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::out::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {errln, out, outln};

/// Writes to stderr; an error is ignored (see [`errln!`]).
pub fn write_err(args: fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// Prints a command's error on stderr: a manifest's problems one line
/// each (as `warden check` lists them), anything else as [`error_text`].
pub fn error(error: &anyhow::Error, verbose: bool) {
    let manifest = error
        .chain()
        .find_map(|e| match e.downcast_ref::<warden::Error>() {
            Some(warden::Error::Manifest(m)) => Some(m),
            _ => e.downcast_ref::<ManifestError>(),
        });
    match manifest {
        Some(m) if !verbose => m
            .to_string()
            .lines()
            .for_each(|line| errln!("error: {}", shown(line))),
        _ => errln!("error: {}", error_text(error, verbose)),
    }
}

/// An error chain as the CLI prints it: one line (`a: b: c`), or with
/// `verbose` each cause on a line of its own (and the backtrace, when one
/// was captured); either way with control characters escaped, since a
/// tool's message, a manifest path or a tool-chosen path can be anywhere in
/// the chain.
fn error_text(error: &anyhow::Error, verbose: bool) -> String {
    if !verbose {
        return shown(&format!("{error:#}")).into_owned();
    }
    let mut out = shown(&error.to_string()).into_owned();
    let causes: Vec<String> = error.chain().skip(1).map(|c| c.to_string()).collect();
    if !causes.is_empty() {
        out.push_str("\n\nCaused by:");
        for (i, c) in causes.iter().enumerate() {
            out.push_str(&format!("\n    {i}: {}", shown(c)));
        }
    }
    let trace = error.backtrace();
    if trace.status() == std::backtrace::BacktraceStatus::Captured {
        out.push_str(&format!("\n\nStack backtrace:\n{trace}"));
    }
    out
}
