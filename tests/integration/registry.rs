//! Components from OCI registries: push and pull through a real registry
//! on loopback (Debian's `docker-registry`, the CNCF distribution server),
//! runs from the blob cache with the registry stopped, and the refusals:
//! an identity pin, wrong bytes from the registry, plain HTTP off loopback,
//! malformed references, a corrupted cache.
//!
//! Without `/usr/bin/docker-registry` the registry tests are skipped with a
//! note, unless `CI` is set, when they fail.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use warden::Identity;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A distribution server on a free loopback port, storing under a temp
/// directory; killed on drop.
struct Registry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Registry {
    /// The registry, or `None` (with a note) when the binary is absent
    /// outside CI.
    fn start() -> Option<Registry> {
        if !Path::new(REGISTRY_BIN).exists() {
            if std::env::var_os("CI").is_some() {
                panic!("{REGISTRY_BIN} is missing (CI installs Debian's docker-registry)");
            }
            println!("skipped: {REGISTRY_BIN} not installed (apt-get install docker-registry)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  delete:\n    enabled: true\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = Registry {
            child: Some(child),
            dir,
            port,
        };
        let started = Instant::now();
        while !answers(port) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the registry did not answer GET /v2/ within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(registry)
    }

    fn reference(&self, path: &str) -> String {
        format!("oci://127.0.0.1:{}/{path}", self.port)
    }

    /// Stops the server (its storage stays until drop).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The file holding a blob in the registry's storage.
    fn blob_file(&self, digest: &Identity) -> PathBuf {
        let hex = digest.hex();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(&hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `GET /v2/` on the port answers 200.
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// A scratch directory: its own compile and blob cache, audit trail and
/// state, so what one test pulls another does not see.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn warden(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .arg("--cache-dir")
            .arg(self.cache())
            .args(args)
            .env("WARDEN_STATE_DIR", self.dir.path().join("state"))
            .env_remove("WARDEN_LOG")
            .env_remove("WARDEN_OFFLINE")
            .env_remove("WARDEN_REGISTRY_USERNAME")
            .env_remove("WARDEN_REGISTRY_PASSWORD")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// A manifest with one tool `echo` from `component`, plus `extra` lines.
    fn manifest(&self, component: &str, extra: &str) -> String {
        let path = self.dir.path().join("warden.toml");
        std::fs::write(
            &path,
            format!("[tools.echo]\ncomponent = \"{component}\"\n{extra}"),
        )
        .unwrap();
        path.display().to_string()
    }

    /// `warden [--offline] run --manifest M echo --input {"message":"hi"}`.
    fn run_echo(&self, manifest: &str, offline: bool) -> Output {
        let audit = self.dir.path().join("audit.jsonl").display().to_string();
        let mut args = vec![];
        if offline {
            args.push("--offline");
        }
        args.extend([
            "run",
            "--manifest",
            manifest,
            "echo",
            "--audit",
            &audit,
            "--input",
            r#"{"message":"hi"}"#,
        ]);
        self.warden(&args)
    }

    fn trail(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| {
            !l.starts_with("compiling ") && !l.starts_with("pulling ") && !l.starts_with("pushing ")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn echo_identity() -> Identity {
    Identity::of(&std::fs::read(crate::ECHO).unwrap())
}

/// `warden push ECHO REF`: the reference by digest it prints.
fn push_echo(s: &Scratch, reference: &str) -> String {
    let o = s.warden(&["push", crate::ECHO, reference]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let pinned = stdout(&o).trim().to_owned();
    let repo = reference.rsplit_once(':').unwrap().0;
    assert!(pinned.starts_with(&format!("{repo}@sha256:")), "{pinned}");
    pinned
}

fn assert_ran(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    assert_eq!(stdout(o).trim(), r#"{"message":"hi"}"#);
}

#[test]
fn push_pull_by_tag_and_digest_run_and_run_offline_with_the_registry_stopped() {
    let Some(mut registry) = Registry::start() else {
        return;
    };
    let s = Scratch::new();
    let tag = registry.reference("tools/echo:v1");
    let pinned = push_echo(&s, &tag);
    // The same bytes push to the same digest.
    assert_eq!(push_echo(&s, &tag), pinned);
    let id = echo_identity();

    let o = s.warden(&["pull", &tag]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let size = std::fs::metadata(crate::ECHO).unwrap().len();
    assert_eq!(
        stdout(&o),
        format!("{tag}: {pinned} (identity {id}, {size} bytes, fetched)\n")
    );
    let o = s.warden(&["pull", &pinned]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("{pinned}: {pinned} (identity {id}, {size} bytes, already in the cache)\n")
    );
    let blob = s.cache().join("blobs/sha256").join(id.hex());
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        std::fs::read(crate::ECHO).unwrap()
    );

    // Runs by tag and by digest; the trail names the bytes that ran.
    let by_tag = s.manifest(&tag, "");
    assert_ran(&s.run_echo(&by_tag, false));
    assert!(
        s.trail().contains(&format!("\"identity\":\"{id}\"")),
        "{}",
        s.trail()
    );
    let by_digest = s.manifest(&pinned, &format!("identity = \"{id}\"\n"));
    assert_ran(&s.run_echo(&by_digest, false));

    // With the registry gone, both run from the cache: offline, and also
    // without --offline (a cached digest never touches the network).
    registry.stop();
    assert!(!answers(registry.port));
    let by_tag = s.manifest(&tag, "");
    assert_ran(&s.run_echo(&by_tag, true));
    assert_ran(&s.run_echo(&by_tag, false));
    let by_digest = s.manifest(&pinned, "");
    assert_ran(&s.run_echo(&by_digest, true));
    // WARDEN_OFFLINE=1 is --offline.
    let audit = s.dir.path().join("audit.jsonl").display().to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["--cache-dir", &s.cache().display().to_string()])
        .args(["run", "--manifest", &by_digest, "echo", "--audit", &audit])
        .args(["--input", r#"{"message":"hi"}"#])
        .env("WARDEN_STATE_DIR", s.dir.path().join("state"))
        .env("WARDEN_OFFLINE", "1")
        .output()
        .unwrap();
    assert_ran(&o);
}

#[test]
fn offline_without_the_component_in_the_cache_fails_with_what_to_do() {
    let s = Scratch::new();
    let reference = format!("oci://127.0.0.1:{}/tools/echo:v1", free_port());
    let manifest = s.manifest(&reference, "");
    let o = s.run_echo(&manifest, true);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "error: {reference}: not in the cache (offline: the registry is not asked); run `warden pull {reference}`\n"
        )
    );
}

#[tokio::test]
async fn the_library_serves_a_pulled_digest_offline_and_refuses_one_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(crate::ECHO).unwrap();
    let id = Identity::of(&bytes);
    // A cache laid out as a pull leaves it: the manifest and the component,
    // each under its digest.
    let (_, manifest) = warden_artifact(&bytes);
    let md = Identity::of(&manifest);
    let cache = warden::oci::BlobCache::open(dir.path()).unwrap();
    cache.put(&md, &manifest).unwrap();
    cache.put(&id, &bytes).unwrap();
    let reference: warden::oci::OciRef = format!("oci://127.0.0.1:{}/tools/echo@{md}", free_port())
        .parse()
        .unwrap();
    let runtime = warden::Runtime::builder()
        .tool(warden::ToolSpec::with_source("echo", reference.clone()))
        .cache_dir(dir.path())
        .offline(true)
        .build()
        .unwrap();
    let run = runtime
        .invoke("echo", &warden::Grant::new("t"), r#"{"message":"hi"}"#)
        .await
        .unwrap();
    assert_eq!(run.output.unwrap().to_string(), r#"{"message":"hi"}"#);

    let other = reference.with_digest(Identity::of(b"not pulled"));
    let runtime = warden::Runtime::builder()
        .tool(warden::ToolSpec::with_source("echo", other.clone()))
        .cache_dir(dir.path())
        .offline(true)
        .build()
        .unwrap();
    let err = runtime
        .invoke("echo", &warden::Grant::new("t"), "{}")
        .await
        .unwrap_err();
    assert!(matches!(err, warden::Error::NotCached(_)), "{err:?}");
    assert_eq!(err.class(), warden::ErrorClass::Usage);
}

/// The manifest `warden push` makes for `bytes`, as pulled.
fn warden_artifact(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let layer = Identity::of(bytes);
    let config = serde_json::to_vec(&serde_json::json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer.to_string()],
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.wasm.config.v0+json",
            "digest": Identity::of(&config).to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/wasm",
            "digest": layer.to_string(),
            "size": bytes.len(),
        }],
    }))
    .unwrap();
    (config, manifest)
}

#[test]
fn an_identity_pin_the_registry_component_does_not_match_is_refused() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let s = Scratch::new();
    let tag = registry.reference("tools/echo:v1");
    push_echo(&s, &tag);
    let wrong = Identity::of(b"another component");
    let manifest = s.manifest(&tag, &format!("identity = \"{wrong}\"\n"));
    let o = s.run_echo(&manifest, false);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "error: tool 'echo' refused to load: the manifest pins identity {wrong} but {tag} has identity {}\n",
            echo_identity()
        )
    );
    // `pull --manifest` checks the pins too, before downloading.
    let o = s.warden(&["pull", "--manifest", &manifest]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "error: {tag}: the manifest pins identity {wrong} but the registry's component is {}\n",
            echo_identity()
        )
    );
    assert!(
        !s.cache()
            .join("blobs/sha256")
            .join(echo_identity().hex())
            .exists()
    );
}

#[test]
fn a_registry_serving_other_bytes_than_the_manifest_names_is_refused() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let s = Scratch::new();
    let tag = registry.reference("tools/echo:v1");
    push_echo(&s, &tag);
    let id = echo_identity();
    // Same length, one byte changed, in the registry's own storage.
    let file = registry.blob_file(&id);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let actual = Identity::of(&bytes);

    let o = s.warden(&["pull", &tag]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "error: {tag}: the registry sent bytes whose digest is {actual} for the layer {id} (refused: not the component the manifest names)\n"
        )
    );
    let o = s.run_echo(&s.manifest(&tag, ""), false);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the registry sent bytes whose digest is"),
        "{}",
        stderr(&o)
    );
    assert!(!s.cache().join("blobs/sha256").join(id.hex()).exists());
    assert!(!s.cache().join("blobs/sha256").join(actual.hex()).exists());
}

/// A request's head (up to 8 KiB), read byte by byte so nothing after it
/// is consumed.
fn read_head(stream: &mut TcpStream) -> String {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A fake registry on loopback: the manifest GET is redirected to plain
/// HTTP on a host that is not loopback (`.invalid` never resolves, so
/// nothing leaves the machine even if the redirect were followed), and
/// `/v2/auth/…` asks for a token from a plain-HTTP token service.
fn fake_registry() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(32) {
            let Ok(mut stream) = stream else { continue };
            let head = read_head(&mut stream);
            let answer = if head.starts_with("GET /v2/auth/") {
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://auth.invalid/token\",service=\"fake\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            } else {
                "HTTP/1.1 302 Found\r\nLocation: http://registry.invalid/v2/x?X-Signature=s3cr3t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    port
}

#[test]
fn plain_http_off_loopback_is_refused_not_followed() {
    let s = Scratch::new();
    let port = fake_registry();
    let reference = format!("oci://127.0.0.1:{port}/tools/echo:v1");
    let o = s.warden(&["pull", &reference]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("refused a redirect to plain HTTP on http://registry.invalid (a host that is not loopback must use https)"),
        "{e}"
    );
    assert!(!e.contains("s3cr3t"), "{e}");

    let reference = format!("oci://127.0.0.1:{port}/auth/echo:v1");
    let o = s.warden(&["pull", &reference]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "error: {reference}: refused a token service to plain HTTP on http://auth.invalid (a host that is not loopback must use https)\n"
        )
    );
}

/// A fake registry whose manifest GET asks for a token from a token
/// service on its own loopback port, and whose `/v2/` (where a client that
/// asks again would look) names a token service on a host that is not
/// loopback. Every request head is kept.
fn token_registry() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(32) {
            let Ok(mut stream) = stream else { continue };
            let head = read_head(&mut stream);
            let answer = if head.starts_with("GET /token?") {
                let body = r#"{"token":"t0k3n-from-loopback"}"#;
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else if head.starts_with("GET /v2/ ") {
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://auth.invalid/token\",service=\"evil\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
            } else if head.contains("Authorization: Bearer t0k3n-from-loopback")
                || head.contains("authorization: Bearer t0k3n-from-loopback")
            {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            } else {
                format!(
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            };
            log.lock().unwrap().push(head);
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (port, seen)
}

#[test]
fn the_token_service_asked_is_the_one_the_checked_challenge_named() {
    let s = Scratch::new();
    let (port, seen) = token_registry();
    let reference = format!("oci://127.0.0.1:{port}/tools/echo:v1");
    let o = s.warden(&["pull", &reference]);
    let e = stderr(&o);
    // The token was fetched from the loopback service the manifest GET's
    // challenge named, for this repository, and used: the registry then
    // answered 404 for the manifest.
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(e.contains("the registry answered 404 Not Found"), "{e}");
    assert!(!e.contains("auth.invalid") && !e.contains("t0k3n"), "{e}");
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter()
            .any(|h| h
                .starts_with("GET /token?service=fake&scope=repository%3Atools%2Fecho%3Apull ")),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|h| h.starts_with("GET /v2/ ")),
        "a second challenge was asked for: {seen:?}"
    );
}

#[test]
fn malformed_references_are_refused_with_the_expected_form() {
    let s = Scratch::new();
    let expected =
        "expected oci://HOST[:PORT]/REPOSITORY:TAG or oci://HOST[:PORT]/REPOSITORY@sha256:HEX";
    for (reference, why) in [
        (
            "oci://ghcr.io/tools/echo",
            "no tag (:TAG) or digest (@sha256:HEX)",
        ),
        ("oci://user:hunter2@ghcr.io/echo:1", "user information"),
        ("oci://ghcr.io/../echo:1", "the repository must be"),
        (
            "oci://ghcr.io/echo:1?x=y",
            "a query or fragment is not allowed",
        ),
        ("oci://ghcr.io/echo:1\u{1b}[2J", "only printable ASCII"),
    ] {
        let o = s.warden(&["pull", reference]);
        assert_eq!(o.status.code(), Some(2), "{reference:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains(why) && e.contains(expected),
            "{reference:?}: {e}"
        );
        assert!(!e.contains('\u{1b}') && !e.contains("hunter2"), "{e:?}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    // In a manifest: the field, its line, the expected form.
    let manifest = s.manifest("oci://ghcr.io/echo", "");
    let o = s.warden(&["check", &manifest]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("warden.toml:2:13: tools.echo.component: invalid OCI reference 'oci://ghcr.io/echo': no tag"),
        "{e}"
    );
    // Plain HTTP cannot be asked for: any other scheme is a malformed reference.
    let manifest = s.manifest("http://127.0.0.1:5000/echo:1", "");
    let o = s.warden(&["check", &manifest]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("it does not start with oci://"),
        "{}",
        stderr(&o)
    );
    // A push names a tag.
    let o = s.warden(&[
        "push",
        crate::ECHO,
        &format!("oci://127.0.0.1:5000/echo@{}", echo_identity()),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("a push names a tag"), "{}", stderr(&o));
}

#[test]
fn a_corrupted_cache_entry_is_refused_offline_and_fetched_again_online() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let s = Scratch::new();
    let tag = registry.reference("tools/echo:v1");
    push_echo(&s, &tag);
    let o = s.warden(&["pull", &tag]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = echo_identity();
    let blob = s.cache().join("blobs/sha256").join(id.hex());
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    let actual = Identity::of(&bytes);

    let manifest = s.manifest(&tag, "");
    let o = s.run_echo(&manifest, true);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "error: {tag}: cache entry {} is unusable: its bytes hash to {actual}, not to its name {id}; run `warden pull {tag}` to fetch it again\n",
            blob.display()
        )
    );
    // A symlink in its place is refused too.
    std::fs::remove_file(&blob).unwrap();
    let elsewhere = s.dir.path().join("elsewhere.wasm");
    std::fs::copy(crate::ECHO, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &blob).unwrap();
    let o = s.run_echo(&manifest, true);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is a symbolic link (expected a regular file)"),
        "{}",
        stderr(&o)
    );

    // Online, the unusable entry is replaced from the registry.
    let o = s.run_echo(&manifest, false);
    assert_ran(&o);
    assert!(std::fs::symlink_metadata(&blob).unwrap().is_file());
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        std::fs::read(crate::ECHO).unwrap()
    );
}

/// `COSIGN_PASSWORD=pw warden sign --generate-key DIR/NAME`: the key
/// pair's paths and the public key's fingerprint.
fn generate_key(s: &Scratch, name: &str) -> (String, String, String) {
    let prefix = s.dir.path().join(name);
    let o = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("sign")
        .arg("--generate-key")
        .arg(&prefix)
        .env("COSIGN_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let fp = out.rsplit_once("(fingerprint ").unwrap().1;
    let fp = fp.trim().trim_end_matches(')').to_owned();
    let p = prefix.display().to_string();
    (format!("{p}.key"), format!("{p}.pub"), fp)
}

/// `COSIGN_PASSWORD=pw warden sign --key KEY [--component FILE] REF`.
fn sign_ref(key: &str, reference: &str, component: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_warden"));
    c.args(["sign", "--key", key]);
    if let Some(file) = component {
        c.args(["--component", file]);
    }
    c.arg(reference)
        .env("COSIGN_PASSWORD", "pw")
        .env_remove("WARDEN_REGISTRY_USERNAME")
        .env_remove("WARDEN_REGISTRY_PASSWORD")
        .output()
        .unwrap()
}

fn refused_with(o: &Output, found: &str) {
    assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
    assert!(
        stderr(o).contains("refused before it was compiled") && stderr(o).contains(found),
        "{}",
        stderr(o)
    );
}

#[test]
fn a_signed_registry_component_runs_online_and_offline_and_unsigned_or_other_keys_are_refused() {
    let Some(mut registry) = Registry::start() else {
        return;
    };
    let s = Scratch::new();
    let (key, public, fingerprint) = generate_key(&s, "keys/tools");
    let (other_key, _, _) = generate_key(&s, "keys/other");
    let tag = registry.reference("tools/echo:v1");
    let pinned = push_echo(&s, &tag);
    let digest: Identity = pinned.rsplit_once('@').unwrap().1.parse().unwrap();
    let manifest = s.manifest(&tag, &format!("signed-by = {{ key = \"{public}\" }}\n"));

    // Pushed, not signed.
    let o = s.run_echo(&manifest, false);
    refused_with(
        &o,
        &format!(
            "{tag} must be signed by the key {public} (sha256:{}), but the registry has no cosign signature for it (tag sha256-{}.sig;",
            &fingerprint["sha256:".len()..]["".len()..12],
            digest.hex()
        ),
    );

    // Signed by another key (a signature is fetched by `warden pull`).
    let o = sign_ref(&other_key, &tag, Some(crate::ECHO));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "signed {pinned}: {}\n",
            registry.reference(&format!("tools/echo:sha256-{}.sig", digest.hex()))
        )
    );
    let o = s.warden(&["pull", &tag]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    refused_with(
        &s.run_echo(&manifest, false),
        "but 1 signature(s) at tag sha256-",
    );
    refused_with(
        &s.run_echo(&manifest, false),
        "none by this key: signed by another key, or the signed bytes were changed after signing",
    );

    // Signed by the key (replacing the other signature): runs, and the
    // start record names the signer.
    let o = sign_ref(&key, &pinned, None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = s.warden(&["pull", &tag]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_ran(&s.run_echo(&manifest, false));
    assert!(
        s.trail()
            .contains(&format!("\"signer\":\"key:{fingerprint}\"")),
        "{}",
        s.trail()
    );
    // --output is for files.
    let o = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["sign", "--key", &key, &tag, "--output", "x.sig"])
        .env("COSIGN_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // Offline with the registry stopped: the signature comes from the cache.
    registry.stop();
    assert_ran(&s.run_echo(&manifest, true));

    // A tampered cached payload is refused, not trusted.
    let repository = format!("127.0.0.1:{}/tools/echo", registry.port);
    let payload = warden::provenance::simple_signing_payload(&repository, &digest);
    let blob = s
        .cache()
        .join("blobs/sha256")
        .join(Identity::of(&payload).hex());
    let mut tampered = std::fs::read(&blob).unwrap();
    assert_eq!(tampered, payload);
    tampered[0] = b' ';
    std::fs::write(&blob, &tampered).unwrap();
    let o = s.run_echo(&manifest, true);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is unusable"), "{}", stderr(&o));
}

/// `METHOD /v2/PATH` on the registry, with `accept`: the status and the
/// `Docker-Content-Digest` header, if any.
fn registry_call(port: u16, method: &str, path: &str, accept: &str) -> (u16, Option<String>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} /v2/{path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let head = read_head(&mut s);
    let status = head[9..12].parse().unwrap();
    let digest = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("docker-content-digest")
            .then(|| v.trim().to_owned())
    });
    (status, digest)
}

/// A publisher withdraws a signature by removing its tag: the next `warden
/// pull` forgets it too, so neither a run online nor one offline from the
/// cache takes the component as signed any more.
#[test]
fn a_signature_removed_from_the_registry_is_forgotten_at_the_next_pull() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let s = Scratch::new();
    let (key, public, _) = generate_key(&s, "keys/tools");
    let tag = registry.reference("tools/echo:v1");
    let pinned = push_echo(&s, &tag);
    let digest: Identity = pinned.rsplit_once('@').unwrap().1.parse().unwrap();
    let manifest = s.manifest(&pinned, &format!("signed-by = {{ key = \"{public}\" }}\n"));
    let o = sign_ref(&key, &pinned, None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = s.warden(&["pull", &pinned]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_ran(&s.run_echo(&manifest, true));

    // The publisher removes the signature.
    let sig = format!("tools/echo/manifests/sha256-{}.sig", digest.hex());
    let accept = "application/vnd.oci.image.manifest.v1+json";
    let (status, sig_digest) = registry_call(registry.port, "HEAD", &sig, accept);
    assert_eq!(status, 200);
    let path = format!("tools/echo/manifests/{}", sig_digest.unwrap());
    assert_eq!(registry_call(registry.port, "DELETE", &path, accept).0, 202);
    assert_eq!(registry_call(registry.port, "HEAD", &sig, accept).0, 404);

    // Until the next pull the cache still holds it; after, neither path
    // takes the component as signed.
    assert_ran(&s.run_echo(&manifest, true));
    let o = s.warden(&["pull", &pinned]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for offline in [true, false] {
        refused_with(
            &s.run_echo(&manifest, offline),
            "has no cosign signature for it",
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signature_of_another_artifact_is_refused() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let s = Scratch::new();
    let (key, public, _) = generate_key(&s, "keys/tools");
    let a = push_echo(&s, &registry.reference("tools/echo:v1"));
    let b_tag = registry.reference("tools/echo:v2");
    let o = s.warden(&["push", crate::LINE_COUNT, &b_tag]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let b: Identity = stdout(&o)
        .trim()
        .rsplit_once('@')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let a: Identity = a.rsplit_once('@').unwrap().1.parse().unwrap();
    // A's signature, pushed as B's (as copying A's .sig tag to B's would).
    let signer = warden::provenance::SigningKey::load(Path::new(&key), b"pw").unwrap();
    let repository = format!("127.0.0.1:{}/tools/echo", registry.port);
    let payload = warden::provenance::simple_signing_payload(&repository, &a);
    let signature = signer.sign(&payload).unwrap();
    let b_ref: warden::oci::OciRef = b_tag.parse().unwrap();
    warden::oci::push_signature(&b_ref, &b, &payload, &signature, None)
        .await
        .unwrap();
    let manifest = s.manifest(&b_tag, &format!("signed-by = {{ key = \"{public}\" }}\n"));
    let o = s.run_echo(&manifest, false);
    refused_with(
        &o,
        &format!("none by this key: the signature is for the artifact {a}, not this one ({b})"),
    );
}

/// The same component pushed as two tools has one manifest digest (pushes
/// are reproducible): a signature of `tools/other`, copied to the
/// signature tag of `tools/echo`, names the other repository and is
/// refused there.
#[tokio::test(flavor = "multi_thread")]
async fn a_signature_copied_from_another_repository_is_refused() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let s = Scratch::new();
    let (key, public, _) = generate_key(&s, "keys/tools");
    let other = push_echo(&s, &registry.reference("tools/other:v1"));
    let echo_tag = registry.reference("tools/echo:v1");
    let echo = push_echo(&s, &echo_tag);
    let digest: Identity = other.rsplit_once('@').unwrap().1.parse().unwrap();
    assert_eq!(echo.rsplit_once('@').unwrap().1, digest.to_string());

    // tools/other, signed by the key, runs.
    let o = sign_ref(&key, &other, None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let signed_by = format!("signed-by = {{ key = \"{public}\" }}\n");
    assert_ran(&s.run_echo(&s.manifest(&other, &signed_by), false));

    // Its signature layer, byte for byte, pushed as tools/echo's.
    let pulled_into = tempfile::tempdir().unwrap();
    let cache = warden::oci::BlobCache::open(pulled_into.path()).unwrap();
    let other_ref: warden::oci::OciRef = other.parse().unwrap();
    let pulled = warden::oci::pull(&other_ref, &cache, None, None)
        .await
        .unwrap();
    let [copied] = pulled.signatures.as_slice() else {
        panic!("{:?}", pulled.signatures);
    };
    let echo_ref: warden::oci::OciRef = echo_tag.parse().unwrap();
    warden::oci::push_signature(
        &echo_ref,
        &digest,
        &copied.payload,
        std::str::from_utf8(&copied.signature).unwrap(),
        None,
    )
    .await
    .unwrap();

    let o = s.run_echo(&s.manifest(&echo_tag, &signed_by), false);
    refused_with(
        &o,
        &format!(
            "none by this key: the signature is for the repository '127.0.0.1:{port}/tools/other', not this one ('127.0.0.1:{port}/tools/echo')",
            port = registry.port
        ),
    );
}

/// `warden sign` on a tag signs only the component it is given: a tag the
/// registry moved to other bytes is not signed (exit 2), and without
/// `--component` a tag is not signed at all.
#[test]
fn signing_a_tag_checks_the_component_it_names() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let s = Scratch::new();
    let (key, public, _) = generate_key(&s, "keys/tools");
    let tag = registry.reference("tools/echo:v1");
    push_echo(&s, &tag);

    let o = sign_ref(&key, &tag, None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "error: {tag}: signing a tag needs --component FILE, the component meant (the tag names whatever the registry says when asked; its manifest must name these bytes), or sign by digest (oci://…@sha256:…)\n"
        )
    );

    // The tag moved to another component since the author looked.
    let o = s.warden(&["push", crate::LINE_COUNT, &tag]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let moved = stdout(&o).trim().to_owned();
    let moved_digest = moved.rsplit_once('@').unwrap().1.to_owned();
    let line_count = Identity::of(&std::fs::read(crate::LINE_COUNT).unwrap());
    let o = sign_ref(&key, &tag, Some(crate::ECHO));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "error: {tag}: the registry's manifest {moved_digest} names the component {line_count}, not the one given ({}); refused to sign it\n",
            echo_identity()
        )
    );
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    // By digest, a --component given is checked too.
    let o = sign_ref(&key, &moved, Some(crate::ECHO));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("refused to sign it"), "{}", stderr(&o));
    // Nothing was signed.
    let manifest = s.manifest(&tag, &format!("signed-by = {{ key = \"{public}\" }}\n"));
    refused_with(
        &s.run_echo(&manifest, false),
        "but the registry has no cosign signature for it",
    );
    // The component the tag does name is signed.
    let o = sign_ref(&key, &tag, Some(crate::LINE_COUNT));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with(&format!("signed {moved}: ")),
        "{}",
        stdout(&o)
    );
}

/// A loopback server that answers every request with `answer` and keeps
/// each request head it was sent.
fn answering(answer: String) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { continue };
            log.lock().unwrap().push(read_head(&mut stream));
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (port, seen)
}

/// A registry that serves anonymously (so nothing has asked for its
/// credentials yet) redirects to another host, which asks for a token from
/// a token service of its choosing: the credentials are not sent there.
/// Before, any 401 was answered with them.
#[test]
fn a_challenge_from_a_host_a_redirect_led_to_gets_no_credentials() {
    let s = Scratch::new();
    let (token, asked) = answering(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{\"token\":\"t0k\"}".into(),
    );
    let (elsewhere, _) = answering(format!(
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{token}/token\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ));
    let (registry, _) = answering(format!(
        "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{elsewhere}/blob\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ));
    let reference = format!("oci://127.0.0.1:{registry}/tools/echo:v1");
    let o = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("--cache-dir")
        .arg(s.cache())
        .args(["pull", &reference])
        .env("WARDEN_STATE_DIR", s.dir.path().join("state"))
        .env("WARDEN_REGISTRY", format!("127.0.0.1:{registry}"))
        .env("WARDEN_REGISTRY_USERNAME", "robot")
        .env("WARDEN_REGISTRY_PASSWORD", "pa55word-never-elsewhere")
        .env_remove("WARDEN_OFFLINE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "error: {reference}: http://127.0.0.1:{elsewhere} asked for credentials after a redirect; they go to the registry only\n"
        )
    );
    assert!(
        asked.lock().unwrap().is_empty(),
        "{:?}",
        asked.lock().unwrap()
    );
}

/// `--offline` (or `WARDEN_OFFLINE=1`) holds for every command: `pull`,
/// `push` and signing an `oci://` reference are refused before any
/// connection, exit 2.
#[test]
fn offline_refuses_every_command_that_asks_a_registry() {
    let s = Scratch::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let reference = format!(
        "oci://127.0.0.1:{}/tools/echo:v1",
        listener.local_addr().unwrap().port()
    );
    let (key, _, _) = generate_key(&s, "k");
    let echo = crate::ECHO;
    let runs: [(&str, Vec<&str>); 3] = [
        ("warden pull", vec!["pull", &reference]),
        ("warden push", vec!["push", echo, &reference]),
        (
            "signing an oci:// reference",
            vec!["sign", "--key", &key, &reference],
        ),
    ];
    for (what, args) in runs {
        for flag in [true, false] {
            let mut c = Command::new(env!("CARGO_BIN_EXE_warden"));
            c.arg("--cache-dir").arg(s.cache());
            if flag {
                c.arg("--offline").env_remove("WARDEN_OFFLINE");
            } else {
                c.env("WARDEN_OFFLINE", "1");
            }
            let o = c
                .args(&args)
                .env("WARDEN_STATE_DIR", s.dir.path().join("state"))
                .env("COSIGN_PASSWORD", "pw")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(2), "{what}: {}", stderr(&o));
            assert_eq!(
                stderr(&o),
                format!(
                    "error: {what} asks a registry, and --offline (or WARDEN_OFFLINE=1) says never to ask one\n"
                )
            );
        }
    }
    assert!(listener.accept().is_err(), "a connection was made");
}
