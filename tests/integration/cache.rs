//! The compile cache: a second process start loads a tool without compiling.

use std::sync::{Arc, Mutex};
use warden::{CompileEvent, Grant, Runtime, ToolSpec};

fn runtime(
    cache: &std::path::Path,
    events: Arc<Mutex<Vec<String>>>,
) -> Result<Runtime, warden::Error> {
    Runtime::builder()
        .tool(ToolSpec::new("echo", crate::ECHO))
        .cache_dir(cache)
        .on_compile(move |e| {
            if let CompileEvent::Started { tool, .. } = e {
                events.lock().unwrap().push(tool);
            }
        })
        .build()
}

#[tokio::test]
async fn a_warm_cache_skips_compilation_and_a_corrupt_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let events = Arc::new(Mutex::new(Vec::new()));

    let rt = runtime(&cache, events.clone()).unwrap();
    rt.invoke("echo", &Grant::new("t"), "{}").await.unwrap();
    assert_eq!(*events.lock().unwrap(), ["echo"]);
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1);
    let identity = warden::Identity::of(&std::fs::read(crate::ECHO).unwrap());
    let name = entries[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with(&identity.hex()) && name.ends_with(".cwasm"),
        "{name}"
    );

    // A new runtime (as a new process would) loads from the cache.
    let rt = runtime(&cache, events.clone()).unwrap();
    rt.invoke("echo", &Grant::new("t"), "{}").await.unwrap();
    assert_eq!(
        events.lock().unwrap().len(),
        1,
        "the warm start compiled again"
    );

    // A corrupt entry is ignored and replaced.
    std::fs::write(&entries[0], b"garbage").unwrap();
    let rt = runtime(&cache, events.clone()).unwrap();
    rt.invoke("echo", &Grant::new("t"), "{}").await.unwrap();
    assert_eq!(events.lock().unwrap().len(), 2);
    let good = std::fs::read(&entries[0]).unwrap();
    assert!(good.len() > 1000);

    // One entry damaged on disk, its header whole: its code no longer
    // matches the digest it was written with, so it is compiled again
    // rather than run (wasmtime checks its header, not its code).
    let mut damaged = good.clone();
    let at = damaged.len() / 2;
    damaged[at] ^= 0xff;
    std::fs::write(&entries[0], &damaged).unwrap();
    let rt = runtime(&cache, events.clone()).unwrap();
    let run = rt.invoke("echo", &Grant::new("t"), "{}").await.unwrap();
    assert_eq!(run.output.unwrap(), r#"{"message":""}"#);
    assert_eq!(events.lock().unwrap().len(), 3, "the damaged entry was run");
    assert_eq!(std::fs::read(&entries[0]).unwrap(), good);
}

/// An entry is the compiled code of the component its name says only if
/// the entry says so too: one of this user's renamed to another tool's
/// name (by someone who could write the cache directory's parent and
/// swapped the directory after its check) ran the first tool's code as
/// the second, with the second's grants and identity in the trail.
#[tokio::test]
async fn an_entry_renamed_to_another_tools_name_is_not_loaded_as_that_tool() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let compiled = Arc::new(Mutex::new(Vec::new()));
    let two = |compiled: Arc<Mutex<Vec<String>>>| {
        Runtime::builder()
            .tool(ToolSpec::new("echo", crate::ECHO))
            .tool(ToolSpec::new("lines", crate::LINE_COUNT))
            .cache_dir(&cache)
            .on_compile(move |e| {
                if let CompileEvent::Started { tool, .. } = e {
                    compiled.lock().unwrap().push(tool);
                }
            })
            .build()
            .unwrap()
    };
    let rt = two(compiled.clone());
    let echo = rt.load("echo").await.unwrap();
    let lines = rt.load("lines").await.unwrap();
    let entry = |id: &warden::Identity| {
        std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&id.hex())
            })
            .unwrap()
    };
    std::fs::rename(entry(&echo), entry(&lines)).unwrap();
    compiled.lock().unwrap().clear();
    let rt = two(compiled.clone());
    assert_eq!(rt.load("lines").await.unwrap(), lines);
    assert_eq!(
        *compiled.lock().unwrap(),
        ["lines"],
        "echo's code was loaded as line-count"
    );
    // Its own code, compiled again and stored under its name.
    assert_eq!(rt.describe("lines").await.unwrap().name, "line-count");
}

#[test]
fn a_cache_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("open");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = runtime(&cache, Arc::default()).err().expect("refused");
    assert!(err.to_string().contains("writable by other users"), "{err}");
}

/// A tool granted a directory that holds the compile cache could plant
/// native code the runtime loads as a compiled tool: such a runtime is not
/// built. Nor one whose ceiling holds a path the host keeps out (the audit
/// trail, the keys' directory); `warden run` refuses an `--audit` inside
/// the workspace with exit 2.
#[test]
fn no_fs_ceiling_may_hold_the_compile_cache_or_what_the_host_keeps_out() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let cache = home.join(".cache/warden");
    std::fs::create_dir_all(&cache).unwrap();
    let manifest = |within: &std::path::Path| {
        let text = format!(
            "[tools.echo]\ncomponent = \"{}\"\n[[tools.echo.fs]]\nhandle = \"home\"\nwithin = \"{}\"\nrights = [\"read\", \"write\"]\n",
            crate::ECHO,
            within.display()
        );
        let path = dir.path().join("m.toml");
        std::fs::write(&path, text).unwrap();
        warden::Manifest::load(&path).unwrap()
    };
    let err = Runtime::builder()
        .manifest(manifest(&home))
        .cache_dir(&cache)
        .build()
        .err()
        .expect("refused")
        .to_string();
    assert_eq!(
        err,
        format!(
            "tool 'echo''s fs ceiling 'home' ({}) and the compile cache ({}) overlap: a tool that can write there could change what the host trusts (expected the compile cache outside every fs ceiling)",
            home.display(),
            cache.display()
        )
    );
    // A ceiling inside the cache, the same.
    assert!(
        Runtime::builder()
            .manifest(manifest(&cache))
            .cache_dir(&cache)
            .build()
            .is_err()
    );
    // Beside it, built; and a trail kept out of a ceiling that holds it.
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    Runtime::builder()
        .manifest(manifest(&work))
        .cache_dir(&cache)
        .build()
        .unwrap();
    let err = Runtime::builder()
        .manifest(manifest(&work))
        .keep_out(work.join("audit.jsonl"), "audit trail")
        .build()
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("and the audit trail ("), "{err}");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .env("WARDEN_STATE_DIR", dir.path().join("state"))
        .args(["--no-cache", "run", "--manifest"])
        .arg(dir.path().join("m.toml"))
        .args(["echo", "--input", "{}", "--audit"])
        .arg(work.join("audit.jsonl"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("and the audit trail ("), "{stderr}");
}
