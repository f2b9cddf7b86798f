//! What a stranger's connections can hold on `warden serve --http`: a
//! bounded number of places, each for a bounded time. Before, a client
//! sending half a request line on each of its connections kept them all
//! open for good, until the process ran out of file descriptors and every
//! tool's files, egress connections and new clients failed with it.

use crate::mcp::{http_server_said, setup};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long `stream` stays open without being sent anything: the time
/// until the server closes it (a read ends or fails), or `None` if it is
/// still open after `limit`. What the server sent is returned.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<(Duration, Vec<u8>)> {
    let t = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((t + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some((t.elapsed(), got)),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

/// A whole `initialize` POST on `stream`, and the status of its answer.
async fn initialize(stream: &mut TcpStream, addr: &str) -> String {
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{INITIALIZE}",
        INITIALIZE.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    status_line(stream).await
}

/// The start of the answer's status line on `stream` (`HTTP/1.1 200`).
async fn status_line(stream: &mut TcpStream) -> String {
    let mut head = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut head))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn over_http_a_strangers_connections_are_capped_and_each_has_a_read_timeout() {
    let s = setup();
    let (mut child, url, _) =
        http_server_said(&s, &["--max-connections", "16", "--read-timeout", "3s"]).await;
    let addr = host_port(&url);

    // 16 connections, each sending half a request line: all the places.
    let mut stalled = Vec::new();
    for _ in 0..16 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"POST /mcp HTTP/1.1\r\n").await.unwrap();
        stalled.push(c);
    }
    let sent = Instant::now();
    // The 17th is closed as it comes, unanswered, long before any read
    // timeout: the server holds no more than it was told to.
    let mut over = TcpStream::connect(&addr).await.unwrap();
    let _ = over.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await;
    let (after, said) = closed_within(&mut over, Duration::from_secs(2))
        .await
        .expect("a connection past --max-connections is closed at once");
    assert!(said.is_empty(), "{}", String::from_utf8_lossy(&said));
    assert!(after < Duration::from_secs(2), "{after:?}");

    // Each stalled one is closed once its head has taken the read timeout,
    // not before (it would be a cap that closed them) and not much after.
    for c in &mut stalled {
        let (_, said) = closed_within(c, Duration::from_secs(10))
            .await
            .expect("a connection sending half a head is closed after --read-timeout");
        assert!(
            !said.starts_with(b"HTTP/1.1 2"),
            "{}",
            String::from_utf8_lossy(&said)
        );
    }
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_secs(10),
        "the stalled connections were closed {waited:?} after their half heads (read timeout 3s)"
    );

    // Their places are back: a whole request is answered.
    let mut c = TcpStream::connect(&addr).await.unwrap();
    let status = initialize(&mut c, &addr).await;
    assert_eq!(
        status, "HTTP/1.1 200",
        "initialize once the stalled ones went"
    );
    // Kept alive and then idle, a connection is closed too once the read
    // timeout passes with no next head.
    let (idle, _) = closed_within(&mut c, Duration::from_secs(10))
        .await
        .expect("an idle kept-alive connection is closed after --read-timeout");
    assert!(idle >= Duration::from_millis(2500), "{idle:?}");

    // A body that does not arrive is answered 408, naming the limit.
    let mut c = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n{{\"jsonrpc\":"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let (_, said) = closed_within(&mut c, Duration::from_secs(10))
        .await
        .expect("a connection whose body stalls is answered and closed");
    let said = String::from_utf8_lossy(&said);
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(
        said.contains("the request body did not arrive within 3s"),
        "{said}"
    );

    // The server is still up and serving.
    let mut c = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(initialize(&mut c, &addr).await, "HTTP/1.1 200");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the server is still running"
    );
    child.kill().await.unwrap();
}

/// A request's head over 32 KiB is refused (431) before anything looks at
/// it: hyper's default let each of a stranger's connections buffer 408
/// KiB of one. A body sent in one-byte chunks, each size line padded with
/// zeros, is read for its data alone.
#[tokio::test]
async fn over_http_a_head_over_32_kib_is_refused() {
    let s = setup();
    let (mut child, url, _) = http_server_said(&s, &[]).await;
    let addr = host_port(&url);
    for (pad, status) in [(20 << 10, "HTTP/1.1 200"), (40 << 10, "HTTP/1.1 431")] {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Pad: {}\r\n\r\n",
            "p".repeat(pad)
        );
        let _ = c.write_all(head.as_bytes()).await;
        assert_eq!(
            status_line(&mut c).await,
            status,
            "a head with {pad} bytes of padding"
        );
    }
    let mut c = TcpStream::connect(&addr).await.unwrap();
    let mut request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    for b in INITIALIZE.chars() {
        request.push_str(&format!("{}1\r\n{b}\r\n", "0".repeat(1000)));
    }
    request.push_str("0\r\n\r\n");
    c.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(
        status_line(&mut c).await,
        "HTTP/1.1 200",
        "initialize in padded chunks"
    );
    child.kill().await.unwrap();
}

/// A client that sends and never reads (here 100,000 pipelined
/// `GET /healthz`, whose answers fill both sockets' buffers): once the
/// server's write has waited `--read-timeout`, the connection is closed,
/// freeing its place; before, it stayed open, its answers waiting, for as
/// long as the client liked.
#[tokio::test]
async fn over_http_a_client_that_reads_nothing_is_closed_after_the_read_timeout() {
    let s = setup();
    let (mut child, url, _) = http_server_said(&s, &["--read-timeout", "2s"]).await;
    let addr = host_port(&url);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    const SENT: usize = 100_000;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let requests = request.repeat(SENT);
    // The writer stalls once the server stops reading (its answers wait).
    let sending = tokio::spawn(async move { writer.write_all(requests.as_bytes()).await });
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Now read what was answered: the server gave up before answering
    // them all, and closed the connection.
    let mut answered = 0;
    let mut buf = vec![0u8; 1 << 16];
    let mut carry = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf)).await {
            Err(_) => panic!("still open 16 s later, {answered} answers read"),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => {
                carry.extend_from_slice(&buf[..n]);
                answered += carry.windows(9).filter(|w| w == b"HTTP/1.1 ").count();
                let keep = carry.len().saturating_sub(8);
                carry.drain(..keep);
            }
        }
    }
    assert!(answered > 0, "nothing was answered");
    assert!(
        answered < SENT,
        "all {SENT} were answered: the connection was kept though its client read nothing"
    );
    sending.abort();
    // The server is still up and serving.
    let mut c = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(initialize(&mut c, &addr).await, "HTTP/1.1 200");
    child.kill().await.unwrap();
}

#[test]
fn serve_refuses_a_read_timeout_of_zero_or_past_an_hour_or_no_connections() {
    let s = setup();
    for (flag, value, says) in [
        ("--read-timeout", "0s", "expected a duration above zero"),
        ("--read-timeout", "soon", "invalid duration 'soon'"),
        // Added to the time now by hyper: past what the clock holds, it
        // panicked every connection's task, and nothing was answered.
        (
            "--read-timeout",
            "10000000000000000000s",
            "expected a duration above zero and at most an hour",
        ),
        ("--read-timeout", "61m", "at most an hour"),
        ("--max-connections", "0", "0 is not in 1.."),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["serve", "--manifest"])
            .arg(&s.manifest)
            .args(["--http", "127.0.0.1:0", flag, value])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
}

/// One request on a kept-alive connection: its status and body.
async fn exchange(stream: &mut TcpStream, request: &str) -> (u16, String, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = &text[..end];
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .and_then(|l| l.trim().parse::<usize>().ok());
        // An event stream answer (no length) ends with its one event.
        let done = match length {
            Some(n) => buf.len() >= end + 4 + n,
            None => text[end..].contains("\n\n") && text[end..].contains("\"id\""),
        };
        if done {
            let status = head[9..12].parse().unwrap();
            let session = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("mcp-session-id: ")
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            return (status, session, text[end + 4..].to_owned());
        }
    }
}

/// `host:port` of the server's `http://host:port/mcp` URL.
fn host_port(url: &str) -> String {
    url.strip_prefix("http://")
        .and_then(|a| a.split('/').next())
        .unwrap()
        .to_owned()
}

fn initialize_request(addr: &str, body: &str, session: Option<&str>, method: &str) -> String {
    let session = session.map_or(String::new(), |s| format!("Mcp-Session-Id: {s}\r\n"));
    format!(
        "{method} /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{session}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Sessions keep what their clients said at `initialize` until they end:
/// a server keeps 4,096 at once, each from an `initialize` of at most
/// 64 KiB, and takes a new one once one ends.
#[tokio::test]
async fn over_http_sessions_are_bounded_in_number_and_in_what_each_keeps() {
    let s = setup();
    let (mut child, url, _) = http_server_said(&s, &[]).await;
    let addr = host_port(&url);
    let mut c = TcpStream::connect(&addr).await.unwrap();

    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{"experimental":{{"x":"{}"}}}},"clientInfo":{{"name":"t","version":"1"}}}}}}"#,
        "a".repeat(70 << 10)
    );
    let (status, _, body) = exchange(&mut c, &initialize_request(&addr, &big, None, "POST")).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("an initialize request is at most 65536 bytes (this one is"),
        "{body}"
    );

    let mut first = String::new();
    for i in 0..4096 {
        let (status, session, body) =
            exchange(&mut c, &initialize_request(&addr, INITIALIZE, None, "POST")).await;
        assert_eq!(status, 200, "session {i}: {body}");
        assert!(!session.is_empty(), "session {i}");
        if i == 0 {
            first = session;
        }
    }
    // In a session too: rmcp would keep what a second `initialize` said.
    let again = initialize_request(&addr, &big, Some(&first), "POST");
    let (status, _, body) = exchange(&mut c, &again).await;
    assert_eq!(status, 413, "{body}");
    let (status, _, body) =
        exchange(&mut c, &initialize_request(&addr, INITIALIZE, None, "POST")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("this server keeps 4096 sessions open at once"),
        "{body}"
    );

    // One ends: a new one is taken.
    let (status, _, body) = exchange(
        &mut c,
        &initialize_request(&addr, "", Some(&first), "DELETE"),
    )
    .await;
    assert!(status < 300, "{status} {body}");
    let (status, _, body) =
        exchange(&mut c, &initialize_request(&addr, INITIALIZE, None, "POST")).await;
    assert_eq!(status, 200, "{body}");
    child.kill().await.unwrap();
}

/// One agent keeps at most 256 sessions open at once, so it cannot take
/// every place a server keeps and turn other agents away; one of its own
/// ending makes room for it again.
#[tokio::test]
async fn over_http_one_agent_cannot_hold_every_session() {
    let s = setup();
    let (a, b) = ("token-a-0123456789abcdef", "token-b-0123456789abcdef");
    let dir = s.dir.path();
    std::fs::write(dir.join("a"), a).unwrap();
    std::fs::write(dir.join("b"), b).unwrap();
    std::fs::write(dir.join("b-task.toml"), "task = \"b-task\"\n").unwrap();
    let a_file = dir.join("a").display().to_string();
    let client_b = format!(
        "{}={}",
        dir.join("b").display(),
        dir.join("b-task.toml").display()
    );
    let (mut child, url, _) =
        http_server_said(&s, &["--token-file", &a_file, "--client", &client_b]).await;
    let addr = host_port(&url);
    let mut c = TcpStream::connect(&addr).await.unwrap();
    let as_agent = |token: &str, session: Option<&str>, method: &str| {
        let body = if method == "POST" { INITIALIZE } else { "" };
        initialize_request(&addr, body, session, method).replacen(
            "\r\n",
            &format!("\r\nAuthorization: Bearer {token}\r\n"),
            1,
        )
    };
    // 300 at once, each on a connection of its own: the count and the
    // place taken are one step, so no more than 256 pass.
    let tries = (0..300).map(|_| {
        let (addr, request) = (addr.clone(), as_agent(a, None, "POST"));
        tokio::spawn(async move {
            let mut c = TcpStream::connect(&addr).await.unwrap();
            exchange(&mut c, &request).await
        })
    });
    let answers: Vec<(u16, String, String)> = futures_util::future::join_all(tries)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let opened: Vec<&String> = answers
        .iter()
        .filter(|a| a.0 == 200)
        .map(|a| &a.1)
        .collect();
    assert_eq!(
        opened.len(),
        256,
        "{:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    let first = opened[0].clone();
    let (status, _, body) = answers.iter().find(|a| a.0 != 200).unwrap();
    assert_eq!(*status, 429, "{body}");
    assert!(
        body.contains(
            "this server keeps 256 sessions open at once for one agent, and yours has that many"
        ),
        "{body}"
    );
    // Another agent is not turned away.
    let (status, session, body) = exchange(&mut c, &as_agent(b, None, "POST")).await;
    assert_eq!(status, 200, "{body}");
    assert!(!session.is_empty());
    // One of A's ends: A is taken again.
    let (status, _, body) = exchange(&mut c, &as_agent(a, Some(&first), "DELETE")).await;
    assert!(status < 300, "{status} {body}");
    let (status, _, body) = exchange(&mut c, &as_agent(a, None, "POST")).await;
    assert_eq!(status, 200, "{body}");
    child.kill().await.unwrap();
}
