//! Guest paths: relative, inside the handle, spelled one way.

use std::fmt;

/// A path that passed [`check`]: relative, no `..`, no NUL, no trailing slash.
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
    Absolute,
    Parent,
    TrailingSlash,
    Backslash,
    EmptyComponent,
    DotComponent,
}

impl PathError {
    /// Escape attempts are `denied`; an empty path is merely invalid.
    pub fn is_escape(self) -> bool {
        !matches!(self, PathError::Empty)
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
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
        ];
        for (p, want) in cases {
            assert_eq!(check(p), Err(want), "{p:?}");
        }
    }
}
