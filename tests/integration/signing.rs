//! Signed components (`signed-by`): a cosign-compatible key signature is
//! checked before the component is compiled, the refusal is audited, and
//! the signer is named in the start record. Keys and signatures are made
//! by the tests themselves, through `warden sign`.

use crate::common::shared_cache;
use base64::Engine as _;
use sha2::Digest as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use warden::audit::Record;

pub(crate) fn warden(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_warden"));
    c.arg("--cache-dir")
        .arg(shared_cache())
        .current_dir(dir)
        .env("WARDEN_STATE_DIR", dir.join("state"))
        .env("COSIGN_PASSWORD", "correct horse")
        .env_remove("WARDEN_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

pub(crate) fn run(c: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// A directory with the echo component, a key pair `keys/tools` and a
/// manifest requiring that key.
fn signed_world() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    std::fs::copy(crate::ECHO, d.join("echo.wasm")).unwrap();
    let (code, out, err) = run(warden(&d).args(["sign", "--generate-key", "keys/tools"]));
    assert_eq!(code, 0, "{out}{err}");
    std::fs::write(
        d.join("warden.toml"),
        "signed-by = { key = \"keys/tools.pub\" }\n[tools.echo]\ncomponent = \"echo.wasm\"\n",
    )
    .unwrap();
    (dir, d)
}

/// `key:sha256:<hex>` of a PEM public key's DER bytes, computed here.
fn fingerprint(pem: &str) -> String {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    format!("key:sha256:{}", hex::encode(sha2::Sha256::digest(der)))
}

fn run_echo(d: &Path) -> (i32, String, String) {
    run(warden(d).args([
        "run",
        "-m",
        "warden.toml",
        "echo",
        "--input",
        r#"{"message":"signed"}"#,
        "--audit",
        "audit.jsonl",
    ]))
}

pub(crate) fn trail(d: &Path) -> Vec<Record> {
    std::fs::read_to_string(d.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The refusal's decision record: deny `component`/`load` by `signed-by`.
pub(crate) fn refusal(d: &Path) -> Record {
    let records = trail(d);
    assert!(
        !records
            .iter()
            .any(|r| r.event == warden::audit::Event::InvocationStart),
        "a refused tool started: {records:?}"
    );
    let r = records
        .into_iter()
        .find(|r| r.capability.as_deref() == Some("component"))
        .expect("the refusal is on the trail");
    assert_eq!(
        (
            r.action.as_deref(),
            r.decision.as_deref(),
            r.rule.as_deref()
        ),
        (Some("load"), Some("deny"), Some("signed-by"))
    );
    r
}

#[test]
fn a_signed_component_runs_and_the_start_record_names_its_signer() {
    let (_dir, d) = signed_world();
    let (code, out, err) = run(warden(&d).args(["sign", "--key", "keys/tools.key", "echo.wasm"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("echo.wasm.sig"), "{out}");
    let (code, out, err) = run_echo(&d);
    assert_eq!((code, out.trim()), (0, r#"{"message":"signed"}"#), "{err}");
    let pem = std::fs::read_to_string(d.join("keys/tools.pub")).unwrap();
    let start = trail(&d)
        .into_iter()
        .find(|r| r.event == warden::audit::Event::InvocationStart)
        .unwrap();
    assert_eq!(start.signer.as_deref(), Some(fingerprint(&pem).as_str()));
    // The private key is cosign's encrypted form, readable by its owner only.
    let key = std::fs::read_to_string(d.join("keys/tools.key")).unwrap();
    assert!(key.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(d.join("keys/tools.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // And never overwritten.
    let (code, _, err) = run(warden(&d).args(["sign", "--generate-key", "keys/tools"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("an existing key is never overwritten"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("keys/tools.key")).unwrap(),
        key
    );
}

#[test]
fn an_unsigned_component_is_refused_before_compiling_and_the_trail_says_so() {
    let (_dir, d) = signed_world();
    let (code, out, err) = run_echo(&d);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("error: tool 'echo' refused before it was compiled: echo.wasm must be signed by the key keys/tools.pub (sha256:")
            && err.contains("but found no usable signature at echo.wasm.sig: cannot read the signature echo.wasm.sig: No such file or directory"),
        "{err}"
    );
    assert!(
        !err.contains("compiling echo"),
        "compiled before refusing: {err}"
    );
    let r = refusal(&d);
    assert!(r.reason.unwrap().contains("found no usable signature"));
}

#[test]
fn a_signature_by_another_key_or_over_other_bytes_is_refused() {
    let (_dir, d) = signed_world();
    let (code, _, err) = run(warden(&d).args(["sign", "--generate-key", "other"]));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(warden(&d).args(["sign", "--key", "other.key", "echo.wasm"]));
    assert_eq!(code, 0, "{err}");
    let wrong_key = run_echo(&d);
    let expected = "but the signature at echo.wasm.sig does not verify: signed by another key, or the signed bytes were changed after signing";
    assert_eq!(wrong_key.0, 2);
    assert!(wrong_key.2.contains(expected), "{}", wrong_key.2);
    refusal(&d);

    // Signed by the right key, then one byte appended.
    let (code, _, err) = run(warden(&d).args(["sign", "--key", "keys/tools.key", "echo.wasm"]));
    assert_eq!(code, 0, "{err}");
    let mut bytes = std::fs::read(d.join("echo.wasm")).unwrap();
    bytes.push(0);
    std::fs::write(d.join("echo.wasm"), bytes).unwrap();
    let tampered = run_echo(&d);
    assert_eq!(tampered.0, 2);
    assert!(tampered.2.contains(expected), "{}", tampered.2);

    // Garbage, an empty file and a FIFO where the signature should be.
    std::fs::copy(crate::ECHO, d.join("echo.wasm")).unwrap();
    for (sig, says) in [
        ("not base64 at all!", "the signature is not base64"),
        ("", "the signature is empty"),
    ] {
        std::fs::write(d.join("echo.wasm.sig"), sig).unwrap();
        let (code, _, err) = run_echo(&d);
        assert_eq!(code, 2);
        assert!(err.contains(says), "{err}");
    }
    std::fs::remove_file(d.join("echo.wasm.sig")).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(d.join("echo.wasm.sig"))
            .status()
            .unwrap()
            .success()
    );
    let (code, _, err) = run_echo(&d);
    assert_eq!(code, 2);
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn signed_by_is_checked_per_tool_and_bad_entries_are_named() {
    let (_dir, d) = signed_world();
    // A tool's own signed-by replaces the top level's.
    let (code, _, err) = run(warden(&d).args(["sign", "--generate-key", "own"]));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(warden(&d).args([
        "sign",
        "--key",
        "own.key",
        "echo.wasm",
        "-o",
        "echo.own.sig",
    ]));
    assert_eq!(code, 0, "{err}");
    std::fs::write(
        d.join("warden.toml"),
        "signed-by = { key = \"keys/tools.pub\" }\n[tools.echo]\ncomponent = \"echo.wasm\"\nsigned-by = { key = \"own.pub\" }\nsignature = \"echo.own.sig\"\n",
    )
    .unwrap();
    let (code, out, err) = run_echo(&d);
    assert_eq!(code, 0, "{out}{err}");

    std::fs::write(
        d.join("warden.toml"),
        "signed-by = { identity = \"me@example.com\", issuer = \"https://issuer\" }\n[tools.echo]\ncomponent = \"echo.wasm\"\nsignature = \"x.sig\"\n[tools.b]\ncomponent = \"echo.wasm\"\nsigned-by = { key = \"missing.pub\" }\n",
    )
    .unwrap();
    let (code, out, err) = run(warden(&d).args(["check", "warden.toml"]));
    assert_eq!(code, 2, "{out}{err}");
    for says in [
        "signed-by: trust-root missing: expected key = \"path/to/cosign.pub\", or identity = \"…\", issuer = \"https://…\" and trust-root = \"path/to/trusted_root.json\"",
        "tools.echo.signature: a signature is named but no signed-by names the key to check it with",
        "tools.b.signed-by.key: cannot read the public key missing.pub",
    ] {
        assert!(err.contains(says), "{says}\n{err}");
    }
}

#[test]
fn a_component_file_is_read_bounded_and_only_as_a_regular_file() {
    let (_dir, d) = signed_world();
    std::fs::write(
        d.join("warden.toml"),
        "[tools.echo]\ncomponent = \"echo.wasm\"\n",
    )
    .unwrap();
    // Over the 256 MiB a component may be (sparse: no disk used).
    let f = std::fs::File::create(d.join("echo.wasm")).unwrap();
    f.set_len((256 << 20) + 1).unwrap();
    drop(f);
    let (code, _, err) = run_echo(&d);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("more than the 268435456 bytes expected"),
        "{err}"
    );
    // A FIFO swapped in after the manifest was checked: refused, not
    // waited on.
    std::fs::copy(crate::ECHO, d.join("echo.wasm")).unwrap();
    let manifest = warden::Manifest::load(d.join("warden.toml")).unwrap();
    std::fs::remove_file(d.join("echo.wasm")).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(d.join("echo.wasm"))
            .status()
            .unwrap()
            .success()
    );
    let rt = warden::Runtime::builder()
        .manifest(manifest)
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(rt.invoke("echo", &warden::Grant::new("t"), "{}"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot read the component: it is a named pipe, not a regular file"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// A signature file that is a FIFO (whose open would block for a writer that
/// never comes), or a symlink to a device that never ends: refused promptly
/// as not a regular file, with the load's refusal on the trail.
#[test]
fn a_signature_that_is_a_fifo_or_a_device_is_refused_promptly() {
    for target in ["fifo", "/dev/zero"] {
        let (_dir, d) = signed_world();
        let sig = d.join("echo.wasm.sig");
        if target == "fifo" {
            assert!(Command::new("mkfifo").arg(&sig).status().unwrap().success());
        } else {
            std::os::unix::fs::symlink(target, &sig).unwrap();
        }
        let started = std::time::Instant::now();
        let (code, _, err) = run_echo(&d);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{target}: waited"
        );
        assert_eq!(code, 2, "{target}: {err}");
        assert!(
            err.contains("found no usable signature at") && err.contains("not a regular file"),
            "{target}: {err}"
        );
        refusal(&d);
    }
}

/// `--generate-key` makes both halves new or neither: an existing public
/// key (or a dangling symlink where one would go) stays as it is, and no
/// private key is made beside it.
#[test]
fn generating_a_key_never_overwrites_an_existing_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.pub"), "mine\n").unwrap();
    let (code, out, err) = run(warden(d).args(["sign", "--generate-key", "p"]));
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(
        err,
        "error: p.pub already exists: an existing key is never overwritten (remove it, or choose another PREFIX)\n"
    );
    assert!(out.is_empty(), "{out}");
    assert_eq!(std::fs::read_to_string(d.join("p.pub")).unwrap(), "mine\n");
    assert!(!d.join("p.key").exists());

    std::os::unix::fs::symlink(d.join("elsewhere"), d.join("q.pub")).unwrap();
    let (code, out, err) = run(warden(d).args(["sign", "--generate-key", "q"]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("q.pub already exists"), "{err}");
    assert!(!d.join("elsewhere").exists());
    assert!(std::fs::symlink_metadata(d.join("q.key")).is_err());
}
