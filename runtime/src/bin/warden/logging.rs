//! Logging on stderr.
//!
//! The filter is `WARDEN_LOG` when it is set, else `RUST_LOG`, else `warn`
//! (`warn,warden=debug` with `--verbose`); both take `tracing`'s filter
//! syntax (`warn,warden=debug`, `warden::audit=trace`). Whatever the filter,
//! the targets that could print the values a tool handles stay off. Log
//! lines are coloured only when stderr is a terminal and `NO_COLOR` is unset
//! or empty (<https://no-color.org>).

use std::io::IsTerminal as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::filter::{FilterExt as _, filter_fn};
use tracing_subscriber::fmt::format::{Writer, debug_fn};
use tracing_subscriber::prelude::*;

/// The bytes of a field a log line shows (a tool's log message is cut at
/// 4 KiB before it is logged; Warden's own fields are short).
const MAX_FIELD: usize = 8 << 10;

/// The environment variables that set the filter, the first set one wins.
const FILTER_VARS: [&str; 2] = ["WARDEN_LOG", "RUST_LOG"];

pub fn init(verbose: bool) {
    let default = if verbose { "warn,warden=debug" } else { "warn" };
    // No log level may print the values a tool handles (secrets included):
    // a filter of its own, beside the one the person chose, which no
    // directive of theirs can widen (an `EnvFilter` directive `=off` is
    // overridden by a more specific target or by a span directive).
    // Its hint says it never widens the person's filter: without one, the
    // two together claim no maximum level, every `trace!` and `log::trace!`
    // of every crate is evaluated (and the `log` crate's own maximum opens
    // to TRACE), which cost the server's hot paths several times over.
    let keep_values_out = filter_fn(|meta| !hides_values(meta.target()))
        .with_max_level_hint(tracing_subscriber::filter::LevelFilter::TRACE);
    // Every field of every line is escaped for the terminal, not only
    // `message`, which is all `fmt` escapes (and only a few controls), and
    // cut: other crates log fields a peer chose (rmcp, a JSON-RPC request's
    // id, as long as the request).
    let fields = debug_fn(|w: &mut Writer<'_>, field, value| {
        let value = format!("{value:?}");
        let value = warden::redact::escape_control(&value);
        let kept = &value[..value.floor_char_boundary(MAX_FIELD)];
        match field.name() {
            "message" => write!(w, "{kept}"),
            name => write!(w, "{name}={kept}"),
        }?;
        if kept.len() < value.len() {
            write!(w, "… ({} bytes cut)", value.len() - kept.len())?;
        }
        Ok(())
    })
    .delimited(" ");
    let layer = tracing_subscriber::fmt::layer()
        .fmt_fields(fields)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(std::io::stderr)
        .with_filter(filter(default).and(keep_values_out));
    tracing_subscriber::registry().with(layer).init();
}

/// Whether `target` is one of [`warden::VALUE_LOG_TARGETS`] or beneath one.
fn hides_values(target: &str) -> bool {
    warden::VALUE_LOG_TARGETS.iter().any(|t| {
        target
            .strip_prefix(t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// The filter from the first of [`FILTER_VARS`] that is set (and not
/// empty), else `default`. A filter that does not parse is named on stderr
/// and `default` is used: a `RUST_LOG` meant for another program must not
/// stop this one.
fn filter(default: &str) -> EnvFilter {
    for var in FILTER_VARS {
        let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) else {
            continue;
        };
        let value = value.to_string_lossy();
        match EnvFilter::try_new(&*value) {
            Ok(f) => return f,
            Err(e) => {
                crate::out::errln!(
                    "warning: ignoring {var}={}: {e} (expected a filter such as `warn,warden=debug`); logging at `{default}`",
                    crate::shown(&value)
                );
                break;
            }
        }
    }
    EnvFilter::new(default)
}

/// Whether log lines get ANSI colours.
fn colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_logging_targets_and_those_beneath_them_are_kept_out() {
        assert!(hides_values("wasmtime_wasi::p2::bindings"));
        assert!(hides_values(
            "wasmtime_wasi::p2::bindings::sync::filesystem"
        ));
        assert!(hides_values(
            "wasmtime_wasi_http::p2::bindings::http::types"
        ));
        assert!(hides_values("oci_client::client"));
        assert!(hides_values(
            "wasmtime_wasi_io::bindings::wasi::io::streams"
        ));
        assert!(hides_values("tokio_postgres::query"));
        assert!(!hides_values("oci_clients"));
        assert!(!hides_values("wasmtime_wasi::p2::host"));
        assert!(!hides_values("warden::tool"));
    }
}
