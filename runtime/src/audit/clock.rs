//! The time records state.

use std::cell::RefCell;
use std::time::SystemTime;

/// Now, as records state it (RFC 3339, milliseconds, UTC): formatted once
/// per millisecond per thread, since an invocation's records mostly share
/// one.
pub(super) fn now_rfc3339() -> String {
    thread_local!(static LAST: RefCell<(u128, String)> = const { RefCell::new((0, String::new())) });
    let now = SystemTime::now();
    let ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    LAST.with_borrow_mut(|(at, text)| {
        if *at != ms || text.is_empty() {
            *text = humantime::format_rfc3339_millis(now).to_string();
            *at = ms;
        }
        text.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::now_rfc3339;
    use std::time::{Duration, Instant, SystemTime};

    /// `t` cut to whole milliseconds, as a record states it.
    fn millis(t: SystemTime) -> SystemTime {
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        SystemTime::UNIX_EPOCH + Duration::from_millis(d.as_millis() as u64)
    }

    #[test]
    fn now_is_the_clock_in_rfc3339_milliseconds_cached_or_not() {
        // Many calls within a millisecond (cached) and across several
        // (formatted anew): each states the time it was called at.
        let start = Instant::now();
        let mut distinct = std::collections::BTreeSet::new();
        while distinct.len() < 5 {
            assert!(start.elapsed() < Duration::from_secs(5));
            let before = millis(SystemTime::now());
            let text = now_rfc3339();
            let after = SystemTime::now();
            assert_eq!(text.len(), "2026-12-03T06:00:00.000Z".len(), "{text}");
            let at = humantime::parse_rfc3339(&text).expect(&text);
            assert!(before <= at && at <= after, "{text} outside the call");
            distinct.insert(text);
        }
    }
}
