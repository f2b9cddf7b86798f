//! `--approver`: who answers approval requests.

use crate::load_issuer;
use anyhow::Context as _;
use std::sync::Arc;
use warden::approval::{Approver, DenyAll, TerminalApprover, WebhookApprover};

/// The approver `--approver CHOICE` names: `auto`, `tty`, `deny` or
/// `webhook=URL`; and whether the operator answers (every choice but an
/// `auto` that found no terminal: then no person is there, and `serve` may
/// ask its MCP clients instead). A terminal whose foreground job is not
/// this process's (`warden serve … &` from a shell) is no person's either:
/// a read from it would stop the process until `fg`.
pub(crate) fn choose(choice: &str) -> anyhow::Result<(Arc<dyn Approver>, bool)> {
    use std::io::IsTerminal;
    if choice == "auto" {
        let terminal = TerminalApprover::open().filter(|_| std::io::stdin().is_terminal());
        return Ok(match terminal {
            Some(t) if TerminalApprover::in_foreground() => (Arc::new(t), true),
            Some(_) => {
                crate::out::errln!(
                    "warden: in the background of its terminal, so no approval is asked there"
                );
                (Arc::new(DenyAll), false)
            }
            None => (Arc::new(DenyAll), false),
        });
    }
    Ok((approver(choice)?, true))
}

fn approver(choice: &str) -> anyhow::Result<Arc<dyn Approver>> {
    Ok(match choice {
        "deny" => Arc::new(DenyAll),
        "tty" => {
            Arc::new(TerminalApprover::open().context("--approver tty: no controlling terminal")?)
        }
        other => match other.strip_prefix("webhook=") {
            // Signed with the identity key (`warden identity jwks` prints it).
            // Named by its origin: its token may ride in its path.
            Some(url) => {
                let shown = WebhookApprover::shown(url);
                Arc::new(
                    WebhookApprover::new(url)
                        .map_err(|e| anyhow::anyhow!("--approver webhook={shown}: {e}"))?
                        .signed_by(Arc::new(load_issuer().with_context(|| {
                            format!(
                                "--approver webhook={shown}: cannot load the key that signs its requests"
                            )
                        })?)),
                )
            }
            None => anyhow::bail!(
                "unknown approver '{other}' (expected auto, tty, deny or webhook=URL)"
            ),
        },
    })
}
