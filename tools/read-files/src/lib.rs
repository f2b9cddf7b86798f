//! Reads files and lists directories under the `workspace` handle.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use warden_tool::fs::{self, EntryKind};
use warden_tool::{Error, HandleSpec, Rights, Tool};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// Paths relative to the workspace; a directory is listed, a file is read.
    paths: Vec<String>,
}

#[derive(Serialize, JsonSchema)]
struct Output {
    entries: Vec<Entry>,
}

#[derive(Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Entry {
    File { path: String, content: String },
    Directory { path: String, entries: Vec<String> },
}

struct ReadFiles;

impl Tool for ReadFiles {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "read-files";
    const DESCRIPTION: &'static str =
        "Read one or more text files, or list directories, under the workspace.";

    fn handles() -> Vec<HandleSpec> {
        vec![HandleSpec::new(
            "workspace",
            Rights::READ,
            "the files to read",
        )]
    }

    fn invoke(input: Input) -> Result<Output, Error> {
        if input.paths.is_empty() {
            return Err(Error::invalid_input("`paths` must name at least one path"));
        }
        let workspace = fs::handle("workspace")?;
        let mut entries = Vec::with_capacity(input.paths.len());
        for path in input.paths {
            let entry = match workspace.stat(&path)?.kind {
                EntryKind::Directory => {
                    let names = workspace.list(&path)?;
                    let entries = names
                        .into_iter()
                        .map(|e| match e.kind {
                            EntryKind::Directory => format!("{}/", e.name),
                            _ => e.name,
                        })
                        .collect();
                    Entry::Directory { path, entries }
                }
                _ => {
                    let content = workspace.read_to_string(&path)?;
                    Entry::File { path, content }
                }
            };
            entries.push(entry);
        }
        Ok(Output { entries })
    }
}

warden_tool::export!(ReadFiles);
