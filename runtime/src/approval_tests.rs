//! Unit tests of `approval`.
use super::*;

fn request(n: u64, args: &str) -> ApprovalRequest {
    ApprovalRequest {
        digest: digest("sha256:0", "t", "inv", n, "fs.write", "ws:a", args),
        tool: "x".into(),
        identity: "sha256:0".into(),
        task: "t".into(),
        agent: None,
        invocation: "inv".into(),
        action: "fs.write".into(),
        resource: "ws:a".into(),
        summary: args.into(),
    }
}

#[test]
fn digests_bind_every_field() {
    let base = digest("i", "t", "v", 0, "a", "r", "x");
    for other in [
        digest("j", "t", "v", 0, "a", "r", "x"),
        digest("i", "u", "v", 0, "a", "r", "x"),
        digest("i", "t", "w", 0, "a", "r", "x"),
        digest("i", "t", "v", 1, "a", "r", "x"),
        digest("i", "t", "v", 0, "b", "r", "x"),
        digest("i", "t", "v", 0, "a", "s", "x"),
        digest("i", "t", "v", 0, "a", "r", "y"),
    ] {
        assert_ne!(base, other);
    }
}

/// What was typed on the terminal before a prompt was up does not answer
/// it: a `y` typed for a question the tool withdrew, completed by the Enter
/// pressed once the next one is shown, is no approval of that one.
#[tokio::test]
async fn a_line_typed_before_the_prompt_does_not_answer_it() {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let terminal =
        std::path::PathBuf::from(ptsname(&master, Vec::new()).unwrap().into_string().unwrap());
    // Held open, so that what the master writes is queued for a reader.
    let _held = std::fs::File::open(&terminal).unwrap();
    let mut master = std::fs::File::from(master);
    std::io::Write::write_all(&mut master, b"y").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    std::fs::write(&output, "").unwrap();
    let asked = tokio::spawn(async move {
        TerminalApprover::on(terminal, output)
            .ask(&request(1, "x"))
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    std::io::Write::write_all(&mut master, b"\n").unwrap();
    let answer = asked.await.unwrap().unwrap();
    assert!(
        !answer.approved,
        "the `y` typed before the prompt answered it"
    );
}

#[tokio::test]
async fn the_terminal_prompt_escapes_what_a_tool_chose() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::write(&input, "y\n").unwrap();
    std::fs::write(&output, "").unwrap();
    let mut r = request(0, "x");
    // A forged line, and sequences that erase the line and return to
    // its start to overwrite what the operator reads.
    r.resource = "ws:a.txt\n  details   forged\u{1b}[2K\r".into();
    r.summary = "write 5 bytes\u{1b}[1A\u{9b}2K".into();
    r.task = "t\r".into();
    let answer = TerminalApprover::on(input, output.clone())
        .ask(&r)
        .await
        .unwrap();
    assert!(answer.approved);
    let printed = std::fs::read_to_string(&output).unwrap();
    assert!(!printed.contains(['\u{1b}', '\r', '\u{9b}']), "{printed:?}");
    let lines: Vec<&str> = printed.split('\n').collect();
    assert_eq!(
        lines,
        [
            "",
            "warden: approval needed",
            "  tool      x (sha256:0)",
            "  task      t\\u{d}   invocation inv",
            "  agent     (none authenticated)",
            "  action    fs.write",
            "  resource  ws:a.txt\\u{a}  details   forged\\u{1b}[2K\\u{d}",
            "  details   write 5 bytes\\u{1b}[1A\\u{9b}2K",
            "approve? [y/N] ",
        ]
    );
}

#[test]
fn requests_shown_to_people_have_every_field_escaped() {
    let mut r = request(0, "x");
    r.resource = "a\nb".into();
    r.summary = "\u{1b}]0;title\u{7}".into();
    let shown = r.for_people();
    assert_eq!(shown.resource, "a\\u{a}b");
    assert_eq!(shown.summary, "\\u{1b}]0;title\\u{7}");
    assert_eq!(shown.digest, r.digest);
    // Escaping twice changes nothing.
    assert_eq!(shown.for_people(), shown);
}

/// An answer is used once because it names one request: replayed for the
/// invocation's next request (the same call again, numbered one more by
/// the gate), it is for another request.
#[tokio::test]
async fn an_answer_is_for_the_one_request_it_names() {
    struct Replays(String);
    #[async_trait::async_trait]
    impl Approver for Replays {
        async fn ask(&self, _: &ApprovalRequest) -> Option<ApprovalAnswer> {
            Some(ApprovalAnswer {
                digest: self.0.clone(),
                approved: true,
                by: "replayer".into(),
            })
        }
    }
    let first = request(0, "x");
    let gate = Approvals::new(
        Arc::new(Replays(first.digest.clone())),
        Duration::from_secs(1),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    assert!(gate.decide(&first, deadline).await.approved);
    let again = gate.decide(&request(1, "x"), deadline).await;
    assert!(!again.approved);
    assert_eq!(
        again.reason,
        "the answer from replayer is for another request (a changed argument, another invocation or a replay)"
    );
}

#[test]
fn the_prompt_names_the_agent_escaped() {
    let mut r = request(0, "x");
    assert!(prompt(&r).contains("  agent     (none authenticated)\n"));
    assert!(!serde_json::to_string(&r).unwrap().contains("agent"));
    r.agent = Some("oauth:https://i.example ci\u{1b}[2Jbot".into());
    let p = prompt(&r);
    assert!(
        p.contains("  agent     oauth:https://i.example ci\\u{1b}[2Jbot\n"),
        "{p}"
    );
    assert_eq!(
        r.for_people().agent.as_deref(),
        Some("oauth:https://i.example ci\\u{1b}[2Jbot")
    );
}

/// A prompt whose question is given up (timed out) says so and stops
/// reading: the next line typed answers the next prompt, not the old one.
#[tokio::test]
async fn a_prompt_given_up_ends_and_the_next_line_answers_the_next() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    std::fs::write(&output, "").unwrap();
    let (reader, mut writer) = std::io::pipe().unwrap();
    let input = std::path::PathBuf::from(format!("/proc/self/fd/{}", reader.as_raw_fd()));
    let tty = TerminalApprover::on(input, output.clone());
    let r = request(0, "x");
    let wait = std::time::Duration::from_millis(200);
    assert!(tokio::time::timeout(wait, tty.ask(&r)).await.is_err());
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    writer.write_all(b"y\n").unwrap();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), tty.ask(&r))
        .await
        .expect("the next prompt got no line")
        .unwrap();
    assert!(answer.approved);
    let shown = std::fs::read_to_string(&output).unwrap();
    assert!(shown.contains("(no answer in time: denied)"), "{shown}");
}

/// Requests given up (their asker dropped) are swept as the next one comes,
/// even when no one lists them.
#[tokio::test]
async fn requests_given_up_do_not_pile_up_in_the_queue() {
    let queue = QueueApprover::new();
    for n in 0..1000 {
        let r = request(n, "x");
        let ask = queue.ask(&r);
        assert!(
            tokio::time::timeout(Duration::from_millis(1), ask)
                .await
                .is_err()
        );
    }
    let held = queue.pending.lock().unwrap().len();
    assert_eq!(
        held, 1,
        "the last one, given up after the others were swept"
    );
    assert!(queue.pending().is_empty());
}
