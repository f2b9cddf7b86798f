//! Host side of `warden:tool/deploy`.

use super::{Backend, DeployTarget, MAX_OUTPUT};
use crate::audit::Event;
use crate::bindings::warden::tool::deploy::{self as wit, ErrorCode, Host, Outcome};
use crate::caps::fs::path;
use crate::caps::http::check;
use crate::policy::cedar::Resource as Subject;
use crate::policy::{Decision, TaskHistory};
use crate::rights::Rights;
use crate::state::HostState;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::time::Instant;

type DeployResult = wasmtime::Result<Result<Outcome, wit::Error>>;

fn error(code: ErrorCode, message: impl Into<String>) -> wit::Error {
    wit::Error {
        code,
        message: message.into(),
    }
}

/// Cuts `bytes` to [`MAX_OUTPUT`] and makes text of them.
fn capped(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_OUTPUT)]).into_owned()
}

impl HostState {
    fn audit_deploy(&mut self, resource: &str, d: &Decision) -> wasmtime::Result<()> {
        self.write_audit(&self.audit.decision("deploy", "run", resource, d))
    }

    /// Reads the artifact through the handle's directory (read right needed).
    fn artifact(&self, handle: &str, artifact: &str) -> Result<Vec<u8>, (ErrorCode, String)> {
        let h = self.fs.handles.get(handle).ok_or_else(|| {
            (
                ErrorCode::Denied,
                format!("no handle '{handle}' in this task's grant"),
            )
        })?;
        if !h.rights.contains(Rights::READ) {
            return Err((
                ErrorCode::Denied,
                format!(
                    "the artifact's handle '{handle}' holds {}, not read",
                    h.rights
                ),
            ));
        }
        let p = path::check(artifact).map_err(|e| (ErrorCode::Denied, e.to_string()))?;
        let mut file = h.dir.open(p.as_str()).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                (ErrorCode::NotFound, format!("no artifact {artifact}"))
            }
            _ => (ErrorCode::Denied, format!("cannot read {artifact}: {e}")),
        })?;
        let mut bytes = Vec::new();
        (&mut file)
            .take(self.hostcall_limit as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| (ErrorCode::Failed, format!("cannot read {artifact}: {e}")))?;
        if bytes.len() > self.hostcall_limit {
            return Err((
                ErrorCode::Failed,
                format!("{artifact} is larger than the host call limit"),
            ));
        }
        Ok(bytes)
    }
}

impl Host for HostState {
    async fn run(&mut self, target: String, handle: String, artifact: String) -> DeployResult {
        let resource = format!("{target} <- {handle}:{artifact}");
        let spec = self.deploy.iter().find(|t| t.name == target).cloned();
        let decision = self.policy.decide_deploy(&target, spec.is_some());
        if !decision.allow {
            self.audit_deploy(&resource, &decision)?;
            return Ok(Err(error(ErrorCode::Denied, decision.reason)));
        }
        let bytes = match self.artifact(&handle, &artifact) {
            Ok(b) => b,
            Err((code, reason)) => {
                self.audit_deploy(
                    &resource,
                    &Decision::deny("deploy.artifact", reason.clone()),
                )?;
                return Ok(Err(error(code, reason)));
            }
        };
        let Some(spec) = spec else {
            return Ok(Err(error(ErrorCode::Denied, "target vanished")));
        };
        let digest = hex::encode(Sha256::digest(&bytes));
        let mut allow = Decision::allow(
            "deploy.grant",
            format!("target '{target}' is granted ({})", spec.backend.kind()),
        );
        let policy_approval =
            self.consult(&mut allow, "deploy::run", &digest, || Subject::Target {
                name: &spec.name,
                backend: spec.backend.kind(),
                labels: &spec.labels,
            });
        if !allow.allow {
            self.audit_deploy(&resource, &allow)?;
            return Ok(Err(error(ErrorCode::Denied, allow.reason)));
        }
        if spec.approval || policy_approval {
            let summary = format!(
                "deploy {handle}:{artifact} ({} bytes, sha256 {digest}) to '{target}' ({})",
                bytes.len(),
                spec.backend.kind()
            );
            if let Err(reason) = self
                .approve("deploy.run", &target, &format!("sha256 {digest}"), summary)
                .await?
            {
                return Ok(Err(error(ErrorCode::Denied, reason)));
            }
        }
        self.audit_deploy(&resource, &allow)?;
        self.remember(|h| TaskHistory::note(&mut h.targets_deployed, &target));

        let started = Instant::now();
        let timeout = spec
            .timeout
            .min(self.deadline.saturating_duration_since(Instant::now()));
        let result = match &spec.backend {
            Backend::Exec { program, args, env } => {
                exec(program, args, env, &bytes, &artifact, timeout).await
            }
            Backend::Webhook { url } => {
                match self.webhook_request(&spec, url, &artifact, &digest, bytes.len()) {
                    Ok((token, body)) => webhook(url, token, body, timeout).await,
                    Err(e) => Err(e),
                }
            }
        };
        let result = result.map(|o| Outcome {
            status: o.status,
            output: self.redactor.redact_string(o.output),
        });
        let mut r = self.audit.record(Event::Deploy);
        r.capability = Some("deploy".into());
        r.action = Some(spec.backend.kind().into());
        r.resource = Some(format!("{resource} sha256:{digest}"));
        r.duration_us = Some(started.elapsed().as_micros().try_into().unwrap_or(u64::MAX));
        match &result {
            Ok(o) => {
                r.outcome = Some(format!("status {}", o.status));
                r.message = Some(o.output.chars().take(512).collect());
            }
            Err(e) => {
                r.outcome = Some("error".into());
                r.message = Some(e.message.clone());
            }
        }
        self.write_audit(&r)?;
        Ok(result)
    }
}

/// Runs the target's program on a private copy of the artifact: no shell,
/// environment cleared but for the listed variables, output capped.
async fn exec(
    program: &str,
    args: &[String],
    env: &[String],
    bytes: &[u8],
    artifact: &str,
    timeout: std::time::Duration,
) -> Result<Outcome, wit::Error> {
    let failed = |m: String| error(ErrorCode::Failed, m);
    let dir = tempfile::tempdir().map_err(|e| failed(format!("cannot stage the artifact: {e}")))?;
    let name = artifact.rsplit('/').next().unwrap_or("artifact");
    let staged = dir.path().join(name);
    std::fs::write(&staged, bytes)
        .map_err(|e| failed(format!("cannot stage the artifact: {e}")))?;
    let staged = staged.display().to_string();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args.iter().map(|a| a.replace("{artifact}", &staged)))
        .env_clear()
        .envs(
            env.iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (k, v))),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| failed(format!("cannot run {program}: {e}")))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| {
            failed(format!(
                "{program} did not finish within {}s",
                timeout.as_secs_f32()
            ))
        })?
        .map_err(|e| failed(format!("{program} failed: {e}")))?;
    let mut output = out.stdout;
    output.extend_from_slice(&out.stderr);
    Ok(Outcome {
        status: out.status.code().unwrap_or(-1),
        output: capped(&output),
    })
}

impl HostState {
    /// The webhook's identity token (audience: the URL's origin) and body.
    fn webhook_request(
        &self,
        spec: &DeployTarget,
        url: &str,
        artifact: &str,
        digest: &str,
        size: usize,
    ) -> Result<(String, String), wit::Error> {
        let (_, origin) = check::parse_url(url).map_err(|m| error(ErrorCode::Failed, m))?;
        let audience = format!(
            "{}://{}{}",
            origin.scheme,
            origin.host,
            port_suffix(&origin)
        );
        let body = serde_json::json!({
            "target": spec.name,
            "tool": &*self.audit.tool,
            "identity": &*self.audit.identity,
            "task": &*self.audit.task,
            "invocation": &*self.audit.invocation,
            "artifact": {"name": artifact, "sha256": digest, "size": size},
        });
        Ok((self.minter.mint(&audience), body.to_string()))
    }
}

/// POSTs the JSON description with the identity token; returns status and body.
async fn webhook(
    url: &str,
    token: String,
    body: String,
    timeout: std::time::Duration,
) -> Result<Outcome, wit::Error> {
    let failed = |m: String| error(ErrorCode::Failed, m);
    let client = crate::caps::http::client_builder()
        .timeout(timeout)
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let resp = client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| failed(format!("webhook {url} failed: {e}")))?;
    let status = i32::from(resp.status().as_u16());
    let text = resp.bytes().await.map_err(|e| failed(e.to_string()))?;
    Ok(Outcome {
        status,
        output: capped(&text),
    })
}

/// `:port` unless it is the scheme's default.
fn port_suffix(o: &check::Origin) -> String {
    match (o.scheme.as_str(), o.port) {
        ("http", 80) | ("https", 443) => String::new(),
        (_, p) => format!(":{p}"),
    }
}
