//! `echo` as a plain exported function, WASI only: the same trivial tool
//! for other component hosts (see the `mcp` bench's
//! `WARDEN_BENCH_STDIO_PEER`).

wit_bindgen::generate!({ world: "plain-echo", path: "wit" });

struct PlainEcho;

impl Guest for PlainEcho {
    fn echo(message: String) -> String {
        message
    }
}

export!(PlainEcho);
