//! `warden demo`: the bundled example tools on a scratch workspace.

use crate::Failure;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use warden::audit::{FileSink, Record};
use warden::{Grant, Manifest, Rights, RuntimeBuilder};

mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

const MANIFEST: &str = include_str!("../../../../examples/manifest.toml");
const GRANT: &str = include_str!("../../../../examples/grants/edit-docs.toml");
const TOOLS: [(&str, &[u8]); 4] = [
    ("read-files", guests::READ_FILES_WASM),
    ("search-text", guests::SEARCH_TEXT_WASM),
    ("write-file", guests::WRITE_FILE_WASM),
    ("remove-path", guests::REMOVE_PATH_WASM),
];

fn setup(dir: &Path) -> anyhow::Result<()> {
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
    ];
    for (path, text) in files {
        let path = dir.join("workspace").join(path);
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(path, text)?;
    }
    std::fs::create_dir_all(dir.join("tools"))?;
    for (name, bytes) in TOOLS {
        std::fs::write(dir.join("tools").join(format!("{name}.wasm")), bytes)?;
    }
    std::fs::write(dir.join("manifest.toml"), MANIFEST)?;
    std::fs::create_dir_all(dir.join("grants"))?;
    std::fs::write(dir.join("grants/edit-docs.toml"), GRANT)?;
    Ok(())
}

struct Step<'a> {
    title: &'a str,
    tool: &'a str,
    rights: Rights,
    input: &'a str,
}

pub async fn run(builder: RuntimeBuilder, dir: Option<PathBuf>) -> Result<(), Failure> {
    let scratch;
    let dir = match dir {
        Some(d) => d,
        None => {
            scratch = tempfile::tempdir().map_err(|e| crate::usage(e.into()))?;
            scratch.path().to_owned()
        }
    };
    let fail = |e: anyhow::Error| crate::usage(e);
    setup(&dir)
        .with_context(|| format!("cannot lay out the demo in {}", dir.display()))
        .map_err(fail)?;
    let manifest = Manifest::load(dir.join("manifest.toml")).map_err(warden::Error::from)?;
    let audit_path = dir.join("audit.jsonl");
    let _ = std::fs::remove_file(&audit_path);
    let sink = FileSink::open(&audit_path).map_err(|e| fail(e.into()))?;
    let runtime = builder.manifest(manifest).audit(Arc::new(sink)).build()?;
    let workspace = dir.join("workspace");

    println!("Warden demo in {}", dir.display());
    println!(
        "manifest ceilings: read-files, search-text: read; write-file: read,write; remove-path: read,write,delete\n"
    );

    let steps = [
        Step {
            title: "an allowed read: read-files granted workspace:read",
            tool: "read-files",
            rights: Rights::READ,
            input: r#"{"paths":["README.md","src"]}"#,
        },
        Step {
            title: "a denied write: write-file granted only workspace:read",
            tool: "write-file",
            rights: Rights::READ,
            input: r#"{"path":"docs/notes.md","content":"Release notes\n\n- sandboxed tools\n"}"#,
        },
        Step {
            title: "a granted write: write-file granted workspace:write",
            tool: "write-file",
            rights: Rights::WRITE,
            input: r#"{"path":"docs/notes.md","content":"Release notes\n\n- sandboxed tools\n"}"#,
        },
        Step {
            title: "a denied delete: remove-path granted workspace:read,write (write does not imply delete)",
            tool: "remove-path",
            rights: Rights::READ | Rights::WRITE,
            input: r#"{"path":"secrets.env"}"#,
        },
        Step {
            title: "a grant wider than the ceiling: read-files asking for workspace:read,write",
            tool: "read-files",
            rights: Rights::READ | Rights::WRITE,
            input: r#"{"paths":["README.md"]}"#,
        },
        Step {
            title: "a search: search-text granted workspace:read",
            tool: "search-text",
            rights: Rights::READ,
            input: r#"{"pattern":"TODO","globs":["**/*.rs","**/*.md"]}"#,
        },
    ];
    for (i, step) in steps.iter().enumerate() {
        println!("{}. {}", i + 1, step.title);
        println!(
            "   $ warden run {} --grant fs:workspace=workspace:{} --input '{}'",
            step.tool, step.rights, step.input
        );
        let grant = Grant::new("demo").fs("workspace", &workspace, step.rights);
        match runtime.invoke(step.tool, &grant, step.input).await {
            Ok(run) => match run.output {
                Ok(out) => println!("   ok: {}", shorten(&out, 160)),
                Err(e) => println!("   tool error: {e}"),
            },
            Err(e) => println!("   refused: {e}"),
        }
        println!();
    }
    println!(
        "secrets.env still exists: {}; docs/notes.md now reads: {:?}\n",
        workspace.join("secrets.env").exists(),
        std::fs::read_to_string(workspace.join("docs/notes.md")).unwrap_or_default()
    );

    let text = std::fs::read_to_string(&audit_path).map_err(|e| fail(e.into()))?;
    println!(
        "audit trail ({}, {} records):",
        audit_path.display(),
        text.lines().count()
    );
    for line in text.lines() {
        let r: Record = serde_json::from_str(line).map_err(|e| fail(e.into()))?;
        println!("   {}", summarize(&r));
    }
    Ok(())
}

fn shorten(s: &str, max: usize) -> String {
    let s = s.replace('\n', "\\n");
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

fn summarize(r: &Record) -> String {
    let event = match r.event {
        warden::audit::Event::InvocationStart => "start",
        warden::audit::Event::Decision => "decision",
        warden::audit::Event::Log => "log",
        warden::audit::Event::SecretIssued => "issued",
        warden::audit::Event::SecretExpired => "expired",
        warden::audit::Event::Egress => "egress",
        warden::audit::Event::InvocationEnd => "end",
    };
    let mut s = format!(
        "{event:<8} {:<12} inv {}",
        r.tool,
        &r.invocation[r.invocation.len().saturating_sub(8)..]
    );
    if let (Some(a), Some(res), Some(d)) = (&r.action, &r.resource, &r.decision) {
        s.push_str(&format!("  {d:<5} {a} {res}"));
        if let Some(reason) = &r.reason {
            s.push_str(&format!("  ({reason})"));
        }
    }
    if let Some(o) = &r.outcome {
        s.push_str(&format!("  outcome={o}"));
        if let Some(us) = r.duration_us {
            s.push_str(&format!(" in {:.1}ms", us as f64 / 1000.0));
        }
    }
    s
}
