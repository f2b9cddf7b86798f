//! The secrets capability's built-in check: pure functions over what was
//! granted.

use crate::policy::Decision;

/// What the task holds of one secret, when it was granted.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    /// Past its ttl (the value is already wiped).
    pub expired: bool,
    /// The manifest allows `reveal`.
    pub reveal: bool,
}

/// A secret action (`get`, `reveal`, `attach`) on `name`: only granted
/// secrets, only before their ttl, and `reveal` only where the manifest
/// allows it.
pub fn decide(action: &str, name: &str, held: Option<Held>) -> Decision {
    match held {
        None => Decision::deny(
            "secret.grant",
            format!("no secret '{name}' in this task's grant"),
        ),
        Some(Held { expired: true, .. }) => Decision::deny(
            "secret.ttl",
            format!("secret '{name}' has expired (past its ttl)"),
        ),
        Some(Held { reveal: false, .. }) if action == "reveal" => Decision::deny(
            "secret.reveal",
            format!(
                "the manifest does not allow revealing secret '{name}' (reveal = false); use it by reference"
            ),
        ),
        Some(_) => Decision::allow("secret.grant", format!("secret '{name}' is granted")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_denies_with_its_name() {
        let live = |reveal| {
            Some(Held {
                expired: false,
                reveal,
            })
        };
        let expired = Some(Held {
            expired: true,
            reveal: true,
        });
        for (action, held, rule, allow) in [
            ("get", None, "secret.grant", false),
            ("get", expired, "secret.ttl", false),
            ("reveal", live(false), "secret.reveal", false),
            ("attach", live(false), "secret.grant", true),
            ("reveal", live(true), "secret.grant", true),
        ] {
            let d = decide(action, "k", held);
            assert_eq!((d.rule, d.allow), (rule, allow), "{action} {held:?}");
        }
        assert_eq!(
            decide("reveal", "k", live(false)).reason,
            "the manifest does not allow revealing secret 'k' (reveal = false); use it by reference"
        );
    }
}
