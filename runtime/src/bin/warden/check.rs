//! `warden check`: validate a manifest, its components and its policies.

use crate::out::outln;
use crate::{Failure, shown, usage};
use serde_json::{Value, json};
use std::path::Path;
use warden::{Manifest, RuntimeBuilder};

/// What a check found: each tool (with its `error` when it failed), and
/// every problem.
#[derive(Default)]
struct Report {
    tools: Vec<Value>,
    policies: Option<Value>,
    /// The agents file, when one was checked: `file`, `issuers`,
    /// `trust_domains`, `entries`.
    agents: Option<Value>,
    /// Each waiver: `file`, `line`, `column`, `field`, `what` (runs
    /// without a person's approval).
    waivers: Vec<Value>,
    /// Each problem: `message` always; `file`, `line`, `column`, `field`
    /// where the manifest's diagnostics give them, `tool` for a component.
    problems: Vec<Value>,
}

/// Exit status 0 when the manifest, every component and every policy are
/// fine, 2 otherwise (3 when the host cannot start). With `json`, one object
/// on stdout: `{"ok", "manifest", "tools": [{"name", "component",
/// "identity", "warnings"} or {"name", "component", "error"}], "policies":
/// {"ids", "files"} or null, "waivers": [{"file", "line", "column",
/// "field", "what"}], "problems": [{"message", …}]}`.
pub async fn check(
    builder: RuntimeBuilder,
    path: &Path,
    agents: Option<&Path>,
    json: bool,
) -> Result<u8, Failure> {
    let mut report = collect(builder, path).await?;
    if let Some(file) = agents {
        check_agents(&mut report, file);
    }
    if json {
        let ok = report.problems.is_empty();
        let value = json!({
            "ok": ok,
            "manifest": path.display().to_string(),
            "tools": report.tools,
            "policies": report.policies,
            "agents": report.agents,
            "waivers": report.waivers,
            "problems": report.problems,
        });
        // Handle names and messages a tool's `describe` chose are in it.
        outln!("{}", crate::trail::for_people(&value.to_string()))?;
        return Ok(if ok { 0 } else { 2 });
    }
    let mut failed = 0;
    for tool in &report.tools {
        if let Some(e) = tool.get("error") {
            failed += 1;
            outln!(
                "error {:<16} {}",
                shown(str_of(&tool["name"])),
                shown(str_of(e))
            )?;
            continue;
        }
        outln!(
            "ok    {:<16} {}  {}",
            shown(str_of(&tool["name"])),
            str_of(&tool["identity"]),
            shown(str_of(&tool["component"]))
        )?;
        for w in tool["warnings"].as_array().into_iter().flatten() {
            outln!("      warning: {}", shown(str_of(w)))?;
        }
    }
    if failed > 0 {
        return Err(usage(anyhow::anyhow!(
            "{}: {failed} of {} tools failed the check",
            path.display(),
            report.tools.len()
        )));
    }
    if !report.problems.is_empty() {
        // One line each (escaped one by one: a line break in a message
        // cannot start a line of its own), then how many.
        let n = report.problems.len();
        if n == 1 {
            return Err(usage(anyhow::anyhow!(
                "{}",
                str_of(&report.problems[0]["message"])
            )));
        }
        for p in &report.problems {
            crate::out::errln!("error: {}", shown(str_of(&p["message"])));
        }
        return Err(usage(anyhow::anyhow!(
            "{}: {n} problem{} (each above)",
            path.display(),
            if n == 1 { "" } else { "s" }
        )));
    }
    if let Some(p) = &report.policies {
        let list = |v: &Value| {
            v.as_array()
                .into_iter()
                .flatten()
                .map(str_of)
                .collect::<Vec<_>>()
                .join(", ")
        };
        outln!(
            "ok    policies         {} from {}",
            shown(&list(&p["ids"])),
            shown(&list(&p["files"]))
        )?;
    }
    if let Some(a) = &report.agents {
        outln!(
            "ok    agents           {} entries, trusting {} from {}",
            a["entries"],
            shown(
                &a["issuers"]
                    .as_array()
                    .into_iter()
                    .chain(a["trust_domains"].as_array())
                    .flatten()
                    .map(str_of)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            shown(str_of(&a["file"]))
        )?;
    }
    // Actions that would wait for a person by default, run without one:
    // security reads this list (`approval = "none"` in the manifest).
    for w in &report.waivers {
        outln!(
            "waiver {}:{}:{}: {}: {} runs without approval",
            shown(str_of(&w["file"])),
            w["line"],
            w["column"],
            shown(str_of(&w["field"])),
            shown(str_of(&w["what"]))
        )?;
    }
    outln!(
        "{}: {} tools ok, {} approval waivers",
        shown(&path.to_string_lossy()),
        report.tools.len(),
        report.waivers.len()
    )?;
    Ok(0)
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

async fn collect(builder: RuntimeBuilder, path: &Path) -> Result<Report, Failure> {
    let mut report = Report::default();
    let manifest = match Manifest::load(path) {
        Ok(m) => m,
        Err(e) => {
            for p in &e.problems {
                let mut place = p.file.as_ref().unwrap_or(&e.file).display().to_string();
                if p.line > 0 {
                    place.push_str(&format!(":{}:{}", p.line, p.column));
                }
                if !p.field.is_empty() {
                    place.push_str(&format!(": {}", p.field));
                }
                report.problems.push(json!({
                    "message": format!("{place}: {}", p.message),
                    "file": p.file.as_ref().unwrap_or(&e.file).display().to_string(),
                    "line": p.line,
                    "column": p.column,
                    "field": p.field,
                }));
            }
            return Ok(report);
        }
    };
    report.waivers = manifest
        .waivers
        .iter()
        .map(|w| {
            json!({
                "file": path.display().to_string(),
                "line": w.line,
                "column": w.column,
                "field": w.field,
                "what": w.what,
            })
        })
        .collect();
    let runtime = builder.manifest(manifest.clone()).build()?;
    for spec in manifest.tools.values() {
        match runtime.describe(&spec.name).await {
            Ok(info) => {
                let mut warnings = Vec::new();
                for want in &info.handles {
                    match spec.ceiling(&want.name) {
                        None => warnings.push(format!(
                            "the tool expects handle '{}' ({}), which the manifest does not list",
                            want.name, want.rights
                        )),
                        Some(c) if !c.rights.contains(want.rights) => warnings.push(format!(
                            "the tool expects {} on '{}', the ceiling allows {}",
                            want.rights, want.name, c.rights
                        )),
                        Some(_) => {}
                    }
                }
                report.tools.push(json!({
                    "name": spec.name,
                    "identity": info.identity,
                    "component": spec.component.display().to_string(),
                    "warnings": warnings,
                }));
            }
            Err(e) => {
                report.tools.push(json!({
                    "name": spec.name,
                    "component": spec.component.display().to_string(),
                    "error": e.to_string(),
                }));
                report.problems.push(json!({
                    "tool": spec.name,
                    "message": format!("{}: {e}", spec.name),
                }));
            }
        }
    }
    if let Some(p) = &manifest.policy {
        report.policies = Some(json!({
            "ids": p.ids(),
            "files": p.files().iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        }));
    }
    Ok(report)
}

/// Checks an agents file (`warden serve --agents`): every problem at its
/// file, line and column, with the form expected.
fn check_agents(report: &mut Report, file: &Path) {
    match warden::auth::AgentsFile::load(file) {
        Ok(a) => {
            report.agents = Some(json!({
                "file": file.display().to_string(),
                "issuers": a.issuers.iter().map(|i| i.issuer.clone()).collect::<Vec<_>>(),
                "trust_domains": a.spiffe.iter().map(|t| format!("spiffe://{}", t.domain)).collect::<Vec<_>>(),
                "entries": a.agents.len(),
            }));
        }
        Err(e) => {
            for p in e.0 {
                report.problems.push(json!({
                    "message": p.to_string(),
                    "file": p.file.display().to_string(),
                    "line": p.line,
                    "column": p.column,
                    "field": p.field,
                }));
            }
        }
    }
}
