//! The `log` capability: tool messages to the host's tracing output and the
//! audit trail, cut to a size limit and a count limit per invocation.

use crate::audit::Event;
use crate::bindings::warden::tool::log::{Host, Level};
use crate::state::HostState;

/// Limits on what a tool may log in one invocation.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Bytes per message; longer messages are cut.
    pub max_message: usize,
    /// Messages per invocation; later ones are counted, not kept.
    pub max_messages: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            max_message: 4096,
            max_messages: 256,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct LogState {
    pub(crate) written: u32,
    pub(crate) dropped: u32,
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("…[truncated]");
    }
    s
}

impl Host for HostState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if self.log.written >= self.log_limits.max_messages {
            self.log.dropped += 1;
            return Ok(());
        }
        self.log.written += 1;
        let message = self
            .redactor
            .redact_string(truncate(message, self.log_limits.max_message));
        let (tool, inv) = (&*self.audit.tool, &*self.audit.invocation);
        match level {
            Level::Trace => {
                tracing::trace!(target: "warden::tool", tool, invocation = inv, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "warden::tool", tool, invocation = inv, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "warden::tool", tool, invocation = inv, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "warden::tool", tool, invocation = inv, "{message}")
            }
            Level::Error => {
                tracing::error!(target: "warden::tool", tool, invocation = inv, "{message}")
            }
        }
        let mut r = self.audit.record(Event::Log);
        r.level = Some(level_name(level).into());
        r.message = Some(message);
        self.write_audit(&r)
    }
}
