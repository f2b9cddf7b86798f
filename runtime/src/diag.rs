//! Shared diagnostics for the files security writes: a [`Problem`] at a
//! line and column, the name rule every tool, handle, secret, target and
//! label follows, and the [`Checker`] each capability's manifest section
//! reports through.
//!
//! The manifest (`manifest.rs` and `caps/<cap>/manifest.rs`), grants
//! (`grant.rs`) and Cedar loading (`policy/cedar/`) all use it, so a name or
//! a position means the same thing in each.

use crate::rights::Rights;
use crate::units::{format_duration, parse_duration};
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// The longest duration a manifest may give: a tool's timeout, a secret's
/// ttl, a deploy target's timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// One problem, at a position in the manifest (line 0: the whole file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Set when the problem is in another file the manifest names (a
    /// policy file).
    pub file: Option<PathBuf>,
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field, e.g. `tools.read-files.fs[0].rights`.
    pub field: String,
    pub message: String,
}

impl Problem {
    /// A problem with the whole file, not a place in it.
    pub(crate) fn whole_file(message: String) -> Self {
        Self {
            file: None,
            line: 0,
            column: 0,
            field: String::new(),
            message,
        }
    }
}

/// An action that waits for a person's approval by default and that the
/// manifest lets run without one (`approval = "none"` on its item).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiver {
    pub line: usize,
    pub column: usize,
    /// Dotted path of the approval field, e.g. `tools.ship.deploy[0].approval`.
    pub field: String,
    /// What runs without approval, e.g. `deploy target 'production'`.
    pub what: String,
}

impl std::fmt::Display for Waiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}: {} runs without approval",
            self.line, self.column, self.field, self.what
        )
    }
}

/// Tool and handle names: lower-case letters, digits, `-` and `_`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' (expected 1 to 64 lower-case letters, digits, '-' or '_', starting with a letter or digit)"
        ))
    }
}

/// The 1-based line and column (in characters) of a byte offset in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Collects the problems found in one text, each at the position of the
/// span it is about.
pub(crate) struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
    waivers: Vec<Waiver>,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self {
            text,
            problems: Vec::new(),
            waivers: Vec::new(),
        }
    }

    /// How many problems so far: a section compares it before and after to
    /// know whether it found any.
    pub(crate) fn count(&self) -> usize {
        self.problems.len()
    }

    pub(crate) fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    pub(crate) fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    /// A problem at the start of `span`.
    pub(crate) fn problem(&mut self, span: Range<usize>, field: String, message: String) {
        let (line, column) = line_col(self.text, span.start);
        self.problems.push(Problem {
            file: None,
            line,
            column,
            field,
            message,
        });
    }

    /// An approval field: `"required"` (a person approves each use) or
    /// `"none"`. `default` is why a person approves when the field is
    /// absent (the action changes state outside the task's handles or
    /// exposes a secret), or `None` when nobody need. `"none"` where a
    /// person would approve by default is a [`Waiver`], listed by `warden
    /// check`.
    pub(crate) fn approval(
        &mut self,
        v: Option<Spanned<String>>,
        field: String,
        default: Option<&str>,
    ) -> bool {
        let Some(v) = v else {
            return default.is_some();
        };
        match (v.get_ref().as_str(), default) {
            ("required", _) => true,
            ("none", None) => false,
            ("none", Some(what)) => {
                let (line, column) = line_col(self.text, v.span().start);
                self.waivers.push(Waiver {
                    line,
                    column,
                    field,
                    what: what.to_owned(),
                });
                false
            }
            (other, _) => {
                self.problem(
                    v.span(),
                    field,
                    format!("approval = '{other}' (expected \"required\" or \"none\")"),
                );
                false
            }
        }
    }

    /// The waivers found, in file order.
    pub(crate) fn take_waivers(&mut self) -> Vec<Waiver> {
        let mut waivers = std::mem::take(&mut self.waivers);
        waivers.sort_by_key(|w| (w.line, w.column));
        waivers
    }

    /// Sensitivity labels: names like tool names.
    pub(crate) fn labels(
        &mut self,
        raw: Option<Spanned<Vec<String>>>,
        field: String,
    ) -> Vec<String> {
        let Some(raw) = raw else {
            return Vec::new();
        };
        let span = raw.span();
        let labels = raw.into_inner();
        for l in &labels {
            if let Err(e) = check_name(l) {
                self.problem(span.clone(), field.clone(), format!("invalid label {e}"));
            }
        }
        labels
    }

    /// A duration above 0 and at most [`MAX_TIMEOUT`]; `what` names it in
    /// the message (`timeout`, `ttl`).
    pub(crate) fn duration(
        &mut self,
        raw: &Spanned<String>,
        field: String,
        what: &str,
    ) -> Option<Duration> {
        match parse_duration(raw.get_ref()) {
            Ok(d) if !d.is_zero() && d <= MAX_TIMEOUT => Some(d),
            Ok(_) => {
                self.problem(
                    raw.span(),
                    field,
                    format!(
                        "{what} must be above 0 and at most {}",
                        format_duration(MAX_TIMEOUT)
                    ),
                );
                None
            }
            Err(e) => {
                self.problem(raw.span(), field, e);
                None
            }
        }
    }
}

/// The manifest entries (`entries`, named by `name_of`) that a grant names
/// (`granted`); an unknown name is refused with `unknown(name, known names)`.
/// Secrets and deploy targets are authorized with it.
pub(crate) fn by_name<'a, T: Clone + 'a>(
    granted: &BTreeSet<String>,
    entries: &'a [T],
    name_of: impl Fn(&T) -> &str,
    unknown: impl Fn(String, String) -> GrantError,
) -> Result<Vec<T>, GrantError> {
    granted
        .iter()
        .map(|name| {
            entries
                .iter()
                .find(|e| name_of(e) == name)
                .cloned()
                .ok_or_else(|| {
                    let known: Vec<_> = entries.iter().map(&name_of).collect();
                    let known = if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    };
                    unknown(name.clone(), known)
                })
        })
        .collect()
}

/// A grant that cannot be given as written.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error(
        "invalid grant '{spec}': {reason} (expected fs:HANDLE=DIR:RIGHTS, e.g. fs:repo=./src:read,write, secret:NAME, http:[METHODS=]URL or deploy:TARGET)"
    )]
    Syntax { spec: String, reason: String },
    #[error("{}: {message}", file.display())]
    File { file: PathBuf, message: String },
    #[error("handle '{handle}' is granted twice (expected one grant per handle)")]
    Duplicate { handle: String },
    #[error(
        "grant for handle '{handle}' refused: tool '{tool}' has no such handle in the manifest (its handles: {known})"
    )]
    UnknownHandle {
        tool: String,
        handle: String,
        known: String,
    },
    #[error("grant for handle '{handle}' refused: {} is not inside {}, the manifest's ceiling for it", path.display(), within.display())]
    OutsideCeiling {
        handle: String,
        path: PathBuf,
        within: PathBuf,
    },
    #[error(
        "grant for handle '{handle}' refused: rights {excess} exceed the manifest's ceiling ({ceiling})"
    )]
    RightsExceedCeiling {
        handle: String,
        excess: Rights,
        ceiling: Rights,
    },
    #[error("grant for handle '{handle}' refused: cannot open directory {}: {source}", path.display())]
    Open {
        handle: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret '{name}' is granted twice")]
    DuplicateSecret { name: String },
    #[error(
        "grant for secret '{name}' refused: tool '{tool}' has no such secret in the manifest (its secrets: {known})"
    )]
    UnknownSecret {
        tool: String,
        name: String,
        known: String,
    },
    #[error(
        "grant for deploy target '{name}' refused: tool '{tool}' has no such target in the manifest (its targets: {known})"
    )]
    UnknownTarget {
        tool: String,
        name: String,
        known: String,
    },
    #[error("grant for egress to {url} refused: {reason}")]
    HttpOutsideCeiling {
        tool: String,
        url: String,
        reason: String,
    },
    /// The message from [`check_task`], which names the problem itself.
    #[error("{0}")]
    Task(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "read-files", "0day", "a_b"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "Bad", "-a", "a.b", &"a".repeat(65)] {
            let e = check_name(bad).unwrap_err();
            assert!(e.contains("expected 1 to 64 lower-case letters"), "{e}");
        }
    }

    #[test]
    fn lines_and_columns_count_characters() {
        let text = "ab\ncé\nx";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 3), (2, 1));
        assert_eq!(line_col(text, 6), (2, 3));
        assert_eq!(line_col(text, 100), (3, 2));
    }
}
