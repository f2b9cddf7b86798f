//! Unit tests of `manifest`.
use super::*;

fn parse(text: &str, base: &Path) -> Result<Manifest, ManifestError> {
    Manifest::parse(text, Path::new("m.toml"), base)
}

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.wasm"), b"").unwrap();
    std::fs::create_dir(dir.path().join("ws")).unwrap();
    dir
}

#[test]
fn valid_manifest_with_defaults() {
    let dir = fixture();
    let m = parse(
        "[tools.t]\ncomponent = \"t.wasm\"\ntimeout = \"2s\"\n[[tools.t.fs]]\nhandle = \"ws\"\nwithin = \"ws\"\nrights = [\"read\", \"delete\"]\n",
        dir.path(),
    )
    .unwrap();
    let t = m.tool("t").unwrap();
    assert_eq!(t.limits.timeout, Duration::from_secs(2));
    assert_eq!(t.limits.memory, DEFAULT_MEMORY);
    assert_eq!(t.fs[0].rights, Rights::READ | Rights::DELETE);
    assert_eq!(
        t.fs[0].within,
        dir.path().join("ws").canonicalize().unwrap()
    );
}

#[test]
fn unknown_field_is_reported_with_its_line() {
    let dir = fixture();
    let err = parse(
        "[tools.t]\ncomponent = \"t.wasm\"\ncolour = \"red\"\n",
        dir.path(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("m.toml:3:1: tools.t.colour: unknown field `colour`"),
        "{msg}"
    );
    assert!(msg.contains("expected one of `component`"), "{msg}");
}

#[test]
fn every_semantic_problem_is_reported_with_field_and_expectation() {
    let dir = fixture();
    let err = parse(
        "[tools.t]\ncomponent = \"missing.wasm\"\nmemory = \"12 parsecs\"\nidentity = \"md5:00\"\n\
         [[tools.t.fs]]\nhandle = \"ws\"\nwithin = \"nowhere\"\nrights = [\"read\", \"deploy\"]\n",
        dir.path(),
    )
    .unwrap_err();
    let fields: Vec<_> = err
        .problems
        .iter()
        .map(|p| (p.line, p.field.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            (2, "tools.t.component"),
            (3, "tools.t.memory"),
            (4, "tools.t.identity"),
            (7, "tools.t.fs[0].within"),
            (8, "tools.t.fs[0].rights"),
        ]
    );
    let msg = err.to_string();
    assert!(
        msg.contains("unknown right 'deploy' (expected read, write or delete)"),
        "{msg}"
    );
    assert!(
        msg.contains("expected a path to a .wasm component"),
        "{msg}"
    );
}

#[test]
fn duplicate_handles_and_bad_names_are_refused() {
    let dir = fixture();
    let err = parse(
        "[tools.Bad]\ncomponent = \"t.wasm\"\n[[tools.Bad.fs]]\nhandle = \"ws\"\nwithin = \"ws\"\nrights = [\"read\"]\n\
         [[tools.Bad.fs]]\nhandle = \"ws\"\nwithin = \"ws\"\nrights = [\"write\"]\n",
        dir.path(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("invalid tool name: 'Bad'"), "{msg}");
    assert!(msg.contains("handle 'ws' is listed twice"), "{msg}");
}

#[test]
fn labels_are_parsed_and_checked() {
    let dir = fixture();
    let m = parse(
        "[tools.t]\ncomponent = \"t.wasm\"\nlabels = [\"internal\"]\n[[tools.t.fs]]\nhandle = \"ws\"\nwithin = \"ws\"\nrights = [\"read\"]\nlabels = [\"source\", \"pii\"]\n",
        dir.path(),
    )
    .unwrap();
    let t = m.tool("t").unwrap();
    assert_eq!(t.labels, ["internal"]);
    assert_eq!(t.fs[0].labels, ["source", "pii"]);
    let err = parse(
        "[tools.t]\ncomponent = \"t.wasm\"\n[[tools.t.deploy]]\nname = \"prod\"\nrights = [\"deploy\"]\nbackend = \"exec\"\nprogram = \"/bin/true\"\nlabels = [\"Production\"]\n",
        dir.path(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("m.toml:8:10: tools.t.deploy[0].labels: invalid label 'Production'"),
        "{msg}"
    );
}

#[test]
fn policy_problems_name_their_own_file() {
    let dir = fixture();
    std::fs::write(
        dir.path().join("p.cedar"),
        "forbid (principal, action, resource)\nwhen { context.nope };\n",
    )
    .unwrap();
    let err = parse(
        "policies = [\"p.cedar\", \"missing.cedar\"]\n[tools.t]\ncomponent = \"t.wasm\"\n",
        dir.path(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("p.cedar:2:"), "{msg}");
    assert!(msg.contains("nope"), "{msg}");
    assert!(
        msg.contains("missing.cedar: cannot read the policy file"),
        "{msg}"
    );
}

#[test]
fn empty_manifest_is_an_error() {
    let err = parse("", Path::new(".")).unwrap_err();
    assert!(err.to_string().contains("no tools"));
}

#[test]
fn actions_that_change_state_or_expose_secrets_need_approval_unless_waived() {
    use crate::caps::http::EgressApproval;
    let dir = fixture();
    let m = parse(
        r#"[tools.t]
component = "t.wasm"
[[tools.t.deploy]]
name = "prod"
rights = ["deploy"]
backend = "exec"
program = "/bin/true"
[[tools.t.deploy]]
name = "staging"
rights = ["deploy"]
backend = "exec"
program = "/bin/true"
approval = "none"
[[tools.t.secrets]]
name = "shown"
source = "env:X"
reveal = true
[[tools.t.secrets]]
name = "by-reference"
source = "env:Y"
approval = "none"
[[tools.t.secrets]]
name = "shown-waived"
source = "env:Z"
reveal = true
approval = "none"
[[tools.t.http]]
scheme = "https"
host = "read.example"
[[tools.t.http]]
scheme = "https"
host = "write.example"
methods = ["GET", "POST", "DELETE"]
[[tools.t.http]]
scheme = "https"
host = "hook.example"
methods = ["POST"]
approval = "none"
[[tools.t.http]]
scheme = "https"
host = "all.example"
approval = "required"
"#,
        dir.path(),
    )
    .unwrap();
    let t = m.tool("t").unwrap();
    let deploy: Vec<bool> = t.deploy.iter().map(|d| d.approval).collect();
    assert_eq!(deploy, [true, false]);
    let secrets: Vec<bool> = t.secrets.iter().map(|s| s.approval).collect();
    assert_eq!(secrets, [true, false, false]);
    let http: Vec<EgressApproval> = t.http.iter().map(|r| r.approval).collect();
    assert_eq!(
        http,
        [
            EgressApproval::Never,
            EgressApproval::Changing,
            EgressApproval::Never,
            EgressApproval::Always
        ]
    );
    // A changing rule's default covers its changing methods only.
    assert!(!http[1].applies("GET") && !http[1].applies("HEAD"));
    assert!(http[1].applies("POST") && http[1].applies("DELETE"));
    assert!(http[3].applies("GET"));
    // Every waiver of a default, and only those (a by-reference secret
    // needs no approval, so "none" on it waives nothing).
    let waivers: Vec<String> = m.waivers.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        waivers,
        [
            "13:12: tools.t.deploy[1].approval: deploy target 'staging' runs without approval",
            "26:12: tools.t.secrets[2].approval: revealing secret 'shown-waived' runs without approval",
            "38:12: tools.t.http[2].approval: POST to hook.example runs without approval",
        ]
    );
    let err = parse(
        "[tools.t]\ncomponent = \"t.wasm\"\n[[tools.t.deploy]]\nname = \"p\"\nrights = [\"deploy\"]\nbackend = \"exec\"\nprogram = \"/bin/true\"\napproval = \"never\"\n",
        dir.path(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains(
            "tools.t.deploy[0].approval: approval = 'never' (expected \"required\" or \"none\")"
        ),
        "{err}"
    );
}

#[test]
fn every_type_error_is_reported_with_its_field_and_the_expected_form() {
    let dir = fixture();
    let err = parse(
        "[tools.t]\ncomponent = \"t.wasm\"\ntimeout = 5\nmemory = 64\ntimout = \"5s\"\n\
         [[tools.t.fs]]\nhandle = \"ws\"\nwithin = 7\nrights = [\"read\", 5]\n\
         [[tools.t.http]]\nscheme = \"https\"\nhost = \"example.com\"\nport = 70000\n\
         [tools.u]\ncomponent = 3\nlabels = \"x\"\n\
         [tools.v]\ncomponent = \"gone.wasm\"\n",
        dir.path(),
    )
    .unwrap_err();
    let got: Vec<(usize, &str, &str)> = err
        .problems
        .iter()
        .map(|p| (p.line, p.field.as_str(), p.message.as_str()))
        .collect();
    let expect = [
        (
            3,
            "tools.t.timeout",
            "expected a duration string like \"5s\" (found integer `5`)",
        ),
        (
            4,
            "tools.t.memory",
            "expected a size string like \"64MiB\" (found integer `64`)",
        ),
        (
            5,
            "tools.t.timout",
            "unknown field `timout`, expected one of `component`",
        ),
        (
            8,
            "tools.t.fs[0].within",
            "expected a string (found integer `7`)",
        ),
        (
            9,
            "tools.t.fs[0].rights[1]",
            "expected a list of rights like [\"read\", \"write\"] (found integer `5`)",
        ),
        (
            13,
            "tools.t.http[0].port",
            "expected a port number from 1 to 65535 (found integer `70000`)",
        ),
        (
            15,
            "tools.u.component",
            "expected a path to a .wasm component or an oci:// reference, as a string (found integer `3`)",
        ),
        (
            16,
            "tools.u.labels",
            "expected a list of strings (found string \"x\")",
        ),
        // The meaning of what was well-formed is checked in the same pass.
        (18, "tools.v.component", "component file"),
    ];
    assert_eq!(got.len(), expect.len(), "{got:#?}");
    for ((line, field, message), want) in got.iter().zip(expect) {
        assert_eq!((*line, *field), (want.0, want.1), "{got:#?}");
        assert!(message.starts_with(want.2), "{message} / {}", want.2);
    }
    // A required field removed for its type is not reported again as missing.
    assert!(!err.to_string().contains("missing field"), "{err}");
}

#[test]
fn a_missing_required_field_is_reported_once_at_its_table() {
    let dir = fixture();
    let err = parse(
        "[tools.t]\ncomponent = \"t.wasm\"\n[[tools.t.fs]]\nhandle = \"ws\"\nrights = [\"read\"]\n\
         [tools.u]\ntimeout = \"1s\"\n",
        dir.path(),
    )
    .unwrap_err();
    let got: Vec<String> = err.to_string().lines().map(str::to_owned).collect();
    assert_eq!(
        got,
        [
            "m.toml:3:1: tools.t.fs[0]: missing field `within` (tools.t.fs is set aside: what is inside it is checked once this is fixed)",
            "m.toml:6:1: tools.u: missing field `component` (tools.u is set aside: what is inside it is checked once this is fixed)",
        ]
    );
}

#[test]
fn every_syntax_error_is_reported() {
    let dir = fixture();
    let err = parse(
        "[tools.t]\ncomponent = \"t.wasm\nmemory = = 3\n[tools.u\n",
        dir.path(),
    )
    .unwrap_err();
    assert!(err.problems.len() >= 2, "{err}");
    assert!(err.problems.iter().all(|p| p.line > 1), "{err}");
}

#[test]
fn a_long_value_found_is_shown_by_its_start() {
    let dir = fixture();
    let long = "x".repeat(100_000);
    let err = parse(
        &format!("[tools.t]\ncomponent = \"t.wasm\"\nlabels = \"{long}\"\n"),
        dir.path(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("expected a list of strings (found string"),
        "{msg}"
    );
    assert!(msg.len() < 400, "{}", msg.len());
}

#[test]
fn a_secret_file_inside_any_tools_fs_ceiling_is_refused() {
    let dir = fixture();
    std::fs::create_dir(dir.path().join("ws/.secrets")).unwrap();
    std::fs::write(dir.path().join("ws/.secrets/gh"), "v").unwrap();
    std::fs::create_dir(dir.path().join("tokens")).unwrap();
    std::fs::write(dir.path().join("tokens/gh"), "v").unwrap();
    std::os::unix::fs::symlink("ws/.secrets/gh", dir.path().join("link")).unwrap();
    // A link inside the ceiling to a directory outside it: the tool can
    // put a directory of its own in the link's place.
    std::os::unix::fs::symlink("../tokens", dir.path().join("ws/current")).unwrap();
    let text = |source: &str| {
        format!(
            "[tools.a]\ncomponent = \"t.wasm\"\n[[tools.a.secrets]]\nname = \"gh\"\nsource = \"{source}\"\n\
             [tools.b]\ncomponent = \"t.wasm\"\n[[tools.b.fs]]\nhandle = \"ws\"\nwithin = \"ws\"\nrights = [\"read\"]\n"
        )
    };
    let ws = dir.path().join("ws").canonicalize().unwrap();
    // In another tool's ceiling, through a link, not created yet (nor its
    // directory), behind a link in the ceiling, or a program run there.
    for (source, what, shown) in [
        ("file:.//ws/.secrets/gh", "secret file", ".//ws/.secrets/gh"),
        ("file:link", "secret file", "link"),
        ("file:ws/not-yet", "secret file", "ws/not-yet"),
        (
            "file:ws/new-dir/deeper/gh",
            "secret file",
            "ws/new-dir/deeper/gh",
        ),
        ("file:ws/current/gh", "secret file", "ws/current/gh"),
        ("exec:ws/get-token --now", "secret program", "ws/get-token"),
    ] {
        let e = parse(&text(source), dir.path()).unwrap_err();
        assert_eq!(
            e.problems
                .iter()
                .map(|p| p.message.clone())
                .collect::<Vec<_>>(),
            [format!(
                "the {what} {} is inside {}, tool 'b''s fs ceiling 'ws': a tool granted that handle could read or replace it without the secret (expected secret files and programs outside every fs ceiling)",
                dir.path().join(shown).display(),
                ws.display()
            )],
            "{source}"
        );
        assert_eq!(e.problems[0].field, "tools.a.secrets[0].source");
        assert_eq!(e.problems[0].line, 5);
    }
    for source in [
        "file:tokens/gh",
        "exec:get-token",
        "exec:/usr/bin/pass show gh",
    ] {
        parse(&text(source), dir.path()).unwrap();
    }
}

/// A name is one secret across the manifest: two tools may share a
/// secret (the same source and send-to, in any order, each tool with its
/// own reveal and approval), not give one name two values or two places
/// to go (a task's history names what it revealed by name alone).
#[test]
fn a_secret_name_is_one_secret_across_the_tools() {
    let dir = fixture();
    let text = |b: &str| {
        format!(
            "[tools.a]\ncomponent = \"t.wasm\"\n[[tools.a.secrets]]\nname = \"api-key\"\n\
             source = \"env:STRIPE_KEY\"\nreveal = true\napproval = \"none\"\n\
             send-to = [\"https://api.stripe.com\", \"https://files.stripe.com\"]\n\
             [tools.b]\ncomponent = \"t.wasm\"\n[[tools.b.secrets]]\nname = \"other\"\nsource = \"env:X\"\n\
             [[tools.b.secrets]]\nname = \"api-key\"\n{b}\n"
        )
    };
    let shared = "source = \"env:STRIPE_KEY\"\n\
                  send-to = [\"https://files.stripe.com\", \"https://api.stripe.com\"]";
    let m = parse(&text(shared), dir.path()).unwrap();
    assert_eq!(m.tools["b"].secrets[1].name, "api-key");
    for other in [
        "source = \"env:LOW_VALUE_KEY\"\nsend-to = [\"https://api.stripe.com\", \"https://files.stripe.com\"]",
        "source = \"env:STRIPE_KEY\"\nsend-to = [\"https://collector.example\"]",
        "source = \"env:STRIPE_KEY\"\nsend-to = [\"https://api.stripe.com\"]",
    ] {
        let e = parse(&text(other), dir.path()).unwrap_err();
        let problems: Vec<_> = e
            .problems
            .iter()
            .map(|p| (p.field.as_str(), p.line))
            .collect();
        assert_eq!(problems, [("tools.b.secrets[1].name", 15)], "{other}: {e}");
        assert_eq!(
            e.problems[0].message,
            "secret 'api-key' has another source or send-to here than in tool 'a': a task's \
             grant and its history name a secret by its name, so a name is one secret across \
             the manifest (expected the same source and send-to, or another name)"
        );
    }
}

#[test]
fn token_send_to_is_optional_and_checked() {
    let dir = fixture();
    let m = parse(
        "[tools.t]\ncomponent = \"t.wasm\"\n\
         token-audiences = [\"https://API.example.com/v1\", \"sts.amazonaws.com\", \"http://[::1]:8080\"]\n\
         [tools.u]\ncomponent = \"t.wasm\"\ntoken-audiences = [\"svc\"]\n\
         token-send-to = [\"https://svc.internal:8443\"]\n",
        dir.path(),
    )
    .unwrap();
    // Without one, each audience's tokens go to its own origin (checked
    // where a request is); listed, as normalized origins.
    assert_eq!(m.tool("t").unwrap().token_send_to, None);
    assert_eq!(
        m.tool("u").unwrap().token_send_to.as_deref(),
        Some(&["https://svc.internal:8443".to_owned()][..])
    );

    let err = parse(
        "[tools.t]\ncomponent = \"t.wasm\"\ntoken-audiences = [\"a\"]\n\
         token-send-to = [\"https://ok.example\", \"https://x.example/path\", \"ftp://x\"]\n\
         [tools.u]\ncomponent = \"t.wasm\"\ntoken-send-to = [\"https://ok.example\"]\n",
        dir.path(),
    )
    .unwrap_err();
    let problems: Vec<String> = err
        .problems
        .iter()
        .map(|p| format!("{}:{}: {}: {}", p.line, p.column, p.field, p.message))
        .collect();
    assert_eq!(
        problems,
        [
            "4:40: tools.t.token-send-to: invalid destination: 'https://x.example/path' has a \
             path or query (expected an origin such as https://api.example.com)",
            "4:66: tools.t.token-send-to: invalid destination: scheme 'ftp' is not allowed \
             (expected http or https)",
            "7:18: tools.u.token-send-to: token-send-to names where identity tokens may go, but \
             the tool lists no token-audiences (expected token-audiences beside it, or no \
             token-send-to)",
        ]
    );
}
