//! `warden demo`: the bundled example tools on a scratch workspace, and a
//! loopback API for the secrets, egress and identity steps.

mod api;

use crate::Failure;
use crate::out::outln;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use warden::approval::{ApprovalAnswer, ApprovalRequest, Approver};
use warden::audit::{FileSink, Record};
use warden::{Grant, Manifest, Rights, RuntimeBuilder};

mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

const MANIFEST: &str = include_str!("../../../../../examples/manifest.toml");
const GRANT: &str = include_str!("../../../../../examples/grants/edit-docs.toml");
const POLICIES: [(&str, &str); 3] = [
    (
        "production-deploys.cedar",
        include_str!("../../../../../examples/policies/production-deploys.cedar"),
    ),
    (
        "exfiltration.cedar",
        include_str!("../../../../../examples/policies/exfiltration.cedar"),
    ),
    (
        "github-approval.cedar",
        include_str!("../../../../../examples/policies/github-approval.cedar"),
    ),
];
const TOOLS: [(&str, &[u8]); 7] = [
    ("read-files", guests::READ_FILES_WASM),
    ("search-text", guests::SEARCH_TEXT_WASM),
    ("write-file", guests::WRITE_FILE_WASM),
    ("remove-path", guests::REMOVE_PATH_WASM),
    ("http-get", guests::HTTP_GET_WASM),
    ("call-api", guests::CALL_API_WASM),
    ("deploy-artifact", guests::DEPLOY_ARTIFACT_WASM),
];

/// Manifest entries for the tools that reach the demo's local API, whose
/// ports are only known at run time.
fn egress_manifest(api: u16, collector: u16) -> String {
    format!(
        r#"
# Added by `warden demo`: egress to the local API and collector it started.
[tools.http-get]
component = "tools/http-get.wasm"

[[tools.http-get.http]]
scheme = "http"
host = "127.0.0.1"
port = {api}

[[tools.http-get.http]]
scheme = "http"
host = "127.0.0.1"
port = {collector}

[[tools.http-get.secrets]]
name = "api-token"
source = "file:secrets/api-token"
send-to = ["http://127.0.0.1:{api}"]

# Writing release notes needs a person's approval.
[tools.release-notes]
component = "tools/write-file.wasm"

[[tools.release-notes.fs]]
handle = "workspace"
within = "workspace"
rights = ["write"]
approval = "required"

[tools.call-api]
component = "tools/call-api.wasm"
token-audiences = ["http://127.0.0.1:{api}"]

[[tools.call-api.http]]
scheme = "http"
host = "127.0.0.1"
port = {api}
"#
    )
}

/// What a directory `warden demo` laid out holds: it may lay it out again.
const LAID_OUT: &str = ".warden-demo";

/// Refuses a directory holding what the demo would replace (its trail is
/// removed, its manifest, policies and files overwritten) unless an
/// earlier demo laid it out: `--dir` pointed at a real deployment wiped
/// its trail.
fn refuse_foreign(dir: &Path) -> anyhow::Result<()> {
    if dir.join(LAID_OUT).symlink_metadata().is_ok() {
        return Ok(());
    }
    let replaced = [
        "audit.jsonl",
        "manifest.toml",
        "policies",
        "grants",
        "secrets",
        "tools",
        "workspace",
    ];
    if let Some(name) = replaced
        .iter()
        .find(|n| dir.join(n).symlink_metadata().is_ok())
    {
        anyhow::bail!(
            "{} holds {name}, which the demo would replace, and no earlier demo laid it out (expected a new or empty directory)",
            crate::shown(&dir.display().to_string())
        );
    }
    Ok(())
}

fn setup(dir: &Path, api: u16, collector: u16) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(LAID_OUT), "laid out by `warden demo`\n")?;
    let files = [
        (
            "README.md",
            "# demo project\n\nA tiny workspace for `warden demo`.\n",
        ),
        (
            "src/main.rs",
            "fn main() {\n    // TODO: greet the user by name\n    println!(\"hello\");\n}\n",
        ),
        ("docs/notes.md", "Release notes\n\nTODO: write them\n"),
        ("secrets.env", "API_TOKEN=do-not-delete\n"),
        ("dist/app-1.0.tar", "a built artifact\n"),
    ];
    for (path, text) in files {
        let path = dir.join("workspace").join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    std::fs::create_dir_all(dir.join("tools"))?;
    for (name, bytes) in TOOLS {
        std::fs::write(dir.join("tools").join(format!("{name}.wasm")), bytes)?;
    }
    std::fs::create_dir_all(dir.join("policies"))?;
    for (name, text) in POLICIES {
        std::fs::write(dir.join("policies").join(name), text)?;
    }
    std::fs::create_dir_all(dir.join("secrets"))?;
    std::fs::write(dir.join("secrets/api-token"), api::API_TOKEN)?;
    std::fs::write(
        dir.join("manifest.toml"),
        format!("{MANIFEST}{}", egress_manifest(api, collector)),
    )?;
    std::fs::create_dir_all(dir.join("grants"))?;
    std::fs::write(dir.join("grants/edit-docs.toml"), GRANT)?;
    Ok(())
}

/// Prints each approval request as the terminal prompt would, and approves it.
struct DemoApprover;

#[async_trait::async_trait]
impl Approver for DemoApprover {
    async fn ask(&self, r: &ApprovalRequest) -> Option<ApprovalAnswer> {
        let r = &r.for_people();
        // A closed stdout is noticed by the demo's next line, which ends it.
        let _ = outln!(
            "   warden: approval needed\n     tool      {} ({}…)\n     action    {}\n     resource  {}\n     details   {}\n   approve? [y/N] y   (answered by the demo)",
            r.tool,
            &r.identity[..19.min(r.identity.len())],
            r.action,
            r.resource,
            r.summary
        );
        Some(ApprovalAnswer {
            digest: r.digest.clone(),
            approved: true,
            by: "the demo".into(),
        })
    }
}

struct Step {
    title: &'static str,
    /// The same call's `warden run` flags besides the manifest, trail, tool
    /// and input (its grant and labels).
    flags: Vec<String>,
    tool: &'static str,
    grant: Grant,
    input: String,
}

pub async fn run(builder: RuntimeBuilder, dir: Option<PathBuf>) -> Result<(), Failure> {
    let scratch;
    let kept = dir.is_some();
    let dir = match dir {
        Some(d) => d,
        None => {
            scratch = tempfile::tempdir().map_err(|e| crate::usage(e.into()))?;
            scratch.path().to_owned()
        }
    };
    let fail = |e: anyhow::Error| crate::usage(e);
    if kept {
        refuse_foreign(&dir).map_err(fail)?;
    }
    let cell = Arc::new(OnceLock::new());
    let log = Arc::new(api::Log::default());
    let (api_port, collector_port) = api::start(cell.clone(), log.clone())
        .await
        .context("cannot start the demo API on 127.0.0.1")
        .map_err(fail)?;
    setup(&dir, api_port, collector_port)
        .with_context(|| format!("cannot lay out the demo in {}", dir.display()))
        .map_err(fail)?;
    // Absolute, so the commands printed run from anywhere.
    let dir = dir.canonicalize().unwrap_or(dir);
    let manifest = Manifest::load(dir.join("manifest.toml")).map_err(warden::Error::from)?;
    let audit_path = dir.join("audit.jsonl");
    let _ = std::fs::remove_file(&audit_path);
    let mut sink = FileSink::open(&audit_path).map_err(|e| fail(e.into()))?;
    if let Ok(key) = crate::audit_key() {
        sink = sink.with_signer(Arc::new(key));
    }
    let policies = manifest
        .policy
        .as_ref()
        .map(|p| p.ids().join(", "))
        .unwrap_or_default();
    let runtime = builder
        .manifest(manifest)
        .audit(Arc::new(sink))
        .approver(Arc::new(DemoApprover))
        .build()?;
    let _ = cell.set(runtime.clone());
    let ws = dir.join("workspace");
    let api = format!("http://127.0.0.1:{api_port}");
    let collector = format!("http://127.0.0.1:{collector_port}");

    outln!("Warden demo in {}", dir.display())?;
    if !kept {
        outln!(
            "(a scratch directory, removed when the demo ends: with --dir DIR the commands shown run as pasted)"
        )?;
    }
    outln!(
        "manifest ceilings: read-files, search-text: read; write-file: read,write; remove-path: read,write,delete;\n\
         http-get: egress to the local API ({api}) and collector ({collector}), secret api-token (send-to the API only);\n\
         call-api: egress to the API, identity tokens for audience {api};\n\
         deploy-artifact: workspace:read, deploy targets staging and production (labelled production);\n\
         Cedar policies: {policies}\n\n"
    )?;

    let fs_step = |title, tool, rights: Rights, input: &str| Step {
        title,
        flags: vec![
            "--grant".into(),
            format!("fs:workspace={}:{rights}", ws.display()),
        ],
        tool,
        grant: Grant::new("demo").fs("workspace", &ws, rights),
        input: input.to_owned(),
    };
    let notes = r#"{"path":"docs/notes.md","content":"Release notes\n\n- sandboxed tools\n"}"#;
    let deploy = r#"{"target":"production","artifact":"dist/app-1.0.tar"}"#;
    let steps = [
        fs_step(
            "an allowed read: read-files granted workspace:read",
            "read-files",
            Rights::READ,
            r#"{"paths":["README.md","src"]}"#,
        ),
        fs_step(
            "a denied write: write-file granted only workspace:read",
            "write-file",
            Rights::READ,
            notes,
        ),
        fs_step(
            "a granted write: write-file granted workspace:write",
            "write-file",
            Rights::WRITE,
            notes,
        ),
        fs_step(
            "a denied delete: remove-path granted workspace:read,write (write does not imply delete)",
            "remove-path",
            Rights::READ | Rights::WRITE,
            r#"{"path":"secrets.env"}"#,
        ),
        fs_step(
            "a grant wider than the ceiling: read-files asking for workspace:read,write",
            "read-files",
            Rights::READ | Rights::WRITE,
            r#"{"paths":["README.md"]}"#,
        ),
        fs_step(
            "a search: search-text granted workspace:read",
            "search-text",
            Rights::READ,
            r#"{"pattern":"TODO","globs":["**/*.rs","**/*.md"]}"#,
        ),
        Step {
            title: "a credential used without being revealed: http-get sends secret api-token by reference",
            flags: grants(&[&format!("http:{api}/"), "secret:api-token"]),
            tool: "http-get",
            grant: Grant::new("demo")
                .http(&format!("{api}/"), None)
                .secret("api-token"),
            input: format!(r#"{{"url":"{api}/secure","secret":"api-token"}}"#),
        },
        Step {
            title: "an exfiltration attempt: http-get sends api-token to the collector (granted egress, but not in the secret's send-to)",
            flags: grants(&[&format!("http:{collector}/"), "secret:api-token"]),
            tool: "http-get",
            grant: Grant::new("demo")
                .http(&format!("{collector}/"), None)
                .secret("api-token"),
            input: format!(r#"{{"url":"{collector}/steal","secret":"api-token"}}"#),
        },
        Step {
            title: "an approval gate: release-notes may write only after a person approves (the demo approves)",
            flags: grants(&[&format!("fs:workspace={}:write", ws.display())]),
            tool: "release-notes",
            grant: Grant::new("demo").fs("workspace", &ws, Rights::WRITE),
            input: r#"{"path":"CHANGELOG.md","content":"Release 0.1.0\n- sandboxed tools\n"}"#
                .into(),
        },
        Step {
            title: "a Cedar denial: deploy-artifact to production from a task without the 'release' label (policy production-needs-release)",
            flags: grants(&[
                &format!("fs:workspace={}:read", ws.display()),
                "deploy:production",
            ]),
            tool: "deploy-artifact",
            grant: Grant::new("demo")
                .fs("workspace", &ws, Rights::READ)
                .deploy("production"),
            input: deploy.into(),
        },
        Step {
            title: "the same deploy from a release task: the policy allows it, and a person approves it (deploy targets wait for approval unless waived; the demo approves)",
            flags: [
                vec!["--label".to_owned(), "release".to_owned()],
                grants(&[
                    &format!("fs:workspace={}:read", ws.display()),
                    "deploy:production",
                ]),
            ]
            .concat(),
            tool: "deploy-artifact",
            grant: Grant::new("release-1.0")
                .label("release")
                .fs("workspace", &ws, Rights::READ)
                .deploy("production"),
            input: deploy.into(),
        },
        Step {
            title: "a workload identity: call-api authenticates with a token minted for this call only",
            flags: grants(&[&format!("http:{api}/")]),
            tool: "call-api",
            grant: Grant::new("demo").http(&format!("{api}/"), None),
            input: format!(r#"{{"url":"{api}/whoami","audience":"{api}"}}"#),
        },
    ];
    for (i, step) in steps.iter().enumerate() {
        outln!("{}. {}", i + 1, step.title)?;
        outln!("   $ {}", command(&dir, step))?;
        match runtime.invoke(step.tool, &step.grant, &step.input).await {
            Ok(run) => match run.output {
                Ok(out) => outln!("   ok: {}", shorten(&out, 160)),
                Err(e) => outln!("   tool error: {}", crate::shown(&e.to_string())),
            },
            Err(e) => outln!("   refused: {}", crate::shown(&e.to_string())),
        }?;
        for line in log.take() {
            outln!("   {line}")?;
        }
        outln!()?;
    }
    // Every record on the trail before it is searched.
    runtime.flush_audit().map_err(|e| fail(e.into()))?;
    outln!(
        "secrets.env still exists: {}; docs/notes.md now reads: {:?}; the audit trail mentions the API token: {}\n",
        ws.join("secrets.env").exists(),
        std::fs::read_to_string(ws.join("docs/notes.md")).unwrap_or_default(),
        std::fs::read_to_string(&audit_path)
            .unwrap_or_default()
            .contains(api::API_TOKEN),
    )?;

    // Sign the last records now rather than on the cadence, as a clean
    // stop would.
    runtime.settle_audit();
    let text = std::fs::read_to_string(&audit_path).map_err(|e| fail(e.into()))?;
    outln!(
        "audit trail ({}, {} records):",
        audit_path.display(),
        text.lines().count()
    )?;
    for line in text.lines() {
        let r: Record = serde_json::from_str(line).map_err(|e| fail(e.into()))?;
        outln!("   {}", crate::trail::summarize(&r))?;
    }

    // The trail is tamper-evident: verify it, then an edited copy.
    let Ok(key) = crate::audit_key() else {
        return Ok(());
    };
    let keys = warden::Verifier::from_jwks(&key.jwks()).map_err(|e| fail(e.into()))?;
    let report = warden::audit::verify::verify_text(&text, Some(&keys));
    outln!(
        "\n$ warden audit verify {}\n   ok: {} records, {} signed checkpoints, complete: {}",
        audit_path.display(),
        report.records,
        report.checkpoints,
        report.is_complete()
    )?;
    let edited = text.replacen(r#""decision":"deny""#, r#""decision":"allow""#, 1);
    let edited_path = dir.join("audit-edited.jsonl");
    std::fs::write(&edited_path, &edited).map_err(|e| fail(e.into()))?;
    let report = warden::audit::verify::verify_text(&edited, Some(&keys));
    if let Some(t) = report.tampered {
        outln!(
            "$ warden audit verify {}   (one denial rewritten as allow)\n   tampered: line {}: {}",
            edited_path.display(),
            t.line,
            t.reason
        )?;
    }
    Ok(())
}

/// `--grant SPEC` for each spec.
fn grants(specs: &[&str]) -> Vec<String> {
    specs
        .iter()
        .flat_map(|s| ["--grant".to_owned(), (*s).to_owned()])
        .collect()
}

/// The `warden run` command that makes the same call, each word quoted for
/// a POSIX shell: it runs as pasted, from any directory, while `dir` exists
/// (and, for the steps that reach the demo's API, while the demo runs).
fn command(dir: &Path, step: &Step) -> String {
    let mut words = vec![
        "warden".to_owned(),
        "run".to_owned(),
        "--manifest".to_owned(),
        dir.join("manifest.toml").display().to_string(),
        "--audit".to_owned(),
        dir.join("audit.jsonl").display().to_string(),
        step.tool.to_owned(),
    ];
    words.extend(step.flags.iter().cloned());
    words.extend(["--input".to_owned(), step.input.clone()]);
    words
        .iter()
        .map(|w| shlex::try_quote(w).map_or_else(|_| w.clone(), |q| q.into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shorten(s: &str, max: usize) -> String {
    let s = s.replace('\n', "\\n");
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}
