use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use warden_tool::{Error, HandleSpec, Rights, Tool, fs};

#[derive(Deserialize, JsonSchema)]
struct Input {
    /// Files to count, relative to the workspace.
    paths: Vec<String>,
}

#[derive(Serialize, JsonSchema)]
struct Output {
    lines: Vec<(String, usize)>,
}

struct LineCount;

impl Tool for LineCount {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "line-count";
    const DESCRIPTION: &'static str = "Count the lines of text files in the workspace.";

    fn handles() -> Vec<HandleSpec> {
        vec![HandleSpec::new("workspace", Rights::READ, "files to count")]
    }

    fn invoke(input: Input) -> Result<Output, Error> {
        let workspace = fs::handle("workspace")?;
        let mut lines = Vec::new();
        for path in input.paths {
            let text = workspace.read_to_string(&path)?;
            lines.push((path, text.lines().count()));
        }
        Ok(Output { lines })
    }
}

warden_tool::export!(LineCount);
