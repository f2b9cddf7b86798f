//! What stops `warden run`: the invocation is dropped on a signal.

/// A signal that stops `warden run`.
pub(crate) struct Stop {
    pub(crate) name: &'static str,
    pub(crate) number: u8,
}

/// The first of SIGINT, SIGTERM and SIGHUP (one that cannot be listened
/// for is never the first).
pub(crate) async fn signal() -> Stop {
    use tokio::signal::unix::{SignalKind, signal};
    let on = |kind: SignalKind, name, number| async move {
        match signal(kind) {
            Ok(mut s) => {
                s.recv().await;
                Stop { name, number }
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        s = on(SignalKind::interrupt(), "SIGINT", 2) => s,
        s = on(SignalKind::terminate(), "SIGTERM", 15) => s,
        s = on(SignalKind::hangup(), "SIGHUP", 1) => s,
    }
}
