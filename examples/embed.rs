//! Embedding Warden in an agent loop.
//!
//! The "agent" here is a fixed plan standing in for a model's tool calls: it
//! searches the workspace, reads what it found, writes a summary, and tries to
//! clean up a file it has no right to delete. The runtime gives each call
//! exactly the task's grant; denials come back as tool errors the agent can
//! read and react to, and independent calls run concurrently.
//!
//! Run it on the layout `warden demo` writes:
//!
//! ```text
//! cargo run --release -- demo --dir /tmp/warden-demo
//! cargo run --release --example embed -- /tmp/warden-demo
//! ```

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use warden::audit::FileSink;
use warden::{Grant, Manifest, Rights, Runtime};

#[tokio::main]
async fn main() -> Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).context("usage: embed DEMO_DIR")?);
    let manifest = Manifest::load(dir.join("manifest.toml"))?;
    let runtime = Runtime::builder()
        .manifest(manifest)
        .audit(Arc::new(FileSink::open(dir.join("embed-audit.jsonl"))?))
        .cache_dir(warden::engine::default_cache_dir().context("no cache directory")?)
        .build()?;

    // The task's grant, issued by the orchestrator, not by the agent: read
    // and write the workspace, but never delete. Each tool receives only the
    // part its manifest ceiling allows (`narrow`); `invoke` itself refuses a
    // grant wider than the ceiling rather than narrowing it silently.
    let workspace = dir.join("workspace");
    let task =
        Grant::new("summarize-todos").fs("workspace", &workspace, Rights::READ | Rights::WRITE);
    let call = |tool: &'static str, input: String| {
        let runtime = runtime.clone();
        let grant = runtime.narrow(tool, &task);
        async move { runtime.invoke(tool, &grant?, &input).await }
    };

    // Step 1: two independent look-ups, concurrently.
    let (todos, listing) = tokio::join!(
        call("search-text", r#"{"pattern":"TODO"}"#.into()),
        call("read-files", r#"{"paths":["."]}"#.into()),
    );
    let todos: serde_json::Value = serde_json::from_str(&todos?.output?)?;
    println!("agent: workspace has {}", listing?.output?);
    println!(
        "agent: found {} TODOs",
        todos["matches"].as_array().map_or(0, Vec::len)
    );

    // Step 2: write a summary (allowed: the grant has write).
    let mut summary = String::from("# TODOs\n\n");
    for m in todos["matches"].as_array().into_iter().flatten() {
        summary += &format!(
            "- {}:{}: {}\n",
            m["path"].as_str().unwrap_or(""),
            m["line"],
            m["text"].as_str().unwrap_or("").trim()
        );
    }
    let input = serde_json::json!({"path": "TODO-SUMMARY.md", "content": summary});
    let wrote = call("write-file", input.to_string()).await?;
    println!("agent: write-file -> {:?}", wrote.output);

    // Step 3: the agent decides to delete a file. The grant has no delete
    // right, so the tool gets `denied` and the agent sees why.
    let removed = call("remove-path", r#"{"path":"secrets.env"}"#.into()).await?;
    match removed.output {
        Ok(out) => println!("agent: remove-path -> {out}"),
        Err(e) => println!("agent: remove-path was refused ({e}); asking the user instead"),
    }

    // A grant wider than the manifest's ceiling is refused before anything runs.
    let greedy =
        Grant::new("summarize-todos").fs("workspace", &workspace, Rights::READ | Rights::DELETE);
    if let Err(e) = runtime
        .invoke("read-files", &greedy, r#"{"paths":["."]}"#)
        .await
    {
        println!("orchestrator: {e}");
    }
    println!("audit trail: {}", dir.join("embed-audit.jsonl").display());
    Ok(())
}
