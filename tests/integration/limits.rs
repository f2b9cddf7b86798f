//! Limits end the invocation with the right error, are audited, and the host
//! keeps serving other invocations meanwhile and afterwards.

use crate::common::World;
use std::time::{Duration, Instant};
use warden::audit::Event;
use warden::{Error, Grant, LimitExceeded};

async fn hog(world: &World, attack: &str, size: usize) -> Result<warden::Invocation, Error> {
    let input = serde_json::json!({"attack": attack, "size": size}).to_string();
    world
        .runtime
        .invoke("hog", &Grant::new("limits"), &input)
        .await
}

async fn echo_works(world: &World) {
    let run = world
        .runtime
        .invoke("echo", &Grant::new("t"), r#"{"message":"still here"}"#)
        .await
        .unwrap();
    assert_eq!(run.output.unwrap(), r#"{"message":"still here"}"#);
}

/// The end record of the most recent hog invocation.
fn last_outcome(world: &World) -> (String, String) {
    let end = world
        .audit
        .records()
        .into_iter()
        .rev()
        .find(|r| r.event == Event::InvocationEnd && &*r.tool == "hog")
        .expect("an end record");
    (end.outcome.unwrap(), end.message.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_hits_the_deadline_while_others_run() {
    let world = World::new();
    echo_works(&world).await; // compile first
    let started = Instant::now();
    let looping = hog(&world, "loop", 0);
    let others = async {
        let mut served = 0;
        // Keep serving other invocations for most of the loop's second.
        while started.elapsed() < Duration::from_millis(700) {
            echo_works(&world).await;
            served += 1;
        }
        served
    };
    let (looped, served) = tokio::join!(looping, others);
    let err = looped.unwrap_err();
    assert_eq!(err.to_string(), "deadline exceeded after 1s");
    assert!(matches!(err, Error::Limit(LimitExceeded::Deadline { .. })));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert!(
        served >= 10,
        "only {served} other invocations ran during the loop"
    );
    assert_eq!(
        last_outcome(&world),
        ("limit:deadline".into(), "deadline exceeded after 1s".into())
    );
    echo_works(&world).await;
}

#[tokio::test]
async fn memory_growth_hits_the_memory_limit() {
    let world = World::new();
    let err = hog(&world, "memory", 0).await.unwrap_err();
    assert_eq!(err.to_string(), "memory limit of 32 MiB exceeded");
    assert_eq!(last_outcome(&world).0, "limit:memory");
    echo_works(&world).await;
}

#[tokio::test]
async fn deep_recursion_exhausts_the_stack() {
    let world = World::new();
    let err = hog(&world, "recursion", 0).await.unwrap_err();
    assert!(matches!(err, Error::Limit(LimitExceeded::Stack)), "{err:?}");
    assert_eq!(last_outcome(&world).0, "limit:stack");
    echo_works(&world).await;
}

#[tokio::test]
async fn stdout_and_stderr_floods_hit_the_capture_limit() {
    let world = World::with(|b| b.stdio_limit(16 << 10));
    for (attack, stream) in [("stdout-flood", "stdout"), ("stderr-flood", "stderr")] {
        let err = hog(&world, attack, 0).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{stream} exceeded its capture limit of 16 KiB")
        );
        assert_eq!(last_outcome(&world).0, format!("limit:{stream}"));
    }
    echo_works(&world).await;
}

#[tokio::test]
async fn huge_output_hits_the_output_limit() {
    let world = World::new();
    let err = hog(&world, "huge-output", 1 << 20).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "output of 1.0 MiB exceeds the limit of 64 KiB"
    );
    assert_eq!(last_outcome(&world).0, "limit:output");
    let run = hog(&world, "huge-output", 1000).await.unwrap();
    assert_eq!(run.output.unwrap().len(), 1000 + r#"{"result":""}"#.len());
}

#[tokio::test]
async fn a_panic_is_a_trap_and_a_tool_error_is_not() {
    let world = World::new();
    let err = hog(&world, "panic", 0).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "tool trapped: wasm trap: wasm `unreachable` instruction executed"
    );
    assert_eq!(last_outcome(&world).0, "trap");
    let run = world
        .runtime
        .invoke(
            "hog",
            &Grant::new("t"),
            r#"{"attack":"fail","text":"no luck"}"#,
        )
        .await
        .unwrap();
    let e = run.output.unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (warden::ToolErrorKind::Failed, "no luck")
    );
    assert_eq!(
        last_outcome(&world),
        ("tool-error:failed".into(), "no luck".into())
    );
}

#[tokio::test]
async fn stdout_is_captured_never_the_hosts() {
    let world = World::new();
    let input = r#"{"attack":"print","text":"MARKER-7f3a"}"#;
    let run = world
        .runtime
        .invoke("hog", &Grant::new("t"), input)
        .await
        .unwrap();
    assert_eq!(run.stdout, b"MARKER-7f3a");
    assert_eq!(run.stderr, b"MARKER-7f3a");
    // The CLI test `tool_stdout_never_reaches_the_cli_stdout` checks the
    // process streams.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_invocations_run_concurrently() {
    let world = World::new();
    let runtime = world.runtime.clone();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let rt = runtime.clone();
            tokio::spawn(async move {
                let input = format!(r#"{{"message":"m{i}"}}"#);
                let run = rt
                    .invoke("echo", &Grant::new(format!("task-{i}")), &input)
                    .await
                    .unwrap();
                assert_eq!(run.output.unwrap(), input);
                run.id
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        assert!(
            ids.insert(t.await.unwrap()),
            "invocation ids must be unique"
        );
    }
    assert_eq!(ids.len(), 64);
}
