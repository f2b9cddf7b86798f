//! What stops `warden run` and `warden serve`: a signal drops the work in
//! progress, so what it runs is stopped with it and its end recorded.

/// A signal that stops `warden run`.
pub(crate) struct Stop {
    pub(crate) name: &'static str,
    pub(crate) number: u8,
}

/// The first of SIGINT, SIGTERM and SIGHUP that was not ignored when
/// warden started (`nohup`, or `&` in a shell without job control, ignore
/// some: they must stay ignored, not become a stop). One that cannot be
/// listened for is never the first.
pub(crate) async fn signal() -> Stop {
    use tokio::signal::unix::SignalKind;
    tokio::select! {
        () = on(SignalKind::interrupt()) => Stop { name: "SIGINT", number: 2 },
        () = on(SignalKind::terminate()) => Stop { name: "SIGTERM", number: 15 },
        () = on(SignalKind::hangup()) => Stop { name: "SIGHUP", number: 1 },
    }
}

/// Ready when `kind` arrives, unless it is ignored (then never).
async fn on(kind: tokio::signal::unix::SignalKind) {
    signalled(listen(kind).as_mut()).await;
}

/// Until the signal `listening` listens for comes (never, when it could
/// not be listened for).
pub(crate) async fn signalled(listening: Option<&mut tokio::signal::unix::Signal>) {
    match listening {
        Some(s) => drop(s.recv().await),
        None => std::future::pending().await,
    }
}

/// A listener for `kind`, unless warden was started with it ignored: a
/// handler replaces the inherited "ignore" whatever it was.
pub(crate) fn listen(kind: tokio::signal::unix::SignalKind) -> Option<tokio::signal::unix::Signal> {
    if ignored().is_some_and(|set| set & (1 << (kind.as_raw_value() - 1)) != 0) {
        return None;
    }
    tokio::signal::unix::signal(kind).ok()
}

/// The signals this process ignores, as `SigIgn` in `/proc/self/status`
/// gives them (bit n - 1 for signal n); `None` if it cannot be read.
fn ignored() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}
