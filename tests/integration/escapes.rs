//! The escape matrix: `..`, absolute paths, symlinks out, trailing slashes,
//! NUL bytes. Each is denied as a guest-visible error, audited, and leaves
//! the outside untouched.

use crate::common::{SECRET, World, code, message};
use serde_json::json;
use warden::Rights;

const ALL: Rights = Rights::READ.union(Rights::WRITE).union(Rights::DELETE);

fn assert_outside_untouched(world: &World) {
    let entries: Vec<_> = std::fs::read_dir(&world.outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        entries,
        ["secret.txt"],
        "something was created outside the handle"
    );
    assert_eq!(
        std::fs::read_to_string(world.outside.join("secret.txt")).unwrap(),
        SECRET
    );
}

#[tokio::test]
async fn syntactic_escapes_are_denied_by_the_path_check() {
    let world = World::new();
    let paths = [
        ("..", "'..'"),
        ("../outside/secret.txt", "'..'"),
        ("sub/../../outside/secret.txt", "'..'"),
        ("sub/..", "'..'"),
        ("/etc/passwd", "absolute path"),
        (
            &*world.outside.join("secret.txt").display().to_string(),
            "absolute path",
        ),
        ("sub/", "trailing slash"),
        ("a.txt/", "trailing slash"),
        ("sub/.", "'.' component"),
        ("./a.txt", "'.' component"),
        ("sub//b.txt", "'//'"),
        ("a.txt\0.png", "NUL byte"),
        ("..\\outside\\secret.txt", "'\\'"),
    ];
    for op in [
        "read",
        "stat",
        "list",
        "write",
        "append",
        "remove-file",
        "remove-dir",
        "create-dir",
        "truncate",
    ] {
        for (path, why) in &paths {
            let (r, inv) = world
                .probe(ALL, json!({"op": op, "path": path, "contents": "pwned"}))
                .await;
            assert_eq!(code(&r), Some("denied"), "{op} {path:?}: {r}");
            assert!(message(&r).contains(why), "{op} {path:?}: {r}");
            let d = world.decisions(&inv);
            assert_eq!(d.len(), 1);
            assert_eq!(d[0].decision.as_deref(), Some("deny"));
            assert_eq!(d[0].rule.as_deref(), Some("fs.path"), "{op} {path:?}");
        }
    }
    // rename: either side escaping is denied
    for (from, to) in [
        ("a.txt", "../outside/x"),
        ("../outside/secret.txt", "stolen.txt"),
        ("a.txt", "/tmp/x"),
    ] {
        let (r, _) = world
            .probe(ALL, json!({"op": "rename", "path": from, "to": to}))
            .await;
        assert_eq!(code(&r), Some("denied"), "rename {from} {to}: {r}");
    }
    let (r, _) = world.probe(ALL, json!({"op": "read", "path": ""})).await;
    assert_eq!(code(&r), Some("invalid-path"), "{r}");
    assert_outside_untouched(&world);
    assert_eq!(
        std::fs::read_to_string(world.workspace.join("a.txt")).unwrap(),
        "alpha"
    );
}

#[tokio::test]
async fn symlinks_leading_out_are_denied_by_the_sandbox() {
    let world = World::new();
    let cases = [
        json!({"op": "read", "path": "link-out"}),
        json!({"op": "read", "path": "rel-link-out"}),
        json!({"op": "read", "path": "dir-out/secret.txt"}),
        json!({"op": "list", "path": "dir-out"}),
        json!({"op": "stat", "path": "dir-out/secret.txt"}),
        json!({"op": "write", "path": "link-out", "contents": "pwned"}),
        json!({"op": "write", "path": "dir-out/new.txt", "contents": "pwned"}),
        json!({"op": "append", "path": "rel-link-out", "contents": "pwned"}),
        json!({"op": "truncate", "path": "link-out", "size": 0}),
        json!({"op": "create-dir", "path": "dir-out/made"}),
        json!({"op": "remove-file", "path": "dir-out/secret.txt"}),
        json!({"op": "rename", "path": "dir-out/secret.txt", "to": "stolen.txt"}),
        json!({"op": "rename", "path": "a.txt", "to": "dir-out/planted.txt"}),
    ];
    for op in cases {
        let (r, inv) = world.probe(ALL, op.clone()).await;
        assert_eq!(code(&r), Some("denied"), "{op}: {r}");
        assert_eq!(
            message(&r),
            "path leads outside the handle (through a symlink)",
            "{op}"
        );
        let d = world.decisions(&inv);
        // The path is resolved before the call is decided: the sandbox's
        // refusal is the call's one decision.
        assert_eq!(d.len(), 1, "{op}: {d:?}");
        assert_eq!(
            (d[0].decision.as_deref(), d[0].rule.as_deref()),
            (Some("deny"), Some("fs.sandbox"))
        );
    }
    assert_outside_untouched(&world);
    assert!(world.workspace.join("a.txt").exists());
    assert!(!world.workspace.join("stolen.txt").exists());
}

#[tokio::test]
async fn removing_a_symlink_removes_only_the_link() {
    let world = World::new();
    let (r, _) = world
        .probe(ALL, json!({"op": "remove-file", "path": "link-out"}))
        .await;
    assert_eq!(code(&r), None, "{r}");
    let (r, _) = world
        .probe(
            ALL,
            json!({"op": "remove-dir", "path": "dir-out", "recursive": true}),
        )
        .await;
    // Whatever the answer, the directory behind the link is untouched.
    let _ = r;
    assert!(world.workspace.join("link-out").symlink_metadata().is_err());
    assert_outside_untouched(&world);
}

#[tokio::test]
async fn symlinks_inside_the_handle_work() {
    let world = World::new();
    let (r, _) = world
        .probe(Rights::READ, json!({"op": "read", "path": "link-in"}))
        .await;
    assert_eq!(r["ok"], "alpha");
}

#[tokio::test]
async fn the_handle_root_cannot_be_removed_or_renamed() {
    let world = World::new();
    for op in [
        json!({"op": "remove-dir", "path": ".", "recursive": true}),
        json!({"op": "remove-file", "path": "."}),
        json!({"op": "rename", "path": ".", "to": "moved"}),
        json!({"op": "rename", "path": "a.txt", "to": "."}),
    ] {
        let (r, inv) = world.probe(ALL, op.clone()).await;
        assert_eq!(code(&r), Some("denied"), "{op}: {r}");
        let d = world.decisions(&inv);
        assert_eq!(
            (d.len(), d[0].rule.as_deref()),
            (1, Some("fs.root")),
            "{op}"
        );
    }
    assert!(world.workspace.join("a.txt").exists());
}

#[tokio::test]
async fn a_subdirectory_grant_cannot_reach_its_parent() {
    let world = World::new();
    let grant = warden::Grant::new("t").fs("workspace", world.workspace.join("sub"), Rights::READ);
    let run = world
        .runtime
        .invoke(
            "probe",
            &grant,
            &json!({"op": "read", "path": "../a.txt"}).to_string(),
        )
        .await
        .unwrap();
    let r: serde_json::Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(code(&r), Some("denied"));
    let run = world
        .runtime
        .invoke(
            "probe",
            &grant,
            &json!({"op": "read", "path": "b.txt"}).to_string(),
        )
        .await
        .unwrap();
    assert!(run.output.unwrap().contains("beta"));
}

#[tokio::test]
async fn control_characters_in_a_path_are_refused_by_the_path_check() {
    let world = World::new();
    for (path, code_point) in [
        ("a.txt\nApprove: yes", "U+000A"),
        ("a.txt\r", "U+000D"),
        ("sub/\u{1b}[2Jb.txt", "U+001B"),
        ("x\u{85}y", "U+0085"),
    ] {
        for op in ["read", "write", "create-dir", "remove-file"] {
            let (r, inv) = world
                .probe(ALL, json!({"op": op, "path": path, "contents": "x"}))
                .await;
            let want = format!(
                "path contains the control character {code_point} (expected printable characters only)"
            );
            assert_eq!(code(&r), Some("invalid-path"), "{op} {path:?}: {r}");
            assert_eq!(message(&r), want, "{op} {path:?}");
            let d = world.decisions(&inv);
            assert_eq!(d.len(), 1, "{op} {path:?}: {d:?}");
            assert_eq!(
                (d[0].decision.as_deref(), d[0].rule.as_deref()),
                (Some("deny"), Some("fs.path"))
            );
            assert_eq!(d[0].reason.as_deref(), Some(want.as_str()));
        }
    }
    // Either side of a rename.
    let (r, _) = world
        .probe(
            ALL,
            json!({"op": "rename", "path": "a.txt", "to": "b\n.txt"}),
        )
        .await;
    assert_eq!(code(&r), Some("invalid-path"), "{r}");
    let names: Vec<_> = std::fs::read_dir(&world.workspace)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n.chars().any(char::is_control)),
        "{names:?}"
    );
}

fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A named pipe (or any non-regular file) is refused where a regular file is
/// meant, at once: opening one would block past the invocation's deadline
/// and stall the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_pipe_is_refused_promptly() {
    let world = std::sync::Arc::new(World::new());
    mkfifo(&world.workspace.join("pipe"));
    std::fs::create_dir(world.workspace.join("dir")).unwrap();
    mkfifo(&world.workspace.join("dir/pipe"));
    std::os::unix::fs::symlink("dir/pipe", world.workspace.join("pipe-link")).unwrap();
    for (op, path, resolved) in [
        ("read", "pipe", "pipe"),
        ("write", "pipe", "pipe"),
        ("append", "pipe", "pipe"),
        ("truncate", "pipe", "pipe"),
        ("read", "dir/pipe", "dir/pipe"),
        ("write", "pipe-link", "dir/pipe"),
    ] {
        let w = world.clone();
        let started = std::time::Instant::now();
        let call = tokio::spawn(async move {
            w.probe(
                ALL,
                json!({"op": op, "path": path, "contents": "x", "size": 0}),
            )
            .await
        });
        // Today's failure is a hang: bound it so the test fails instead.
        let (r, inv) = tokio::time::timeout(std::time::Duration::from_secs(10), call)
            .await
            .unwrap_or_else(|_| panic!("{op} {path} blocked"))
            .unwrap();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{op} {path}: took {:?}",
            started.elapsed()
        );
        let want =
            format!("'{resolved}' is a named pipe, not a regular file ({op} needs a regular file)");
        assert_eq!(code(&r), Some("denied"), "{op} {path}: {r}");
        assert_eq!(message(&r), want, "{op} {path}");
        let d = world.decisions(&inv);
        assert_eq!(d.len(), 1, "{op} {path}: {d:?}");
        assert_eq!(
            (d[0].decision.as_deref(), d[0].rule.as_deref()),
            (Some("deny"), Some("fs.kind"))
        );
        assert_eq!(d[0].reason.as_deref(), Some(want.as_str()));
    }
    // What does not open it still works.
    let (r, _) = world
        .probe(ALL, json!({"op": "stat", "path": "pipe"}))
        .await;
    assert_eq!(code(&r), None, "{r}");
    let (r, _) = world
        .probe(ALL, json!({"op": "remove-file", "path": "pipe"}))
        .await;
    assert_eq!(code(&r), None, "{r}");
    assert!(!world.workspace.join("pipe").exists());
}

/// One `create-dir` of 3,000 levels (6 KiB, under every size limit) made a
/// tree no recursive remove could take down and no policy walk could
/// check: what a call would create counts toward the depth limit, and
/// nothing of it is made.
#[tokio::test]
async fn a_call_cannot_create_a_tree_deeper_than_the_walk_allows() {
    let world = World::new();
    let deep = vec!["x"; 3000].join("/");
    let (r, inv) = world
        .probe(ALL, json!({"op": "create-dir", "path": deep}))
        .await;
    assert_eq!(code(&r), Some("invalid-path"), "{r}");
    assert!(
        message(&r).ends_with("' goes more than 128 directories deep"),
        "{}",
        message(&r)
    );
    assert!(!world.workspace.join("x").exists(), "a directory was made");
    let d = world.decisions(&inv);
    assert_eq!(
        (d[0].decision.as_deref(), d[0].rule.as_deref()),
        (Some("deny"), Some("fs.resolve"))
    );
    // As deep as a walk goes is still made.
    let (r, _) = world
        .probe(
            ALL,
            json!({"op": "create-dir", "path": vec!["y"; 128].join("/")}),
        )
        .await;
    assert_eq!(code(&r), None, "{r}");
    // A path of half a million components is refused by the size limit
    // before it is resolved (resolving it held a string per component).
    let many = vec!["z"; 500_000].join("/");
    let (r, inv) = world
        .probe(ALL, json!({"op": "create-dir", "path": many}))
        .await;
    assert_eq!(code(&r), Some("denied"), "{r}");
    assert!(
        message(&r).contains("more than the limit of 8192 bytes"),
        "{r}"
    );
    assert_eq!(
        world.decisions(&inv)[0].rule.as_deref(),
        Some("limits.resource")
    );
    assert!(!world.workspace.join("z").exists());
}

/// A rename moves a link as it is: `sub/up -> ../a.txt` moved to the
/// handle's top would name `../a.txt` outside it, which Warden never
/// follows but the operator's own tools would. Where a link that does not
/// only lead down (`..`, absolute, `.`) leads after a move depends on
/// every link on its way, which the move changes too: moving one, or a
/// directory holding one, is refused, recorded, nothing moved. A link that
/// only descends moves freely.
#[tokio::test]
async fn a_link_cannot_be_moved_to_where_it_leads_outside() {
    let world = World::new();
    std::os::unix::fs::symlink("../a.txt", world.workspace.join("sub/up")).unwrap();
    for (path, to, link, will) in [
        ("sub/up", "up", "sub/up", "up"),
        ("sub/up", "sub/up2", "sub/up", "sub/up2"),
    ] {
        let (r, inv) = world
            .probe(ALL, json!({"op": "rename", "path": path, "to": to}))
            .await;
        assert_eq!(code(&r), Some("denied"), "{r}");
        assert_eq!(
            message(&r),
            format!(
                "the link '{link}' does not only lead down: moved to '{will}', it or a link through it could lead outside the handle"
            )
        );
        let d = world.decisions(&inv);
        assert_eq!(
            (
                d.last().unwrap().decision.as_deref(),
                d.last().unwrap().rule.as_deref()
            ),
            (Some("deny"), Some("fs.sandbox"))
        );
    }
    assert!(world.workspace.join("sub/up").symlink_metadata().is_ok());
    assert!(world.workspace.join("up").symlink_metadata().is_err());
    // A directory carries the links in it.
    std::fs::create_dir(world.workspace.join("sub/in")).unwrap();
    std::os::unix::fs::symlink("../../a.txt", world.workspace.join("sub/in/l")).unwrap();
    let (r, inv) = world
        .probe(ALL, json!({"op": "rename", "path": "sub/in", "to": "in"}))
        .await;
    assert_eq!(code(&r), Some("denied"), "{r}");
    assert_eq!(
        message(&r),
        "the link 'sub/in/l' does not only lead down: moved to 'in/l', it or a link through it could lead outside the handle"
    );
    assert_eq!(
        world.decisions(&inv).last().unwrap().rule.as_deref(),
        Some("fs.sandbox")
    );
    assert!(world.workspace.join("sub/in/l").symlink_metadata().is_ok());
    assert!(!world.workspace.join("in").exists());
    // One that descends goes, alone or carried.
    std::fs::remove_file(world.workspace.join("sub/in/l")).unwrap();
    std::os::unix::fs::symlink("b.txt", world.workspace.join("sub/in/down")).unwrap();
    std::fs::write(world.workspace.join("sub/in/b.txt"), "beta").unwrap();
    let (r, _) = world
        .probe(ALL, json!({"op": "rename", "path": "sub/in", "to": "in"}))
        .await;
    assert_eq!(code(&r), None, "{r}");
    assert_eq!(
        std::fs::read_to_string(world.workspace.join("in/down")).unwrap(),
        "beta"
    );

    // But not in place of another link: `a/L -> k/../../../x` climbs out
    // of `a` through `k -> p/q`, two deep, and lands inside; with `k`
    // replaced by `j -> p`, one deep, `L` would lead outside the handle.
    let a = world.workspace.join("a");
    std::fs::create_dir_all(a.join("p/q")).unwrap();
    std::os::unix::fs::symlink("p/q", a.join("k")).unwrap();
    std::os::unix::fs::symlink("k/../../../a.txt", a.join("L")).unwrap();
    std::os::unix::fs::symlink("p", a.join("j")).unwrap();
    let (r, inv) = world
        .probe(ALL, json!({"op": "rename", "path": "a/j", "to": "a/k"}))
        .await;
    assert_eq!(code(&r), Some("denied"), "{r}");
    assert_eq!(
        message(&r),
        "'a/k' is a link: a link put in its place could lead links whose way passes through it outside the handle"
    );
    assert_eq!(
        world.decisions(&inv).last().unwrap().rule.as_deref(),
        Some("fs.sandbox")
    );
    assert_eq!(
        std::fs::read_link(a.join("k")).unwrap(),
        std::path::Path::new("p/q")
    );
    assert_eq!(std::fs::read_to_string(a.join("L")).unwrap(), "alpha");
}
