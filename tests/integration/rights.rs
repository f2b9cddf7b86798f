//! Each right allows exactly its operations; no right implies another.

use crate::common::{World, code, message};
use serde_json::json;
use warden::audit::Event;
use warden::{Rights, Runtime};

const R: Rights = Rights::READ;
const W: Rights = Rights::WRITE;
const D: Rights = Rights::DELETE;

/// (operation, the rights it needs)
fn ops() -> Vec<(serde_json::Value, Rights)> {
    vec![
        (json!({"op": "read", "path": "a.txt"}), R),
        (json!({"op": "list", "path": "sub"}), R),
        (json!({"op": "stat", "path": "a.txt"}), R),
        (
            json!({"op": "write", "path": "new.txt", "contents": "x"}),
            W,
        ),
        (json!({"op": "append", "path": "a.txt", "contents": "x"}), W),
        (json!({"op": "create-dir", "path": "made/deep"}), W),
        (json!({"op": "truncate", "path": "a.txt", "size": 1}), W),
        (json!({"op": "remove-file", "path": "a.txt"}), D),
        (json!({"op": "remove-dir", "path": "empty"}), D),
        (
            json!({"op": "rename", "path": "a.txt", "to": "renamed.txt"}),
            W | D,
        ),
    ]
}

#[tokio::test]
async fn each_operation_needs_exactly_its_rights() {
    let held_sets = [R, W, D, R | W, W | D, R | D, R | W | D];
    for (op, needs) in ops() {
        for held in held_sets {
            let world = World::new();
            let (report, inv) = world.probe(held, op.clone()).await;
            let decisions = world.decisions(&inv);
            assert_eq!(decisions.len(), 1, "{op} with {held}: {decisions:?}");
            let d = &decisions[0];
            assert_eq!(d.capability.as_deref(), Some("fs"));
            assert_eq!(d.action.as_deref(), op["op"].as_str());
            if held.contains(needs) {
                assert_eq!(
                    code(&report),
                    None,
                    "{op} with {held} should succeed: {report}"
                );
                assert_eq!(d.decision.as_deref(), Some("allow"));
            } else {
                assert_eq!(code(&report), Some("denied"), "{op} with {held}: {report}");
                assert_eq!(d.decision.as_deref(), Some("deny"), "{op} with {held}");
                assert_eq!(d.rule.as_deref(), Some("fs.rights"));
                let missing = needs.excess_over(held).to_string();
                assert!(
                    message(&report).contains(&format!("needs the {missing} right")),
                    "{report}"
                );
                assert_eq!(d.reason.as_deref(), Some(message(&report)));
                // Nothing changed.
                assert_eq!(
                    std::fs::read_to_string(world.workspace.join("a.txt")).unwrap(),
                    "alpha"
                );
                assert!(!world.workspace.join("new.txt").exists());
                assert!(!world.workspace.join("made").exists());
                assert!(world.workspace.join("empty").is_dir());
            }
        }
    }
}

#[tokio::test]
async fn allowed_operations_have_their_effect() {
    let world = World::new();
    let all = R | W | D;
    let (r, _) = world
        .probe(R, json!({"op": "read", "path": "sub/b.txt"}))
        .await;
    assert_eq!(r["ok"], "beta");
    let (r, _) = world.probe(R, json!({"op": "list", "path": "."})).await;
    assert_eq!(
        r["ok"],
        json!([
            "a.txt",
            "dir-out",
            "empty",
            "link-in",
            "link-out",
            "rel-link-out",
            "sub"
        ])
    );
    world
        .probe(
            W,
            json!({"op": "write", "path": "sub/c.txt", "contents": "gamma"}),
        )
        .await;
    assert_eq!(
        std::fs::read_to_string(world.workspace.join("sub/c.txt")).unwrap(),
        "gamma"
    );
    world
        .probe(
            W,
            json!({"op": "append", "path": "sub/c.txt", "contents": "!"}),
        )
        .await;
    assert_eq!(
        std::fs::read_to_string(world.workspace.join("sub/c.txt")).unwrap(),
        "gamma!"
    );
    world
        .probe(W, json!({"op": "truncate", "path": "sub/c.txt", "size": 2}))
        .await;
    assert_eq!(
        std::fs::read_to_string(world.workspace.join("sub/c.txt")).unwrap(),
        "ga"
    );
    world
        .probe(
            W | D,
            json!({"op": "rename", "path": "sub/c.txt", "to": "c.txt"}),
        )
        .await;
    assert!(world.workspace.join("c.txt").exists() && !world.workspace.join("sub/c.txt").exists());
    world
        .probe(D, json!({"op": "remove-file", "path": "c.txt"}))
        .await;
    assert!(!world.workspace.join("c.txt").exists());
    let (r, _) = world
        .probe(D, json!({"op": "remove-dir", "path": "sub"}))
        .await;
    assert_eq!(code(&r), Some("directory-not-empty"), "{r}");
    world
        .probe(
            all,
            json!({"op": "remove-dir", "path": "sub", "recursive": true}),
        )
        .await;
    assert!(!world.workspace.join("sub").exists());
}

#[tokio::test]
async fn named_confusions_are_denied() {
    let world = World::new();
    // write through a read handle
    let (r, _) = world
        .probe(
            R,
            json!({"op": "write", "path": "a.txt", "contents": "pwned"}),
        )
        .await;
    assert_eq!(code(&r), Some("denied"));
    // truncate through a read handle
    let (r, _) = world
        .probe(R, json!({"op": "truncate", "path": "a.txt", "size": 0}))
        .await;
    assert_eq!(code(&r), Some("denied"));
    // delete through a write handle
    let (r, _) = world
        .probe(W, json!({"op": "remove-file", "path": "a.txt"}))
        .await;
    assert_eq!(code(&r), Some("denied"));
    // overwrite-by-rename needs delete too
    let (r, _) = world
        .probe(
            W,
            json!({"op": "rename", "path": "sub/b.txt", "to": "a.txt"}),
        )
        .await;
    assert_eq!(code(&r), Some("denied"));
    // read through a write+delete handle
    let (r, _) = world
        .probe(W | D, json!({"op": "read", "path": "a.txt"}))
        .await;
    assert_eq!(code(&r), Some("denied"));
    assert_eq!(
        std::fs::read_to_string(world.workspace.join("a.txt")).unwrap(),
        "alpha"
    );
    assert!(world.workspace.join("sub/b.txt").exists());
}

#[tokio::test]
async fn a_handle_not_in_the_grant_cannot_be_opened() {
    let world = World::new();
    let (r, inv) = world
        .probe(R, json!({"op": "read", "handle": "home", "path": "a.txt"}))
        .await;
    assert_eq!(code(&r), Some("denied"));
    assert_eq!(message(&r), "no handle 'home' in this task's grant");
    let d = world.decisions(&inv);
    assert_eq!(d[0].rule.as_deref(), Some("fs.handle"));
    assert_eq!(d[0].decision.as_deref(), Some("deny"));
}

#[tokio::test]
async fn host_call_size_limit() {
    let world = World::with(|b| b.hostcall_limit(1024));
    let big = "x".repeat(2048);
    let (r, inv) = world
        .probe(
            W,
            json!({"op": "write", "path": "big.txt", "contents": big}),
        )
        .await;
    assert_eq!(code(&r), Some("too-large"), "{r}");
    assert_eq!(world.decisions(&inv)[0].rule.as_deref(), Some("fs.size"));
    assert!(!world.workspace.join("big.txt").exists());
    std::fs::write(world.workspace.join("big.txt"), &big).unwrap();
    let (r, _) = world
        .probe(R, json!({"op": "read", "path": "big.txt"}))
        .await;
    assert_eq!(code(&r), Some("too-large"), "{r}");
}

#[tokio::test]
async fn example_tools_work_under_their_grants() {
    let world = World::new();
    let grant = world.grant(R);
    let run = world
        .runtime
        .invoke("read-files", &grant, r#"{"paths":["a.txt","sub"]}"#)
        .await
        .unwrap();
    let out: serde_json::Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(out["entries"][0]["content"], "alpha");
    assert_eq!(out["entries"][1]["entries"], json!(["b.txt"]));

    std::fs::write(
        world.workspace.join("sub/code.rs"),
        "fn main() {}\n// TODO: one\nlet x = 1; // todo two\n",
    )
    .unwrap();
    let run = world
        .runtime
        .invoke(
            "search-text",
            &grant,
            r#"{"pattern":"todo","case_insensitive":true,"globs":["sub/*.rs"]}"#,
        )
        .await
        .unwrap();
    let out: serde_json::Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(out["matches"].as_array().unwrap().len(), 2, "{out}");
    assert_eq!(out["matches"][0]["line"], 2);
    assert_eq!(out["matches"][0]["path"], "sub/code.rs");
    let run = world
        .runtime
        .invoke("search-text", &grant, r#"{"pattern":"[", "globs":[]}"#)
        .await
        .unwrap();
    let err = run.output.unwrap_err();
    assert_eq!(err.kind, warden::ToolErrorKind::InvalidInput);

    let run = world
        .runtime
        .invoke(
            "write-file",
            &world.grant(W),
            r#"{"path":"docs/new.md","content":"hi","create_dirs":true}"#,
        )
        .await
        .unwrap();
    assert!(run.output.is_ok(), "{:?}", run.output);
    assert_eq!(
        std::fs::read_to_string(world.workspace.join("docs/new.md")).unwrap(),
        "hi"
    );

    let run = world
        .runtime
        .invoke(
            "remove-path",
            &world.grant(D),
            r#"{"path":"sub","recursive":true}"#,
        )
        .await
        .unwrap();
    assert!(run.output.is_ok(), "{:?}", run.output);
    assert!(!world.workspace.join("sub").exists());

    let records = world.audit.records();
    assert!(
        records
            .iter()
            .any(|r| r.event == Event::InvocationEnd && &*r.tool == "remove-path")
    );
}

/// The README's example tool, as a tool author would write it.
#[tokio::test]
async fn the_readme_example_tool_counts_lines() {
    let world = World::new();
    let rt = Runtime::builder()
        .tool(
            warden::ToolSpec::new("line-count", crate::LINE_COUNT)
                .fs("workspace", &world.workspace, R)
                .unwrap(),
        )
        .cache_dir(crate::common::shared_cache())
        .build()
        .unwrap();
    std::fs::write(world.workspace.join("three.txt"), "1\n2\n3\n").unwrap();
    let run = rt
        .invoke(
            "line-count",
            &world.grant(R),
            r#"{"paths":["three.txt","a.txt"]}"#,
        )
        .await
        .unwrap();
    assert_eq!(
        run.output.unwrap(),
        r#"{"lines":[["three.txt",3],["a.txt",1]]}"#
    );
    let run = rt
        .invoke("line-count", &world.grant(R), r#"{"paths":["../x"]}"#)
        .await
        .unwrap();
    assert_eq!(run.output.unwrap_err().kind, warden::ToolErrorKind::Denied);
    let info = rt.describe("line-count").await.unwrap();
    assert_eq!(
        info.description,
        "Count the lines of text files in the workspace."
    );
}
