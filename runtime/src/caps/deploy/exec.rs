//! The `exec` deploy backend: the target's program, run on a private copy
//! of the artifact.

use super::host::{READ_OUTPUT, capped, error};
use crate::bindings::warden::tool::deploy::{self as wit, ErrorCode, Outcome};
use crate::policy::gate::Pass;
use crate::redact::Redactor;

/// Runs the target's program on a private copy of the artifact: no shell,
/// environment cleared but for the listed variables, output capped. All of
/// it (staging the copy, the run, reading its output) ends by `timeout`
/// (never past the invocation's deadline): the program is then killed.
/// Its output as it printed it, with the values it was passed (to redact
/// once the caller has looked for guesses in it, `DeployView::guessed`).
pub(super) async fn exec(
    _pass: &Pass<'_, ()>,
    program: &str,
    args: &[String],
    env: &[String],
    bytes: &[u8],
    artifact: &str,
    timeout: std::time::Duration,
) -> Result<(Outcome, Redactor), wit::Error> {
    let run = run_program(program, (args, env), bytes, artifact);
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| {
            Err(error(
                ErrorCode::Failed,
                format!(
                    "{} did not finish within {}s",
                    program_name(program),
                    timeout.as_secs_f32()
                ),
            ))
        })
}

async fn run_program(
    program: &str,
    (args, env): (&[String], &[String]),
    bytes: &[u8],
    artifact: &str,
) -> Result<(Outcome, Redactor), wit::Error> {
    let failed = |m: String| error(ErrorCode::Failed, m);
    let dir = tempfile::tempdir().map_err(|e| failed(format!("cannot stage the artifact: {e}")))?;
    let name = artifact.rsplit('/').next().unwrap_or("artifact");
    let staged = dir.path().join(name);
    tokio::fs::write(&staged, bytes)
        .await
        .map_err(|e| failed(format!("cannot stage the artifact: {e}")))?;
    let staged = staged.display().to_string();
    let passed: Vec<(&String, std::ffi::OsString)> = env
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (k, v)))
        .collect();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args.iter().map(|a| a.replace("{artifact}", &staged)))
        .env_clear()
        .envs(passed.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        // A group of its own: what it starts is stopped with it, and it is
        // not the terminal's foreground job (its prompts and `^C` are not
        // mixed with Warden's approval prompt).
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| failed(format!("cannot run {}: {e}", program_name(program))))?;
    let group = crate::caps::group::Group::of(&child);
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    // Read into buffers of their own: what was read stays when the rest
    // cannot be waited for.
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let read = {
        let mut read = std::pin::pin!(async {
            let (o, e) = tokio::join!(
                read_capped(stdout, &mut out, READ_OUTPUT + 1),
                read_capped(stderr, &mut err, READ_OUTPUT + 1)
            );
            o.and(e)
        });
        // Its exit, seen without reaping it: until it is reaped, its
        // group's number is its own, so the group can still be killed.
        tokio::select! {
            read = &mut read => Some(read),
            () = group.exited() => {
                // Exited with its output still open: what it left running
                // (a helper holding the pipe) has a moment to finish, then
                // its group goes, and then the reading: one that left the
                // group cannot make the deployment end as timed out.
                match tokio::time::timeout(AFTER_EXIT, &mut read).await {
                    Ok(read) => Some(read),
                    Err(_) => {
                        group.kill();
                        tokio::time::timeout(AFTER_EXIT, &mut read).await.ok()
                    }
                }
            }
        }
    };
    let status = child.wait().await;
    group.reaped();
    let mut output = out;
    // Cut where it was given up on (a helper outside the group holds it),
    // the same as cut at the cap.
    let given_up = read.is_none();
    if let Some(Err(e)) = read {
        return Err(failed(format!("{} failed: {e}", program_name(program))));
    }
    let name = program_name(program);
    let status = status.map_err(|e| failed(format!("{name} failed: {e}")))?;
    output.extend(err);
    let passed = passed_values(&passed);
    let output = if (output.len() > READ_OUTPUT || given_up) && !passed.is_empty() {
        // Cut where it is read, the output could end in part of a value
        // passed through the environment, which redaction cannot find: in
        // a form of any length (escapes take any number of leading zeros,
        // and nest), so no end dropped is long enough. Withheld.
        let what = if given_up {
            "left its output held open by something it started".to_owned()
        } else {
            format!("printed more than {} KiB", READ_OUTPUT >> 10)
        };
        format!(
            "[{name} {what}: its output is withheld, as, cut there, it could \
             end in part of a value passed through its environment]"
        )
    } else {
        capped(&output)
    };
    let status = status.code().unwrap_or(-1);
    Ok((Outcome { status, output }, passed))
}

/// How long a deploy program's output may stay open after it exits.
const AFTER_EXIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The shortest value passed through the environment that is redacted:
/// shorter ones (`LANG=C`, a `HOME`) are not credentials, and would
/// mark ordinary words in the output.
pub(super) const MIN_PASSED: usize = 8;

/// The values the program was given through its environment, as a
/// redactor: the host's credentials a target passes its program (an
/// `AWS_SECRET_ACCESS_KEY`) are no secret of the tool's, so the
/// invocation's redactor does not know them, and a program printing its
/// environment, or a debug dump, handed them to the tool and the trail.
fn passed_values(passed: &[(&String, std::ffi::OsString)]) -> crate::redact::Redactor {
    // Each value as it is and without the newline an env file leaves.
    let values: Vec<(&str, std::borrow::Cow<'_, str>)> = passed
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_string_lossy()))
        .flat_map(|(k, v)| [(k, v.trim().to_owned().into()), (k, v)])
        .filter(|(_, v)| v.len() >= MIN_PASSED)
        .collect();
    crate::redact::Redactor::new(values.iter().map(|(k, v)| (*k, v.as_ref())))
}

/// Reads `from` to its end into `kept`, keeping the first `cap` bytes: a
/// program that writes more is not blocked on a full pipe, and its output
/// costs the host at most `cap`.
async fn read_capped(
    from: Option<impl tokio::io::AsyncRead + Unpin>,
    kept: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt as _;
    let Some(mut from) = from else {
        return Ok(());
    };
    let mut buf = [0u8; 8192];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

/// A deploy program as the tool is told of it: its file name, not where
/// the host keeps it.
fn program_name(program: &str) -> &str {
    std::path::Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("the deploy program")
}
