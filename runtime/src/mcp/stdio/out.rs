//! The client-facing output of the stdio loop: whole lines, written by
//! whoever sends them, and what happens to a client that stops reading.

use super::GRACE;
use rmcp::model::{
    ProgressNotification, ProgressNotificationParam, ServerJsonRpcMessage, ServerNotification,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// The client-facing output: whole lines, from this loop and from the SDK,
/// written by whoever sends them; and the calls' progress notes, written by
/// a task of their own ([`Out::new`]). A writer holds the output until its
/// line is out, and waits with it on a client that reads slowly: the loop
/// and the SDK's task can, as each goes on once the client reads, but not a
/// call, which only the loop polls. When a call's progress note held the
/// output so, and the loop waited for it to write an answer, the session
/// hung for good. A note finds the queue full only when the client has not
/// read the last 16: it is dropped, and the next one says more.
///
/// Once the session ends (told to stop, or its input closed), a client
/// whose output takes no bytes for [`STALLED`], or still takes them
/// [`GRACE`] after the end first waited on it, is given up: nothing more is
/// written to it (the line in progress stays cut). Before, a client that
/// had stopped reading held a write, and the loop in it, for good:
/// `warden serve --stdio` ignored SIGTERM.
#[derive(Clone)]
pub(crate) struct Out {
    writer: Arc<Mutex<Writer>>,
    notes: tokio::sync::mpsc::Sender<Vec<u8>>,
    ending: CancellationToken,
}

/// Progress notes waiting for a slow client.
const NOTES: usize = 16;

/// The output and what is queued for it. A line is queued whole before any
/// of it is written, and leaves the queue as it is written: a write given up
/// part-way (the session's end does, on a slow reader) leaves the rest of
/// its line queued, to go out before the next line or at [`Out::finish`],
/// so a client never reads half a line, unless it is given up (see
/// [`Out`]): what went out of its line then stays cut.
struct Writer {
    output: Pin<Box<dyn AsyncWrite + Send>>,
    queued: Vec<u8>,
    written: usize,
    /// The client went (a broken pipe or connection), or was given up
    /// once the session was ending (see [`Out`]): lines are dropped.
    gone: bool,
    /// When a write first waited on the client after the session's end.
    ending_since: Option<tokio::time::Instant>,
}

/// How long the output may take no bytes once the session is ending.
const STALLED: Duration = Duration::from_secs(3);

impl Writer {
    async fn line(writer: &Mutex<Writer>, bytes: &[u8], ending: &CancellationToken) {
        let mut w = writer.lock().await;
        if w.gone {
            return;
        }
        w.queued.extend_from_slice(bytes);
        // A client that stopped reading or went: nothing more can reach
        // it, and the loop ends when its input closes or it is told to.
        if let Err(e) = w.send(ending).await {
            w.queued.clear();
            w.written = 0;
            use std::io::ErrorKind::{BrokenPipe, ConnectionReset, TimedOut};
            w.gone = matches!(e.kind(), BrokenPipe | ConnectionReset | TimedOut);
            if e.kind() == TimedOut {
                tracing::warn!(
                    "MCP over stdio: the client stopped reading after the session ended; nothing more is written to it"
                );
            }
        }
    }

    /// Writes what is queued; once `ending` is cancelled, a write that
    /// takes no bytes for [`STALLED`], or goes on past [`GRACE`] after the
    /// first that waited, fails (`TimedOut`).
    async fn send(&mut self, ending: &CancellationToken) -> std::io::Result<()> {
        let timed_out = || std::io::Error::from(std::io::ErrorKind::TimedOut);
        while self.written < self.queued.len() {
            let n = tokio::select! {
                biased;
                n = self.output.write(&self.queued[self.written..]) => n?,
                () = stalled(ending, &mut self.ending_since) => return Err(timed_out()),
            };
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.written += n;
        }
        self.queued.clear();
        self.written = 0;
        tokio::select! {
            biased;
            flushed = self.output.flush() => flushed,
            () = stalled(ending, &mut self.ending_since) => Err(timed_out()),
        }
    }
}

/// Pending until `ending` is cancelled; then for [`STALLED`], and no later
/// than [`GRACE`] after the first time it got that far (`since`). Polled
/// after the write it bounds (`biased`): a write that can go on does.
async fn stalled(ending: &CancellationToken, since: &mut Option<tokio::time::Instant>) {
    ending.cancelled().await;
    let now = tokio::time::Instant::now();
    let first = *since.get_or_insert(now);
    tokio::time::sleep_until((now + STALLED).min(first + GRACE)).await;
}

impl Out {
    /// The output, and the task that writes the calls' progress notes.
    /// `ending` is cancelled when the session ends (see [`Out`]).
    pub(crate) fn new(
        output: impl AsyncWrite + Send + 'static,
        ending: CancellationToken,
    ) -> (Out, impl Future<Output = ()> + Send + 'static) {
        let writer = Arc::new(Mutex::new(Writer {
            output: Box::pin(output),
            queued: Vec::new(),
            written: 0,
            gone: false,
            ending_since: None,
        }));
        let (notes, mut queue) = tokio::sync::mpsc::channel(NOTES);
        let out = Out {
            writer: writer.clone(),
            notes,
            ending: ending.clone(),
        };
        let write_notes = async move {
            while let Some(note) = queue.recv().await {
                Writer::line(&writer, &note, &ending).await;
            }
        };
        (out, write_notes)
    }

    pub(super) async fn line(&self, bytes: &[u8]) {
        Writer::line(&self.writer, bytes, &self.ending).await;
    }

    /// Writes what a line given up part-way left queued, within `limit`.
    pub(super) async fn finish(&self, limit: Duration) {
        let written = async {
            let mut w = self.writer.lock().await;
            if w.gone {
                Ok(())
            } else {
                w.send(&self.ending).await
            }
        };
        if tokio::time::timeout(limit, written).await.is_err() {
            tracing::warn!(
                "MCP over stdio: the client did not read the rest of the last answer within {limit:?}"
            );
        }
    }

    pub(super) async fn message(&self, message: &ServerJsonRpcMessage) {
        if let Some(bytes) = encode(message, "an answer") {
            self.line(&bytes).await;
        }
    }

    /// Queues a progress note, or drops it if 16 wait (see [`Out`]).
    pub(crate) async fn progress(&self, note: ProgressNotificationParam) {
        let note = ServerNotification::ProgressNotification(ProgressNotification::new(note));
        if let Some(bytes) = encode(&ServerJsonRpcMessage::notification(note), "a progress note") {
            let _ = self.notes.try_send(bytes);
        }
    }
}

/// `message` as one line, or `None` (logged) if it cannot be encoded.
fn encode(message: &ServerJsonRpcMessage, what: &str) -> Option<Vec<u8>> {
    match serde_json::to_vec(message) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            Some(bytes)
        }
        Err(e) => {
            tracing::error!("MCP over stdio: cannot encode {what}: {e}");
            None
        }
    }
}
