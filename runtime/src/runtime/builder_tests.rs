//! Unit tests of `builder`: what a runtime refuses to be built with.
use crate::caps::secrets::{SecretSource, SecretSpec};
use crate::manifest::ToolSpec;
use crate::rights::Rights;

/// A tool that may write or delete where the manifest, a policy, a
/// component or its signer's key is could change what the host runs and
/// grants: refused at build, naming both. A ceiling that only reads
/// there is not.
#[test]
fn what_the_host_trusts_is_outside_every_writable_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("tools")).unwrap();
    std::fs::create_dir_all(repo.join("policies")).unwrap();
    std::fs::write(repo.join("tools/deploy.wasm"), "wasm").unwrap();
    std::fs::write(
        repo.join("policies/p.cedar"),
        "forbid(principal, action, resource);",
    )
    .unwrap();
    let manifest = |rights: &str, policies: &str| {
        let text = format!(
            "{policies}[tools.fmt]\ncomponent = \"tools/deploy.wasm\"\n[[tools.fmt.fs]]\nhandle = \"repo\"\nwithin = \".\"\nrights = {rights}\n\n[tools.deployer]\ncomponent = \"tools/deploy.wasm\"\n"
        );
        std::fs::write(repo.join("m.toml"), text).unwrap();
        crate::Manifest::load(repo.join("m.toml")).unwrap()
    };
    let built = |m| {
        crate::Runtime::builder()
            .manifest(m)
            .build()
            .err()
            .map(|e| e.to_string())
    };
    let e = built(manifest(r#"["read", "write"]"#, "")).expect("refused");
    let repo_shown = repo.canonicalize().unwrap();
    assert_eq!(
        e,
        format!(
            "the manifest ({}) is inside tool 'fmt''s fs ceiling 'repo' ({}), which may be written or deleted: a tool granted it could change what the host runs and grants (expected the manifest, its policies, components, signatures and keys outside every fs ceiling with write or delete rights)",
            repo.join("m.toml").display(),
            repo_shown.display()
        )
    );
    let e = built(manifest(
        r#"["read", "delete"]"#,
        "policies = [\"policies\"]\n",
    ))
    .expect("refused");
    assert!(e.contains("the manifest ("), "{e}");
    // Read only: nothing there can be changed through it.
    assert_eq!(
        built(manifest(r#"["read"]"#, "policies = [\"policies\"]\n")),
        None
    );
    // Without the manifest: the component, a policy file, its directory.
    let writer = ToolSpec::new("fmt", dir.path().join("fmt.wasm"))
        .fs("repo", &repo, Rights::WRITE)
        .unwrap();
    let other = ToolSpec::new("deployer", repo.join("tools/deploy.wasm"));
    let e = crate::Runtime::builder()
        .tool(writer.clone())
        .tool(other)
        .build()
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("the component of tool 'deployer' ("),
        "{e}"
    );
    let policy = crate::policy::RuntimePolicy::load(&[repo.join("policies")]).unwrap();
    let e = crate::Runtime::builder()
        .tool(writer)
        .policy(policy)
        .build()
        .err()
        .unwrap();
    assert!(e.to_string().contains("the policy file ("), "{e}");
}

/// Two manifests naming one tool, or each carrying policies: the
/// second would replace the first's ceilings, or its forbids, unseen.
#[test]
fn a_tool_or_a_policy_set_given_twice_is_refused_at_build() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.cedar"),
        "forbid(principal, action, resource);",
    )
    .unwrap();
    let manifest = |name: &str, tool: &str, policies: &str| {
        let text = format!("{policies}[tools.{tool}]\ncomponent = \"t.wasm\"\n");
        std::fs::write(dir.path().join("t.wasm"), "wasm").unwrap();
        std::fs::write(dir.path().join(name), text).unwrap();
        crate::Manifest::load(dir.path().join(name)).unwrap()
    };
    let built = |b: super::RuntimeBuilder| b.build().err().map(|e| e.to_string());
    let two = crate::Runtime::builder()
        .manifest(manifest("a.toml", "w", ""))
        .manifest(manifest("b.toml", "w", ""));
    assert_eq!(
        built(two).unwrap(),
        format!(
            "tool 'w' is given twice, the second time by the manifest {}: it would replace the first, ceilings and all (expected each tool named once)",
            dir.path().join("b.toml").display()
        )
    );
    let both = crate::Runtime::builder()
        .manifest(manifest("a.toml", "w", "policies = [\"p.cedar\"]\n"))
        .manifest(manifest("b.toml", "r", "policies = [\"p.cedar\"]\n"));
    assert!(
        built(both)
            .unwrap()
            .starts_with("policies are given twice, the second time by the manifest ")
    );
    let one = crate::Runtime::builder()
        .manifest(manifest("a.toml", "w", "policies = [\"p.cedar\"]\n"))
        .manifest(manifest("b.toml", "r", ""));
    assert_eq!(built(one), None);
}

/// Each manifest alone passes its check; tools given one by one (or
/// from two manifests) are checked together when the runtime is built.
#[test]
fn a_secret_file_inside_another_tools_ceiling_is_refused_at_build() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::write(ws.join("token"), "v").unwrap();
    let secret = |source| SecretSpec {
        name: "token".into(),
        source,
        ttl: None,
        reveal: false,
        send_to: Vec::new(),
        approval: false,
        labels: Vec::new(),
    };
    let reader = ToolSpec::new("reader", dir.path().join("r.wasm"))
        .fs("ws", &ws, Rights::READ)
        .unwrap();
    let holder = ToolSpec::new("holder", dir.path().join("h.wasm"))
        .secret(secret(SecretSource::File(ws.join("token"))));
    let e = crate::Runtime::builder()
        .tool(reader.clone())
        .tool(holder)
        .build()
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("tool 'holder': the secret file of secret 'token' (")
            && e.to_string()
                .contains("is inside tool 'reader''s fs ceiling 'ws'"),
        "{e}"
    );
    let outside = ToolSpec::new("holder", dir.path().join("h.wasm"))
        .secret(secret(SecretSource::File(dir.path().join("token"))));
    let e = crate::Runtime::builder()
        .tool(reader)
        .tool(outside)
        .build()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(!e.contains("fs ceiling"), "{e}");
}

/// A secret's name is one secret across every tool, from one manifest, two
/// or given one by one: two of one name with another source or send-to are
/// refused when the runtime is built.
#[test]
fn a_secret_name_is_one_secret_at_build() {
    let dir = tempfile::tempdir().unwrap();
    let secret = |var: &str, to: &[&str]| SecretSpec {
        name: "api-key".into(),
        source: SecretSource::Env(var.into()),
        ttl: None,
        reveal: false,
        send_to: to.iter().map(|t| t.to_string()).collect(),
        approval: false,
        labels: Vec::new(),
    };
    let tool = |name: &str, s| ToolSpec::new(name, dir.path().join("t.wasm")).secret(s);
    let built = |b: SecretSpec| {
        crate::Runtime::builder()
            .tool(tool("a", secret("STRIPE_KEY", &["https://api.stripe.com"])))
            .tool(tool("b", b))
            .build()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let refused = "tool 'b': secret 'api-key' has another source or send-to here than in tool 'a'";
    assert!(built(secret("LOW_KEY", &["https://api.stripe.com"])).contains(refused));
    assert!(built(secret("STRIPE_KEY", &["https://collector.example"])).contains(refused));
    let e = built(secret("STRIPE_KEY", &["https://api.stripe.com"]));
    assert!(!e.contains("api-key"), "{e}");
}
