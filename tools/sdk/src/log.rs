//! Leveled messages to the host's log and audit trail.
//!
//! Use these rather than printing: a tool's stdout and stderr are captured
//! into small buffers and never reach the host's own streams.

use crate::bindings::warden::tool::log::{Level, log};

pub fn trace(message: &str) {
    log(Level::Trace, message)
}

pub fn debug(message: &str) {
    log(Level::Debug, message)
}

pub fn info(message: &str) {
    log(Level::Info, message)
}

pub fn warn(message: &str) {
    log(Level::Warn, message)
}

pub fn error(message: &str) {
    log(Level::Error, message)
}
