//! Host side of `warden:tool/identity`.

use crate::audit::Event;
use crate::bindings::warden::tool::identity::{self as wit, ErrorCode, Host};
use crate::state::HostState;

impl Host for HostState {
    async fn token(&mut self, audience: String) -> wasmtime::Result<Result<String, wit::Error>> {
        let decision = self.policy.decide_token(&audience, &self.minter.audiences);
        let mut r = self.audit.record(Event::Decision);
        r.capability = Some("identity".into());
        r.action = Some("token".into());
        r.resource = Some(audience.clone());
        r.decision = Some(if decision.allow { "allow" } else { "deny" }.into());
        r.rule = Some(decision.rule.into());
        r.reason = Some(decision.reason.clone());
        self.write_audit(&r)?;
        if !decision.allow {
            return Ok(Err(wit::Error {
                code: ErrorCode::Denied,
                message: decision.reason,
            }));
        }
        Ok(Ok(self.minter.mint(&audience)))
    }
}
