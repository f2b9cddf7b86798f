//! Host side of `warden:tool/identity`.

use crate::bindings::warden::tool::identity::{self as wit, ErrorCode, Host};
use crate::policy::cedar::Resource as Subject;
use crate::state::HostState;

impl Host for HostState {
    async fn token(&mut self, audience: String) -> wasmtime::Result<Result<String, wit::Error>> {
        let mut decision = self.policy.decide_token(&audience, &self.minter.audiences);
        let approval = self.consult(&mut decision, "identity::token", &audience, || {
            Subject::Audience { url: &audience }
        });
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
        if approval {
            let summary = format!("mint an identity token for {audience}");
            if let Err(reason) = self
                .approve("identity.token", &audience, "", summary)
                .await?
            {
                return Ok(Err(wit::Error {
                    code: ErrorCode::Denied,
                    message: reason,
                }));
            }
        }
        Ok(Ok(self.minter.mint(&audience)))
    }
}
