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
    assert!(std::fs::read(&entries[0]).unwrap().len() > 1000);
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
