//! Test tool: performs one file system operation exactly as asked and
//! reports the host's answer, so tests can drive every right and escape form.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use warden_tool::fs::{self, code_name};
use warden_tool::{Error, Tool};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    #[serde(default = "default_handle")]
    handle: String,
    op: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    contents: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    recursive: bool,
    /// Performs the op this many times (default once), stopping at the
    /// first error, which then says how many calls succeeded before it.
    #[serde(default = "one")]
    repeat: u32,
}

fn one() -> u32 {
    1
}

fn default_handle() -> String {
    "workspace".into()
}

#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Output {
    Ok(serde_json::Value),
    Error { code: String, message: String },
}

struct FsProbe;

impl Tool for FsProbe {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "fs-probe";
    const DESCRIPTION: &'static str = "Test tool: one file system call, reported verbatim.";

    fn invoke(i: Input) -> Result<Output, Error> {
        let mut last = serde_json::Value::Null;
        for done in 0..i.repeat {
            match run(&i) {
                Ok(v) => last = v,
                Err(e) if i.repeat > 1 => {
                    return Ok(Output::Error {
                        code: code_name(e.code).into(),
                        message: format!("after {done} calls: {}", e.message),
                    });
                }
                Err(e) => {
                    return Ok(Output::Error {
                        code: code_name(e.code).into(),
                        message: e.message,
                    });
                }
            }
        }
        Ok(Output::Ok(last))
    }
}

fn run(i: &Input) -> Result<serde_json::Value, fs::Error> {
    use serde_json::{Value, json};
    if i.op == "handles" {
        let hs = fs::handles();
        return Ok(json!(
            hs.iter()
                .map(|h| (h.name.clone(), format!("{:?}", h.rights)))
                .collect::<Vec<_>>()
        ));
    }
    let h = fs::handle(&i.handle)?;
    let p = i.path.as_str();
    Ok(match i.op.as_str() {
        "read" => json!(String::from_utf8_lossy(&h.read(p)?)),
        "list" => json!(h.list(p)?.into_iter().map(|e| e.name).collect::<Vec<_>>()),
        "stat" => json!(h.stat(p)?.size),
        "write" => Value::from(h.write(p, &i.contents).map(|()| "written")?),
        "append" => Value::from(h.append(p, &i.contents).map(|()| "appended")?),
        "create-dir" => Value::from(h.create_dir(p).map(|()| "created")?),
        "truncate" => Value::from(h.truncate(p, i.size).map(|()| "truncated")?),
        "remove-file" => Value::from(h.remove_file(p).map(|()| "removed")?),
        "remove-dir" if i.recursive => Value::from(h.remove_dir_all(p).map(|()| "removed")?),
        "remove-dir" => Value::from(h.remove_dir(p).map(|()| "removed")?),
        "rename" => Value::from(h.rename(p, &i.to).map(|()| "renamed")?),
        // `size` writes of `contents` to `path`, each answer tallied by
        // outcome ("written" or the error code): for racing the host.
        "write-repeat" => {
            let mut tally = std::collections::BTreeMap::<String, u64>::new();
            for _ in 0..i.size {
                let key = match h.write(p, &i.contents) {
                    Ok(()) => "written".to_owned(),
                    Err(e) => code_name(e.code).to_owned(),
                };
                *tally.entry(key).or_default() += 1;
            }
            json!(tally)
        }
        other => panic!("fs-probe: unknown op {other}"),
    })
}

warden_tool::export!(FsProbe);
