//! Everyday use of the `warden` CLI (issue 13): a closed stdout, the
//! licence, `--input @-`, logging and colours, completions and versions,
//! `--json`, the demo's printed commands, `warden new tool`.

use crate::common::{World, shared_cache};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `warden` with the shared compile cache and none of the caller's logging
/// or colour settings.
fn warden() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_warden"));
    c.arg("--cache-dir")
        .arg(shared_cache())
        .env_remove("WARDEN_LOG")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `warden ARGS` with the read end of its stdout already closed.
fn closed_stdout(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    warden()
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// `warden run` of `tool` in `world` with a read grant, appending to `audit`.
fn run_args<'a>(world: &'a World, audit: &'a Path, tool: &'a str) -> Vec<String> {
    vec![
        "run".into(),
        "--manifest".into(),
        world.manifest.display().to_string(),
        tool.into(),
        "--audit".into(),
        audit.display().to_string(),
        "--grant".into(),
        format!("fs:workspace={}:read", world.workspace.display()),
    ]
}

// ---- 15. a closed stdout ----------------------------------------------

#[test]
fn a_closed_stdout_ends_each_command_quietly() {
    let world = World::new();
    let audit = world.dir.path().join("audit.jsonl");
    let mut run = run_args(&world, &audit, "read-files");
    run.extend(["--input".into(), r#"{"paths":["a.txt"]}"#.into()]);
    // A trail to show.
    let o = warden().args(&run).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let audit = audit.display().to_string();
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let commands: [&[&str]; 5] = [
        &["describe", crate::READ_FILES],
        &["audit", "show", &audit],
        &["schema"],
        &run,
        &["audit", "verify", &audit],
    ];
    for args in commands {
        let o = closed_stdout(args);
        let err = text(&o.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "warden {args:?} on a closed stdout: {err}"
        );
        assert!(
            matches!(o.status.code(), Some(0 | 141)),
            "warden {args:?} on a closed stdout: {:?} {err}",
            o.status
        );
    }
    // And through a shell pipe that closes after one line.
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' --cache-dir '{}' audit show '{audit}' | head -c 1 >/dev/null",
            env!("CARGO_BIN_EXE_warden"),
            shared_cache().display()
        ))
        .output()
        .unwrap();
    assert!(!text(&o.stderr).contains("panicked"), "{}", text(&o.stderr));
}

// ---- 14. the licence --------------------------------------------------

#[test]
fn the_licence_file_is_the_apache_2_text_cargo_toml_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(
        cargo
            .lines()
            .any(|l| l.trim() == r#"license = "Apache-2.0""#),
        "Cargo.toml's license changed; LICENSE must match it"
    );
    let licence = std::fs::read_to_string(root.join("LICENSE")).unwrap();
    for part in [
        "Apache License",
        "Version 2.0, January 2004",
        "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
        "1. Definitions.",
        "4. Redistribution.",
        "9. Accepting Warranty or Additional Liability.",
        "END OF TERMS AND CONDITIONS",
        "APPENDIX: How to apply the Apache License to your work.",
    ] {
        assert!(licence.contains(part), "LICENSE lacks {part:?}");
    }
    // The whole standard text, not an excerpt.
    assert!(licence.split_whitespace().count() > 1_500);
}
