//! Asking a person at a terminal: one prompt at a time, every value
//! escaped, and a question given up (timed out, cancelled) ended on the
//! terminal too, so the next line typed answers the next prompt.

use super::{ApprovalAnswer, ApprovalRequest, Approver};
use crate::redact::escape_control;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The terminal prompt for `r`: a header, one line per field, the question.
/// Every value is escaped here, where the lines are made, and nowhere else.
pub(super) fn prompt(r: &ApprovalRequest) -> String {
    let ApprovalRequest {
        digest: _,
        tool,
        identity,
        task,
        agent,
        invocation,
        action,
        resource,
        summary,
    } = r;
    let lines = [
        ("tool", format!("{tool} ({identity})")),
        ("task", format!("{task}   invocation {invocation}")),
        (
            "agent",
            agent
                .clone()
                .unwrap_or_else(|| "(none authenticated)".into()),
        ),
        ("action", action.clone()),
        ("resource", resource.clone()),
        ("details", summary.clone()),
    ];
    let mut out = String::from("\nwarden: approval needed\n");
    for (label, value) in lines {
        out.push_str(&format!("  {label:<9} {}\n", escape_control(&value)));
    }
    out.push_str("approve? [y/N] ");
    out
}

/// Asks a person at the controlling terminal (`/dev/tty`), showing the tool,
/// its identity, the task, the action, the resource and the argument summary,
/// with control characters escaped.
pub struct TerminalApprover {
    /// Where the answer is read from and the prompt written to.
    input: std::path::PathBuf,
    output: std::path::PathBuf,
    /// Held from a prompt until its answer is read or the question is
    /// given up: one prompt on the terminal at a time, so a line typed
    /// answers the prompt it follows. Waiting for it holds no thread.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl TerminalApprover {
    /// The controlling terminal, if this process has one.
    pub fn open() -> Option<TerminalApprover> {
        let tty = std::path::PathBuf::from("/dev/tty");
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&tty)
            .ok()?;
        Some(TerminalApprover::on(tty.clone(), tty))
    }

    /// Whether this process's job owns its controlling terminal. A job in
    /// the background that reads its terminal (or flushes it) is stopped
    /// by the kernel (SIGTTIN) until it is brought back with `fg`: every
    /// call waiting on an approval would wait with it.
    pub fn in_foreground() -> bool {
        std::fs::File::open("/dev/tty").is_ok_and(|tty| foreground(&tty))
    }

    /// Asks by writing the prompt to `output` and reading a line from
    /// `input` (another terminal, or files in a test).
    pub fn on(input: std::path::PathBuf, output: std::path::PathBuf) -> TerminalApprover {
        TerminalApprover {
            input,
            output,
            turn: Arc::default(),
        }
    }
}

#[async_trait::async_trait]
impl Approver for TerminalApprover {
    async fn ask(&self, r: &ApprovalRequest) -> Option<ApprovalAnswer> {
        let (input, output) = (self.input.clone(), self.output.clone());
        let digest = r.digest.clone();
        let text = prompt(r);
        // Set when this question is given up (its future dropped: timed
        // out, or its call cancelled): the reader then stops and says so,
        // and the turn passes on, instead of a thread reading on and taking
        // the line typed for the next prompt.
        let given_up = Arc::new(AtomicBool::new(false));
        let _give_up = GiveUp(given_up.clone());
        let turn = self.turn.clone().lock_owned().await;
        let answer = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            read_answer(&input, &output, &text, &given_up)
        });
        let approved = answer.await.ok()?.ok()?;
        let who = std::env::var("USER").unwrap_or_else(|_| "unknown user".into());
        Some(ApprovalAnswer {
            digest,
            approved,
            by: format!("terminal ({})", escape_control(&who)),
        })
    }
}

/// Sets its flag when dropped.
struct GiveUp(Arc<AtomicBool>);

impl Drop for GiveUp {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Writes `prompt` to `output` and reads a line from `input` without
/// blocking, every 50 ms, until a line ends, the input ends, or the
/// question is `given_up` (then says so on `output`: the answer is no).
fn read_answer(
    input: &std::path::Path,
    output: &std::path::Path,
    prompt: &str,
    given_up: &AtomicBool,
) -> std::io::Result<bool> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut from = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(input)?;
    // What was typed before this prompt is up is not its answer: a `y`
    // typed for a question the tool then withdrew (dropping its request)
    // would otherwise answer the one it asks next, under the same Enter,
    // and so would the rest of a line longer than is read. Discarded
    // before the prompt is shown, so an answer to it is not.
    let tty = rustix::termios::isatty(&from);
    if tty && !foreground(&from) {
        return Err(in_background());
    }
    if tty {
        rustix::termios::tcflush(&from, rustix::termios::QueueSelector::IFlush)?;
    }
    let mut out = std::fs::OpenOptions::new().write(true).open(output)?;
    out.write_all(prompt.as_bytes())?;
    out.flush()?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 && !line.ends_with(b"\n") {
        // Checked before each read: a line typed after the question was
        // given up is for the next prompt.
        if given_up.load(Ordering::Relaxed) {
            out.write_all(b"\n(no answer in time: denied)\n")?;
            return Ok(false);
        }
        // Put in the background while it waits (Ctrl-Z, `bg`): a read
        // would stop the process until `fg`.
        if tty && !foreground(&from) {
            out.write_all(b"\n(warden went to the background: denied)\n")?;
            return Err(in_background());
        }
        match from.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let line = String::from_utf8_lossy(&line);
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Whether the terminal `tty`'s foreground job is this process's, or it
/// is not this process's controlling terminal (another one, which stops
/// no job that reads it: `tcgetpgrp` says `ENOTTY`).
fn foreground(tty: &std::fs::File) -> bool {
    match rustix::termios::tcgetpgrp(tty) {
        Ok(job) => job == rustix::process::getpgrp(),
        Err(_) => true,
    }
}

fn in_background() -> std::io::Error {
    tracing::warn!(
        "approval: warden runs in the background of its terminal, where it cannot ask: denied"
    );
    std::io::Error::other("warden runs in the background of its terminal")
}
