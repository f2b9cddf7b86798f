//! Rights carried on a handle. None implies another.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One right on a file system handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    /// Inspect: read files, list directories, stat.
    Read,
    /// Change: create, overwrite, append, truncate, make directories.
    Write,
    /// Remove files and directories.
    Delete,
}

impl Right {
    pub const ALL: [Right; 3] = [Right::Read, Right::Write, Right::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Delete => "delete",
        }
    }

    const fn bit(self) -> u8 {
        match self {
            Right::Read => 1,
            Right::Write => 2,
            Right::Delete => 4,
        }
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Right {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Right::Read),
            "write" => Ok(Right::Write),
            "delete" => Ok(Right::Delete),
            other => Err(format!(
                "unknown right '{other}' (expected read, write or delete)"
            )),
        }
    }
}

/// A set of [`Right`]s.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rights(u8);

impl Rights {
    pub const NONE: Rights = Rights(0);
    pub const READ: Rights = Rights(Right::Read.bit());
    pub const WRITE: Rights = Rights(Right::Write.bit());
    pub const DELETE: Rights = Rights(Right::Delete.bit());

    pub fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn has(self, right: Right) -> bool {
        self.0 & right.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    pub const fn intersection(self, other: Rights) -> Rights {
        Rights(self.0 & other.0)
    }

    /// The rights in `self` that `ceiling` does not hold.
    pub fn excess_over(self, ceiling: Rights) -> Rights {
        Rights(self.0 & !ceiling.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Right> {
        Right::ALL.into_iter().filter(move |r| self.has(*r))
    }
}

impl From<Right> for Rights {
    fn from(r: Right) -> Self {
        Rights(r.bit())
    }
}

impl FromIterator<Right> for Rights {
    fn from_iter<I: IntoIterator<Item = Right>>(iter: I) -> Self {
        iter.into_iter()
            .fold(Rights::NONE, |acc, r| acc.union(r.into()))
    }
}

impl std::ops::BitOr for Rights {
    type Output = Rights;
    fn bitor(self, rhs: Rights) -> Rights {
        self.union(rhs)
    }
}

/// `read,write`; `none` for the empty set.
impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<_> = self.iter().map(Right::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rights({self})")
    }
}

/// Parses a comma-separated list such as `read,write`.
impl FromStr for Rights {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Err(
                "no rights given (expected a comma-separated list of read, write, delete)".into(),
            );
        }
        s.split(',').map(|r| r.trim().parse::<Right>()).collect()
    }
}

impl Serialize for Rights {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Rights {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Right>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_right_implies_another() {
        for r in Right::ALL {
            let only = Rights::from(r);
            for other in Right::ALL.into_iter().filter(|o| *o != r) {
                assert!(!only.has(other), "{r} must not imply {other}");
            }
        }
    }

    #[test]
    fn parses_lists_and_rejects_unknown_rights() {
        assert_eq!(
            "read,write".parse::<Rights>().unwrap(),
            Rights::READ | Rights::WRITE
        );
        assert_eq!("delete".parse::<Rights>().unwrap(), Rights::DELETE);
        let err = "read,deploy".parse::<Rights>().unwrap_err();
        assert_eq!(
            err,
            "unknown right 'deploy' (expected read, write or delete)"
        );
        assert!("".parse::<Rights>().is_err());
    }

    #[test]
    fn excess_names_what_the_ceiling_lacks() {
        let grant = Rights::READ | Rights::DELETE;
        assert_eq!(grant.excess_over(Rights::READ).to_string(), "delete");
        assert!(Rights::READ.excess_over(grant).is_empty());
    }
}
