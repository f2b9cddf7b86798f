//! Everyday use of the `warden` CLI (issue 13): a closed stdout, the
//! licence, `--input @-`, logging and colours, completions and versions,
//! `--json`, the demo's printed commands, `warden new tool`.

use crate::common::{World, shared_cache};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `warden` with the shared compile cache, its state (keys) in `state`,
/// and none of the caller's logging or colour settings.
fn warden(state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_warden"));
    c.arg("--cache-dir")
        .arg(shared_cache())
        .env("WARDEN_STATE_DIR", state)
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
fn closed_stdout(state: &Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    warden(state)
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
    let state = world.dir.path().join("state");
    let o = warden(&state).args(&run).output().unwrap();
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
        let o = closed_stdout(&state, args);
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
        .env("WARDEN_STATE_DIR", &state)
        .output()
        .unwrap();
    assert!(!text(&o.stderr).contains("panicked"), "{}", text(&o.stderr));
}

/// A closed stderr (`warden … 2>&1 | head -1` once `head` has gone) is
/// not a panic either: the message is dropped, and the command ends with
/// the status it would have had (2 for a trail not found, 1 for one with a
/// line that is not a record, which `audit show` tells on stderr after its
/// stdout), not Rust's 101.
#[test]
fn a_closed_stderr_ends_a_command_with_its_own_status() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let trail = dir.path().join("t.jsonl");
    {
        use warden::audit::{AuditSink, FileSink, Record};
        let r: Record = serde_json::from_str(
            r#"{"v":1,"ts":"t","event":"log","invocation":"i","task":"t","tool":"x","identity":"sha256:0"}"#,
        )
        .unwrap();
        FileSink::open(&trail).unwrap().append(&r).unwrap();
    }
    let mut text = std::fs::read_to_string(&trail).unwrap();
    text.push_str("not a record\n");
    std::fs::write(&trail, text).unwrap();
    let trail = trail.display().to_string();
    for (args, code) in [
        (&["audit", "show", "/nonexistent/trail.jsonl"][..], 2),
        (&["audit", "show", &trail][..], 1),
        (&["no-such-command"][..], 2),
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = warden(&state)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(writer)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(code),
            "warden {args:?}: {:?}",
            o.status
        );
    }
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

// ---- 12. --input @- and @FILE -----------------------------------------

#[test]
fn input_is_read_from_stdin_with_at_dash_and_from_a_file_with_at() {
    use std::io::Write as _;
    let world = World::new();
    let state = world.dir.path().join("state");
    let audit = world.dir.path().join("audit.jsonl");
    let args = |input: &str| {
        let mut a = run_args(&world, &audit, "echo");
        a.truncate(6); // echo takes no grant
        a.extend(["--input".into(), input.into()]);
        a
    };
    // @-: stdin.
    let mut child = warden(&state)
        .args(args("@-"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(br#"{"message":"from stdin"}"#).unwrap();
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["message"], "from stdin");

    // @FILE.
    let file = world.dir.path().join("input.json");
    std::fs::write(&file, r#"{"message":"from a file"}"#).unwrap();
    let o = warden(&state)
        .args(args(&format!("@{}", file.display())))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["message"], "from a file");

    // A missing file: usage (2), naming the path it could not find.
    let missing = world.dir.path().join("no-such-input.json");
    let o = warden(&state)
        .args(args(&format!("@{}", missing.display())))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stderr).trim(),
        format!("error: input file {} not found", missing.display())
    );
    // `@` alone names no file.
    let o = warden(&state).args(args("@")).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("expected @FILE, or @- to read stdin"));
}

// ---- 10. logging and colours ------------------------------------------

/// `warden describe` of the echo tool with `env` set; its stderr. The
/// engine logs at debug level when it starts, so `debug` shows lines.
fn describe_log(state: &Path, env: &[(&str, &str)]) -> String {
    let o = warden(state)
        .args(["describe", crate::ECHO])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    text(&o.stderr)
}

/// The same on a pseudo-terminal (util-linux `script`): stdout and stderr
/// are the terminal.
fn describe_log_on_a_terminal(env: &[(&str, &str)]) -> String {
    let mut cmd = String::from(
        "env -u WARDEN_LOG -u RUST_LOG -u NO_COLOR WARDEN_STATE_DIR=/nonexistent/state",
    );
    for (k, v) in env {
        cmd.push_str(&format!(" {k}={v}"));
    }
    cmd.push_str(&format!(
        " '{}' --cache-dir '{}' describe '{}' >/dev/null",
        env!("CARGO_BIN_EXE_warden"),
        shared_cache().display(),
        crate::ECHO
    ));
    let o = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("util-linux `script` runs a command on a pseudo-terminal");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    text(&o.stdout)
}

fn log_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("DEBUG")).collect()
}

#[test]
fn logs_follow_warden_log_then_rust_log_and_are_coloured_only_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    // RUST_LOG is honoured; stderr is a pipe here, so no colours.
    let err = describe_log(state, &[("RUST_LOG", "debug")]);
    assert!(!log_lines(&err).is_empty(), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
    // WARDEN_LOG wins over RUST_LOG.
    let err = describe_log(state, &[("RUST_LOG", "debug"), ("WARDEN_LOG", "warn")]);
    assert!(log_lines(&err).is_empty(), "{err}");
    let err = describe_log(state, &[("RUST_LOG", "warn"), ("WARDEN_LOG", "debug")]);
    assert!(!log_lines(&err).is_empty(), "{err}");
    // A filter that does not parse is named, and the default used.
    let err = describe_log(state, &[("RUST_LOG", "warden=[")]);
    assert!(
        err.contains("warning: ignoring RUST_LOG=warden=[:")
            && err.contains("expected a filter such as `warn,warden=debug`"),
        "{err}"
    );

    // On a terminal: coloured, unless NO_COLOR is set (and not empty).
    let tty = describe_log_on_a_terminal(&[("RUST_LOG", "debug")]);
    let lines = log_lines(&tty);
    assert!(!lines.is_empty(), "{tty}");
    assert!(lines.iter().all(|l| l.contains("\u{1b}[")), "{tty:?}");
    for no_color in ["1", "true"] {
        let tty = describe_log_on_a_terminal(&[("RUST_LOG", "debug"), ("NO_COLOR", no_color)]);
        let lines = log_lines(&tty);
        assert!(!lines.is_empty(), "{tty}");
        assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "{tty:?}");
    }
}

// ---- 9. --json, and audit show's checks -------------------------------

/// A trail of two runs of read-files (one reads, one fails to find a
/// file), signed with the key in `state`.
fn two_run_trail(world: &World, state: &Path) -> std::path::PathBuf {
    let audit = world.dir.path().join("trail.jsonl");
    for input in [r#"{"paths":["a.txt"]}"#, r#"{"paths":["nope.txt"]}"#] {
        let mut args = run_args(world, &audit, "read-files");
        args.extend(["--input".into(), input.into()]);
        warden(state).args(args).output().unwrap();
    }
    audit
}

fn json_of(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", text(&o.stdout), text(&o.stderr)))
}

#[test]
fn check_reports_every_problem_type_errors_included_one_line_each() {
    let world = World::new();
    let state = world.dir.path().join("state");
    let bad = world.dir.path().join("typed.toml");
    std::fs::write(
        &bad,
        "[tools.x]\ncomponent = \"nope.wasm\"\ntimeout = 5\nmemory = 64\n\
         [[tools.x.fs]]\nhandle = \"w\"\nwithin = 7\nrights = [\"read\", \"exec\"]\n",
    )
    .unwrap();
    let path = bad.display().to_string();
    let o = warden(&state).args(["check", &path]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let lines: Vec<String> = text(&o.stderr).lines().map(str::to_owned).collect();
    let want = [
        format!("error: {path}:2:13: tools.x.component: component file"),
        format!(
            "error: {path}:3:11: tools.x.timeout: expected a duration string like \"5s\" (found integer `5`)"
        ),
        format!(
            "error: {path}:4:10: tools.x.memory: expected a size string like \"64MiB\" (found integer `64`)"
        ),
        format!("error: {path}:7:10: tools.x.fs[0].within: expected a string (found integer `7`)"),
        format!("error: {path}: 4 problems (each above)"),
    ];
    assert_eq!(lines.len(), want.len(), "{lines:#?}");
    for (line, want) in lines.iter().zip(&want) {
        assert!(line.starts_with(want.as_str()), "{line}\n{want}");
    }
    // `run` with the same manifest: the same problems, one line each.
    let o = warden(&state)
        .args(["run", "--manifest", &path, "x", "--input", "{}"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let stderr = text(&o.stderr);
    let run: Vec<&str> = stderr.lines().collect();
    assert_eq!(run.len(), 4, "{run:#?}");
    assert!(run[1].starts_with(&want[1]), "{run:#?}");
}

#[test]
fn check_prints_json_with_every_problem() {
    let world = World::new();
    let state = world.dir.path().join("state");
    let m = world.manifest.display().to_string();
    let o = warden(&state)
        .args(["check", "--json", &m])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v = json_of(&o);
    assert_eq!(v["ok"], true);
    assert_eq!(v["problems"], serde_json::json!([]));
    assert_eq!(v["tools"].as_array().unwrap().len(), 8, "{v}");
    let echo = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "echo");
    assert!(
        echo.unwrap()["identity"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    let bad = world.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[tools.x]\ncomponent = \"nope.wasm\"\n[[tools.x.fs]]\nhandle = \"w\"\nwithin = \".\"\nrights = [\"read\", \"exec\"]\n",
    )
    .unwrap();
    let o = warden(&state)
        .args(["check", "--json", &bad.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let v = json_of(&o);
    assert_eq!(v["ok"], false);
    let problems = v["problems"].as_array().unwrap();
    assert!(problems.len() >= 2, "{v}");
    assert!(
        problems.iter().any(|p| p["message"]
            .as_str()
            .unwrap()
            .contains("unknown right 'exec' (expected read, write or delete)")),
        "{v}"
    );
}

#[test]
fn audit_verify_and_show_print_json() {
    let world = World::new();
    let state = world.dir.path().join("state");
    let trail = two_run_trail(&world, &state);
    let t = trail.display().to_string();

    let o = warden(&state)
        .args(["audit", "verify", "--json", &t])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v = json_of(&o);
    assert_eq!(v["status"], "complete", "{v}");
    assert_eq!(v["records"], 9, "{v}");
    assert_eq!(v["tampered"], serde_json::Value::Null);

    let edited = world.dir.path().join("edited.jsonl");
    let original = std::fs::read_to_string(&trail).unwrap();
    std::fs::write(
        &edited,
        original.replacen(r#""outcome":"ok""#, r#""outcome":"tool-error:denied""#, 1),
    )
    .unwrap();
    let o = warden(&state)
        .args(["audit", "verify", "--json", &edited.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let v = json_of(&o);
    assert_eq!(v["status"], "tampered", "{v}");
    assert_eq!(v["tampered"]["line"], 4, "{v}");

    // show --json: the kept records, one JSON object a line.
    let o = warden(&state)
        .args(["audit", "show", "--json", &t, "--decision", "allow"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let records: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3, "{}", text(&o.stdout));
    assert!(records.iter().all(|r| r["decision"] == "allow"));
    // Filtered by invocation, by its full id and by the 8 characters the
    // readable view shows.
    let inv = records[0]["invocation"].as_str().unwrap().to_owned();
    for id in [inv.as_str(), &inv[inv.len() - 8..]] {
        let o = warden(&state)
            .args(["audit", "show", "--json", &t, "--invocation", id])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let events: Vec<String> = text(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].to_string())
            .collect();
        // The checkpoint that follows carries the invocation it closed on.
        assert_eq!(
            events,
            [
                r#""invocation.start""#,
                r#""decision""#,
                r#""decision""#,
                r#""invocation.end""#,
                r#""checkpoint""#
            ],
            "{}",
            text(&o.stdout)
        );
    }
}

#[test]
fn audit_show_refuses_malformed_filters_and_files_that_are_not_trails() {
    let world = World::new();
    let state = world.dir.path().join("state");
    let trail = two_run_trail(&world, &state);
    let t = trail.display().to_string();
    let show = |args: &[&str]| {
        warden(&state)
            .args(["audit", "show", &t])
            .args(args)
            .output()
            .unwrap()
    };
    for (args, wanted) in [
        (
            &["--decision", "maybe"][..],
            "invalid value 'maybe' for '--decision <DECISION>'",
        ),
        (&["--decision", "maybe"], "[possible values: allow, deny]"),
        (
            &["--invocation", "last-one"],
            "invalid value 'last-one' for '--invocation <INVOCATION>': expected an invocation id (a UUID",
        ),
        (
            &["--tool", "Read Files"],
            "invalid value 'Read Files' for '--tool <TOOL>': expected a tool name",
        ),
        (
            &["--task", ""],
            "invalid value '' for '--task <TASK>': invalid task id",
        ),
    ] {
        let o = show(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains(wanted),
            "{args:?}: {}",
            text(&o.stderr)
        );
        assert!(o.stdout.is_empty());
    }

    // Not a trail: a text file, a binary file.
    let notes = world.dir.path().join("notes.txt");
    std::fs::write(&notes, "hello\nworld\n").unwrap();
    let binary = world.dir.path().join("blob.bin");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x01]).unwrap();
    for (file, json) in [(&notes, false), (&notes, true), (&binary, false)] {
        let mut args = vec!["audit", "show"];
        if json {
            args.push("--json");
        }
        let f = file.display().to_string();
        args.push(&f);
        let o = warden(&state).args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains(&format!("error: {f} is not an audit trail")),
            "{}",
            text(&o.stderr)
        );
    }
    // A terabyte (sparse: no newline in it) is read a line at a time, not
    // into memory whole: its first line is refused at 64 MiB.
    let sparse = world.dir.path().join("sparse.jsonl");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let started = std::time::Instant::now();
    let f = sparse.display().to_string();
    let o = warden(&state).args(["audit", "show", &f]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("line 1 is not an audit record (a line of over 64 MiB)"),
        "{}",
        text(&o.stderr)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // A missing one is named.
    let o = warden(&state)
        .args(["audit", "show", "/nonexistent/trail.jsonl"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        text(&o.stderr).trim(),
        "error: audit trail /nonexistent/trail.jsonl not found"
    );
    // A trail with a line that is not a record: shown, but not status 0.
    let mut damaged = std::fs::read_to_string(&trail).unwrap();
    damaged.push_str("not a record\n");
    std::fs::write(&trail, damaged).unwrap();
    let o = show(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("(not a record)"));
    assert!(text(&o.stderr).contains("1 lines are not audit records"));
}

// ---- 11. completions and versions -------------------------------------

/// The text after `prefix` on the first line of `file` (under the repo
/// root) that starts with it, up to `end`.
fn declared(file: &str, prefix: &str, end: char) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if let Some(rest) = l.strip_prefix(prefix) {
            if prefix.starts_with("name") {
                // Cargo.lock: the version is on the next line.
                let v = lines.next().unwrap();
                return v["version = \"".len()..v.len() - 1].to_owned();
            }
            return rest.split(end).next().unwrap().to_owned();
        }
    }
    panic!("{file} has no line starting {prefix:?}")
}

#[test]
fn version_names_the_wit_package_and_wasmtime() {
    let dir = tempfile::tempdir().unwrap();
    let o = warden(dir.path()).arg("--version").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let wit = declared("wit/tool.wit", "package ", ';');
    let wasmtime = declared("Cargo.lock", "name = \"wasmtime\"", '"');
    assert!(wit.starts_with("warden:tool@"), "{wit}");
    assert_eq!(
        text(&o.stdout).trim(),
        format!(
            "warden {} (WIT {wit}, wasmtime {wasmtime})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn completions_are_printed_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    let script = |shell: &str| {
        let o = warden(dir.path())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        text(&o.stdout)
    };
    // bash: loaded into a shell, it completes subcommands and flags.
    let file = dir.path().join("warden.bash");
    std::fs::write(&file, script("bash")).unwrap();
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && complete -p warden && \
             COMP_WORDS=(warden au) COMP_CWORD=1 && _warden warden au warden && echo \"${{COMPREPLY[@]}}\" && \
             COMP_WORDS=(warden audit show --j) COMP_CWORD=3 && _warden warden --j show && echo \"${{COMPREPLY[@]}}\"",
            file.display()
        ))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].ends_with("-F _warden warden"), "{out}");
    assert_eq!(lines[1], "audit", "{out}");
    assert_eq!(lines[2], "--json", "{out}");
    assert!(script("zsh").starts_with("#compdef warden"));
    assert!(script("fish").contains("complete -c warden"));
    assert!(script("powershell").contains("Register-ArgumentCompleter"));
    assert!(script("elvish").contains("edit:completion:arg-completer[warden]"));
    let o = warden(dir.path())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("invalid value 'tcsh'")
            && text(&o.stderr).contains("[possible values: bash, elvish, fish, powershell, zsh]"),
        "{}",
        text(&o.stderr)
    );
}

// ---- 7. the demo's commands run as pasted ----------------------------

#[test]
fn the_commands_the_demo_prints_run_when_pasted() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let state = dir.path().join("state");
    let o = warden(&state)
        .args(["demo", "--dir", &demo.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let commands: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("$ warden run "))
        .collect();
    assert_eq!(commands.len(), 12, "{out}");
    assert!(commands.iter().all(|c| c.contains("--manifest ")), "{out}");
    // Pasted in another directory, through a shell: steps 1 (an allowed
    // read), 2 (a denied write), 5 (a grant wider than the ceiling) and 6
    // (a search) behave as the demo showed.
    let elsewhere = tempfile::tempdir().unwrap();
    let paste = |i: usize| {
        let line = format!(
            "'{}' --cache-dir '{}' run {}",
            env!("CARGO_BIN_EXE_warden"),
            shared_cache().display(),
            commands[i - 1]
        );
        let o = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .current_dir(elsewhere.path())
            .env("WARDEN_STATE_DIR", &state)
            .env_remove("WARDEN_LOG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (o, line)
    };
    let (o, line) = paste(1);
    assert_eq!(o.status.code(), Some(0), "{line}\n{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["entries"][0]["path"], "README.md", "{v}");
    let (o, line) = paste(2);
    assert_eq!(o.status.code(), Some(1), "{line}\n{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("denied: write needs the write right"));
    let (o, line) = paste(5);
    assert_eq!(o.status.code(), Some(2), "{line}\n{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("exceed the manifest's ceiling"));
    let (o, line) = paste(6);
    assert_eq!(o.status.code(), Some(0), "{line}\n{}", text(&o.stderr));
    // The pasted runs appended to the demo's trail.
    let o = warden(&state)
        .args([
            "audit",
            "show",
            &demo.join("audit.jsonl").display().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("search-text"));
}

// ---- 13. warden new tool ----------------------------------------------

#[test]
fn new_tool_makes_a_crate_that_builds_and_runs_as_generated() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let new = |args: &[&str]| {
        warden(&state)
            .current_dir(dir.path())
            .args(["new", "tool"])
            .args(args)
            .output()
            .unwrap()
    };
    for (name, wanted) in [
        (
            "Hello",
            "invalid tool name 'Hello' (expected 1 to 64 lower-case letters, digits, '-' or '_', starting with a letter)",
        ),
        ("9lives", "invalid tool name '9lives'"),
        ("a/b", "invalid tool name 'a/b'"),
        (
            "self",
            "invalid tool name 'self' (a Rust keyword or a crate the tool depends on",
        ),
        ("serde", "invalid tool name 'serde'"),
    ] {
        let o = new(&[name]);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains(wanted),
            "{name}: {}",
            text(&o.stderr)
        );
    }
    // An existing directory is never written into.
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    let o = new(&["taken"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("taken already exists (expected a new directory; pass --dir DIR)"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("taken")).unwrap().count(),
        0
    );

    // A name the generated code also uses (`struct Output`, `Input`,
    // `Tool`, `Error`): the tool's own type is `OutputTool`, so it builds.
    let o = new(&["output"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let printed = text(&o.stdout);
    let krate = dir.path().join("output").canonicalize().unwrap();
    // The manifest entry to paste.
    let entry: String = printed
        .lines()
        .skip_while(|l| *l != "[tools.output]")
        .take(2)
        .map(|l| format!("{l}\n"))
        .collect();
    let wasm = krate.join("target/wasm32-wasip2/release/output.wasm");
    assert_eq!(
        entry,
        format!("[tools.output]\ncomponent = \"{}\"\n", wasm.display()),
        "{printed}"
    );

    // Built for wasm32-wasip2 by its own config, sharing the guest tools'
    // target directory (same lock, same profile: only the new crate
    // compiles), then put where the entry says.
    let guests = Path::new(crate::ECHO).ancestors().nth(3).unwrap();
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(&krate)
        .args(["build", "--release", "--target-dir"])
        .arg(guests);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cargo.env_remove(var);
    }
    let o = cargo.output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    std::fs::create_dir_all(wasm.parent().unwrap()).unwrap();
    std::fs::copy(guests.join("wasm32-wasip2/release/output.wasm"), &wasm).unwrap();

    let manifest = dir.path().join("manifest.toml");
    std::fs::write(&manifest, &entry).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let run = |input: &str| {
        warden(&state)
            .args(["run", "--manifest", &manifest.display().to_string()])
            .args(["output", "--audit", &audit.display().to_string()])
            .args(["--input", input])
            .output()
            .unwrap()
    };
    let o = run(r#"{"name":"world"}"#);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), r#"{"greeting":"hello, world"}"#);
    let o = run(r#"{"name":""}"#);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("`name` must not be empty"));
    let o = warden(&state)
        .args(["check", "--json", &manifest.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(json_of(&o)["ok"], true, "{}", text(&o.stdout));
}
