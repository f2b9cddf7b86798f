//! Test tool: misbehaves on request, so tests can show that limits end the
//! invocation with the right error while the host keeps serving others.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::io::Write;
use warden_tool::{Error, Tool, log};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    attack: String,
    /// Size in bytes for `huge-output` and `huge-output-discarded`, a count
    /// of messages for `log-flood`, depth for `recursion`.
    #[serde(default)]
    size: usize,
    #[serde(default)]
    text: String,
}

#[derive(Serialize, JsonSchema)]
struct Output {
    result: String,
}

struct Hog;

impl Tool for Hog {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "hog";
    const DESCRIPTION: &'static str = "Test tool: loops, allocates, recurses or floods on request.";

    fn invoke(i: Input) -> Result<Output, Error> {
        let result = match i.attack.as_str() {
            // A host call first: the invocation's start is then on the
            // trail before it loops.
            "log-then-loop" => {
                log::info("looping");
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recursion" => {
                recurse(if i.size == 0 { u64::MAX } else { i.size as u64 }, 7).to_string()
            }
            "stdout-flood" => loop {
                let _ = std::io::stdout().write_all(&[b'x'; 4096]);
            },
            "stderr-flood" => loop {
                let _ = std::io::stderr().write_all(&[b'y'; 4096]);
            },
            "huge-output" => "z".repeat(i.size),
            "huge-output-discarded" => {
                // The same allocations as `huge-output` and the SDK's
                // serialization of it, then a small error instead: what the
                // tool's own memory costs when the host reads nothing.
                let output = Output {
                    result: "z".repeat(i.size),
                };
                let json = serde_json::to_string(&output).unwrap_or_default();
                std::hint::black_box(&json);
                return Err(Error::failed(format!("discarded {} bytes", json.len())));
            }
            "print" => {
                // Writes to stdout and stderr, logs, then returns normally.
                print!("{}", i.text);
                let _ = std::io::stdout().flush();
                eprint!("{}", i.text);
                log::info(&i.text);
                i.text.clone()
            }
            "log-flood" => {
                for n in 0..i.size {
                    log::info(&format!("message {n} {}", "l".repeat(8192)));
                }
                "logged".into()
            }
            "panic" => panic!("hog was asked to panic"),
            "fail" => return Err(Error::failed(i.text)),
            other => return Err(Error::invalid_input(format!("unknown attack {other}"))),
        };
        Ok(Output { result })
    }
}

/// Recursion whose frames live on the wasm stack (no locals in linear memory,
/// and not a tail call LLVM could turn into a loop).
#[inline(never)]
fn recurse(n: u64, k: u64) -> u64 {
    if n == 0 {
        return k;
    }
    recurse(n - 1, k ^ n).rotate_left(1)
}

warden_tool::export!(Hog);
