//! A tool's stdout and stderr: bounded in-memory buffers, never the host's
//! own streams. Writing past the bound ends the invocation with
//! [`OutputFlood`], so a flood is a clear limit error rather than a guest
//! panic about a closed stream.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// A write past the capture limit of `stream`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{stream} exceeded its limit of {limit} bytes")]
pub struct OutputFlood {
    pub stream: &'static str,
    pub limit: usize,
}

/// A capture buffer for one stream of one invocation.
#[derive(Clone)]
pub struct CappedPipe {
    stream: &'static str,
    limit: usize,
    buf: Arc<Mutex<Vec<u8>>>,
}

impl CappedPipe {
    pub fn new(stream: &'static str, limit: usize) -> Self {
        Self {
            stream,
            limit,
            buf: Arc::default(),
        }
    }

    pub fn contents(&self) -> Vec<u8> {
        self.buf.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Appends what fits; `Err` when `bytes` did not all fit.
    fn push(&self, bytes: &[u8]) -> Result<(), OutputFlood> {
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.limit - buf.len();
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if bytes.len() > room {
            return Err(OutputFlood {
                stream: self.stream,
                limit: self.limit,
            });
        }
        Ok(())
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes)
            .map_err(|e| StreamError::Trap(wasmtime::Error::new(e)))
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always grant a permit; a write past the limit traps with OutputFlood.
        Ok(64 << 10)
    }
}

impl AsyncWrite for CappedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(
            self.push(buf)
                .map(|()| buf.len())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::StorageFull, e)),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
