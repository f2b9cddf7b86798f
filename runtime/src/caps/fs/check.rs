//! The fs capability's built-in check: pure functions over a call's checked
//! paths, the handle's rights and the call's size.

use super::path::{CheckedPath, PathError};
use crate::policy::Decision;
use crate::policy::gate::{SUMMARY_CONTENTS, SUMMARY_PART, summary_part};
use crate::redact::Redactor;
use crate::rights::Rights;

/// Actions that must never apply to a handle's root directory itself.
const DESTRUCTIVE: [&str; 3] = ["remove-file", "remove-dir", "rename"];

/// A file system host call, as the built-in check sees it.
pub struct FsRequest<'a, 'p> {
    pub handle: &'a str,
    pub action: &'static str,
    /// The checked path(s) of the call, or why a path was refused.
    pub paths: &'a [Result<CheckedPath<'p>, PathError>],
    /// Rights the handle holds.
    pub held: Rights,
    /// Rights the action needs.
    pub needs: Rights,
    /// Bytes the call carries (contents written, size truncated to).
    pub bytes: usize,
    /// Most bytes one host call may carry.
    pub limit: usize,
}

/// One fs call as the host impl describes it to `FsView::run`.
pub(super) struct Call<'a> {
    pub(super) action: &'static str,
    pub(super) paths: Vec<&'a str>,
    pub(super) needs: Rights,
    /// Bytes the call carries.
    pub(super) bytes: usize,
    /// Canonical arguments beyond the paths (e.g. a content digest), for
    /// approvals.
    pub(super) args: String,
    /// Contents written, shown (redacted, bounded) in an approval's summary.
    pub(super) preview: &'a [u8],
    /// The call changes every path beneath a directory it names (a
    /// recursive remove, a rename).
    pub(super) subtree: bool,
}

impl Call<'_> {
    /// Whether the call's final symlink is followed (reading, writing,
    /// listing) or is itself the object (stat, remove, rename).
    pub(super) fn follows_last(&self) -> bool {
        matches!(
            self.action,
            "read" | "list" | "write" | "append" | "truncate" | "create-dir"
        )
    }

    /// Whether the call opens its object as a regular file.
    pub(super) fn needs_regular(&self) -> bool {
        matches!(self.action, "read" | "write" | "append" | "truncate")
    }
}

pub(super) fn simple<'a>(action: &'static str, paths: Vec<&'a str>, needs: Rights) -> Call<'a> {
    Call {
        action,
        paths,
        needs,
        bytes: 0,
        args: String::new(),
        preview: &[],
        subtree: false,
    }
}

/// Paths as records and summaries show them, `from -> to`: each quoted
/// (as a JSON string) when it holds what would make the line read as
/// something else — an arrow, a quote, a parenthesis, a semicolon, or
/// spaces at either end — so `rename("a -> b", "c")` and
/// `rename("a", "b -> c")` read differently, and no name fakes a
/// summary's parts.
pub(super) fn joined<S: AsRef<str>>(paths: &[S]) -> String {
    let shown: Vec<std::borrow::Cow<'_, str>> = paths.iter().map(|p| quoted(p.as_ref())).collect();
    shown.join(" -> ")
}

fn quoted(p: &str) -> std::borrow::Cow<'_, str> {
    if plain(p) {
        p.into()
    } else {
        serde_json::Value::from(p).to_string().into()
    }
}

/// [`joined`] with each path cut to `max` bytes first, quoted as it would
/// be whole: an over-long resource's start, at a bounded cost.
pub(super) fn joined_cut<S: AsRef<str>>(paths: &[S], max: usize) -> String {
    use crate::policy::gate::cut;
    let shown: Vec<std::borrow::Cow<'_, str>> = (paths.iter().map(|p| p.as_ref()))
        .map(|p| match plain(p) {
            true => cut(p, max),
            false => serde_json::Value::from(cut(p, max).as_ref())
                .to_string()
                .into(),
        })
        .collect();
    shown.join(" -> ")
}

fn plain(p: &str) -> bool {
    !p.is_empty()
        && !p.contains("->")
        && !p.contains(['"', '\'', '(', ')', ';'])
        && !p.starts_with(char::is_whitespace)
        && !p.ends_with(char::is_whitespace)
}

/// The length of [`joined`]`(paths)`, counted: a path of megabytes (six
/// bytes an escaped control character) is refused by its length, not
/// quoted first.
pub(super) fn joined_len<S: AsRef<str>>(paths: &[S]) -> usize {
    let quoted_len = |p: &str| {
        if plain(p) {
            return p.len();
        }
        let escaped = |c: char| match c {
            '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
            c if c < ' ' => 6,
            c => c.len_utf8(),
        };
        2 + p.chars().map(escaped).sum::<usize>()
    };
    let each: usize = paths.iter().map(|p| quoted_len(p.as_ref())).sum();
    each + " -> ".len() * paths.len().saturating_sub(1)
}

/// A record's resource with where its paths lead, when a link makes that
/// other paths than the tool gave: the trail names the files acted on, not
/// only their aliases. Redacted, then cut: each lead keeps its end (where
/// it lands), so a long one cannot push another out, and the tool's own
/// paths give way to stay within the gate's resource limit.
pub(crate) fn with_leads(resource: &str, leads: &[String], redactor: &Redactor) -> String {
    use crate::policy::gate::{MAX_RESOURCE, cut};
    const SAID: &str = "; resolves to ";
    let leads: Vec<_> = leads
        .iter()
        .map(|l| ending(&redactor.redact(l), LEAD))
        .collect();
    let to = joined(&leads);
    // Room for the cut's own `…[N bytes]`.
    let room = MAX_RESOURCE.saturating_sub(to.len() + SAID.len() + 24);
    format!("{}{SAID}{to}", cut(&redactor.redact(resource), room))
}

/// The most of each path a link leads to that a record names.
const LEAD: usize = 512;

/// The last `max` bytes of `s` (from a character's start), after how long
/// it was: `[900 bytes]…/.github/workflows/x.yml`.
fn ending(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[{} bytes]…{}", s.len(), &s[start..])
}

/// Whether a call makes its file or replaces what is there, as decided on
/// the objects its paths resolved to (the last one: a rename's `to`).
pub(super) fn fate(action: &str, resolved: &[super::resolve::Resolved]) -> Option<String> {
    let kind = resolved.last()?.kind;
    let what = |k: cap_std::fs::FileType| match (k.is_dir(), k.is_symlink()) {
        (true, _) => "directory",
        (_, true) => "link",
        _ => "file",
    };
    match (action, kind) {
        ("write", None) => Some("creates it".into()),
        ("write", Some(_)) => Some("replaces the existing file".into()),
        ("rename", Some(k)) => Some(format!("replaces the existing {}", what(k))),
        _ => None,
    }
}

/// A call as its approver reads it.
pub(super) struct Shown<'a> {
    pub(super) action: &'a str,
    /// The paths as the tool gave them.
    pub(super) paths: &'a [&'a str],
    /// Where they lead inside the handle, when a link makes that another
    /// path.
    pub(super) leads: Option<&'a [String]>,
    pub(super) handle: &'a str,
    pub(super) bytes: usize,
    /// Canonical arguments beyond the paths (a content digest).
    pub(super) args: &'a str,
    /// Contents written.
    pub(super) preview: &'a [u8],
}

impl Shown<'_> {
    /// `write docs/ci/a.yml (resolves to .github/workflows/a.yml) on handle
    /// 'repo' (5 bytes, sha256 …); contents: "…"`. Each path and the
    /// contents are redacted whole, then cut ([`summary_part`]): no secret
    /// is split where the preview ends, and no path long enough to fill the
    /// summary hides where a link leads.
    pub(super) fn summary(&self, redactor: &Redactor) -> String {
        let part = |p: &str| summary_part(redactor, p.as_bytes(), SUMMARY_PART);
        let paths: Vec<String> = self.paths.iter().map(|p| part(p)).collect();
        let mut s = format!("{} {}", self.action, joined(&paths));
        if let Some(to) = self.leads {
            let to: Vec<String> = to.iter().map(|p| part(p)).collect();
            s.push_str(&format!(" (resolves to {})", joined(&to)));
        }
        s.push_str(&format!(" on handle '{}'", self.handle));
        match (
            self.args.is_empty(),
            matches!(self.action, "write" | "append"),
        ) {
            (true, _) => {}
            (false, true) => s.push_str(&format!(" ({} bytes, {})", self.bytes, self.args)),
            (false, false) => s.push_str(&format!(" ({})", self.args)),
        }
        if !self.preview.is_empty() {
            let contents = summary_part(redactor, self.preview, SUMMARY_CONTENTS);
            s.push_str(&format!("; contents: \"{contents}\""));
        }
        s
    }
}

/// Deny by default: a call is allowed only when its paths stay inside the
/// handle, the handle holds every right the action needs, and the call is
/// within the host call limit.
pub fn decide(req: &FsRequest<'_, '_>) -> Decision {
    for p in req.paths {
        match p {
            Err(e) => return Decision::deny("fs.path", e.to_string()),
            Ok(p) if p.is_root() && DESTRUCTIVE.contains(&req.action) => {
                return Decision::deny(
                    "fs.root",
                    format!(
                        "{} of the root of handle '{}' is not allowed",
                        req.action, req.handle
                    ),
                );
            }
            Ok(_) => {}
        }
    }
    let missing = req.needs.excess_over(req.held);
    if !missing.is_empty() {
        return Decision::deny(
            "fs.rights",
            format!(
                "{} needs the {} right on handle '{}', which holds {}",
                req.action, missing, req.handle, req.held
            ),
        );
    }
    if req.bytes > req.limit {
        return Decision::deny(
            "fs.size",
            format!(
                "{} bytes exceed the host call limit of {} bytes",
                req.bytes, req.limit
            ),
        );
    }
    Decision::allow(
        "fs.rights",
        format!("handle '{}' holds {}", req.handle, req.needs),
    )
}

/// Opening a handle by name: only handles in the task's grant exist.
pub fn decide_open(handle: &str, granted: bool) -> Decision {
    if granted {
        Decision::allow("fs.handle", format!("handle '{handle}' is in the grant"))
    } else {
        Decision::deny(
            "fs.handle",
            format!("no handle '{handle}' in this task's grant"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::fs::path;

    #[test]
    fn the_length_of_joined_paths_is_counted_exactly() {
        let all: String = (0u8..0x80).map(char::from).collect();
        let cases: [&[&str]; 6] = [
            &[],
            &["src/lib.rs"],
            &["a -> b", "c"],
            &["", " x", "é\u{202e}\"q\\", "(;)"],
            &[&all, "tab\there", "\u{7f}\u{85}"],
            &["a\u{1}b", "日本"],
        ];
        for paths in cases {
            assert_eq!(joined_len(paths), joined(paths).len(), "{paths:?}");
        }
    }

    fn decide_one(
        action: &'static str,
        p: &str,
        held: Rights,
        needs: Rights,
        bytes: usize,
    ) -> Decision {
        let paths = [path::check(p)];
        decide(&FsRequest {
            handle: "ws",
            action,
            paths: &paths,
            held,
            needs,
            bytes,
            limit: 10,
        })
    }

    /// A path long enough to fill what an approver is shown does not hide
    /// where a link leads: each path is cut on its own; and a secret in
    /// the contents is redacted whole before the contents are cut.
    #[test]
    fn a_name_cannot_fake_a_summarys_parts() {
        let fake = r#"notes.txt on handle 'ws' (5 bytes); contents: "hello"#;
        let to = [".github/workflows/ci.yml".to_owned()];
        let shown = Shown {
            action: "write",
            paths: &[fake],
            leads: Some(&to),
            handle: "ws",
            bytes: 2,
            args: "sha256 00",
            preview: b"hi",
        };
        assert_eq!(
            shown.summary(&Redactor::new(Vec::<(&str, &str)>::new())),
            r#"write "notes.txt on handle 'ws' (5 bytes); contents: \"hello" (resolves to .github/workflows/ci.yml) on handle 'ws' (2 bytes, sha256 00); contents: "hi""#
        );
        assert_eq!(
            joined(&["a", " b", "c -> d", ""]),
            r#"a -> " b" -> "c -> d" -> """#
        );
    }

    /// A long path a link leads to cannot push another out of the record,
    /// and the record stays within the gate's resource limit.
    #[test]
    fn each_lead_is_cut_on_its_own() {
        let long = format!("{}/f", "A".repeat(4060));
        let leads = [long.clone(), ".github/workflows/x.yml".to_owned()];
        let resource = format!("ws:{long} -> docs-link/workflows/x.yml");
        let none = Redactor::new(Vec::<(&str, &str)>::new());
        let r = with_leads(&resource, &leads, &none);
        assert!(r.ends_with(" -> .github/workflows/x.yml"), "{r}");
        assert!(r.len() <= crate::policy::gate::MAX_RESOURCE, "{}", r.len());
        let near = format!("ws:{}", "b".repeat(crate::policy::gate::MAX_RESOURCE - 3));
        let r = with_leads(&near, &leads, &none);
        assert!(r.ends_with(" -> .github/workflows/x.yml"), "{r}");
        assert!(r.len() <= crate::policy::gate::MAX_RESOURCE, "{}", r.len());
        // A lead deeper than the cut keeps its end; a secret in a path is
        // redacted before anything is cut.
        let deep = [format!("{}/.github/workflows/x.yml", "d/".repeat(400))];
        let r = with_leads("ws:l/x.yml", &deep, &none);
        assert!(r.starts_with("ws:l/x.yml; resolves to [824 bytes]…"), "{r}");
        assert!(r.ends_with("/.github/workflows/x.yml"), "{r}");
        let secret = Redactor::new([("k", "sk-live-0123456789abcdef")]);
        for n in 7550..7700 {
            let long = format!("ws:{}sk-live-0123456789abcdef", "a".repeat(n));
            let r = with_leads(&long, &deep, &secret);
            assert!(!r.contains("sk-live"), "{n}: {r}");
        }
    }

    #[test]
    fn a_long_path_does_not_hide_where_a_rename_leads() {
        let long = format!("{}/ci.yml", "d".repeat(3000));
        let to = ["x".repeat(600), ".github/workflows/ci.yml".to_owned()];
        let contents = format!("{}sk-live-0123456789abcdef", "c".repeat(1020));
        let shown = Shown {
            action: "rename",
            paths: &[&long, "docs-link/workflows/ci.yml"],
            leads: Some(&to),
            handle: "repo",
            bytes: 0,
            args: "",
            preview: contents.as_bytes(),
        };
        let redactor = Redactor::new([("api", "sk-live-0123456789abcdef")]);
        let summary = shown.summary(&redactor);
        assert_eq!(
            summary,
            format!(
                "rename {}…[3007 bytes] -> docs-link/workflows/ci.yml (resolves to {}…[600 bytes] -> .github/workflows/ci.yml) on handle 'repo'; contents: \"{}[RED…[1044 bytes]\"",
                "d".repeat(512),
                "x".repeat(512),
                "c".repeat(1020),
            )
        );
        assert!(!summary.contains("sk-l"), "{summary}");
        // Characters that escape seven times as long, in every path: each
        // is cut after escaping, so where the link leads still shows.
        let hidden = "\u{34f}".repeat(250);
        let to = [hidden.clone(), ".github/workflows/ci.yml".to_owned()];
        let shown = Shown {
            paths: &[&hidden, &format!("docs-link/{hidden}")],
            leads: Some(&to),
            preview: &[],
            ..shown
        };
        let summary = shown.summary(&redactor);
        assert!(
            summary.ends_with("-> .github/workflows/ci.yml) on handle 'repo'"),
            "{summary}"
        );
        assert!(
            summary.len() < crate::policy::gate::MAX_SUMMARY,
            "{}",
            summary.len()
        );
        assert!(!summary.contains('\u{34f}'), "{summary}");
        assert!(
            summary.len() < crate::policy::gate::MAX_SUMMARY,
            "{}",
            summary.len()
        );
    }

    #[test]
    fn each_rule_denies_with_its_name() {
        let rw = Rights::READ | Rights::WRITE;
        for (action, path, held, needs, bytes, rule, allow) in [
            (
                "read",
                "a.txt",
                Rights::READ,
                Rights::READ,
                0,
                "fs.rights",
                true,
            ),
            (
                "write",
                "a.txt",
                Rights::READ,
                Rights::WRITE,
                0,
                "fs.rights",
                false,
            ),
            ("write", "../a.txt", rw, Rights::WRITE, 0, "fs.path", false),
            ("write", "a.txt", rw, Rights::WRITE, 11, "fs.size", false),
            ("write", "a.txt", rw, Rights::WRITE, 10, "fs.rights", true),
            (
                "remove-dir",
                ".",
                Rights::DELETE,
                Rights::DELETE,
                0,
                "fs.root",
                false,
            ),
            (
                "list",
                ".",
                Rights::READ,
                Rights::READ,
                0,
                "fs.rights",
                true,
            ),
        ] {
            let d = decide_one(action, path, held, needs, bytes);
            assert_eq!((d.rule, d.allow), (rule, allow), "{action} {path}: {d:?}");
        }
    }

    #[test]
    fn a_missing_right_is_named_with_what_the_handle_holds() {
        let d = decide_one("write", "x", Rights::READ, Rights::WRITE, 0);
        assert_eq!(
            d.reason,
            "write needs the write right on handle 'ws', which holds read"
        );
        assert!(!decide_open("other", false).allow);
        assert_eq!(
            decide_open("other", false).reason,
            "no handle 'other' in this task's grant"
        );
    }
}
