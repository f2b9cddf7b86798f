//! What a task has done so far, across its invocations: the runtime
//! policy's `context.task` sets. Each set is bounded in entries and in
//! bytes: it is kept for the task's life (in this process, and in a shared
//! store beyond it) and copied into every policy question the task's calls
//! ask, and a tool chooses the paths it writes.

use std::borrow::Cow;
use std::collections::BTreeSet;

/// Entries kept per kind of task history; older entries stay, newer ones
/// beyond this are dropped (a task this busy should be split).
pub const MAX_HISTORY: usize = 4096;

/// The longest entry kept as it is. A longer one (a path of up to 8 KiB)
/// is kept as its first 80 bytes and its SHA-256 (154 bytes at most): a
/// task's `files_written` could otherwise hold 4,096 paths of 8 KiB, 32
/// MiB, copied into every policy question, and a policy names short
/// paths.
pub const MAX_ENTRY: usize = 160;

/// Bytes of entries kept per kind of task history: [`MAX_HISTORY`]
/// entries of [`MAX_ENTRY`], so the count is what fills a set (long
/// entries do not fill it sooner); a shared store's rows are read within
/// it too.
pub const MAX_HISTORY_BYTES: usize = MAX_HISTORY * MAX_ENTRY;

/// `item` as a set keeps it: itself up to [`MAX_ENTRY`] bytes, else its
/// first 80 bytes and its digest. An item that looks kept already (a path
/// a tool named `…sha256:` and 64 hex digits) is kept as its own head and
/// digest too: a policy's long string is known by its kept form
/// (`request.rs`), which a tool could otherwise write as a name.
pub(super) fn entry(item: &str) -> Cow<'_, str> {
    if item.len() <= MAX_ENTRY && !looks_kept(item) {
        return item.into();
    }
    let head = &item[..item.floor_char_boundary(80)];
    format!("{head}…{}", crate::Identity::of(item.as_bytes())).into()
}

/// Whether `item` ends as a kept entry does: `…sha256:` and 64 hex digits.
fn looks_kept(item: &str) -> bool {
    (item.rsplit_once("…sha256:"))
        .is_some_and(|(_, hex)| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// One of a task history's sets, with its size in bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Noted {
    items: BTreeSet<String>,
    bytes: usize,
}

impl Noted {
    pub fn contains(&self, item: &str) -> bool {
        self.items.contains(entry(item).as_ref())
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The size of the entries, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.items.iter().map(String::as_str)
    }

    /// Whether `items` (each new or already noted) would all be kept.
    pub fn has_room_for<'a>(&self, items: impl IntoIterator<Item = &'a str>) -> bool {
        let (mut count, mut bytes) = (self.items.len(), self.bytes);
        for item in items.into_iter().filter(|i| !self.contains(i)) {
            count += 1;
            bytes = bytes.saturating_add(entry(item).len());
        }
        count <= MAX_HISTORY && bytes <= MAX_HISTORY_BYTES
    }

    /// Adds `item` (as [`MAX_ENTRY`] keeps it) when there is room for it
    /// ([`MAX_HISTORY`], [`MAX_HISTORY_BYTES`]); whether it is noted now
    /// (or was already).
    pub fn note(&mut self, item: &str) -> bool {
        if self.contains(item) {
            return true;
        }
        if !self.has_room_for([item]) {
            return false;
        }
        self.insert(entry(item).into_owned())
    }

    /// Adds an entry another set kept (this process's, or a shared
    /// store's row) as it is, within the same bounds: kept again, a long
    /// item's head and digest would be a digest of the digest. One over
    /// [`MAX_ENTRY`] is no kept entry, and is kept as an item.
    pub fn keep(&mut self, kept: &str) -> bool {
        if kept.len() > MAX_ENTRY {
            return self.note(kept);
        }
        if self.items.contains(kept) {
            return true;
        }
        let (count, bytes) = (self.items.len() + 1, self.bytes.saturating_add(kept.len()));
        if count > MAX_HISTORY || bytes > MAX_HISTORY_BYTES {
            return false;
        }
        self.insert(kept.to_owned())
    }

    fn insert(&mut self, entry: String) -> bool {
        self.bytes += entry.len();
        self.items.insert(entry)
    }
}

impl<'a> IntoIterator for &'a Noted {
    type Item = &'a str;
    type IntoIter =
        std::iter::Map<std::collections::btree_set::Iter<'a, String>, fn(&String) -> &str>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter().map(String::as_str)
    }
}

/// What a task has done so far, across its invocations.
#[derive(Debug, Default, Clone)]
pub struct TaskHistory {
    pub secrets_revealed: Noted,
    pub hosts_contacted: Noted,
    pub files_written: Noted,
    pub targets_deployed: Noted,
}

impl TaskHistory {
    /// The sets by name, as a shared store keeps them.
    pub const KINDS: [&'static str; 4] = [
        "secrets_revealed",
        "hosts_contacted",
        "files_written",
        "targets_deployed",
    ];

    /// The set named `kind` (one of [`TaskHistory::KINDS`]).
    pub fn set(&self, kind: &str) -> Option<&Noted> {
        let i = Self::KINDS.iter().position(|k| *k == kind)?;
        Some(self.sets()[i])
    }

    /// The set named `kind` (one of [`TaskHistory::KINDS`]).
    pub fn set_mut(&mut self, kind: &str) -> Option<&mut Noted> {
        let i = Self::KINDS.iter().position(|k| *k == kind)?;
        self.sets_mut().into_iter().nth(i)
    }

    /// The sets, in the order of [`TaskHistory::KINDS`].
    fn sets(&self) -> [&Noted; 4] {
        [
            &self.secrets_revealed,
            &self.hosts_contacted,
            &self.files_written,
            &self.targets_deployed,
        ]
    }

    fn sets_mut(&mut self) -> [&mut Noted; 4] {
        [
            &mut self.secrets_revealed,
            &mut self.hosts_contacted,
            &mut self.files_written,
            &mut self.targets_deployed,
        ]
    }

    /// Every item, with the name of its set.
    pub fn items(&self) -> impl Iterator<Item = (&'static str, &str)> {
        Self::KINDS
            .into_iter()
            .zip(self.sets())
            .flat_map(|(k, set)| set.iter().map(move |i| (k, i)))
    }

    /// Adds what `other` holds (within each set's bounds), as it keeps it.
    pub fn merge(&mut self, other: &TaskHistory) {
        for (kind, item) in other.items() {
            if let Some(set) = self.set_mut(kind) {
                set.keep(item);
            }
        }
    }

    /// Whether nothing is noted.
    pub fn is_empty(&self) -> bool {
        self.items().next().is_none()
    }

    /// Adds `item` to one of the sets, within its bounds.
    pub fn note(set: &mut Noted, item: &str) {
        set.note(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_is_bounded_in_entries_and_in_bytes() {
        let mut by_count = Noted::default();
        for i in 0..MAX_HISTORY + 10 {
            by_count.note(&format!("ws:{i}"));
        }
        assert_eq!(by_count.len(), MAX_HISTORY);
        assert!(by_count.note("ws:0"), "what is noted stays noted");
        assert!(!by_count.note("ws:new"));

        // A long path is kept as its head and digest: long paths do not
        // fill the set sooner than short ones, nor hold megabytes.
        let long = |i: usize| format!("ws:{i:08}/{}", "a".repeat(8 << 10));
        let mut by_bytes = Noted::default();
        for i in 0..MAX_HISTORY + 10 {
            by_bytes.note(&long(i));
        }
        assert_eq!(by_bytes.len(), MAX_HISTORY);
        assert!(by_bytes.bytes() <= MAX_HISTORY_BYTES);
        assert_eq!(
            by_bytes.bytes(),
            by_bytes.iter().map(str::len).sum::<usize>()
        );
        assert!(
            by_bytes
                .iter()
                .all(|e| e.len() <= MAX_ENTRY && e.contains("…sha256:"))
        );
        assert!(by_bytes.contains(&long(7)), "found by the path itself");
        assert!(!by_bytes.contains(&long(MAX_HISTORY + 1)));
        assert!(by_bytes.has_room_for([long(0).as_str()]), "already noted");
        assert!(!by_bytes.has_room_for([long(MAX_HISTORY + 1).as_str()]));
        // What is kept is kept the same way when read back (a store).
        let mut again = Noted::default();
        for e in by_bytes.iter() {
            again.keep(e);
        }
        assert_eq!(again, by_bytes);
        // A name written to look kept is no kept entry: it is kept as its
        // own head and digest, and never equals a long item's entry.
        let forged = by_bytes.iter().next().unwrap().to_owned();
        let mut tool = Noted::default();
        tool.note(&forged);
        assert!(tool.contains(&forged));
        assert!(!tool.iter().any(|e| e == forged));
        assert!(tool.iter().all(|e| e.len() <= MAX_ENTRY && looks_kept(e)));

        // A merge keeps the bounds too.
        let mut h = TaskHistory::default();
        let other = TaskHistory {
            files_written: by_bytes.clone(),
            ..TaskHistory::default()
        };
        h.merge(&other);
        assert_eq!(h.files_written, by_bytes);
    }
}
