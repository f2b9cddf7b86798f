//! The host keeps the tool contract: input is checked against the tool's
//! `inputSchema` before anything runs, output against its `outputSchema`,
//! for a tool that checks nothing itself (`contract-probe`).

use crate::common::shared_cache;
use serde_json::{Value, json};
use std::sync::Arc;
use warden::audit::{Event, MemorySink};
use warden::{Error, Grant, Runtime, ToolErrorKind, ToolSpec};

fn probe() -> (Runtime, Arc<MemorySink>) {
    let audit = MemorySink::new();
    let runtime = Runtime::builder()
        .tool(ToolSpec::new("probe", crate::CONTRACT_PROBE))
        .audit(audit.clone())
        .cache_dir(shared_cache())
        .build()
        .unwrap();
    (runtime, audit)
}

async fn invoke(rt: &Runtime, input: Value) -> Result<warden::Invocation, Error> {
    rt.invoke("probe", &Grant::new("contract"), &input.to_string())
        .await
}

#[tokio::test]
async fn input_that_breaks_the_schema_is_refused_before_anything_runs() {
    let (rt, audit) = probe();
    let ok = invoke(&rt, json!({"mode": "ok", "count": 7}))
        .await
        .unwrap();
    assert_eq!(ok.output.unwrap(), r#"{"count": 3}"#);
    let before = audit.records().len();

    for (input, at, expected) in [
        (json!({"mode": "ok", "count": "7"}), "/count", "\"integer\""),
        // uint16 is served as a range, and the range is enforced.
        (json!({"mode": "ok", "count": 70000}), "/count", "65535"),
        (json!({"mode": "rm -rf"}), "/mode", "\"ok\""),
        (json!({"count": 1}), "/", "\"mode\""),
        (
            json!({"mode": "ok", "extra": 1}),
            "/",
            "additional properties are not allowed ('extra' unexpected)",
        ),
        (json!(["mode"]), "/", "\"object\""),
    ] {
        let e = invoke(&rt, input.clone()).await.unwrap_err();
        let Error::Input(message) = &e else {
            panic!("{input}: expected an input error, got {e:?}");
        };
        assert!(
            message.starts_with("input does not match the tool's input schema: "),
            "{message}"
        );
        assert!(
            message.contains(&format!("at {at}: ")),
            "{input}: {message}"
        );
        assert!(message.contains(expected), "{input}: {message}");
        assert_eq!(e.class(), warden::ErrorClass::Usage);
    }
    // The value refused is not repeated back (it may be anything).
    let e = invoke(&rt, json!({"mode": "sk-live-0123456789"}))
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("sk-live"), "{e}");
    // Nothing ran: no start, no end, no record at all.
    assert_eq!(audit.records().len(), before);
}

#[tokio::test]
async fn output_that_breaks_the_schema_is_the_tools_failure_and_recorded() {
    let (rt, audit) = probe();
    for (mode, expected) in [
        ("wrong-type", "at /count: "),
        ("missing", "\"count\" is a required property"),
        ("not-json", "not JSON"),
    ] {
        let inv = invoke(&rt, json!({ "mode": mode })).await.unwrap();
        let e = inv.output.unwrap_err();
        assert_eq!(e.kind, ToolErrorKind::Failed, "{mode}");
        assert!(e.message.contains(expected), "{mode}: {}", e.message);
        if mode != "not-json" {
            assert!(
                e.message
                    .starts_with("the tool's output does not match its output schema: "),
                "{}",
                e.message
            );
            // The output's values are not copied into the error.
            assert!(!e.message.contains("three"), "{}", e.message);
        }
        let end = audit
            .invocation(&inv.id)
            .into_iter()
            .find(|r| r.event == Event::InvocationEnd)
            .unwrap();
        assert_eq!(end.outcome.as_deref(), Some("tool-error:failed"), "{mode}");
        assert_eq!(end.message.as_deref(), Some(e.message.as_str()));
    }
}

#[tokio::test]
async fn schemas_are_served_with_standard_formats_only() {
    let (rt, _) = probe();
    let info = rt.describe("probe").await.unwrap();
    assert_eq!(
        info.input_schema["properties"]["count"],
        json!({"type": "integer", "minimum": 0, "maximum": 65535})
    );
    assert_eq!(
        info.output_schema.unwrap()["properties"]["count"],
        json!({"type": "integer", "minimum": 0})
    );
    // The bundled tools' schemas, from schemars, carry none either.
    let demo = Runtime::builder()
        .tool(ToolSpec::new("read-files", crate::READ_FILES))
        .tool(ToolSpec::new("search-text", crate::SEARCH_TEXT))
        .cache_dir(shared_cache())
        .build()
        .unwrap();
    for tool in ["read-files", "search-text"] {
        let info = demo.describe(tool).await.unwrap();
        let text = format!("{} {}", info.input_schema, info.output_schema.unwrap());
        for f in [
            "\"uint\"",
            "\"uint16\"",
            "\"uint32\"",
            "\"uint64\"",
            "\"uint8\"",
        ] {
            assert!(!text.contains(&format!("\"format\":{f}")), "{tool}: {text}");
        }
    }
}

#[tokio::test]
async fn a_tool_that_cannot_be_described_cannot_be_invoked() {
    let rt = Runtime::builder()
        .tool(ToolSpec::new("broken", crate::BAD_DESCRIBE))
        .cache_dir(shared_cache())
        .build()
        .unwrap();
    let e = rt
        .invoke("broken", &Grant::new("contract"), "{}")
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Trap(_) | Error::Component { .. }),
        "{e:?}"
    );
}

/// A description that would rewrite a person's terminal (an OSC title, a
/// cursor move) or read in another order than stored (a right-to-left
/// override) reaches no client: the tool is refused at its describe,
/// naming the field and the character, and cannot be invoked.
#[tokio::test]
async fn a_description_a_person_would_misread_is_refused() {
    let rt = Runtime::builder()
        .tool(ToolSpec::new("hostile", crate::HOSTILE_DESCRIBE))
        .cache_dir(shared_cache())
        .build()
        .unwrap();
    let e = rt.describe("hostile").await.unwrap_err();
    let Error::Component { reason, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        reason,
        "describe() returned a description with \\u{1b} at byte 13 (expected text a person \
         sees as it is: no control, bidirectional or invisible characters)"
    );
    let e = rt
        .invoke("hostile", &Grant::new("contract"), "{}")
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("describe() returned a description with"),
        "{e}"
    );
}
