//! Host side of `warden:tool/secrets`: `get` and `reveal` pass the gate
//! with the built-in check of [`super::check`].

use super::check::{self, Held};
use super::{SecretRef, SecretsView};
use crate::bindings::warden::tool::secrets::{self as wit, ErrorCode, Host, HostSecret};
use crate::policy::cedar::Resource as Subject;
use crate::policy::gate::{Approval, Ask, HostCall, Pass};
use crate::policy::{Decision, Did};
use std::time::Instant;
use wasmtime::component::Resource;

type SecretResult<T> = wasmtime::Result<Result<T, wit::Error>>;

impl super::SecretsCtx {
    /// What the task holds of `name` now (expiring it if past its ttl).
    pub(crate) fn held(&mut self, name: &str) -> Option<Held> {
        let now = Instant::now();
        self.issued.get_mut(name).map(|s| Held {
            expired: s.check_expiry(now),
            reveal: s.spec.reveal,
        })
    }
}

/// The guest's error for a denied secret call.
pub(crate) fn denial(d: Decision) -> wit::Error {
    let code = if d.rule == "secret.ttl" {
        ErrorCode::Expired
    } else {
        ErrorCode::Denied
    };
    wit::Error {
        code,
        message: d.reason,
    }
}

impl SecretsView<'_> {
    /// Takes a secret action through the gate: the built-in check, then
    /// runtime policy, the decision record, and approval (the manifest's,
    /// for a reveal, or a policy's). Outcome recorded after `op`.
    async fn secret_call<T>(
        &mut self,
        action: &'static str,
        name: &str,
        summary: &(dyn Fn() -> String + Sync),
        op: impl FnOnce(&mut Self, &Pass<()>) -> T,
    ) -> SecretResult<T> {
        let held = self.ctx.held(name);
        let check = check::decide(action, name, held);
        let spec = self.ctx.issued.get(name).map(|s| &s.spec);
        let asks = match spec {
            Some(s) if check.allow && self.gate.has_policy() => vec![Ask {
                action: format!("secret::{action}"),
                detail: "",
                resource: Subject::Secret {
                    name,
                    labels: &s.labels,
                    send_to: &s.send_to,
                },
            }],
            _ => Vec::new(),
        };
        let approval_action = format!("secret.{action}");
        let call = HostCall {
            whole: None,
            capability: "secret",
            action,
            resource: name,
            check,
            asks,
            approval: Approval {
                required: action == "reveal" && spec.is_some_and(|s| s.approval),
                action: &approval_action,
                resource: name,
                args: "",
                summary,
            },
            address: None,
            sealed: (),
        };
        let pass = match self.gate.pass(call).await? {
            Ok(pass) => pass,
            Err(d) => return Ok(Err(denial(d))),
        };
        // An approval may have waited past the secret's ttl.
        if self.ctx.held(name).is_some_and(|h| h.expired) {
            let expired = check::decide(action, name, self.ctx.held(name));
            self.gate.failed(pass, &expired.reason, false)?;
            return Ok(Err(denial(expired)));
        }
        let value = op(self, &pass);
        let remember = |_: &_, did: &mut Did| {
            if action == "reveal" {
                did.revealed(name);
            }
        };
        self.gate.done(pass, remember)?;
        if action == "reveal" {
            // Handed to the tool: from now on a value it holds, not a guess.
            self.gate.redactor().reveal(name);
        }
        Ok(Ok(value))
    }
}

impl Host for SecretsView<'_> {
    async fn get(&mut self, name: String) -> SecretResult<Resource<SecretRef>> {
        let summary = || format!("give the tool a reference to secret '{name}'");
        let reference = SecretRef { name: name.clone() };
        match self
            .secret_call("get", &name, &summary, |s, _| s.table.push(reference))
            .await?
        {
            Ok(pushed) => Ok(Ok(pushed?)),
            Err(e) => Ok(Err(e)),
        }
    }
}

impl HostSecret for SecretsView<'_> {
    async fn name(&mut self, secret: Resource<SecretRef>) -> wasmtime::Result<String> {
        Ok(self.table.get(&secret)?.name.clone())
    }

    async fn reveal(&mut self, secret: Resource<SecretRef>) -> SecretResult<String> {
        let name = self.table.get(&secret)?.name.clone();
        let summary = || format!("reveal secret '{name}' to the tool");
        self.secret_call("reveal", &name, &summary, |s, _| {
            s.ctx
                .issued
                .get(&name)
                .map(|s| s.value.to_string())
                .unwrap_or_default()
        })
        .await
    }

    async fn drop(&mut self, secret: Resource<SecretRef>) -> wasmtime::Result<()> {
        self.table.delete(secret)?;
        Ok(())
    }
}
