//! Who asked: the agent a task runs for, as its credential proved it.
//!
//! An agent calling `warden serve --http` is a workload. It proves what it is
//! with a short-lived token (an OAuth access token, a SPIFFE JWT-SVID), which
//! `crate::auth` verifies and maps to a task grant. The grant carries the
//! agent, so every record of its invocations names it and runtime policy sees
//! it as `context.agent`. A static bearer token is for local use: it names a
//! token file, never an identity.

use std::collections::BTreeSet;

/// How an agent proved what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AgentKind {
    /// An OAuth 2.1 access token (a JWT) from a trusted authorization server.
    OAuth,
    /// A SPIFFE JWT-SVID from a trusted trust domain.
    Spiffe,
    /// A static bearer token from a token file (local use only).
    StaticToken,
}

impl AgentKind {
    /// As policy sees it (`context.agent.kind`) and the trail prefixes it.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::OAuth => "oauth",
            AgentKind::Spiffe => "spiffe",
            AgentKind::StaticToken => "static-token",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Agent {
    pub kind: AgentKind,
    /// The token's `iss`; `spiffe://TRUST-DOMAIN` for an SVID; empty for a
    /// static token.
    pub issuer: String,
    /// The token's `sub`; the SPIFFE ID; the static token's name.
    pub subject: String,
    /// The token's groups and roles (`groups`, `roles` claims).
    pub groups: BTreeSet<String>,
    /// The token's scopes (`scope`, space-separated, or `scp`).
    pub scopes: BTreeSet<String>,
}

impl Agent {
    /// A static token's caller, by the token's name.
    pub fn static_token(name: &str) -> Agent {
        Agent {
            kind: AgentKind::StaticToken,
            issuer: String::new(),
            subject: name.to_owned(),
            groups: BTreeSet::new(),
            scopes: BTreeSet::new(),
        }
    }

    /// As the audit trail records it: `oauth:ISSUER SUBJECT`,
    /// `spiffe:SPIFFE-ID`, `static-token:NAME`. Issuers hold no whitespace
    /// (`crate::auth` refuses one that does), so the first space ends it.
    pub fn recorded(&self) -> String {
        match self.kind {
            AgentKind::OAuth => format!("oauth:{} {}", self.issuer, self.subject),
            AgentKind::Spiffe => format!("spiffe:{}", self.subject),
            AgentKind::StaticToken => format!("static-token:{}", self.subject),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trail_form_says_how_the_agent_proved_itself() {
        let mut a = Agent::static_token("ci");
        assert_eq!(a.recorded(), "static-token:ci");
        a.kind = AgentKind::OAuth;
        a.issuer = "https://login.example".into();
        a.subject = "bot 7".into();
        assert_eq!(a.recorded(), "oauth:https://login.example bot 7");
        a.kind = AgentKind::Spiffe;
        a.subject = "spiffe://example.org/ci".into();
        assert_eq!(a.recorded(), "spiffe:spiffe://example.org/ci");
    }
}
