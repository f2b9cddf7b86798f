//! Host side of `warden:tool/secrets`.

use super::SecretRef;
use crate::bindings::warden::tool::secrets::{self as wit, ErrorCode, Host, HostSecret};
use crate::policy::cedar::Resource as Subject;
use crate::policy::{Decision, TaskHistory};
use crate::state::HostState;
use std::time::Instant;
use wasmtime::component::Resource;

type SecretResult<T> = wasmtime::Result<Result<T, wit::Error>>;

impl HostState {
    /// Decides a secret action and audits it; `Ok(Err(_))` is a denial,
    /// `Ok(Ok(true))` an allowed action that needs approval first (by the
    /// manifest, for a reveal, or by runtime policy).
    fn secret_gate(&mut self, action: &'static str, name: &str) -> SecretResult<bool> {
        let now = Instant::now();
        let state = self
            .secrets
            .issued
            .get_mut(name)
            .map(|s| (s.check_expiry(now), s.spec.reveal));
        let mut decision = self.policy.decide_secret(action, name, state);
        let mut approval = false;
        if let Some(s) = self.secrets.issued.get(name) {
            approval = action == "reveal" && s.spec.approval;
            approval |= self.consult(&mut decision, &format!("secret::{action}"), "", || {
                Subject::Secret {
                    name,
                    labels: &s.spec.labels,
                    send_to: &s.spec.send_to,
                }
            });
        }
        self.write_audit(&self.audit.decision("secret", action, name, &decision))?;
        Ok(if decision.allow {
            Ok(approval)
        } else {
            Err(denial(&decision))
        })
    }

    /// Waits for approval of a secret action; `Some(error)` is a refusal.
    async fn secret_approval(
        &mut self,
        action: &str,
        name: &str,
        summary: String,
    ) -> wasmtime::Result<Option<wit::Error>> {
        Ok(self
            .approve(&format!("secret.{action}"), name, "", summary)
            .await?
            .err()
            .map(|reason| wit::Error {
                code: ErrorCode::Denied,
                message: reason,
            }))
    }
}

fn denial(d: &Decision) -> wit::Error {
    let code = if d.rule == "secret.ttl" {
        ErrorCode::Expired
    } else {
        ErrorCode::Denied
    };
    wit::Error {
        code,
        message: d.reason.clone(),
    }
}

impl Host for HostState {
    async fn get(&mut self, name: String) -> SecretResult<Resource<SecretRef>> {
        match self.secret_gate("get", &name)? {
            Err(e) => return Ok(Err(e)),
            Ok(false) => {}
            Ok(true) => {
                let summary = format!("give the tool a reference to secret '{name}'");
                if let Some(e) = self.secret_approval("get", &name, summary).await? {
                    return Ok(Err(e));
                }
            }
        }
        Ok(Ok(self.table.push(SecretRef { name })?))
    }
}

impl HostSecret for HostState {
    async fn name(&mut self, secret: Resource<SecretRef>) -> wasmtime::Result<String> {
        Ok(self.table.get(&secret)?.name.clone())
    }

    async fn reveal(&mut self, secret: Resource<SecretRef>) -> SecretResult<String> {
        let name = self.table.get(&secret)?.name.clone();
        match self.secret_gate("reveal", &name)? {
            Err(e) => return Ok(Err(e)),
            Ok(false) => {}
            Ok(true) => {
                let summary = format!("reveal secret '{name}' to the tool");
                if let Some(e) = self.secret_approval("reveal", &name, summary).await? {
                    return Ok(Err(e));
                }
            }
        }
        self.remember(|h| TaskHistory::note(&mut h.secrets_revealed, &name));
        let value = self
            .secrets
            .issued
            .get(&name)
            .map(|s| s.value.to_string())
            .unwrap_or_default();
        Ok(Ok(value))
    }

    async fn drop(&mut self, secret: Resource<SecretRef>) -> wasmtime::Result<()> {
        self.table.delete(secret)?;
        Ok(())
    }
}
