//! What the trail says of fs calls that a link, a race or a failure makes
//! different from what the tool typed: the file actually acted on, a link
//! swapped in after the decision, a change that failed half-way.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use warden::approval::{ApprovalAnswer, ApprovalRequest, Approver};
use warden::audit::{Event, MemorySink, Record};
use warden::{Grant, Manifest, Rights, Runtime};

/// Approves every request, after running its hook (a local process acting
/// while the person reads the prompt).
struct Meanwhile(Box<dyn Fn(&ApprovalRequest) + Send + Sync>);

#[async_trait::async_trait]
impl Approver for Meanwhile {
    async fn ask(&self, r: &ApprovalRequest) -> Option<ApprovalAnswer> {
        (self.0)(r);
        Some(ApprovalAnswer {
            digest: r.digest.clone(),
            approved: true,
            by: "test".into(),
        })
    }
}

struct Probe {
    _dir: tempfile::TempDir,
    ws: PathBuf,
    audit: Arc<MemorySink>,
    runtime: Runtime,
}

/// fs-probe on a workspace with every right; writes wait for approval
/// when `approve_writes`, answered by `approver`.
fn probe(approve_writes: bool, approver: Option<Meanwhile>) -> Probe {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().canonicalize().unwrap().join("ws");
    std::fs::create_dir_all(ws.join(".github/workflows")).unwrap();
    std::fs::create_dir_all(ws.join("docs")).unwrap();
    std::fs::write(ws.join("docs/a.md"), "a").unwrap();
    std::os::unix::fs::symlink(".github", ws.join("docs-link")).unwrap();
    let approval = if approve_writes {
        "approval = [\"write\"]\n"
    } else {
        ""
    };
    let path = dir.path().join("manifest.toml");
    std::fs::write(
        &path,
        format!(
            "[tools.probe]\ncomponent = \"{}\"\n[[tools.probe.fs]]\nhandle = \"workspace\"\nwithin = \"{}\"\nrights = [\"read\", \"write\", \"delete\"]\n{approval}",
            crate::FS_PROBE,
            ws.display()
        ),
    )
    .unwrap();
    let audit = MemorySink::new();
    let mut builder = Runtime::builder()
        .manifest(Manifest::load(&path).unwrap())
        .audit(audit.clone())
        .cache_dir(crate::common::shared_cache());
    if let Some(a) = approver {
        builder = builder.approver(Arc::new(a));
    }
    Probe {
        _dir: dir,
        ws,
        audit,
        runtime: builder.build().unwrap(),
    }
}

impl Probe {
    /// Runs fs-probe; its answer and every record of the invocation but
    /// its start and end.
    async fn run(&self, op: Value) -> (Value, Vec<Record>) {
        let grant = Grant::new("t").fs(
            "workspace",
            &self.ws,
            Rights::READ | Rights::WRITE | Rights::DELETE,
        );
        let inv = self
            .runtime
            .invoke("probe", &grant, &op.to_string())
            .await
            .unwrap_or_else(|e| panic!("probe {op}: {e}"));
        let out = serde_json::from_str(&inv.output.unwrap()).unwrap();
        let records = (self.audit.invocation(&inv.id).into_iter())
            .filter(|r| !matches!(r.event, Event::InvocationStart | Event::InvocationEnd))
            .collect();
        (out, records)
    }
}

fn resources(records: &[Record]) -> Vec<(Event, String)> {
    records
        .iter()
        .map(|r| (r.event, r.resource.clone().unwrap_or_default()))
        .collect()
}

/// A write through a link the repository holds is recorded with where it
/// landed: a reader searching the trail for `.github` finds it.
#[tokio::test]
async fn the_trail_names_the_file_a_link_leads_to() {
    let p = probe(false, None);
    let (out, records) = p
        .run(json!({"op": "write", "path": "docs-link/workflows/x.yml", "contents": "on: push"}))
        .await;
    assert_eq!(out["ok"], "written", "{out}");
    assert!(p.ws.join(".github/workflows/x.yml").exists());
    assert_eq!(
        resources(&records),
        [(
            Event::Decision,
            "workspace:docs-link/workflows/x.yml; resolves to .github/workflows/x.yml".into()
        )]
    );

    // Without a link, the resource is the path as typed.
    let (_, records) = p
        .run(json!({"op": "write", "path": "docs/b.md", "contents": "b"}))
        .await;
    assert_eq!(
        resources(&records),
        [(Event::Decision, "workspace:docs/b.md".into())]
    );
}

/// Names that hold an arrow or a quote are quoted where paths are joined,
/// so two different renames never read the same.
#[tokio::test]
async fn a_name_holding_an_arrow_cannot_pass_for_two_paths() {
    let p = probe(false, None);
    std::fs::write(p.ws.join("a -> b"), "x").unwrap();
    std::fs::write(p.ws.join("a"), "y").unwrap();
    let (out, first) = p
        .run(json!({"op": "rename", "path": "a -> b", "to": "c"}))
        .await;
    assert_eq!(out["ok"], "renamed", "{out}");
    let (out, second) = p
        .run(json!({"op": "rename", "path": "a", "to": "b -> c"}))
        .await;
    assert_eq!(out["ok"], "renamed", "{out}");
    assert_eq!(
        resources(&first),
        [(Event::Decision, r#"workspace:"a -> b" -> c"#.into())]
    );
    assert_eq!(
        resources(&second),
        [(Event::Decision, r#"workspace:a -> "b -> c""#.into())]
    );
}

/// A link put in the path's place while the person reads the prompt: the
/// open follows no link, and the trail records the sandbox's refusal (not
/// a routine failure after an allow).
#[tokio::test]
async fn a_link_swapped_in_during_the_approval_is_refused_and_recorded() {
    let swapped: Arc<std::sync::Mutex<Option<PathBuf>>> = Default::default();
    let hook = {
        let swapped = swapped.clone();
        Meanwhile(Box::new(move |_r| {
            if let Some(at) = swapped.lock().unwrap().as_ref() {
                std::os::unix::fs::symlink("../../docs/planted.md", at).unwrap();
            }
        }))
    };
    let p = probe(true, Some(hook));
    *swapped.lock().unwrap() = Some(p.ws.join(".github/workflows/ci.yml"));
    let (out, records) = p
        .run(json!({"op": "write", "path": ".github/workflows/ci.yml", "contents": "pwned"}))
        .await;
    assert_eq!(out["error"]["code"], "denied", "{out}");
    assert!(!Path::new(&p.ws.join("docs/planted.md")).exists());
    let refusal = records
        .iter()
        .rfind(|r| r.event == Event::Decision)
        .unwrap();
    assert_eq!(refusal.decision.as_deref(), Some("deny"), "{records:?}");
    assert_eq!(refusal.rule.as_deref(), Some("fs.sandbox"));
    assert_eq!(
        refusal.reason.as_deref(),
        Some("a symlink was put in the path's place after the call was decided: nothing was done")
    );
    assert_eq!(out["error"]["message"], refusal.reason.clone().unwrap());
}

/// A person approves a write or a rename that creates its file; meanwhile
/// someone else puts a file there. It is not replaced: the call acts on
/// what was decided (and shown), and the trail says why it stopped.
#[tokio::test]
async fn a_file_made_while_the_person_reads_a_create_is_not_replaced() {
    let planted: Arc<std::sync::Mutex<Option<PathBuf>>> = Default::default();
    let hook = {
        let planted = planted.clone();
        Meanwhile(Box::new(move |r| {
            assert!(
                r.summary.contains("creates it") || r.action == "fs.rename",
                "{}",
                r.summary
            );
            if let Some(at) = planted.lock().unwrap().as_ref() {
                std::fs::write(at, "theirs").unwrap();
            }
        }))
    };
    let p = probe(true, Some(hook));
    let notes = p.ws.join("docs/notes.md");
    *planted.lock().unwrap() = Some(notes.clone());
    for op in [
        json!({"op": "write", "path": "docs/notes.md", "contents": "ours"}),
        json!({"op": "rename", "path": "docs/a.md", "to": "docs/notes.md"}),
    ] {
        std::fs::remove_file(&notes).ok();
        let (out, records) = p.run(op.clone()).await;
        assert_eq!(out["error"]["code"], "denied", "{op} {out}");
        assert_eq!(std::fs::read_to_string(&notes).unwrap(), "theirs", "{op}");
        let refusal = records
            .iter()
            .rfind(|r| r.event == Event::Decision)
            .unwrap();
        assert_eq!(refusal.rule.as_deref(), Some("fs.changed"), "{op}");
        assert_eq!(
            refusal.reason.as_deref(),
            Some(
                "'docs/notes.md' came to exist after the call was decided on as making it: nothing was done"
            )
        );
    }
    assert_eq!(
        std::fs::read_to_string(p.ws.join("docs/a.md")).unwrap(),
        "a"
    );
}

/// A change that fails is recorded with why, approved or not: it may have
/// been half made.
#[tokio::test]
async fn a_change_that_fails_is_recorded() {
    let p = probe(false, None);
    let (out, records) = p.run(json!({"op": "remove-dir", "path": "docs"})).await;
    assert_eq!(out["error"]["code"], "directory-not-empty", "{out}");
    assert!(p.ws.join("docs/a.md").exists());
    let events: Vec<_> = records.iter().map(|r| r.event).collect();
    assert_eq!(events, [Event::Decision, Event::Outcome], "{records:?}");
    let outcome = &records[1];
    assert_eq!(outcome.outcome.as_deref(), Some("error"));
    assert_eq!(outcome.action.as_deref(), Some("remove-dir"));
    assert_eq!(outcome.resource.as_deref(), Some("workspace:docs"));
    assert!(
        outcome.message.as_deref().unwrap().contains("not empty"),
        "{outcome:?}"
    );
}
