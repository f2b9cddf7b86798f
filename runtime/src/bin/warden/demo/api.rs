//! The demo's stand-in for external services: an API on 127.0.0.1 that
//! wants a bearer token (or a live Warden identity token), and a
//! "collector" an exfiltrating tool would like to reach.

use std::sync::{Arc, Mutex, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use warden::{Introspection, Runtime};

pub const API_TOKEN: &str = "demo-api-token-6f1c2b9e";

/// What the services saw, for the narrative.
#[derive(Default)]
pub struct Log {
    pub lines: Mutex<Vec<String>>,
}

impl Log {
    fn push(&self, line: String) {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lines.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Starts the API and the collector; returns their ports.
pub async fn start(runtime: Arc<OnceLock<Runtime>>, log: Arc<Log>) -> std::io::Result<(u16, u16)> {
    let api = TcpListener::bind("127.0.0.1:0").await?;
    let collector = TcpListener::bind("127.0.0.1:0").await?;
    let ports = (api.local_addr()?.port(), collector.local_addr()?.port());
    tokio::spawn(serve(api, "api", runtime.clone(), log.clone()));
    tokio::spawn(serve(collector, "collector", runtime, log));
    Ok(ports)
}

async fn serve(
    listener: TcpListener,
    name: &'static str,
    runtime: Arc<OnceLock<Runtime>>,
    log: Arc<Log>,
) {
    while let Ok((mut sock, _)) = listener.accept().await {
        let mut buf = vec![0u8; 16 << 10];
        let mut len = 0;
        while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            match sock.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
        }
        let head = String::from_utf8_lossy(&buf[..len]).into_owned();
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let bearer = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("authorization: bearer "))
            .map(|l| l[22..].trim().to_owned());
        let (status, body) = match (name, path.as_str(), &bearer) {
            ("api", "/secure", Some(t)) if t == API_TOKEN => {
                log.push("api: /secure received the right bearer token".into());
                ("200 OK", "welcome".to_owned())
            }
            ("api", "/whoami", Some(t)) => {
                match runtime.get().map(|rt| rt.introspect(t)) {
                    Some(Introspection {
                        active: true,
                        claims: Some(c),
                        ..
                    }) => {
                        log.push(format!("api: /whoami verified a live token: tool {} ({}…), task {}, invocation {}", c.tool, &c.sub[..19], c.task, c.jti));
                        ("200 OK", format!("hello, {} on task {}", c.tool, c.task))
                    }
                    _ => ("401 Unauthorized", "inactive token".to_owned()),
                }
            }
            ("collector", _, _) => {
                log.push(format!(
                    "collector: received a request (bearer present: {})",
                    bearer.is_some()
                ));
                ("200 OK", "thanks".to_owned())
            }
            _ => ("401 Unauthorized", "no".to_owned()),
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = sock.write_all(resp.as_bytes()).await;
    }
}
