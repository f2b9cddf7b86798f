//! Unit tests of `invoke`.
use super::*;
use crate::caps::deploy::Backend;
use crate::caps::fs::GrantedHandle;
use crate::caps::secrets::SecretSource;
use crate::rights::Rights;

#[test]
fn the_host_reads_at_most_twice_the_larger_limit_from_a_tool() {
    assert_eq!(lift_limit(16 << 20, 1 << 20), 32 << 20);
    assert_eq!(lift_limit(1024, 64 << 10), 128 << 10);
    assert_eq!(lift_limit(usize::MAX, 1), usize::MAX);
}

#[tokio::test]
async fn a_call_ends_within_its_limit_counted_from_its_start() {
    async fn within_for<F: Future>(
        limit: Duration,
        call: Pin<&mut F>,
    ) -> Result<F::Output, Elapsed> {
        within(Instant::now() + limit, call).await
    }
    // Ready at once (no timer), or after waiting: its output.
    assert_eq!(
        within_for(Duration::from_secs(3600), std::pin::pin!(async { 5 })).await,
        Ok(5)
    );
    let later = async {
        tokio::task::yield_now().await;
        7
    };
    assert_eq!(
        within_for(Duration::from_secs(3600), std::pin::pin!(later)).await,
        Ok(7)
    );
    // A call that never ends is cut at its limit.
    let start = Instant::now();
    let never = std::pin::pin!(std::future::pending::<()>());
    let cut = tokio::time::timeout(
        Duration::from_secs(10),
        within_for(Duration::from_millis(50), never),
    );
    assert!(cut.await.expect("cut at its limit, not hung").is_err());
    assert!(start.elapsed() >= Duration::from_millis(50));
    // A first poll that takes 300 ms counts against a 400 ms limit: cut
    // at ~400 ms, not 300 + 400.
    let start = Instant::now();
    let slow_then_never = async {
        std::thread::sleep(Duration::from_millis(300));
        std::future::pending::<()>().await
    };
    assert!(
        within_for(Duration::from_millis(400), std::pin::pin!(slow_then_never))
            .await
            .is_err()
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(650),
        "{took:?}"
    );
}

#[test]
fn input_over_the_limit_or_not_json_is_refused_before_anything_runs() {
    let any = Contract::new(&serde_json::json!({}), None).unwrap();
    assert!(check_input(r#"{"a":1}"#, 7, &any).is_ok());
    let e = check_input(r#"{"a":1}"#, 6, &any).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid input: input is 7 bytes, more than the limit of 6 bytes"
    );
    let e = check_input("{", 100, &any).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("invalid input: input is not valid JSON: "),
        "{e}"
    );
    let strict = Contract::new(&serde_json::json!({"type": "array"}), None).unwrap();
    let e = check_input(r#"{"a":1}"#, 100, &strict).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("invalid input: input does not match the tool's input schema: at /: "),
        "{e}"
    );
}

#[test]
fn the_start_record_names_host_paths_and_token_scopes_do_not() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = cap_std::fs::Dir::open_ambient_dir(&root, cap_std::ambient_authority()).unwrap();
    let handle = GrantedHandle {
        name: "repo".into(),
        rights: Rights::READ,
        path: root.clone(),
        approval: Rights::NONE,
        labels: Vec::new(),
        dir,
    };
    let mut fs = FsCtx::default();
    fs.handles.insert("repo".into(), Arc::new(handle));
    let granted = Authorized {
        fs,
        secrets: vec![SecretSpec {
            name: "api-key".into(),
            source: SecretSource::Env("API_KEY".into()),
            ttl: None,
            reveal: false,
            send_to: Vec::new(),
            approval: false,
            labels: Vec::new(),
        }],
        egress: Vec::new(),
        deploy: vec![DeployTarget {
            name: "staging".into(),
            backend: Backend::Webhook {
                url: "https://deploy.example.com/hook".into(),
            },
            timeout: deploy::DEFAULT_TIMEOUT,
            approval: false,
            labels: Vec::new(),
        }],
    };
    let (listed, scope) = granted.names();
    assert_eq!(
        listed,
        format!(
            "repo={}:{} secret:api-key deploy:staging",
            root.display(),
            Rights::READ
        )
    );
    assert_eq!(
        scope,
        [
            format!("fs:repo:{}", Rights::READ),
            "secret:api-key".into(),
            "deploy:staging".into()
        ]
    );
}
