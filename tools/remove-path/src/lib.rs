//! Deletes a file or directory under the `workspace` handle.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use warden_tool::fs::{self, ErrorCode};
use warden_tool::{Error, HandleSpec, Rights, Tool};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// Path relative to the workspace.
    path: String,
    /// Remove a directory with everything in it.
    #[serde(default)]
    recursive: bool,
}

#[derive(Serialize, JsonSchema)]
struct Output {
    removed: String,
}

struct RemovePath;

impl Tool for RemovePath {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "remove-path";
    const DESCRIPTION: &'static str =
        "Delete a file, or a directory (recursively if asked), under the workspace.";

    fn handles() -> Vec<HandleSpec> {
        vec![HandleSpec::new(
            "workspace",
            Rights::DELETE,
            "where files are deleted",
        )]
    }

    fn invoke(input: Input) -> Result<Output, Error> {
        let workspace = fs::handle("workspace")?;
        // Only the delete right is needed: try a file first, then a directory.
        match workspace.remove_file(&input.path) {
            Err(e) if e.code == ErrorCode::IsADirectory => {
                if input.recursive {
                    workspace.remove_dir_all(&input.path)?
                } else {
                    workspace.remove_dir(&input.path)?
                }
            }
            other => other?,
        }
        Ok(Output {
            removed: input.path,
        })
    }
}

warden_tool::export!(RemovePath);
