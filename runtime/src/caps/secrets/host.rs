//! Host side of `warden:tool/secrets`.

use super::SecretRef;
use crate::bindings::warden::tool::secrets::{self as wit, ErrorCode, Host, HostSecret};
use crate::policy::Decision;
use crate::state::HostState;
use std::time::Instant;
use wasmtime::component::Resource;

type SecretResult<T> = wasmtime::Result<Result<T, wit::Error>>;

impl HostState {
    /// Decides a secret action and audits it; `Ok(Err(_))` is a denial.
    fn secret_gate(&mut self, action: &'static str, name: &str) -> SecretResult<()> {
        let now = Instant::now();
        let state = self
            .secrets
            .issued
            .get_mut(name)
            .map(|s| (s.check_expiry(now), s.spec.reveal));
        let decision = self.policy.decide_secret(action, name, state);
        self.write_audit(&self.audit.decision("secret", action, name, &decision))?;
        Ok(if decision.allow {
            Ok(())
        } else {
            Err(denial(&decision))
        })
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
        if let Err(e) = self.secret_gate("get", &name)? {
            return Ok(Err(e));
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
        if let Err(e) = self.secret_gate("reveal", &name)? {
            return Ok(Err(e));
        }
        if self
            .secrets
            .issued
            .get(&name)
            .is_some_and(|s| s.spec.approval)
        {
            let summary = format!("reveal secret '{name}' to the tool");
            if let Err(reason) = self.approve("secret.reveal", &name, "", summary).await? {
                return Ok(Err(wit::Error {
                    code: ErrorCode::Denied,
                    message: reason,
                }));
            }
        }
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
