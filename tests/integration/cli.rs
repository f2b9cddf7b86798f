//! The `warden` binary: exit codes, one-line errors, stdout isolation.

use crate::common::{World, shared_cache};
use std::path::Path;
use std::process::{Command, Output};

fn warden(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("--cache-dir")
        .arg(shared_cache())
        .args(args)
        .env_remove("WARDEN_LOG")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr without the progress lines of a first-time compile.
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| !l.starts_with("compiling "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `warden run --manifest M TOOL --audit A ARGS…`
fn run(world: &World, tool: &str, args: &[&str]) -> Output {
    let manifest = world.manifest.display().to_string();
    let audit = world.dir.path().join("audit.jsonl").display().to_string();
    let mut all = vec!["run", "--manifest", &manifest, tool, "--audit", &audit];
    all.extend_from_slice(args);
    warden(&all)
}

fn grant(world: &World, rights: &str) -> String {
    format!("fs:workspace={}:{rights}", world.workspace.display())
}

#[test]
fn exit_0_prints_the_tools_json_output() {
    let world = World::new();
    let o = run(
        &world,
        "read-files",
        &[
            "--grant",
            &grant(&world, "read"),
            "--input",
            r#"{"paths":["a.txt"]}"#,
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(out["entries"][0]["content"], "alpha");
    // The audit file has this invocation.
    let trail = std::fs::read_to_string(world.dir.path().join("audit.jsonl")).unwrap();
    // start, 2 decisions (stat, read), end, checkpoint
    assert_eq!(trail.lines().count(), 5, "{trail}");
}

#[test]
fn exit_1_when_the_tool_reports_a_denial() {
    let world = World::new();
    let o = run(
        &world,
        "write-file",
        &[
            "--grant",
            &grant(&world, "read"),
            "--input",
            r#"{"path":"a.txt","content":"x"}"#,
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim(),
        "error: tool 'write-file' failed: denied: write needs the write right on handle 'workspace', which holds read"
    );
    assert_eq!(stdout(&o), "");
}

#[test]
fn exit_2_for_bad_grants_manifests_and_input() {
    let world = World::new();
    // grant wider than the ceiling: refused, naming the handle
    let o = run(
        &world,
        "read-files",
        &[
            "--grant",
            &grant(&world, "read,write"),
            "--input",
            r#"{"paths":["a.txt"]}"#,
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim(),
        "error: grant for handle 'workspace' refused: rights write exceed the manifest's ceiling (read)"
    );
    // Nothing ran: the trail holds only the refused grant's record.
    let trail = std::fs::read_to_string(world.dir.path().join("audit.jsonl")).unwrap();
    let lines: Vec<&str> = trail
        .lines()
        .filter(|l| !l.contains("\"checkpoint\""))
        .collect();
    assert_eq!(lines.len(), 1, "{trail}");
    assert!(lines[0].contains("\"capability\":\"grant\""), "{trail}");
    assert!(lines[0].contains("\"rule\":\"grant.ceiling\""), "{trail}");

    // malformed grant syntax
    let o = run(&world, "read-files", &["--grant", "workspace:read"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("expected fs:HANDLE=DIR:RIGHTS"),
        "{}",
        stderr(&o)
    );

    // malformed tool input
    let o = run(&world, "echo", &["--input", "{nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("error: invalid input: input is not valid JSON"),
        "{}",
        stderr(&o)
    );

    // input the tool's schema rejects
    let o = run(
        &world,
        "read-files",
        &[
            "--grant",
            &grant(&world, "read"),
            "--input",
            r#"{"paths":3}"#,
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // a malformed manifest: file, line and expectation
    let bad = world.dir.path().join("bad.toml");
    std::fs::write(&bad, "[tools.x]\ncomponent = \"x.wasm\"\nrights = 3\n").unwrap();
    let o = warden(&["run", "--manifest", &bad.display().to_string(), "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("bad.toml:3:1: tools.x.rights: unknown field `rights`"),
        "{}",
        stderr(&o)
    );

    // an unwritable audit trail
    let o = run(&world, "echo", &["--audit", "/proc/warden/audit.jsonl"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("audit"), "{}", stderr(&o));

    // unknown subcommand / flag: clap's usage error
    assert_eq!(warden(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn exit_3_for_limits_with_one_clear_line() {
    let world = World::new();
    let o = run(&world, "hog", &["--input", r#"{"attack":"loop"}"#]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(stderr(&o).trim(), "error: deadline exceeded after 1s");
    let o = run(&world, "hog", &["--input", r#"{"attack":"memory"}"#]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(stderr(&o).trim(), "error: memory limit of 32 MiB exceeded");
}

#[test]
fn tool_stdout_never_reaches_the_cli_stdout() {
    let world = World::new();
    let o = run(
        &world,
        "hog",
        &["--input", r#"{"attack":"print","text":"MARKER-7f3a"}"#],
    );
    assert_eq!(o.status.code(), Some(0));
    // Only the tool's JSON result: the raw print went to the capture buffer.
    assert_eq!(stdout(&o), "{\"result\":\"MARKER-7f3a\"}\n");
    assert!(!stderr(&o).contains("MARKER"), "{}", stderr(&o));
}

#[test]
fn grants_file_and_task_id() {
    let world = World::new();
    let file = world.dir.path().join("task.toml");
    std::fs::write(
        &file,
        "task = \"issue-42\"\n[fs.workspace]\npath = \"workspace\"\nrights = [\"read\"]\n",
    )
    .unwrap();
    let o = run(
        &world,
        "read-files",
        &[
            "--grants",
            &file.display().to_string(),
            "--input",
            r#"{"paths":["a.txt"]}"#,
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let trail = std::fs::read_to_string(world.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        trail.lines().all(|l| l.contains(r#""task":"issue-42""#)),
        "{trail}"
    );
    // the same handle granted twice is an error
    let o = run(
        &world,
        "read-files",
        &[
            "--grants",
            &file.display().to_string(),
            "--grant",
            &grant(&world, "read"),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("handle 'workspace' is granted twice"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_lists_every_approval_waiver() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = warden_in(
        &d.join("state"),
        &["demo", "--dir", &d.display().to_string()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let manifest = d.join("manifest.toml").display().to_string();
    let o = warden_in(&d.join("state"), &["check", &manifest]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    // The example manifest waives approval for staging only; production
    // keeps the default (a person approves).
    let waivers: Vec<&str> = out.lines().filter(|l| l.starts_with("waiver ")).collect();
    assert_eq!(waivers.len(), 1, "{out}");
    assert!(
        waivers[0].ends_with(
            ": tools.deploy-artifact.deploy[0].approval: deploy target 'staging' runs without approval"
        ),
        "{out}"
    );
    assert!(out.contains("1 approval waivers"), "{out}");
    // A manifest whose name holds an escape sequence is named escaped.
    let odd = d.join("m\u{1b}[2J.toml");
    std::fs::copy(&manifest, &odd).unwrap();
    let o = warden_in(&d.join("state"), &["check", &odd.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stdout(&o).contains('\u{1b}'), "{:?}", stdout(&o));
    assert!(stdout(&o).contains("m\\u{1b}[2J.toml: "), "{}", stdout(&o));
    let o = warden_in(&d.join("state"), &["check", "--json", &manifest]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        report["waivers"][0]["field"],
        "tools.deploy-artifact.deploy[0].approval"
    );
    assert_eq!(report["waivers"][0]["what"], "deploy target 'staging'");
    assert_eq!(report["waivers"].as_array().unwrap().len(), 1);
}

#[test]
fn check_and_describe() {
    let world = World::new();
    let o = warden(&["check", &world.manifest.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("8 tools ok"), "{}", stdout(&o));
    // probe and hog declare no handles; reader is fs-probe too: no warnings expected
    assert!(!stdout(&o).contains("warning"), "{}", stdout(&o));

    let bad = world.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[tools.x]\ncomponent = \"nope.wasm\"\n[[tools.x.fs]]\nhandle = \"w\"\nwithin = \".\"\nrights = [\"read\", \"exec\"]\n",
    )
    .unwrap();
    let o = warden(&["check", &bad.display().to_string()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("bad.toml:2:13: tools.x.component: component file"),
        "{e}"
    );
    assert!(e.contains("bad.toml:6:19: tools.x.fs[0].rights: unknown right 'exec' (expected read, write or delete)"), "{e}");

    let o = warden(&["describe", crate::READ_FILES]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let info: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(info["name"], "read-files");
    assert!(info["identity"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(info["handles"][0]["rights"], serde_json::json!(["read"]));

    let o = warden(&["describe", "/nonexistent.wasm"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn identity_mismatch_prints_both_digests() {
    let world = World::new();
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let text = std::fs::read_to_string(&world.manifest).unwrap().replacen(
        "[tools.echo]\n",
        &format!("[tools.echo]\nidentity = \"{wrong}\"\n"),
        1,
    );
    let m = world.dir.path().join("pinned.toml");
    std::fs::write(&m, text).unwrap();
    let o = warden(&[
        "run",
        "--manifest",
        &m.display().to_string(),
        "echo",
        "--audit",
        &world.dir.path().join("a.jsonl").display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let actual = warden::Identity::of(&std::fs::read(crate::ECHO).unwrap()).to_string();
    let e = stderr(&o);
    assert!(e.contains(&wrong) && e.contains(&actual), "{e}");
}

/// `warden demo --dir` at a directory it did not lay out removed its
/// `audit.jsonl` and overwrote its manifest and policies: refused, exit 2,
/// nothing touched. One an earlier demo laid out is laid out again.
#[test]
fn demo_refuses_a_directory_it_did_not_lay_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("audit.jsonl"), "precious\n").unwrap();
    std::fs::write(d.join("manifest.toml"), "# mine\n").unwrap();
    let o = warden_in(
        &d.join("state"),
        &["demo", "--dir", &d.display().to_string()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "holds audit.jsonl, which the demo would replace, and no earlier demo laid it out"
        ),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(d.join("audit.jsonl")).unwrap(),
        "precious\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("manifest.toml")).unwrap(),
        "# mine\n"
    );
    assert!(!d.join("policies").exists());

    let again = d.join("again");
    for _ in 0..2 {
        let o = warden_in(
            &d.join("state"),
            &["demo", "--dir", &again.display().to_string()],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
}

#[test]
fn demo_shows_each_decision_and_the_audit_records() {
    let dir = tempfile::tempdir().unwrap();
    let o = warden(&["demo", "--dir", &dir.path().display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        "1. an allowed read",
        "ok: {\"entries\"",
        "tool error: denied: write needs the write right on handle 'workspace', which holds read",
        "ok: {\"path\":\"docs/notes.md\",\"bytes_written\":33}",
        "tool error: denied: remove-file needs the delete right on handle 'workspace', which holds read,write",
        "refused: grant for handle 'workspace' refused: rights write exceed the manifest's ceiling (read)",
        "secrets.env still exists: true",
        "deny  remove-file workspace:secrets.env",
        "outcome=tool-error:denied",
        "api: /secure received the right bearer token",
        "tool error: denied: exfiltration attempt: secret 'api-token' may be sent only to",
        "ok: {\"status\":200,\"body\":\"hello, call-api on task demo\"}",
        "api: /whoami verified a live token: tool call-api",
        "the audit trail mentions the API token: false",
        "signed checkpoints, complete: true",
        "warden: approval needed",
        "resource  workspace:CHANGELOG.md",
        "approve? [y/N] y   (answered by the demo)",
        "ok: {\"path\":\"CHANGELOG.md\",\"bytes_written\":32}",
        "tampered: line 8: its contents do not match its hash (the record was edited)",
        "Cedar policies: github-changes-need-approval, no-egress-after-reveal, production-needs-release",
        "tool error: denied: deploying to a production target needs a task labelled 'release' (policy production-needs-release)",
        "[policy production-needs-release]",
        "ok: {\"target\":\"production\",\"status\":0,\"output\":\"production received ",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(Path::new(&dir.path().join("audit.jsonl")).exists());
    // The laid-out example passes `warden check`.
    let o = warden(&[
        "check",
        &dir.path().join("manifest.toml").display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

/// `warden` with its own state directory (audit and identity keys).
fn warden_in(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("--cache-dir")
        .arg(shared_cache())
        .args(args)
        .env("WARDEN_STATE_DIR", state)
        .output()
        .unwrap()
}

/// The first `warden run` with the default paths, under the umask most
/// desktops set (002): the trail's directory, which is the state
/// directory, was created group-writable, and then refused as the audit
/// key's directory ("writable by other users"): exit 2, an empty trail
/// left behind. It is created 0700 whatever the umask.
#[test]
fn a_first_run_under_a_group_writable_umask_keeps_its_state_private() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::new();
    let home = world.dir.path().join("home");
    let xdg = world.dir.path().join("xdg");
    let g = grant(&world, "read");
    let line = [
        env!("CARGO_BIN_EXE_warden"),
        "--cache-dir",
        &shared_cache().display().to_string(),
        "run",
        "--manifest",
        &world.manifest.display().to_string(),
        "read-files",
        "--grant",
        &g,
        "--input",
        r#"{"paths":["a.txt"]}"#,
    ]
    .map(|a| format!("'{a}'"))
    .join(" ");
    let o = Command::new("sh")
        .args(["-c", &format!("umask 002; exec {line}")])
        .env("HOME", &home)
        .env("XDG_STATE_HOME", &xdg)
        .env_remove("WARDEN_STATE_DIR")
        .env_remove("WARDEN_AUDIT")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let state = xdg.join("warden");
    let mode = std::fs::metadata(&state).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    assert!(state.join("audit.jsonl").metadata().unwrap().len() > 0);
}

/// `^C` on `warden run` killed warden and left the programs it ran (an
/// `exec:` secret source, a deploy program) running: each runs in a
/// process group of its own, out of the terminal's reach. A signal now
/// drops the invocation: its programs are killed with it, its end is
/// recorded `cancelled`, and warden exits 128 + the signal's number.
#[test]
fn a_signal_stops_the_invocation_and_what_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("manifest.toml"),
        format!(
            "[tools.echo]\ncomponent = \"{}\"\ntimeout = \"60s\"\n\
             [[tools.echo.secrets]]\nname = \"slow\"\nsource = \"exec:/bin/sleep 303.3\"\n",
            crate::ECHO
        ),
    )
    .unwrap();
    let running = || {
        let o = Command::new("pgrep")
            .args(["-f", "sleep 303.3"])
            .output()
            .unwrap();
        !o.stdout.is_empty()
    };
    let until = |what: &dyn Fn() -> bool| {
        let start = std::time::Instant::now();
        while !what() {
            assert!(start.elapsed().as_secs() < 20, "waited 20 s");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    // As a shell starts it, and as `&` in a script does, with SIGINT
    // ignored (kept ignored through `exec`). SIGTERM is sent: SIGINT may
    // be ignored already where the tests run (started in the background).
    for ignoring in ["", "trap '' INT;"] {
        let (sent, code) = (rustix::process::Signal::TERM, 143);
        let trail = d.join(format!("trail-{}.jsonl", ignoring.len()));
        let mut warden = Command::new("sh")
            .arg("-c")
            .arg(format!("{ignoring} exec \"$@\""))
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_warden"))
            .arg("--cache-dir")
            .arg(shared_cache())
            .args(["run", "--manifest"])
            .arg(d.join("manifest.toml"))
            .args(["echo", "--grant", "secret:slow"])
            .arg("--audit")
            .arg(&trail)
            .args(["--input", "{}"])
            .env("WARDEN_STATE_DIR", d.join("state"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        until(&running);
        let pid = rustix::process::Pid::from_raw(warden.id() as i32).unwrap();
        if !ignoring.is_empty() {
            // An ignored signal stays ignored: it is no stop.
            rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(500));
            assert!(
                warden.try_wait().unwrap().is_none(),
                "stopped by an ignored SIGINT"
            );
            assert!(running());
        }
        rustix::process::kill_process(pid, sent).unwrap();
        let status = loop {
            if let Some(status) = warden.try_wait().unwrap() {
                break status;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut said = String::new();
        std::io::Read::read_to_string(warden.stderr.as_mut().unwrap(), &mut said).unwrap();
        assert_eq!(status.code(), Some(code), "{status:?}: {said}");
        assert!(said.contains("warden: stopped by SIGTERM"), "{said}");
        until(&|| !running());
        let text = std::fs::read_to_string(&trail).unwrap();
        assert!(
            text.lines()
                .any(|l| l.contains(r#""event":"invocation.end""#)
                    && l.contains(r#""outcome":"cancelled""#)),
            "{text}"
        );
    }
}

#[test]
fn audit_verify_and_show() {
    let world = World::new();
    let state = world.dir.path().join("state");
    let trail = world.dir.path().join("trail.jsonl");
    let (m, t) = (
        world.manifest.display().to_string(),
        trail.display().to_string(),
    );
    for input in [r#"{"paths":["a.txt"]}"#, r#"{"paths":["nope.txt"]}"#] {
        let g = grant(&world, "read");
        warden_in(
            &state,
            &[
                "run",
                "--manifest",
                &m,
                "read-files",
                "--grant",
                &g,
                "--audit",
                &t,
                "--input",
                input,
            ],
        );
    }
    let o = warden_in(&state, &["audit", "verify", &t]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("ok, 9 records, 2 signed checkpoints, every invocation ended"),
        "{}",
        stdout(&o)
    );

    // An edited copy: the first bad line is reported.
    let text = std::fs::read_to_string(&trail).unwrap();
    let edited = world.dir.path().join("edited.jsonl");
    std::fs::write(
        &edited,
        text.replacen(r#""outcome":"ok""#, r#""outcome":"tool-error:denied""#, 1),
    )
    .unwrap();
    let o = warden_in(&state, &["audit", "verify", &edited.display().to_string()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o)
            .contains("edited.jsonl:4: its contents do not match its hash (the record was edited)"),
        "{}",
        stderr(&o)
    );
    // Where the report cannot be written (a full disk), the verdict keeps
    // its status: altered is still 1, and an intact trail's report lost is
    // 2, never 3 (intact but incomplete, a live trail's usual state).
    let full = |trail: &str, json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
        cmd.args(["--cache-dir"]).arg(shared_cache());
        cmd.args(["audit", "verify", trail]);
        if json {
            cmd.arg("--json");
        }
        let o = cmd
            .env("WARDEN_STATE_DIR", &state)
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        (o.status.code(), stderr(&o))
    };
    for json in [false, true] {
        let (code, err) = full(&edited.display().to_string(), json);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("cannot write to stdout"), "{err}");
        if !json {
            assert!(
                err.contains("edited.jsonl:4: its contents do not match"),
                "{err}"
            );
        }
        let (code, err) = full(&t, json);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("cannot write to stdout"), "{err}");
    }

    // show, filtered.
    let o = warden_in(&state, &["audit", "show", &t, "--tool", "read-files"]);
    assert_eq!(stdout(&o).lines().count(), 9, "{}", stdout(&o));
    let o = warden_in(&state, &["audit", "show", &t, "--decision", "allow"]);
    assert!(
        stdout(&o).lines().all(|l| l.contains("allow")),
        "{}",
        stdout(&o)
    );
    assert_eq!(stdout(&o).lines().count(), 3, "{}", stdout(&o));
}

#[test]
fn a_killed_writer_leaves_a_trail_that_verifies_up_to_its_last_checkpoint() {
    let world = World::new();
    let state = world.dir.path().join("state");
    let trail = world.dir.path().join("trail.jsonl");
    let (m, t) = (
        world.manifest.display().to_string(),
        trail.display().to_string(),
    );
    let o = warden_in(&state, &["run", "--manifest", &m, "echo", "--audit", &t]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A long-running invocation, killed mid-way (SIGKILL: no chance to
    // write) after its first host call put its start on the trail.
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("--cache-dir")
        .arg(shared_cache())
        .args([
            "run",
            "--manifest",
            &m,
            "hog",
            "--audit",
            &t,
            "--input",
            r#"{"attack":"log-then-loop"}"#,
        ])
        .env("WARDEN_STATE_DIR", &state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !std::fs::read_to_string(&trail)
        .unwrap()
        .contains(r#""tool":"hog""#)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the hog invocation never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let hog: warden::audit::Record = serde_json::from_str(
        std::fs::read_to_string(&trail)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    let o = warden_in(&state, &["audit", "verify", &t]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("intact and signed up to its last checkpoint (line 3)"),
        "{out}"
    );
    assert!(
        out.contains(&format!("invocation {} has no end record", hog.invocation)),
        "{out}"
    );
}

#[test]
fn task_labels_from_the_command_line_reach_runtime_policy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = warden_in(
        &d.join("state"),
        &["demo", "--dir", &d.display().to_string()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Production deploys wait for a person by default, and nobody answers
    // here: this copy of the manifest waives that, so policy alone decides.
    let path = d.join("manifest.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let waived = text.replacen(
        "name = \"production\"\n",
        "name = \"production\"\napproval = \"none\"\n",
        1,
    );
    assert_ne!(text, waived);
    std::fs::write(&path, waived).unwrap();
    let manifest = path.display().to_string();
    let ws = format!("fs:workspace={}:read", d.join("workspace").display());
    let trail = d.join("labels.jsonl").display().to_string();
    let deploy = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--manifest",
            &manifest,
            "deploy-artifact",
            "--grant",
            &ws,
            "--grant",
            "deploy:production",
            "--audit",
            &trail,
            "--input",
            r#"{"target":"production","artifact":"dist/app-1.0.tar"}"#,
        ];
        args.extend_from_slice(extra);
        warden_in(&d.join("state"), &args)
    };
    let o = deploy(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("(policy production-needs-release)"),
        "{}",
        stderr(&o)
    );
    let o = deploy(&["--label", "release"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("production received"), "{}", stdout(&o));
    let o = deploy(&["--label", "Release!"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("invalid task label"), "{}", stderr(&o));
}

#[test]
fn eight_parallel_runs_append_one_chain() {
    let world = World::new();
    let state = world.dir.path().join("state");
    let trail = world.dir.path().join("shared.jsonl");
    let (m, t) = (
        world.manifest.display().to_string(),
        trail.display().to_string(),
    );
    // The key exists before the runs race to create it.
    let o = warden_in(&state, &["audit", "jwks"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let g = grant(&world, "read");
    let children: Vec<_> = (0..8)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_warden"))
                .arg("--cache-dir")
                .arg(shared_cache())
                .args([
                    "run",
                    "--manifest",
                    &m,
                    "read-files",
                    "--grant",
                    &g,
                    "--audit",
                    &t,
                    "--input",
                    r#"{"paths":["a.txt","nope.txt"]}"#,
                ])
                .env("WARDEN_STATE_DIR", &state)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.code().is_some(), "{}", stderr(&o));
    }
    let text = std::fs::read_to_string(&trail).unwrap();
    let per_run = {
        let o = warden_in(
            &state,
            &[
                "run",
                "--manifest",
                &m,
                "read-files",
                "--grant",
                &g,
                "--audit",
                &world.dir.path().join("one.jsonl").display().to_string(),
                "--input",
                r#"{"paths":["a.txt","nope.txt"]}"#,
            ],
        );
        assert!(o.status.code().is_some());
        std::fs::read_to_string(world.dir.path().join("one.jsonl"))
            .unwrap()
            .lines()
            .count()
    };
    // Each run's records (its own trail: the records and one checkpoint,
    // written when it stops) eight times over; a run that stops after
    // another's checkpoint covered its records signs nothing more. A run
    // settles twice (`warden run` signs before it exits, then the sink
    // when it closes), and the second signs another run's records appended
    // in between; on a slow machine the cadence (500 ms) may sign once
    // more: at most three checkpoints a run, far fewer than its records.
    let is_checkpoint = |l: &&str| l.contains(r#""event":"checkpoint""#);
    let records = text.lines().filter(|l| !is_checkpoint(l)).count();
    let checkpoints = text.lines().filter(is_checkpoint).count();
    assert_eq!(records, 8 * (per_run - 1), "{text}");
    assert!((1..=24).contains(&checkpoints), "{text}");
    assert!(
        text.lines().last().is_some_and(|l| is_checkpoint(&l)),
        "{text}"
    );
    let o = warden_in(&state, &["audit", "verify", &t]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(&format!(
            "ok, {} records, {checkpoints} signed checkpoints, every invocation ended",
            records + checkpoints
        )),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_trail_signed_by_another_instance_names_its_key_and_verify_creates_none() {
    let world = World::new();
    let (ours, theirs) = (
        world.dir.path().join("ours"),
        world.dir.path().join("theirs"),
    );
    let trail = world.dir.path().join("trail.jsonl");
    let (m, t) = (
        world.manifest.display().to_string(),
        trail.display().to_string(),
    );
    let o = warden_in(&theirs, &["run", "--manifest", &m, "echo", "--audit", &t]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let jwks = stdout(&warden_in(&theirs, &["audit", "jwks"]));
    let kid = serde_json::from_str::<serde_json::Value>(&jwks).unwrap()["keys"][0]["kid"]
        .as_str()
        .unwrap()
        .to_owned();

    // A verifier without a key of its own, and one with another key.
    for with_key in [false, true] {
        if with_key {
            let o = warden_in(&ours, &["audit", "jwks"]);
            assert_eq!(o.status.code(), Some(0));
        }
        let o = warden_in(&ours, &["audit", "verify", &t]);
        assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
        assert!(
            stderr(&o).contains(&format!(
                "trail.jsonl:3: checkpoint signed by key {kid}, which is not one of the known keys; pass its JWKS with --jwks"
            )),
            "{}",
            stderr(&o)
        );
        assert!(!stderr(&o).contains("altered") && !stderr(&o).contains("edited"));
        assert!(
            stdout(&o).contains("chain intact (3 records)"),
            "{}",
            stdout(&o)
        );
        // verify never creates a key.
        assert_eq!(
            ours.join("audit-ed25519.key").exists(),
            with_key,
            "verify created a key"
        );
    }
    // With the writer's JWKS it verifies.
    let file = world.dir.path().join("theirs.json");
    std::fs::write(&file, &jwks).unwrap();
    let o = warden_in(
        &ours,
        &["audit", "verify", &t, "--jwks", &file.display().to_string()],
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    // The exit codes are documented.
    let o = warden_in(&ours, &["audit", "verify", "--help"]);
    for want in [
        "0 intact and complete",
        "1 altered",
        "3 intact",
        "4 a checkpoint is signed by a key",
    ] {
        assert!(stdout(&o).contains(want), "{want}: {}", stdout(&o));
    }
}

#[test]
fn audit_show_escapes_control_characters() {
    use warden::audit::{AuditSink, FileSink, Record};
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("t.jsonl");
    let sink = FileSink::open(&trail).unwrap();
    let hostile = "a.txt\u{1b}[2K\r\n   1  2026-01-01  decision x  allow write /etc/passwd\u{7}";
    let r: Record = serde_json::from_value(serde_json::json!({
        "v": 1, "ts": "2026-01-01T00:00:00.000Z\u{1b}[1A", "event": "decision",
        "invocation": "inv", "task": "t", "tool": "x", "identity": "sha256:0",
        "capability": "fs", "action": "write", "resource": hostile,
        "decision": "deny", "rule": "fs.rights", "reason": "no\r\nreally",
    }))
    .unwrap();
    sink.append(&r).unwrap();
    drop(sink);
    let o = warden_in(
        &dir.path().join("state"),
        &["audit", "show", &trail.display().to_string()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(!out.trim_end().chars().any(char::is_control), "{out:?}");
    assert!(
        out.contains(
            r"a.txt\u{1b}[2K\u{d}\u{a}   1  2026-01-01  decision x  allow write /etc/passwd\u{7}"
        ),
        "{out}"
    );
    assert!(out.contains(r"(no\u{d}\u{a}really)"), "{out}");
    assert!(out.contains(r"2026-01-01T00:00:00.000Z\u{1b}[1A"), "{out}");
}

/// A trail is read without verifying it (a tool's strings are in it, and
/// anyone may have edited it): an invocation id whose last eight bytes
/// split a character is shown, not a panic with the text raw on stderr,
/// and `--json` escapes what a terminal would reorder or hide, as every
/// other output does.
#[test]
fn audit_show_takes_any_text_an_edited_trail_holds() {
    use warden::audit::{AuditSink, FileSink, Record};
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("t.jsonl");
    let sink = FileSink::open(&trail).unwrap();
    let r: Record = serde_json::from_value(serde_json::json!({
        "v": 1, "ts": "2026-01-01T00:00:00.000Z", "event": "log",
        "invocation": "\u{1b}]0;x\u{7}\u{20ac}abcdefg", "task": "t", "tool": "x",
        "identity": "sha256:0", "message": "a\u{202e}b\u{e0041}c\u{9b}2J",
    }))
    .unwrap();
    sink.append(&r).unwrap();
    drop(sink);
    let t = trail.display().to_string();
    let o = warden_in(&dir.path().join("state"), &["audit", "show", &t]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("inv \u{20ac}abcdefg"), "{}", stdout(&o));
    let o = warden_in(&dir.path().join("state"), &["audit", "show", "--json", &t]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        !out.chars()
            .any(|c| (c.is_control() && c != '\n') || matches!(c, '\u{202e}' | '\u{e0041}')),
        "{out:?}"
    );
    assert!(out.contains(r"a\u202eb\udb40\udc41c\u009b2J"), "{out}");
    let shown: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(shown["message"], "a\u{202e}b\u{e0041}c\u{9b}2J");
}

// ---- Operator-facing CLI errors escape control characters (issue #11,
// item 13; engineer D's block — other engineers add their tests above) ----

/// No raw ESC, CR or other control character but the line breaks.
fn no_raw_controls(text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters in {text:?}"
    );
}

#[test]
fn a_tools_error_message_cannot_forge_or_rewrite_cli_lines() {
    let world = World::new();
    let text = "boom\n  details: forged\u{1b}[2K\r";
    let input = serde_json::json!({"attack": "fail", "text": text}).to_string();
    let o = run(&world, "hog", &["--input", &input]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    no_raw_controls(&err);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: tool 'hog' failed: ")
            && err.contains("boom\\u{a}  details: forged\\u{1b}[2K\\u{d}"),
        "{err}"
    );
}

/// A tool's log message reaches the operator's log (here `--verbose` on a
/// terminal) escaped: it cannot start a line of its own that looks like
/// the host's, nor rewrite one.
#[test]
fn a_tools_log_message_cannot_forge_a_log_line() {
    let world = World::new();
    let forged = "2026-01-01T00:00:00.000000Z ERROR warden::mcp::http: refused a request";
    // Blank-rendering characters too: `--verbose` shows the tool's stdout
    // and stderr through the same escape (it used `escape_debug`, which
    // leaves them).
    let text = format!("hello\n{forged}\u{202e}evil\u{1b}[2K\r\u{3164}\u{2800}\u{fe0f}");
    let input = serde_json::json!({"attack": "print", "text": text}).to_string();
    let manifest = world.manifest.display().to_string();
    let o = warden(&[
        "--verbose",
        "run",
        "--manifest",
        &manifest,
        "hog",
        "--input",
        &input,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    no_raw_controls(&err);
    assert!(
        !err.contains(['\u{202e}', '\u{3164}', '\u{2800}', '\u{fe0f}']),
        "{err}"
    );
    assert!(!err.lines().any(|l| l.starts_with(forged)), "{err}");
    assert!(
        err.contains(&format!(
            "tool stdout ({} bytes): hello\\u{{a}}{forged}\\u{{202e}}evil\\u{{1b}}[2K\\u{{d}}\\u{{3164}}\\u{{2800}}\\u{{fe0f}}",
            text.len()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "hello\\u{{a}}{forged}\\u{{202e}}evil\\u{{1b}}[2K\\u{{d}}"
        )),
        "{err}"
    );
}

#[test]
fn a_manifest_path_with_control_characters_is_printed_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m\n  details: forged\u{1b}[2K\r.toml");
    let path = path.to_str().unwrap();
    for verbose in [false, true] {
        let mut args = vec!["check", path];
        if verbose {
            args.insert(0, "--verbose");
        }
        let o = warden(&args);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        no_raw_controls(&err);
        assert!(
            err.contains("m\\u{a}  details: forged\\u{1b}[2K\\u{d}.toml"),
            "{err}"
        );
        assert!(
            !err.lines().any(|l| l.trim_start().starts_with("details")),
            "{err}"
        );
        if !verbose {
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}

#[test]
fn audit_checkpoint_signs_an_unsigned_tail_and_only_then() {
    let world = World::new();
    let state = world.dir.path().join("state");
    let trail = world.dir.path().join("trail.jsonl");
    let (m, t) = (
        world.manifest.display().to_string(),
        trail.display().to_string(),
    );
    // A run ends cleanly: its records are signed when it stops.
    let o = warden_in(&state, &["run", "--manifest", &m, "echo", "--audit", &t]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = warden_in(&state, &["audit", "verify", &t]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let o = warden_in(&state, &["audit", "checkpoint", &t]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("nothing unsigned"), "{}", stdout(&o));

    // A writer without a key (or one killed before its checkpoint) leaves
    // an unsigned tail: incomplete until `audit checkpoint` signs it.
    let sink = warden::audit::FileSink::open(&trail).unwrap();
    let auditor = warden::audit::Auditor::new(std::sync::Arc::new(sink), "i", "t", "x", "sha256:0");
    auditor
        .write(&auditor.record(warden::audit::Event::Log))
        .unwrap();
    drop(auditor);
    let o = warden_in(&state, &["audit", "verify", &t]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    let o = warden_in(&state, &["audit", "checkpoint", &t]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("signed a checkpoint"), "{}", stdout(&o));
    let o = warden_in(&state, &["audit", "verify", &t]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));

    // No trail: an error naming it, and none is created.
    let missing = world.dir.path().join("missing.jsonl");
    let o = warden_in(
        &state,
        &["audit", "checkpoint", &missing.display().to_string()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot read the audit trail"),
        "{}",
        stderr(&o)
    );
    assert!(!missing.exists());
}

#[test]
fn every_command_shares_one_compile_cache_entry() {
    let world = World::new();
    let cache = world.dir.path().join("cache");
    let state = world.dir.path().join("state");
    let with_cache = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .env("WARDEN_STATE_DIR", &state)
            .env_remove("WARDEN_LOG")
            .output()
            .unwrap()
    };
    let entries = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&cache)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let m = world.manifest.display().to_string();
    let audit = world.dir.path().join("a.jsonl").display().to_string();
    let o = with_cache(&["describe", crate::ECHO]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("compiling component"));
    let after_describe = entries();
    assert_eq!(after_describe.len(), 1, "{after_describe:?}");
    // `run` and `check` find what `describe` compiled: nothing is compiled
    // again, no second entry.
    let o = with_cache(&["run", "--manifest", &m, "echo", "--audit", &audit]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o2 = with_cache(&["check", "--manifest", &m]);
    let echo = &after_describe[0][..64];
    for o in [&o, &o2] {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !err.lines()
                .any(|l| l.starts_with("compiling") && l.contains(echo)),
            "echo compiled again: {err}"
        );
    }
    let after = entries();
    assert!(
        after.contains(&after_describe[0]),
        "{after:?} vs {after_describe:?}"
    );
    assert_eq!(
        after.iter().filter(|n| n.starts_with(echo)).count(),
        1,
        "one entry per component: {after:?}"
    );
}

/// A tool's output is valid JSON that may hold a C1 control (U+009B, a
/// terminal's CSI), a bidi override or a tag character in a string, and a
/// carriage return between tokens: `warden run` prints the same JSON value
/// with each as a `\u` escape, and nothing a terminal would act on.
#[test]
fn a_tools_output_cannot_act_on_the_terminal() {
    let world = World::new();
    let message = "ok\u{9b}2J\u{202e}evil\u{e0041}";
    let input = format!(
        "{{\"message\":{}}}\r",
        serde_json::to_string(message).unwrap()
    );
    let o = run(&world, "echo", &["--input", &input]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    no_raw_controls(out.trim_end_matches('\n'));
    for c in ['\u{9b}', '\u{202e}', '\u{e0041}', '\r'] {
        assert!(!out.contains(c), "{c:?} in {out:?}");
    }
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["message"], message, "the same value: {out}");
}
