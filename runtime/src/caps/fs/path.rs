//! Guest paths: relative, inside the handle, spelled one way.

use std::fmt;

/// A path that passed [`check`]: relative, no `..`, no NUL or other control
/// character, no trailing slash.
/// The only form file system operations accept.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedPath<'a>(&'a str);

impl<'a> CheckedPath<'a> {
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// Whether this names the handle's root directory.
    pub fn is_root(&self) -> bool {
        self.0 == "."
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    Empty,
    Nul,
    /// A control character other than NUL (a newline would forge a line
    /// wherever the path is shown, e.g. an approval prompt).
    Control(char),
    Absolute,
    Parent,
    TrailingSlash,
    Backslash,
    EmptyComponent,
    DotComponent,
}

impl PathError {
    /// Escape attempts are `denied`; an empty path or one with a control
    /// character is merely invalid.
    pub fn is_escape(self) -> bool {
        !matches!(self, PathError::Empty | PathError::Control(_))
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let PathError::Control(c) = self {
            return write!(
                f,
                "path contains the control character U+{:04X} (expected printable characters only)",
                u32::from(*c)
            );
        }
        f.write_str(match self {
            PathError::Control(_) => "path contains a control character",
            PathError::Empty => "empty path (expected a path relative to the handle, or '.')",
            PathError::Nul => "path contains a NUL byte",
            PathError::Absolute => "absolute path (expected a path relative to the handle)",
            PathError::Parent => "path contains '..' (expected a path inside the handle)",
            PathError::TrailingSlash => {
                "path ends with '/' (expected a path without a trailing slash)"
            }
            PathError::Backslash => "path contains '\\' (expected '/' as the only separator)",
            PathError::EmptyComponent => "path contains '//' (expected single '/' separators)",
            PathError::DotComponent => {
                "path contains a '.' component (expected '.' only as the whole path)"
            }
        })
    }
}

/// Checks a guest path. `.` alone names the handle's root.
pub fn check(path: &str) -> Result<CheckedPath<'_>, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.contains('\0') {
        return Err(PathError::Nul);
    }
    if let Some(c) = path.chars().find(|c| c.is_control()) {
        return Err(PathError::Control(c));
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    if path == "." {
        return Ok(CheckedPath(path));
    }
    if path.ends_with('/') {
        return Err(PathError::TrailingSlash);
    }
    for part in path.split('/') {
        match part {
            ".." => return Err(PathError::Parent),
            "." => return Err(PathError::DotComponent),
            "" => return Err(PathError::EmptyComponent),
            _ => {}
        }
    }
    Ok(CheckedPath(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_relative_paths() {
        for p in [
            ".",
            "a",
            "src/lib.rs",
            ".github/workflows/ci.yml",
            "a..b",
            "...",
            "日本/語",
        ] {
            assert_eq!(check(p).unwrap().as_str(), p);
        }
    }

    #[test]
    fn refuses_every_escape_form() {
        let cases = [
            ("", PathError::Empty),
            ("..", PathError::Parent),
            ("../etc/passwd", PathError::Parent),
            ("a/../../b", PathError::Parent),
            ("a/..", PathError::Parent),
            ("/etc/passwd", PathError::Absolute),
            ("//etc", PathError::Absolute),
            ("a/", PathError::TrailingSlash),
            ("a/.", PathError::DotComponent),
            ("./a", PathError::DotComponent),
            ("a//b", PathError::EmptyComponent),
            ("a\0b", PathError::Nul),
            ("..\\..\\etc", PathError::Backslash),
            ("a\nb", PathError::Control('\n')),
            ("ok.txt\r\nApprove? yes", PathError::Control('\r')),
            ("a\u{1b}[2Jb", PathError::Control('\u{1b}')),
            ("a\u{7f}", PathError::Control('\u{7f}')),
            ("a\u{85}b", PathError::Control('\u{85}')),
        ];
        for (p, want) in cases {
            assert_eq!(check(p), Err(want), "{p:?}");
        }
    }

    #[test]
    fn a_control_character_is_named_in_the_refusal() {
        let e = check("a.txt\nApprove: yes").unwrap_err();
        assert_eq!(
            e.to_string(),
            "path contains the control character U+000A (expected printable characters only)"
        );
        assert!(!e.is_escape());
    }
}
