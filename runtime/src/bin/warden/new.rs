//! `warden new tool NAME`: a tool crate against the guest SDK, ready to
//! build for wasm32-wasip2 and run, and the manifest entry to paste.

use crate::out::outln;
use crate::{Failure, usage};
use anyhow::Context as _;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct ToolArgs {
    /// The tool's name, as a manifest names it: lower-case letters, digits,
    /// '-' or '_', starting with a letter.
    name: String,
    /// Where to create the crate (it must not exist) [default: ./NAME].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The guest SDK crate (`tools/sdk` of a Warden checkout) [default: the
    /// one this warden was built from].
    #[arg(long, value_name = "DIR")]
    sdk: Option<PathBuf>,
}

/// Where the SDK was when this binary was built.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/sdk");
/// The versions the bundled tools are built and tested with.
const LOCK: &str = include_str!("../../../../tools/Cargo.lock");

/// Names a generated crate cannot take: Rust keywords (the library's name)
/// and the crates it depends on.
const RESERVED: [&str; 12] = [
    "self",
    "super",
    "crate",
    "fn",
    "mod",
    "struct",
    "type",
    "test",
    "warden-tool",
    "serde",
    "serde_json",
    "schemars",
];

pub fn tool(args: ToolArgs) -> Result<u8, Failure> {
    check_name(&args.name).map_err(usage)?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.symlink_metadata().is_ok() {
        return Err(usage(anyhow::anyhow!(
            "{} already exists (expected a new directory; pass --dir DIR)",
            dir.display()
        )));
    }
    let sdk = args.sdk.unwrap_or_else(|| PathBuf::from(BUILT_SDK));
    let sdk = sdk
        .canonicalize()
        .ok()
        .filter(|s| s.join("Cargo.toml").is_file())
        .with_context(|| {
            format!(
                "no guest SDK crate at {} (expected the tools/sdk directory of a Warden checkout; pass --sdk DIR)",
                sdk.display()
            )
        })
        .map_err(usage)?;
    write_crate(&dir, &args.name, &sdk)
        .with_context(|| format!("cannot create the tool crate in {}", dir.display()))
        .map_err(|e| Failure { code: 3, error: e })?;
    let abs = dir.canonicalize().unwrap_or_else(|_| dir.clone());
    let wasm = abs
        .join("target/wasm32-wasip2/release")
        .join(format!("{}.wasm", args.name.replace('-', "_")));
    let name = &args.name;
    outln!(
        "created {} (a Warden tool crate against the SDK in {})\n\n\
         build it (its .cargo/config.toml builds for wasm32-wasip2):\n  \
         cd {} && cargo build --release\n\n\
         add it to a manifest:\n\n\
         [tools.{name}]\ncomponent = {}\n\n\
         run it:\n  \
         warden run --manifest MANIFEST {name} --input '{{\"name\":\"world\"}}'",
        abs.display(),
        sdk.display(),
        quote(&abs.display().to_string()),
        toml_string(&wasm.display().to_string()),
    )?;
    Ok(0)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    crate::check_tool_name(name)
        .ok()
        .filter(|()| name.starts_with(|c: char| c.is_ascii_lowercase()))
        .with_context(|| {
            format!(
                "invalid tool name '{}' (expected 1 to 64 lower-case letters, digits, '-' or '_', starting with a letter)",
                crate::shown(name)
            )
        })?;
    anyhow::ensure!(
        !RESERVED.contains(&name),
        "invalid tool name '{name}' (a Rust keyword or a crate the tool depends on; expected another name)"
    );
    Ok(())
}

fn write_crate(dir: &Path, name: &str, sdk: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join(".cargo"))?;
    let files = [
        ("Cargo.toml", cargo_toml(name, sdk)),
        ("Cargo.lock", LOCK.to_owned()),
        (
            ".cargo/config.toml",
            "# A Warden tool is a WebAssembly component.\n[build]\ntarget = \"wasm32-wasip2\"\n"
                .to_owned(),
        ),
        (
            "rust-toolchain.toml",
            "[toolchain]\nchannel = \"stable\"\ntargets = [\"wasm32-wasip2\"]\n".to_owned(),
        ),
        (".gitignore", "/target\n".to_owned()),
        ("src/lib.rs", lib_rs(name)),
    ];
    for (path, text) in files {
        std::fs::write(dir.join(path), text)?;
    }
    Ok(())
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
warden-tool = {{ path = {sdk} }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"
schemars = "1"

# Small components; a panic aborts the invocation (the host reports a trap).
[profile.release]
opt-level = "s"
lto = true
strip = "debuginfo"
panic = "abort"

# A workspace of its own, wherever it was created.
[workspace]
"#,
        sdk = toml_string(&sdk.display().to_string())
    )
}

fn lib_rs(name: &str) -> String {
    // `Tool` after the name: the name alone could be a type the crate
    // also names (`tool`, `input`, `output`, `error`, `string`).
    let ty: String = name
        .split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .chain(["Tool".to_owned()])
        .collect();
    format!(
        r#"//! {name}: a Warden tool. Say here what it does.

use schemars::JsonSchema;
use serde::{{Deserialize, Serialize}};
use warden_tool::{{Error, Tool}};

/// The input; its JSON Schema (from the doc comments) is the tool's
/// `inputSchema`, and the host checks each call against it.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {{
    /// Who to greet.
    name: String,
}}

#[derive(Serialize, JsonSchema)]
struct Output {{
    greeting: String,
}}

struct {ty};

impl Tool for {ty} {{
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "{name}";
    const DESCRIPTION: &'static str = "Greets someone by name.";

    // A tool that works on files declares the handles it expects
    // (`fn handles()`, see `warden_tool::HandleSpec`) and opens them with
    // `warden_tool::fs::handle("workspace")`; it gets only what a task's
    // grant gives it.

    fn invoke(input: Input) -> Result<Output, Error> {{
        if input.name.trim().is_empty() {{
            return Err(Error::invalid_input("`name` must not be empty"));
        }}
        Ok(Output {{
            greeting: format!("hello, {{}}", input.name),
        }})
    }}
}}

warden_tool::export!({ty});
"#
    )
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// A word for a POSIX shell.
fn quote(s: &str) -> String {
    shlex::try_quote(s).map_or_else(|_| s.to_owned(), |q| q.into_owned())
}
