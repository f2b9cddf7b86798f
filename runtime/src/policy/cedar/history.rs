//! What a task has done so far, across its invocations: the runtime
//! policy's `context.task` sets. Each set is bounded in entries and in
//! bytes: it is kept for the task's life (in this process, and in a shared
//! store beyond it) and copied into every policy question the task's calls
//! ask, and a tool chooses the paths it writes.

use std::collections::BTreeSet;

/// Entries kept per kind of task history; older entries stay, newer ones
/// beyond this are dropped (a task this busy should be split).
pub const MAX_HISTORY: usize = 4096;

/// Bytes of entries kept per kind of task history, beside
/// [`MAX_HISTORY`]: 4,096 paths of 64 bytes. Without it a task's
/// `files_written` could hold 4,096 paths of 8 KiB, 32 MiB, copied into
/// every policy question.
pub const MAX_HISTORY_BYTES: usize = 256 << 10;

/// One of a task history's sets, with its size in bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Noted {
    items: BTreeSet<String>,
    bytes: usize,
}

impl Noted {
    pub fn contains(&self, item: &str) -> bool {
        self.items.contains(item)
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
            bytes = bytes.saturating_add(item.len());
        }
        count <= MAX_HISTORY && bytes <= MAX_HISTORY_BYTES
    }

    /// Adds `item` when there is room for it ([`MAX_HISTORY`],
    /// [`MAX_HISTORY_BYTES`]); whether it is noted now (or was already).
    pub fn note(&mut self, item: &str) -> bool {
        if self.contains(item) {
            return true;
        }
        if !self.has_room_for([item]) {
            return false;
        }
        self.bytes += item.len();
        self.items.insert(item.to_owned())
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
    pub fn set_mut(&mut self, kind: &str) -> Option<&mut Noted> {
        Some(match kind {
            "secrets_revealed" => &mut self.secrets_revealed,
            "hosts_contacted" => &mut self.hosts_contacted,
            "files_written" => &mut self.files_written,
            "targets_deployed" => &mut self.targets_deployed,
            _ => return None,
        })
    }

    /// Every item, with the name of its set.
    pub fn items(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let sets = [
            &self.secrets_revealed,
            &self.hosts_contacted,
            &self.files_written,
            &self.targets_deployed,
        ];
        Self::KINDS
            .into_iter()
            .zip(sets)
            .flat_map(|(k, set)| set.iter().map(move |i| (k, i)))
    }

    /// Adds what `other` holds (within each set's bounds).
    pub fn merge(&mut self, other: &TaskHistory) {
        for (kind, item) in other.items() {
            if let Some(set) = self.set_mut(kind) {
                set.note(item);
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

        // Long paths fill the bytes long before the count.
        let long = |i: usize| format!("ws:{i:08}/{}", "a".repeat(8 << 10));
        let mut by_bytes = Noted::default();
        let mut kept = 0;
        for i in 0..1000 {
            kept += usize::from(by_bytes.note(&long(i)));
        }
        assert_eq!(kept, MAX_HISTORY_BYTES / long(0).len());
        assert_eq!(by_bytes.len(), kept);
        assert!(by_bytes.bytes() <= MAX_HISTORY_BYTES);
        assert_eq!(
            by_bytes.bytes(),
            by_bytes.iter().map(str::len).sum::<usize>()
        );
        assert!(!by_bytes.has_room_for([long(5000).as_str()]));
        assert!(by_bytes.has_room_for([long(0).as_str()]), "already noted");
        assert!(by_bytes.note("ws:short"), "a short path still fits");

        // A merge keeps the bounds too.
        let mut h = TaskHistory::default();
        let mut other = TaskHistory {
            files_written: by_bytes.clone(),
            ..TaskHistory::default()
        };
        for i in 0..10 {
            other.files_written.items.insert(long(10_000 + i));
        }
        h.merge(&other);
        assert!(h.files_written.bytes() <= MAX_HISTORY_BYTES);
        assert_eq!(h.files_written.len(), by_bytes.len());
    }
}
