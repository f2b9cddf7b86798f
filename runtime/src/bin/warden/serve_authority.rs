//! What `serve` takes its authority from, kept from the tools it serves.

use super::ServeArgs;
use warden::RuntimeBuilder;
use warden::auth::AgentsFile;

/// The files `serve` takes its authority from: no tool may hold a token
/// file (it would have the server's bearer token, or the operator's), nor
/// change a grants or agents file (it would widen its own grant, or add
/// an issuer of its own, at the next start).
pub(super) fn files(
    mut b: RuntimeBuilder,
    args: &ServeArgs,
    agents: Option<&AgentsFile>,
) -> RuntimeBuilder {
    let tokens = [
        (&args.token_file, "token file"),
        (&args.approvals_token_file, "approvals token file"),
        (&args.console_token_file, "console token file"),
        (&args.introspect_token_file, "introspection token file"),
    ];
    for (file, what) in tokens {
        if let Some(file) = file {
            b = b.keep_out(file.clone(), what);
        }
    }
    for c in &args.clients {
        if let Some((token, grants)) = c.split_once('=') {
            b = b
                .keep_out(token, "client token file")
                .trust_file(grants, "client grants file");
        }
    }
    if let Some(grants) = &args.grants {
        b = b.trust_file(grants.clone(), "grants file");
    }
    if let Some(file) = &args.agents {
        b = b.trust_file(file.clone(), "agents file");
    }
    for (file, what) in agents.map(AgentsFile::files).unwrap_or_default() {
        b = b.trust_file(file, what);
    }
    b
}
