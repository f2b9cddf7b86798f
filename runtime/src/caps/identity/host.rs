//! Host side of `warden:tool/identity`.

use crate::bindings::warden::tool::identity::{self as wit, ErrorCode, Host};
use crate::state::HostState;

impl Host for HostState {
    async fn token(&mut self, audience: String) -> wasmtime::Result<Result<String, wit::Error>> {
        let decision = self.policy.decide_token(&audience, &self.minter.audiences);
        self.write_audit(
            &self
                .audit
                .decision("identity", "token", &audience, &decision),
        )?;
        if !decision.allow {
            return Ok(Err(wit::Error {
                code: ErrorCode::Denied,
                message: decision.reason,
            }));
        }
        Ok(Ok(self.minter.mint(&audience)))
    }
}
