//! Test tool: reveals a secret and tries to leak it through every channel
//! and encoding it is asked to, so tests can check the host redacts them all.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::io::Write;
use warden_tool::{Error, Tool, fs, identity, log, secrets};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    name: String,
    /// Wait this long before revealing (to outlive a short TTL).
    #[serde(default)]
    delay_ms: u64,
    /// Where to leak: output, stdout, stderr, log, error, `escaped` (the
    /// output carries the value as raw JSON `\u` escapes), `fs` (written to
    /// `workspace/leak.txt` and used as a path), `fs-name` (a file named
    /// with it written in `workspace`), `identity` (a token for
    /// audience `probe` is fetched, and leaked too: in the output, on
    /// stdout and stderr, in a log message).
    #[serde(default)]
    channels: Vec<String>,
    /// Put this many `x` before what is logged (to place the value across
    /// where a long message is cut).
    #[serde(default)]
    pad: usize,
    /// Reveal nothing: write this text (guesses at a value) to each of
    /// `channels` (output, stdout, stderr, log, error, or `get`: asked for
    /// as a secret's name), then get `name` and say how that went.
    #[serde(default)]
    guesses: Option<String>,
}

#[derive(Serialize, JsonSchema)]
struct Output {
    /// `ok`, or the error code of `get`/`reveal`.
    status: String,
    message: String,
    /// FNV-1a of the value: lets a test tell values apart without seeing them.
    fingerprint: String,
    leaked: Vec<String>,
    /// The value as JSON `\u` escapes, written into the output verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    escaped: Option<Box<RawValue>>,
}

pub fn fnv(v: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in v.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    format!("fnv:{h:016x}")
}

struct SecretProbe;

fn encodings(v: &str) -> Vec<String> {
    let hex: String = v.bytes().map(|b| format!("{b:02x}")).collect();
    let url: String = v
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let every_byte: String = v.bytes().map(|b| format!("%{b:02x}")).collect();
    let mixed_hex: String = hex
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    vec![
        v.to_owned(),
        every_byte.clone(),
        every_byte.replace('%', "%25"),
        mixed_hex,
        STANDARD.encode(v),
        STANDARD.encode(format!("Authorization: Bearer {v}")),
        URL_SAFE_NO_PAD.encode(format!("x{v}")),
        hex,
        url,
    ]
}

impl Tool for SecretProbe {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "secret-probe";
    const DESCRIPTION: &'static str = "Test tool: reveals a secret and leaks it on request.";

    fn invoke(i: Input) -> Result<Output, Error> {
        if let Some(text) = &i.guesses {
            return guess(&i, text);
        }
        let secret = match secrets::get(&i.name) {
            Ok(s) => s,
            Err(e) => return Ok(failure(e)),
        };
        if i.delay_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(i.delay_ms));
        }
        let value = match secret.reveal() {
            Ok(v) => v,
            Err(e) => return Ok(failure(e)),
        };
        let leaked = encodings(&value);
        let text = leaked.join(" | ");
        let mut tokens = Vec::new();
        for channel in &i.channels {
            match channel.as_str() {
                "stdout" => printed(&text),
                "stderr" => eprint!("{text}"),
                "log" => log::warn(&format!("{}{text}", "x".repeat(i.pad))),
                "error" => return Err(Error::failed(format!("leaking: {text}"))),
                "fs" => {
                    let ws = fs::handle("workspace").map_err(|e| Error::failed(e.message))?;
                    ws.write("leak.txt", &text)
                        .map_err(|e| Error::failed(e.message))?;
                    let _ = ws.stat(&value);
                    let _ = ws.read_to_string("leak.txt");
                }
                "fs-name" => {
                    let ws = fs::handle("workspace").map_err(|e| Error::failed(e.message))?;
                    ws.write(&format!("leak-{value}.txt"), "x")
                        .map_err(|e| Error::failed(e.message))?;
                }
                "identity" => {
                    if let Ok(token) = identity::token("probe") {
                        printed(&token);
                        eprint!("{token}");
                        log::warn(&format!("token {token}"));
                        tokens.push(token);
                    }
                }
                _ => {}
            }
        }
        let keep = i.channels.iter().any(|c| c == "output");
        let escaped = if i.channels.iter().any(|c| c == "escaped") {
            let u: String = value
                .encode_utf16()
                .map(|u| format!("\\u{u:04x}"))
                .collect();
            RawValue::from_string(format!("\"{u}\"")).ok()
        } else {
            None
        };
        Ok(Output {
            status: "ok".into(),
            message: String::new(),
            fingerprint: fnv(&value),
            leaked: if keep { leaked } else { Vec::new() }
                .into_iter()
                .chain(tokens)
                .collect(),
            escaped,
        })
    }
}

/// `text` written to each of `i.channels`, then `i.name` asked for.
fn guess(i: &Input, text: &str) -> Result<Output, Error> {
    for channel in &i.channels {
        match channel.as_str() {
            "stdout" => printed(text),
            "stderr" => eprint!("{text}"),
            "log" => log::warn(text),
            "error" => return Err(Error::failed(format!("guessing: {text}"))),
            "get" => {
                let _ = secrets::get(text);
            }
            _ => {}
        }
    }
    let leaked = match i.channels.iter().any(|c| c == "output") {
        true => vec![text.to_owned()],
        false => Vec::new(),
    };
    let after = match secrets::get(&i.name) {
        Ok(_) => Output {
            status: "ok".into(),
            message: String::new(),
            fingerprint: String::new(),
            leaked: Vec::new(),
            escaped: None,
        },
        Err(e) => failure(e),
    };
    Ok(Output { leaked, ..after })
}

/// `text` on stdout, flushed (the host reads what was written).
fn printed(text: &str) {
    print!("{text}");
    let _ = std::io::stdout().flush();
}

fn failure(e: secrets::Error) -> Output {
    let status = match e.code {
        secrets::ErrorCode::Denied => "denied",
        secrets::ErrorCode::Expired => "expired",
    };
    Output {
        status: status.into(),
        message: e.message,
        fingerprint: String::new(),
        leaked: Vec::new(),
        escaped: None,
    }
}

warden_tool::export!(SecretProbe);
