//! Grants wider than the ceiling are refused before anything runs; manifests
//! and components are checked before anything loads.

use crate::common::{World, manifest_text};
use warden::audit::Event;
use warden::{Error, Grant, GrantError, Manifest, Rights, Runtime};

/// Nothing ran (no start record), and each refused grant left one record
/// saying who asked for what and why not, in order.
fn assert_refusals_recorded(world: &World, expected: &[(&str, &str, &str)]) {
    let records = world.audit.records();
    let seen: Vec<(&str, &str, &str, &str)> = records
        .iter()
        .map(|r| {
            assert_eq!(r.event, Event::Decision, "{r:?}");
            assert_eq!(
                (
                    r.capability.as_deref(),
                    r.action.as_deref(),
                    r.decision.as_deref()
                ),
                (Some("grant"), Some("invoke"), Some("deny")),
                "{r:?}"
            );
            (
                &*r.tool,
                r.rule.as_deref().unwrap_or(""),
                r.resource.as_deref().unwrap_or(""),
                r.reason.as_deref().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(seen.len(), expected.len(), "{records:?}");
    for ((tool, rule, resource, reason), (want_tool, want_rule, want_resource)) in
        seen.iter().zip(expected)
    {
        assert_eq!((*tool, *rule), (*want_tool, *want_rule), "{reason}");
        assert!(
            resource.contains(want_resource),
            "{resource} lacks {want_resource}"
        );
        assert!(
            reason.contains("refused") || reason.contains("task id"),
            "{reason}"
        );
    }
    let ids: std::collections::BTreeSet<&str> = records.iter().map(|r| &*r.invocation).collect();
    assert_eq!(ids.len(), records.len(), "each refusal has its own id");
}

#[tokio::test]
async fn rights_beyond_the_ceiling_are_refused() {
    let world = World::new();
    let grant = world.grant(Rights::READ | Rights::WRITE);
    let err = world
        .runtime
        .invoke("reader", &grant, "{}")
        .await
        .unwrap_err();
    match &err {
        Error::Grant(GrantError::RightsExceedCeiling {
            handle,
            excess,
            ceiling,
        }) => {
            assert_eq!(
                (handle.as_str(), *excess, *ceiling),
                ("workspace", Rights::WRITE, Rights::READ)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "grant for handle 'workspace' refused: rights write exceed the manifest's ceiling (read)"
    );
    let asked = format!("fs:workspace={}:read,write", world.workspace.display());
    assert_refusals_recorded(&world, &[("reader", "grant.ceiling", &asked)]);
    let r = &world.audit.records()[0];
    assert_eq!(
        r.reason.as_deref(),
        Some(
            "grant for handle 'workspace' refused: rights write exceed the manifest's ceiling (read)"
        )
    );
    assert_eq!(&*r.task, "test-task");
}

#[tokio::test]
async fn a_handle_missing_from_the_manifest_is_refused() {
    let world = World::new();
    let grant = Grant::new("t").fs("home", &world.workspace, Rights::READ);
    let err = world
        .runtime
        .invoke("probe", &grant, "{}")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Grant(GrantError::UnknownHandle { handle, .. }) if handle == "home"),
        "{err:?}"
    );
    assert!(err.to_string().contains("its handles: workspace"), "{err}");
    let err = world
        .runtime
        .invoke("echo", &grant, "{}")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("its handles: none"), "{err}");
    assert_refusals_recorded(
        &world,
        &[
            ("probe", "grant.ceiling", "fs:home="),
            ("echo", "grant.ceiling", "fs:home="),
        ],
    );
    // A handle's name of 4 MiB, chosen by whoever writes the grant: the
    // refusal quoting it is cut in the trail as the request is.
    let huge = "h".repeat(4 << 20);
    let grant = Grant::new("t").fs(&huge, &world.workspace, Rights::READ);
    let err = world
        .runtime
        .invoke("probe", &grant, "{}")
        .await
        .unwrap_err();
    assert!(matches!(
        &err,
        Error::Grant(GrantError::UnknownHandle { .. })
    ));
    let r = world.audit.records().pop().unwrap();
    let reason = r.reason.as_deref().unwrap();
    assert!(reason.len() < 9 << 10, "{} bytes", reason.len());
    assert!(
        reason.ends_with(&format!("…[{} bytes]", err.to_string().len())),
        "{}",
        &reason[reason.len() - 40..]
    );
}

#[tokio::test]
async fn directories_outside_within_are_refused_however_spelled() {
    let world = World::new();
    let spellings = [
        world.outside.clone(),
        world.workspace.join("..").join("outside"),
        world.workspace.join("dir-out"), // a symlink inside `within` to outside it
        world.workspace.parent().unwrap().to_owned(),
        "/".into(),
    ];
    for path in spellings {
        let grant = Grant::new("t").fs("workspace", &path, Rights::READ);
        let err = world
            .runtime
            .invoke("probe", &grant, "{}")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Grant(GrantError::OutsideCeiling { handle, .. }) if handle == "workspace"),
            "{}: {err:?}",
            path.display()
        );
        assert!(err.to_string().contains("is not inside"), "{err}");
    }
    let grant = Grant::new("t").fs("workspace", world.workspace.join("missing"), Rights::READ);
    let err = world
        .runtime
        .invoke("probe", &grant, "{}")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Grant(GrantError::Open { .. })),
        "{err:?}"
    );
    let refused = world.audit.records();
    assert_eq!(refused.len(), 6, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|r| r.rule.as_deref() == Some("grant.ceiling")
                && r.resource.as_deref().unwrap().starts_with("fs:workspace="))
    );
}

#[tokio::test]
async fn bad_task_ids_and_inputs_are_refused_before_running() {
    let world = World::new();
    let err = world
        .runtime
        .invoke("echo", &Grant::new(""), "{}")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid task id"), "{err}");
    let err = world
        .runtime
        .invoke("echo", &Grant::new("t"), "{not json")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Input(m) if m.starts_with("input is not valid JSON")),
        "{err:?}"
    );
    let err = world
        .runtime
        .invoke("nope", &Grant::new("t"), "{}")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown tool 'nope' (the manifest lists: echo, hog, probe, read-files, reader, remove-path, search-text, write-file)"
    );
    // The bad task id is recorded (it is who asked); bad input and an
    // unknown tool are not grant refusals and ran nothing.
    assert_refusals_recorded(&world, &[("echo", "grant.task", "")]);
    assert_eq!(&*world.audit.records()[0].task, "");
    let big = format!("{{\"message\":\"{}\"}}", "x".repeat(2 << 20));
    let err = world
        .runtime
        .invoke("echo", &Grant::new("t"), &big)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("more than the limit"), "{err}");
}

#[tokio::test]
async fn tool_input_that_does_not_match_the_schema_is_refused_by_the_host() {
    let world = World::new();
    let before = world.audit.records().len();
    let err = world
        .runtime
        .invoke("read-files", &world.grant(Rights::READ), r#"{"paths": 7}"#)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Input(m) if m.starts_with("input does not match the tool's input schema: at /paths: ")),
        "{err}"
    );
    // Refused before the tool ran: nothing recorded.
    assert_eq!(world.audit.records().len(), before);
}

fn manifest_with_pin(world: &World, pin: &str) -> std::path::PathBuf {
    let text = manifest_text(&world.workspace).replacen(
        "[tools.probe]\n",
        &format!("[tools.probe]\nidentity = \"{pin}\"\n"),
        1,
    );
    let path = world.dir.path().join("pinned.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn identity_pins_are_enforced() {
    let world = World::new();
    let actual = warden::Identity::of(&std::fs::read(crate::FS_PROBE).unwrap());
    let good = Runtime::builder()
        .manifest(Manifest::load(manifest_with_pin(&world, &actual.to_string())).unwrap());
    assert_eq!(good.build().unwrap().load("probe").await.unwrap(), actual);

    let wrong = format!("sha256:{}", "0".repeat(64));
    let rt = Runtime::builder()
        .manifest(Manifest::load(manifest_with_pin(&world, &wrong)).unwrap())
        .build()
        .unwrap();
    let err = rt
        .invoke("probe", &Grant::new("t"), "{}")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::IdentityMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&wrong) && msg.contains(&actual.to_string()),
        "{msg}"
    );
    assert!(msg.starts_with("tool 'probe' refused to load"), "{msg}");
}

#[tokio::test]
async fn bad_components_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "core.wasm",
            b"\0asm\x01\0\0\0",
            "core WebAssembly module, not a component",
        ),
        (
            "junk.wasm",
            b"#!/bin/sh\necho hi\n",
            "not a WebAssembly component",
        ),
        (
            "broken.wasm",
            b"\0asm\x0d\0\x01\0\xff\xff",
            "invalid component",
        ),
    ];
    for (name, bytes, want) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let rt = Runtime::builder()
            .tool(warden::ToolSpec::new("t", &path))
            .build()
            .unwrap();
        let err = rt.invoke("t", &Grant::new("x"), "{}").await.unwrap_err();
        assert!(matches!(err, Error::Component { .. }), "{err:?}");
        assert!(err.to_string().contains(want), "{name}: {err}");
    }
    // Valid components that are not tools.
    let cases = [
        (
            "(component)",
            "does not export the warden:tool/guest interface",
        ),
        (
            r#"(component (import "acme:evil/net" (instance (export "send" (func)))))"#,
            "cannot be linked",
        ),
    ];
    for (wat, want) in cases {
        let path = dir.path().join("other.wasm");
        std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
        let rt = Runtime::builder()
            .tool(warden::ToolSpec::new("t", &path))
            .build()
            .unwrap();
        let err = rt.invoke("t", &Grant::new("x"), "{}").await.unwrap_err();
        assert!(matches!(err, Error::Component { .. }), "{err:?}");
        assert!(err.to_string().contains(want), "{wat}: {err}");
    }
}

/// A component that would hold more of the instance pool than one tool's
/// share (a module with two memories instantiated three times; 65 module
/// instances) is refused when it loads, naming what it holds and the cap;
/// one within the share loads (and is then refused only as not a tool).
/// Without the caps one invocation of such a tool could hold every memory
/// slot of the pool, and every other invocation would fail.
#[tokio::test]
async fn a_component_over_its_share_of_the_instance_pool_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let instances = |module: &str, n: usize| {
        let each: String = (0..n)
            .map(|i| format!("(core instance $i{i} (instantiate $m))"))
            .collect();
        format!("(component (core module $m {module}) {each})")
    };
    let two_memories = "(memory 1) (memory 1)";
    let cases = [
        (
            instances(two_memories, 3),
            "6 Wasm linear memories, which exceeds the configured maximum of 2",
        ),
        (
            instances("", 65),
            "65 core module instances, which exceeds the configured maximum of 64",
        ),
        (
            instances("(table 1 funcref) (table 1 funcref) (table 1 funcref)", 2),
            "6 tables, which exceeds the configured maximum of 4",
        ),
        (
            instances(two_memories, 1),
            "does not export the warden:tool/guest interface",
        ),
        (
            instances("", 64),
            "does not export the warden:tool/guest interface",
        ),
    ];
    for (wat, want) in cases {
        let path = dir.path().join("pool.wasm");
        std::fs::write(&path, wat::parse_str(&wat).unwrap()).unwrap();
        let rt = Runtime::builder()
            .tool(warden::ToolSpec::new("t", &path))
            .build()
            .unwrap();
        let err = rt.invoke("t", &Grant::new("x"), "{}").await.unwrap_err();
        assert!(matches!(err, Error::Component { .. }), "{err:?}");
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
}

/// A real component built for another host (`plain-echo`: WASI only, its
/// `echo` a plain exported function, what Wassette serves) named as a tool:
/// refused before anything runs, naming the interface it lacks, and nothing
/// on the trail.
#[tokio::test]
async fn a_component_built_for_another_host_is_refused_as_a_tool() {
    let audit = warden::audit::MemorySink::new();
    let rt = Runtime::builder()
        .tool(warden::ToolSpec::new("plain", crate::PLAIN_ECHO))
        .audit(audit.clone())
        .build()
        .unwrap();
    let err = rt
        .invoke("plain", &Grant::new("x"), r#"{"message":"hi"}"#)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Component { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("does not export the warden:tool/guest interface"),
        "{text}"
    );
    assert!(audit.records().is_empty(), "{:#?}", audit.records());
}

#[tokio::test]
async fn describe_reports_identity_schema_and_handles() {
    let world = World::new();
    let info = world.runtime.describe("read-files").await.unwrap();
    assert_eq!(info.name, "read-files");
    assert!(info.identity.starts_with("sha256:"));
    assert_eq!(info.input_schema["required"], serde_json::json!(["paths"]));
    assert_eq!(info.handles[0].name, "workspace");
    assert_eq!(info.handles[0].rights, Rights::READ);
    let info = world.runtime.describe("remove-path").await.unwrap();
    assert_eq!(info.handles[0].rights, Rights::DELETE);
}

#[tokio::test]
async fn narrowing_a_task_grant_is_explicit_and_stays_inside_the_ceiling() {
    let world = World::new();
    let task = Grant::new("t")
        .fs(
            "workspace",
            world.workspace.parent().unwrap(),
            Rights::READ | Rights::WRITE | Rights::DELETE,
        )
        .fs("home", "/", Rights::READ);
    // invoke refuses the task grant as it stands...
    assert!(world.runtime.invoke("reader", &task, "{}").await.is_err());
    // ...narrow gives the tool its part: its handle only, its rights only,
    // the directory clipped to `within`.
    let narrowed = world.runtime.narrow("reader", &task).unwrap();
    assert_eq!(narrowed.fs.len(), 1);
    assert_eq!(narrowed.fs["workspace"].rights, Rights::READ);
    assert_eq!(narrowed.fs["workspace"].path, world.workspace);
    let run = world
        .runtime
        .invoke("reader", &narrowed, r#"{"op":"read","path":"a.txt"}"#)
        .await
        .unwrap();
    assert!(run.output.unwrap().contains("alpha"));
    // A directory beside `within` gives nothing.
    let beside = Grant::new("t").fs("workspace", &world.outside, Rights::READ);
    assert!(
        world
            .runtime
            .narrow("reader", &beside)
            .unwrap()
            .fs
            .is_empty()
    );
    // A tool with no fs ceiling gets an empty grant.
    assert!(world.runtime.narrow("echo", &task).unwrap().fs.is_empty());
}
