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

/// The environment variables that set the filter, the first set one wins.
const FILTER_VARS: [&str; 2] = ["WARDEN_LOG", "RUST_LOG"];

pub fn init(verbose: bool) {
    let default = if verbose { "warn,warden=debug" } else { "warn" };
    let mut filter = filter(default);
    // No log level may print the values a tool handles (secrets included).
    for target in warden::VALUE_LOG_TARGETS {
        if let Ok(off) = format!("{target}=off").parse() {
            filter = filter.add_directive(off);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(std::io::stderr)
        .init();
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
