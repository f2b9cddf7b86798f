//! The `log` capability: tool messages to the host's tracing output and the
//! audit trail, cut to a size limit and a count limit per invocation.

use crate::audit::Event;
use crate::bindings::warden::tool::log::{Host, Level};
use crate::policy::gate::Gate;
use wasmtime::component::{HasData, Linker};

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

/// What the log host impl sees of the store.
pub(crate) struct LogView<'a> {
    pub(crate) state: &'a mut LogState,
    pub(crate) limits: LogLimits,
    pub(crate) gate: &'a Gate,
}

/// A store that can give the log host impl its view.
pub(crate) trait LogStore: Send + 'static {
    fn log(&mut self) -> LogView<'_>;
}

struct Log;

impl HasData for Log {
    type Data<'a> = LogView<'a>;
}

pub(crate) fn add_to_linker<T: LogStore>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    crate::bindings::warden::tool::log::add_to_linker::<T, Log>(linker, T::log)
}

impl Host for LogView<'_> {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        // Past its count, or once the invocation's audit budget is used up,
        // a message is counted, not kept.
        if self.state.written >= self.limits.max_messages || self.gate.over_budget() {
            self.state.dropped = self.state.dropped.saturating_add(1);
            return Ok(());
        }
        self.state.written += 1;
        // Redacted, then cut: cut first, a value across the cut would
        // keep its first bytes, no longer whole enough to be found.
        let message = truncate(
            message,
            crate::redact::REDACT_WITHIN.max(self.limits.max_message.saturating_mul(2)),
        );
        let redactor = self.gate.redactor();
        // A value held by reference is a guess: its marker would confirm
        // it (in the record's size too), so the message is refused whole.
        if let Some(name) = redactor.guessed(message.as_bytes()) {
            let reason = crate::redact::Redactor::guess_reason("the log message", &name);
            let action = level_name(level);
            self.gate.refuse_guess(reason, "log", action, &message)?;
            return Ok(());
        }
        let message = redactor.redact_string(message);
        let message = truncate(message, self.limits.max_message);
        let audit = self.gate.audit();
        // On the trail before it reaches the operator's log.
        let mut r = audit.record(Event::Log);
        r.level = Some(level_name(level).into());
        r.message = Some(message.clone());
        self.gate.write(&r)?;
        let audit = self.gate.audit();
        let (tool, inv) = (&*audit.tool, &*audit.invocation);
        // The operator's log is read on a terminal: a line break or a
        // terminal control from the tool must not forge a line there.
        let shown = crate::redact::escape_control(&message);
        match level {
            Level::Trace => {
                tracing::trace!(target: "warden::tool", tool, invocation = inv, "{shown}")
            }
            Level::Debug => {
                tracing::debug!(target: "warden::tool", tool, invocation = inv, "{shown}")
            }
            Level::Info => {
                tracing::info!(target: "warden::tool", tool, invocation = inv, "{shown}")
            }
            Level::Warn => {
                tracing::warn!(target: "warden::tool", tool, invocation = inv, "{shown}")
            }
            Level::Error => {
                tracing::error!(target: "warden::tool", tool, invocation = inv, "{shown}")
            }
        }
        Ok(())
    }
}
