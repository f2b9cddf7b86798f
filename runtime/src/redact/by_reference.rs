//! Secrets a tool holds only by reference (`reveal = false`, or `reveal =
//! true` until a `reveal` of it passes the gate): it cannot read their
//! values, so a value in what it writes is a guess (or a copy it came upon,
//! in a file), and a redaction marker where it stood would tell the guess
//! was right. Each path out refuses such text whole ([`Redactor::guessed`],
//! [`Redactor::guessed_since`]) rather than marking the value in it.

use super::Redactor;
use std::sync::atomic::{AtomicBool, Ordering};

impl Redactor {
    /// This redactor, knowing the values of `names` as held by reference.
    pub(crate) fn hiding<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Redactor {
        for name in names {
            // Every entry of the name: a JWT's signature is one apart.
            for (i, _) in self.names.iter().enumerate().filter(|(_, n)| *n == name) {
                self.hidden.push(i);
                self.revealed.push(AtomicBool::new(false));
            }
        }
        self
    }

    /// `name`'s value was handed to the tool (a `reveal` passed the gate):
    /// from now on it is one the tool holds, not a guess.
    pub(crate) fn reveal(&self, name: &str) {
        for (j, &i) in self.hidden.iter().enumerate() {
            if self.names[i] == name {
                self.revealed[j].store(true, Ordering::Release);
            }
        }
    }

    /// Whether the `j`th of [`Redactor::hiding`]'s values is still held
    /// by reference.
    fn still_hidden(&self, j: usize) -> bool {
        !self.revealed[j].load(Ordering::Acquire)
    }

    /// Whether `name`'s value is held by reference.
    pub(crate) fn is_hidden(&self, name: &str) -> bool {
        (self.hidden.iter().enumerate())
            .any(|(j, &i)| self.names[i] == name && self.still_hidden(j))
    }

    /// The name of a secret held by reference whose value is in `bytes`
    /// (in any form redaction finds).
    pub(crate) fn guessed(&self, bytes: &[u8]) -> Option<String> {
        self.guessed_within(bytes, super::MAX_LAYERS)
    }

    /// [`Redactor::guessed`] in a JSON text, one layer deeper than
    /// [`Redactor::redact_json`] reads the text written again: a string's
    /// own escapes (`\u0025`) are gone from that, and a value found there
    /// makes the whole output a marker.
    pub(crate) fn guessed_json(&self, bytes: &[u8]) -> Option<String> {
        self.guessed_within(bytes, super::MAX_LAYERS + 2)
    }

    /// Each hit apart: none is lost to an overlapping one's name.
    fn guessed_within(&self, bytes: &[u8], layers: usize) -> Option<String> {
        if !(0..self.hidden.len()).any(|j| self.still_hidden(j)) {
            return None;
        }
        let hits = self.find_each(bytes, layers);
        let held = |i: usize| {
            (self.hidden.iter().enumerate()).any(|(j, &h)| h == i && self.still_hidden(j))
        };
        let hidden = hits.into_iter().find(|h| held(h.2))?;
        Some(self.names[hidden.2].clone())
    }

    /// How many markers of each value held by reference `text` holds:
    /// taken before redacting it, for [`Redactor::guessed_since`].
    pub(crate) fn hidden_markers(&self, text: &[u8]) -> Vec<usize> {
        let count = |i: usize| memchr::memmem::find_iter(text, &self.markers[i]).count();
        let counted = |(j, &i): (usize, &usize)| if self.still_hidden(j) { count(i) } else { 0 };
        self.hidden.iter().enumerate().map(counted).collect()
    }

    /// The name of a value held by reference that redacting a text found
    /// in it: `redacted` holds more of its markers than the text did
    /// (`before`, [`Redactor::hidden_markers`]). Markers the text held
    /// already (a tool's own, or a response's the host redacted before
    /// the tool read it) tell nobody anything; new ones would, and are
    /// read as a reader reads the text: JSON numbers spelled otherwise too.
    pub(crate) fn guessed_since(&self, before: &[usize], redacted: &[u8]) -> Option<String> {
        let after = self.hidden_markers(redacted);
        let grew = (after.iter().zip(before)).position(|(a, b)| a > b)?;
        Some(self.names[self.hidden[grew]].clone())
    }

    /// The name of a value held by reference whose marker is in `text`
    /// (text redacted already, where a marker can only be the tool's own
    /// or a value's it wrote).
    pub(crate) fn hidden_marked(&self, text: &[u8]) -> Option<String> {
        self.guessed_since(&vec![0; self.hidden.len()], text)
    }

    /// The refusal text of a value of `name`, held by reference, in
    /// `what`: a guess, or a copy the tool came upon (in a file it read).
    pub(crate) fn guess_reason(what: &str, name: &str) -> String {
        format!(
            "exfiltration attempt: {what} holds the value of secret '{name}', which this tool \
             may use only by reference"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::{MAX_LAYERS, Redactor};

    fn pin() -> Redactor {
        Redactor::new([("pin", "4821"), ("api", "tok-0123456789")]).hiding(["pin", "nope"])
    }

    #[test]
    fn only_values_held_by_reference_are_guesses_in_any_form() {
        let r = pin();
        assert!(r.is_hidden("pin") && !r.is_hidden("api") && !r.is_hidden("nope"));
        assert_eq!(r.guessed(b"x=%34%38%32%31"), Some("pin".into()));
        assert_eq!(r.guessed(b"NDgyMQ=="), Some("pin".into()));
        assert_eq!(r.guessed(b"tok-0123456789 4812"), None);
        assert_eq!(Redactor::new([("pin", "4821")]).guessed(b"4821"), None);
    }

    /// A marker redaction adds tells; one the text held already (the tool
    /// wrote it, or read it in a response redacted for it) does not.
    #[test]
    fn a_guess_is_a_marker_redaction_added() {
        let r = pin();
        let own = "[REDACTED:pin] [REDACTED:api]";
        let before = r.hidden_markers(own.as_bytes());
        assert_eq!(before, [1]);
        assert_eq!(r.guessed_since(&before, r.redact(own).as_bytes()), None);
        let text = format!("{own} tok-0123456789");
        assert_eq!(r.guessed_since(&before, r.redact(&text).as_bytes()), None);
        let text = format!("{own} [4.821e3]");
        let redacted = r.redact_json_string(text.replace(own, "\"\""));
        assert_eq!(
            r.guessed_since(&[0], redacted.as_bytes()),
            Some("pin".into())
        );
    }

    /// Every decoded view finds again the values not escaped (all of
    /// them, here): each is kept once, not once per view (a megabyte of
    /// them cost hundreds of megabytes of hits).
    #[test]
    fn a_value_found_in_every_view_is_kept_once() {
        let r = Redactor::new([("k", "s3cr")]);
        let n = 10_000;
        let text = format!(
            "%2525252525&amp;amp;amp;amp;amp;{}{}",
            "\\\\".repeat(16),
            "s3cr".repeat(n)
        );
        let hits = r.find_each(text.as_bytes(), MAX_LAYERS);
        assert!(hits.len() <= n, "{} hits for {n} values", hits.len());
        assert_eq!(r.redact(&text).matches("[REDACTED:k]").count(), n);
    }
}
