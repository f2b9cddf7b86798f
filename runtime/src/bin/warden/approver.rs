//! `--approver`: who answers approval requests.

use crate::load_issuer;
use anyhow::Context as _;
use std::sync::Arc;
use warden::approval::{Approver, DenyAll, TerminalApprover, WebhookApprover};

/// The approver `--approver CHOICE` names: `auto`, `tty`, `deny` or
/// `webhook=URL`.
pub(crate) fn choose(choice: &str) -> anyhow::Result<Arc<dyn Approver>> {
    use std::io::IsTerminal;
    Ok(match choice {
        "deny" => Arc::new(DenyAll),
        "tty" => {
            Arc::new(TerminalApprover::open().context("--approver tty: no controlling terminal")?)
        }
        "auto" => match TerminalApprover::open().filter(|_| std::io::stdin().is_terminal()) {
            Some(t) => Arc::new(t),
            None => Arc::new(DenyAll),
        },
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
