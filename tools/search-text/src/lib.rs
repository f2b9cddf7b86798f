//! Regex search over the files under the `workspace` handle.

use glob::Pattern;
use regex::RegexBuilder;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use warden_tool::fs::{self, EntryKind, Handle};
use warden_tool::{Error, HandleSpec, Rights, Tool};

/// Files larger than this are skipped.
const MAX_FILE_BYTES: u64 = 4 << 20;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// A regular expression (Rust `regex` syntax), matched per line.
    pattern: String,
    /// Only search files whose workspace-relative path matches one of these
    /// globs, e.g. `src/**/*.rs`. Default: every file.
    #[serde(default)]
    globs: Vec<String>,
    /// Stop after this many matches (default 100).
    #[serde(default = "default_max_results")]
    max_results: usize,
    #[serde(default)]
    case_insensitive: bool,
}

fn default_max_results() -> usize {
    100
}

#[derive(Serialize, JsonSchema)]
struct Output {
    matches: Vec<Match>,
    files_searched: usize,
    /// True when `max_results` cut the search short.
    truncated: bool,
}

#[derive(Serialize, JsonSchema)]
struct Match {
    path: String,
    /// 1-based line number.
    line: usize,
    text: String,
}

struct SearchText;

impl Tool for SearchText {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "search-text";
    const DESCRIPTION: &'static str = "Search the workspace's text files for a regular expression, \
         optionally limited to path globs; returns matching lines with line numbers.";

    fn handles() -> Vec<HandleSpec> {
        vec![HandleSpec::new(
            "workspace",
            Rights::READ,
            "the files to search",
        )]
    }

    fn invoke(input: Input) -> Result<Output, Error> {
        let regex = RegexBuilder::new(&input.pattern)
            .case_insensitive(input.case_insensitive)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| Error::invalid_input(format!("bad pattern: {e}")))?;
        let globs = input
            .globs
            .iter()
            .map(|g| {
                Pattern::new(g).map_err(|e| Error::invalid_input(format!("bad glob {g:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let workspace = fs::handle("workspace")?;
        let mut files = Vec::new();
        walk(&workspace, ".", &mut files)?;

        let mut out = Output {
            matches: Vec::new(),
            files_searched: 0,
            truncated: false,
        };
        for path in files {
            if !globs.is_empty() && !globs.iter().any(|g| g.matches(&path)) {
                continue;
            }
            if workspace.stat(&path)?.size > MAX_FILE_BYTES {
                continue;
            }
            let Ok(text) = workspace.read_to_string(&path) else {
                continue; // binary or not UTF-8
            };
            out.files_searched += 1;
            for (i, line) in text.lines().enumerate() {
                if regex.is_match(line) {
                    if out.matches.len() == input.max_results {
                        out.truncated = true;
                        return Ok(out);
                    }
                    out.matches.push(Match {
                        path: path.clone(),
                        line: i + 1,
                        text: line.to_owned(),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Collects the files under `dir`, sorted, without following symlinks.
fn walk(workspace: &Handle, dir: &str, files: &mut Vec<String>) -> Result<(), Error> {
    for entry in workspace.list(dir)? {
        let path = if dir == "." {
            entry.name
        } else {
            format!("{dir}/{}", entry.name)
        };
        match entry.kind {
            EntryKind::Directory => walk(workspace, &path, files)?,
            EntryKind::File => files.push(path),
            _ => {}
        }
    }
    Ok(())
}

warden_tool::export!(SearchText);
