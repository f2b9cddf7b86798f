//! Host side of `warden:tool/identity`: minting a token passes the gate.

use crate::bindings::warden::tool::identity::{self as wit, ErrorCode, Host};
use crate::policy::Decision;
use crate::policy::cedar::Resource as Subject;
use crate::policy::gate::Gate;
use crate::policy::gate::{Approval, Ask, HostCall};
use wasmtime::component::{HasData, Linker};

/// Minting an identity token for `audience`: only audiences the manifest
/// lists for the tool.
pub(crate) fn decide(audience: &str, allowed: &[String]) -> Decision {
    if allowed.iter().any(|a| a == audience) {
        Decision::allow(
            "identity.audience",
            format!("audience {audience} is listed"),
        )
    } else {
        Decision::deny(
            "identity.audience",
            format!("the manifest does not list audience '{audience}' for this tool's tokens"),
        )
    }
}

/// Why a tool describing itself is handed no token: it would name no
/// invocation, task or tool, and be recorded nowhere.
const OUTSIDE: &str = "no identity token is handed out outside a running invocation (while a tool describes itself, or after its invocation ended)";

/// What the identity host impl sees of the store.
pub(crate) struct IdentityView<'a> {
    pub(crate) minter: &'a super::Minter,
    pub(crate) gate: &'a Gate,
}

/// A store that can give the identity host impl its view.
pub(crate) trait IdentityStore: Send + 'static {
    fn identity(&mut self) -> IdentityView<'_>;
}

struct Identity;

impl HasData for Identity {
    type Data<'a> = IdentityView<'a>;
}

pub(crate) fn add_to_linker<T: IdentityStore>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    crate::bindings::warden::tool::identity::add_to_linker::<T, Identity>(linker, T::identity)
}

impl Host for IdentityView<'_> {
    async fn token(&mut self, audience: String) -> wasmtime::Result<Result<String, wit::Error>> {
        let mut check = decide(&audience, &self.minter.audiences);
        if check.allow && !self.minter.preminted() {
            check = Decision::deny("identity.invocation", OUTSIDE.into());
        }
        let asks = if check.allow && self.gate.has_policy() {
            vec![Ask {
                action: "identity::token".into(),
                detail: &audience,
                resource: Subject::Audience { url: &audience },
            }]
        } else {
            Vec::new()
        };
        let summary = || format!("mint an identity token for {audience}");
        let call = HostCall {
            whole: None,
            capability: "identity",
            action: "token",
            resource: &audience,
            check,
            asks,
            approval: Approval {
                required: false,
                action: "identity.token",
                resource: &audience,
                args: "",
                summary: &summary,
            },
            address: None,
            sealed: (),
        };
        let pass = match self.gate.pass(call).await? {
            Ok(pass) => pass,
            Err(d) => {
                return Ok(Err(wit::Error {
                    code: ErrorCode::Denied,
                    message: d.reason,
                }));
            }
        };
        // Allowed, so listed, so signed before the tool ran; none once the
        // invocation has ended (a task it left behind).
        let token = self.minter.hand_out(&audience);
        self.gate.done(pass, |_, _| {})?;
        Ok(token.ok_or_else(|| wit::Error {
            code: ErrorCode::Denied,
            message: OUTSIDE.into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_listed_audiences() {
        let listed = ["https://a.example".to_owned()];
        assert!(super::decide("https://a.example", &listed).allow);
        let d = super::decide("https://b.example", &listed);
        assert_eq!((d.allow, d.rule), (false, "identity.audience"));
    }
}
