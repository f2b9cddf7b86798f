//! Host side of `warden:tool/deploy`: the target's grant and the artifact
//! are the built-in check; a deployment runs only with the gate's pass.

use super::{Backend, DeployTarget, MAX_OUTPUT};
use crate::audit::Event;
use crate::bindings::warden::tool::deploy::{self as wit, ErrorCode, Host, Outcome};
use crate::caps::fs::FsCtx;
use crate::caps::fs::path;
use crate::caps::identity::Minter;
use crate::policy::Decision;
use crate::policy::cedar::Resource as Subject;
use crate::policy::gate::Gate;
use crate::policy::gate::{Approval, Ask, HostCall, Pass};
use crate::redact::Redactor;
use crate::rights::Rights;
use sha2::{Digest, Sha256};
use std::time::Instant;
use wasmtime::component::{HasData, Linker};

type DeployResult = wasmtime::Result<Result<Outcome, wit::Error>>;

pub(super) fn error(code: ErrorCode, message: impl Into<String>) -> wit::Error {
    wit::Error {
        code,
        message: message.into(),
    }
}

/// How much of a program's or webhook's output is read: twice what the
/// tool is given, so that a secret value (at most 64 KiB) that would cross
/// [`MAX_OUTPUT`] is read whole and redacted before the output is cut.
pub(super) const READ_OUTPUT: usize = 2 * MAX_OUTPUT;

/// Makes text of `bytes`, at most [`READ_OUTPUT`] of them.
pub(super) fn capped(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(READ_OUTPUT)]).into_owned()
}

/// A secret value the artifact carries in its name or its bytes (in any
/// encoding redaction knows), if any: a deployment carries its artifact to
/// a program or a webhook, which is no secret's `send-to`.
fn carried_secret(redactor: &Redactor, artifact: &str, bytes: &[u8]) -> Option<String> {
    let mut names = redactor.names_in(artifact.as_bytes());
    names.extend(redactor.names_in(bytes));
    names.into_iter().next()
}

/// Deploying to `target`: only targets in the task's grant.
pub(crate) fn decide(target: &str, granted: bool) -> Decision {
    if granted {
        Decision::allow("deploy.grant", format!("target '{target}' is granted"))
    } else {
        Decision::deny(
            "deploy.grant",
            format!("no deploy target '{target}' in this task's grant"),
        )
    }
}

/// What the deploy host impl sees of the store: the granted targets, the
/// fs handles (artifacts are read through them), the token minter.
pub(crate) struct DeployView<'a> {
    pub(crate) targets: &'a [DeployTarget],
    pub(crate) fs: &'a FsCtx,
    pub(crate) minter: &'a Minter,
    pub(crate) gate: &'a Gate,
}

/// A store that can give the deploy host impl its view.
pub(crate) trait DeployStore: Send + 'static {
    fn deploy(&mut self) -> DeployView<'_>;
}

struct Deploy;

impl HasData for Deploy {
    type Data<'a> = DeployView<'a>;
}

pub(crate) fn add_to_linker<T: DeployStore>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    crate::bindings::warden::tool::deploy::add_to_linker::<T, Deploy>(linker, T::deploy)
}

/// What a deployment needs, sealed into its host call.
struct Deployment {
    spec: DeployTarget,
    bytes: Vec<u8>,
    /// SHA-256 of the artifact, hex.
    digest: String,
}

impl DeployView<'_> {
    /// Reads the artifact through the handle's directory (read right
    /// needed). Only a regular file is an artifact: it is opened without
    /// blocking (opening a FIFO for reading would wait for a writer), its
    /// type is checked on the open file, and it is read on a blocking thread
    /// that the invocation's deadline bounds (a slow or hung file system
    /// cannot hold the host call past it).
    async fn artifact(
        &self,
        handle: &str,
        artifact: &str,
    ) -> Result<Artifact, (ErrorCode, String)> {
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
        let limit = self.gate.hostcall_limit();
        let p = path::check(artifact).map_err(|e| (ErrorCode::Denied, e.to_string()))?;
        let (h, p, name) = (h.clone(), p.as_str().to_owned(), artifact.to_owned());
        let read = tokio::task::spawn_blocking(move || {
            let (bytes, path) = super::artifact::read_regular(&h.dir, &p, &name, limit)?;
            Ok(Artifact {
                bytes,
                path,
                handle: h,
            })
        });
        let remaining = self
            .gate
            .deadline()
            .saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, read).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err((ErrorCode::Failed, format!("cannot read {artifact}: {e}"))),
            Err(_) => Err((
                ErrorCode::Failed,
                format!("reading {artifact} did not finish within the invocation's deadline"),
            )),
        }
    }
}

/// An artifact read, with the path inside its handle it resolved to (as a
/// runtime policy's `fs::read` question names it).
struct Artifact {
    bytes: Vec<u8>,
    path: String,
    handle: std::sync::Arc<crate::caps::fs::GrantedHandle>,
}

impl DeployView<'_> {
    /// The runtime policy's refusal, if it refuses, of deploying `bytes`,
    /// read from `path` through `handle`, to `spec`: the questions the gate
    /// asks of a deployment, asked before its own check answers.
    fn policy_refusal(
        &self,
        spec: &DeployTarget,
        handle: &crate::caps::fs::GrantedHandle,
        path: &str,
        bytes: &[u8],
    ) -> Option<Decision> {
        if !self.gate.has_policy() {
            return None;
        }
        let digest = hex::encode(Sha256::digest(bytes));
        let host = handle.path.join(path).to_string_lossy().into_owned();
        self.gate.policy_refusal(&[
            Ask {
                action: "deploy::run".into(),
                detail: &digest,
                resource: Subject::Target {
                    name: &spec.name,
                    backend: spec.backend.kind(),
                    labels: &spec.labels,
                },
            },
            Ask {
                action: "fs::read".into(),
                detail: "read",
                resource: Subject::Path {
                    handle: &handle.name,
                    path,
                    host_path: &host,
                    labels: &handle.labels,
                },
            },
        ])
    }
}

impl Host for DeployView<'_> {
    async fn run(&mut self, target: String, handle: String, artifact: String) -> DeployResult {
        let resource = format!("{target} <- {handle}:{artifact}");
        let spec = self.targets.iter().find(|t| t.name == target).cloned();
        // The built-in check: the target is granted, and the artifact can be
        // read through a handle holding read.
        let mut code = ErrorCode::Denied;
        let mut check = decide(&target, spec.is_some());
        let mut sealed = None;
        // The artifact's handle, its path as resolved, and as on the host.
        let mut read = None;
        // A resource over the gate's limit is refused there
        // (`limits.resource`) before its path is resolved.
        let within = resource.len() <= crate::policy::gate::MAX_RESOURCE;
        if let Some(spec) = spec.filter(|_| check.allow && within) {
            match self.artifact(&handle, &artifact).await {
                Ok(Artifact {
                    bytes,
                    path,
                    handle,
                }) => match carried_secret(self.gate.redactor(), &artifact, &bytes) {
                    // Which secret a file carries tells something of what
                    // is in it: for a file the runtime policy forbids the
                    // tool to read (or to deploy), the policy's refusal.
                    Some(_)
                        if let Some(refusal) =
                            self.policy_refusal(&spec, &handle, &path, &bytes) =>
                    {
                        check = refusal;
                    }
                    Some(name) if crate::redact::token_audience(&name).is_some() => {
                        check = Decision::deny(
                            "identity.send-to",
                            "exfiltration attempt: the artifact carries an identity token \
                             handed to this tool, and a deployment is no token-send-to"
                                .into(),
                        );
                    }
                    Some(name) if crate::redact::is_deploy_token(&name) => {
                        check = Decision::deny(
                            "identity.send-to",
                            "exfiltration attempt: the artifact carries a deploy webhook's \
                             identity token, which goes only with its own deployment"
                                .into(),
                        );
                    }
                    Some(name) => {
                        check = Decision::deny(
                            "secret.send-to",
                            format!(
                                "exfiltration attempt: the artifact carries the value of secret \
                                 '{name}', and a deployment is no secret's send-to"
                            ),
                        );
                    }
                    None => {
                        let digest = hex::encode(Sha256::digest(&bytes));
                        check.reason =
                            format!("target '{target}' is granted ({})", spec.backend.kind());
                        sealed = Some(Deployment {
                            spec,
                            bytes,
                            digest,
                        });
                        let host = handle.path.join(&path).to_string_lossy().into_owned();
                        read = Some((handle, path, host));
                    }
                },
                Err((c, reason)) => {
                    code = c;
                    check = Decision::deny("deploy.artifact", reason);
                }
            }
        }
        let digest = sealed
            .as_ref()
            .map(|d| d.digest.clone())
            .unwrap_or_default();
        // Reading the artifact is a read of its handle: a policy is asked
        // about it as about any `fs::read`, on its resolved path.
        let asks = match (&sealed, &read) {
            (Some(d), Some((h, path, host))) if self.gate.has_policy() => vec![
                Ask {
                    action: "deploy::run".into(),
                    detail: &digest,
                    resource: Subject::Target {
                        name: &d.spec.name,
                        backend: d.spec.backend.kind(),
                        labels: &d.spec.labels,
                    },
                },
                Ask {
                    action: "fs::read".into(),
                    detail: "read",
                    resource: Subject::Path {
                        handle: &h.name,
                        path,
                        host_path: host,
                        labels: &h.labels,
                    },
                },
            ],
            _ => Vec::new(),
        };
        // Where a link leads the artifact's path: shown and bound.
        let leads = match &read {
            Some((_, to, _)) if path::check(&artifact).is_ok_and(|p| p.as_str() != to) => {
                format!(" (resolves to {to})")
            }
            _ => String::new(),
        };
        // The trail names the file deployed, not only the tool's alias for
        // it (a link in the tree), as fs records do.
        let resource = match &read {
            Some((_, to, _)) if !leads.is_empty() => {
                let to = [to.clone()];
                crate::caps::fs::check::with_leads(&resource, &to, self.gate.redactor())
            }
            _ => resource,
        };
        // Each path cut on its own, as fs's are: however long the artifact's
        // path, where it resolves, its size, digest and target are shown.
        let summary = || match &sealed {
            Some(d) => {
                let part = |p: &str| {
                    use crate::policy::gate::{SUMMARY_PART, summary_part};
                    summary_part(self.gate.redactor(), p.as_bytes(), SUMMARY_PART)
                };
                let leads = match &read {
                    Some((_, to, _)) if !leads.is_empty() => format!(" (resolves to {})", part(to)),
                    _ => String::new(),
                };
                format!(
                    "deploy {handle}:{}{leads} ({} bytes, sha256 {digest}) to '{target}' ({})",
                    part(&artifact),
                    d.bytes.len(),
                    d.spec.backend.kind()
                )
            }
            None => String::new(),
        };
        let args = format!("sha256 {digest}{leads}");
        let call = HostCall {
            whole: None,
            capability: "deploy",
            action: "run",
            resource: &resource,
            check,
            asks,
            approval: Approval {
                // The target's approval, or the artifact's handle's for reads.
                required: sealed.as_ref().is_some_and(|d| d.spec.approval)
                    || (read.as_ref()).is_some_and(|(h, ..)| h.approval.contains(Rights::READ)),
                action: "deploy.run",
                resource: &target,
                args: &args,
                summary: &summary,
            },
            address: None,
            sealed: (),
        };
        let pass = match self.gate.pass(call).await? {
            Ok(pass) => pass,
            Err(d) => {
                if d.rule != "deploy.artifact" {
                    code = ErrorCode::Denied;
                }
                return Ok(Err(error(code, d.reason)));
            }
        };
        let Some(Deployment {
            spec,
            bytes,
            digest,
        }) = sealed
        else {
            return Err(wasmtime::Error::msg(
                "deploy: an unchecked deployment passed the gate",
            ));
        };

        self.gate.note(|did| did.deployed(&target));
        let started = Instant::now();
        let timeout = spec.timeout.min(
            self.gate
                .deadline()
                .saturating_duration_since(Instant::now()),
        );
        let result = match &spec.backend {
            Backend::Exec { program, args, env } => {
                super::exec::exec(&pass, program, args, env, &bytes, &artifact, timeout).await
            }
            Backend::Webhook { url } => {
                match self.webhook_request(&spec, &artifact, &digest, bytes.len()) {
                    Ok((token, body)) => {
                        // The webhook's token is for the webhook, not the
                        // tool: an answer echoing it, or its signature
                        // alone, does not hand it over.
                        let own = Redactor::new(crate::redact::and_signatures([(
                            "deploy-token",
                            token.as_str(),
                        )]));
                        let answer = webhook(&pass, url, token.clone(), body, timeout).await;
                        let redacted = |o: Outcome| Outcome {
                            output: own.redact_string(o.output),
                            ..o
                        };
                        answer.map(|o| (redacted(o), Redactor::default()))
                    }
                    Err(e) => Err(e),
                }
            }
        };
        // Redacted, then cut; withheld whole if it holds a guess.
        let (result, guessed) = match result.map(|(o, passed)| self.guessed(o, &passed)) {
            Ok((o, guessed)) => (Ok(o), guessed),
            Err(e) => (Err(e), None),
        };
        self.gate.outcome(
            pass,
            Event::Deploy,
            |_, _| {},
            |r| {
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
            },
        )?;
        if let Some(reason) = guessed {
            self.gate
                .refuse_guess(reason, "deploy", "output", &resource)?;
        }
        Ok(result)
    }
}

impl DeployView<'_> {
    /// A program's or webhook's output redacted and cut, or in its place,
    /// when it holds the value of a secret the tool holds only by
    /// reference, the refusal of a guess (and its reason, to record): the
    /// artifact can make the program print candidates (a tarball of files
    /// named after ten thousand PINs, listed as unpacked), and a marker
    /// would tell the tool which was right. Guesses are looked for before
    /// the values a program was `passed` are redacted: a candidate equal to
    /// one, or holding one (a URL with a password), would be marked as the
    /// variable and found by no guess check.
    fn guessed(&self, o: Outcome, passed: &Redactor) -> (Outcome, Option<String>) {
        let redactor = self.gate.redactor();
        let raw = o.output.as_bytes();
        let (found, before) = (redactor.guessed(raw), redactor.hidden_markers(raw));
        let output = redactor.redact_string(passed.redact_string(o.output));
        let found = found.or_else(|| redactor.guessed_since(&before, output.as_bytes()));
        let Some(name) = found else {
            let output = cut_output(output);
            return (Outcome { output, ..o }, None);
        };
        let what = "the deploy program's output";
        let reason = Redactor::guess_reason(what, &name);
        let output = format!("[{reason}: withheld]");
        (Outcome { output, ..o }, Some(reason))
    }

    /// The webhook's identity token (audience: the URL's origin) and body.
    fn webhook_request(
        &self,
        spec: &DeployTarget,
        artifact: &str,
        digest: &str,
        size: usize,
    ) -> Result<(String, String), wit::Error> {
        let audience = (spec.backend.audience())
            .unwrap_or_else(|| Err("not a webhook".into()))
            .map_err(|m| error(ErrorCode::Failed, m))?;
        let body = serde_json::json!({
            "target": spec.name,
            "tool": &*self.gate.audit().tool,
            "identity": &*self.gate.audit().identity,
            "task": &*self.gate.audit().task,
            "invocation": &*self.gate.audit().invocation,
            "artifact": {"name": artifact, "sha256": digest, "size": size},
        });
        Ok((self.minter.webhook_token(&audience), body.to_string()))
    }
}

/// POSTs the JSON description with the identity token; returns status and body.
async fn webhook(
    _pass: &Pass<'_, ()>,
    url: &str,
    token: String,
    body: String,
    timeout: std::time::Duration,
) -> Result<Outcome, wit::Error> {
    let failed = |m: String| error(ErrorCode::Failed, m);
    let client = crate::net::client_builder()
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
        .map_err(|e| {
            let shown = crate::net::shown_origin(url);
            failed(format!("webhook {shown} failed: {}", e.without_url()))
        })?;
    let status = i32::from(resp.status().as_u16());
    // At most READ_OUTPUT bytes of the body are read (within the timeout).
    let mut resp = resp;
    let mut text = Vec::new();
    while text.len() < READ_OUTPUT
        && let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| failed(e.without_url().to_string()))?
    {
        let room = READ_OUTPUT - text.len();
        text.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(Outcome {
        status,
        output: capped(&text),
    })
}

/// `output` cut to [`MAX_OUTPUT`] bytes, on a character boundary.
fn cut_output(mut output: String) -> String {
    output.truncate(output.floor_char_boundary(MAX_OUTPUT));
    output
}
