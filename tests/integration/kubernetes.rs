//! The Kubernetes base (`deploy/kubernetes`, Kustomize) rendered by
//! `kubectl kustomize`, and the fields that matter checked against the code
//! they must agree with: probes on the paths `warden serve` answers, a grace
//! period longer than its drain, state and keys from Secrets, a read-only
//! root filesystem with the compile cache on an `emptyDir`, non-root, a
//! disruption budget, selectors that select. Also the image's Dockerfile.
//!
//! Without `kubectl` the test is skipped with a note, unless `CI` is set.

use serde_norway::Value;
use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn render() -> Option<Vec<Value>> {
    let out = match Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join("deploy/kubernetes"))
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "kubectl: {e}");
            println!("skipped: no kubectl ({e})");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        serde_norway::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect(),
    )
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

#[test]
fn the_kubernetes_base_renders_with_what_replicas_need() {
    let Some(docs) = render() else { return };
    let deployment = kind(&docs, "Deployment");
    let service = kind(&docs, "Service");
    let pdb = kind(&docs, "PodDisruptionBudget");
    let config = kind(&docs, "ConfigMap");

    // Replicas, and selectors that select the pods.
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&service["spec"]["selector"], labels);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some(1));

    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // Probes on the paths and port warden serve answers.
    let port = s(&c["ports"][0]["name"]);
    assert_eq!(s(&service["spec"]["ports"][0]["targetPort"]), port);
    for (probe, path) in [
        ("readinessProbe", warden::mcp::http::READY_PATH),
        ("livenessProbe", warden::mcp::http::HEALTH_PATH),
        ("startupProbe", warden::mcp::http::HEALTH_PATH),
    ] {
        assert_eq!(s(&c[probe]["httpGet"]["path"]), path, "{probe}");
        assert_eq!(s(&c[probe]["httpGet"]["port"]), port, "{probe}");
    }
    let args: Vec<&str> = c["args"].as_sequence().unwrap().iter().map(s).collect();
    let listen = args[args.iter().position(|a| *a == "--http").unwrap() + 1];
    assert_eq!(
        listen.rsplit(':').next().unwrap(),
        c["ports"][0]["containerPort"].as_u64().unwrap().to_string()
    );
    assert!(args.contains(&"--token-file"), "{args:?}");
    // The Service's name is a Host the endpoint answers to (any other
    // than loopback is refused).
    let hosts: Vec<&str> = args
        .windows(2)
        .filter(|w| w[0] == "--allowed-host")
        .map(|w| w[1])
        .collect();
    let name = s(&service["metadata"]["name"]);
    let service_port = service["spec"]["ports"][0]["port"].as_u64().unwrap();
    assert!(
        hosts.contains(&name) && hosts.contains(&format!("{name}:{service_port}").as_str()),
        "{hosts:?}"
    );

    // A stop fits in the grace period: preStop, warden's drain, the 2 s in
    // which it closes its connections.
    let drain = warden::mcp::http::HttpOptions::default().drain.as_secs();
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace > pre_stop + drain + 2, "grace {grace}s");

    // Non-root, read-only root filesystem, nothing to escalate.
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_ne!(pod["securityContext"]["runAsUser"].as_u64(), Some(0));
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));

    // Where each thing comes from.
    let env = |name: &str| {
        c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("env {name}"))
            .clone()
    };
    assert!(
        env("WARDEN_STATE")["value"].is_null(),
        "the URL is not inline"
    );
    assert!(env("WARDEN_STATE")["valueFrom"]["secretKeyRef"]["name"].is_string());
    assert_eq!(
        s(&env("WARDEN_REPLICA")["valueFrom"]["fieldRef"]["fieldPath"]),
        "metadata.name"
    );
    let volumes = pod["volumes"].as_sequence().unwrap();
    let volume_at = |path: &str| {
        let m = c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"));
        volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap()
            .clone()
    };
    let cache = volume_at(s(&env("WARDEN_CACHE_DIR")["value"]));
    assert!(
        cache["emptyDir"].is_mapping(),
        "the compile cache: {cache:?}"
    );
    let keys = volume_at(s(&env("WARDEN_STATE_DIR")["value"]));
    assert!(
        keys["secret"]["secretName"].is_string(),
        "the keys: {keys:?}"
    );
    let manifest = args[args.iter().position(|a| *a == "--manifest").unwrap() + 1];
    let config_dir = Path::new(manifest).parent().unwrap().to_str().unwrap();
    let cv = volume_at(config_dir);
    assert_eq!(cv["configMap"]["name"], config["metadata"]["name"]);
    let manifest_name = Path::new(manifest).file_name().unwrap().to_str().unwrap();
    let text = s(&config["data"][manifest_name]);
    warden::Manifest::parse(text, Path::new(manifest), Path::new(config_dir))
        .expect("the example manifest parses");
    // Approvals are the operator's: no agent's client answers its own.
    let approver = args.iter().position(|a| *a == "--approver");
    assert_eq!(approver.map(|i| args[i + 1]), Some("deny"), "{args:?}");
    let token = args[args.iter().position(|a| *a == "--token-file").unwrap() + 1];
    let tv = volume_at(Path::new(token).parent().unwrap().to_str().unwrap());
    assert!(tv["secret"]["secretName"].is_string(), "the token: {tv:?}");
}

#[test]
fn the_image_is_built_in_stages_and_runs_as_a_user() {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(froms[0].ends_with(" AS build"), "{froms:?}");
    assert!(text.contains("COPY --from=build "));
    assert!(text.contains(r#""--approver", "deny"]"#), "{text}");
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric user");
    assert_ne!(uid, 0);
}
