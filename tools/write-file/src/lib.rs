//! Creates or overwrites one file under the `workspace` handle.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use warden_tool::{Error, HandleSpec, Rights, Tool, fs};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// Path relative to the workspace.
    path: String,
    /// The new text of the file.
    content: String,
    /// Append instead of replacing the file.
    #[serde(default)]
    append: bool,
    /// Create missing parent directories first.
    #[serde(default)]
    create_dirs: bool,
}

#[derive(Serialize, JsonSchema)]
struct Output {
    path: String,
    bytes_written: usize,
}

struct WriteFile;

impl Tool for WriteFile {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "write-file";
    const DESCRIPTION: &'static str =
        "Create or overwrite a text file under the workspace (or append to it).";

    fn handles() -> Vec<HandleSpec> {
        vec![HandleSpec::new(
            "workspace",
            Rights::WRITE,
            "where files are written",
        )]
    }

    fn invoke(input: Input) -> Result<Output, Error> {
        let workspace = fs::handle("workspace")?;
        if let Some((parent, _)) = input.path.rsplit_once('/')
            && input.create_dirs
        {
            workspace.create_dir(parent)?;
        }
        if input.append {
            workspace.append(&input.path, &input.content)?;
        } else {
            workspace.write(&input.path, &input.content)?;
        }
        Ok(Output {
            bytes_written: input.content.len(),
            path: input.path,
        })
    }
}

warden_tool::export!(WriteFile);
