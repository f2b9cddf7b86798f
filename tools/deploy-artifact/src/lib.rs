//! Deploys a built file from the workspace to a named target.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use warden_tool::{Error, HandleSpec, Rights, Tool, deploy};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// A deploy target granted to the task, e.g. `staging`.
    target: String,
    /// The artifact, relative to the workspace.
    artifact: String,
}

#[derive(Serialize, JsonSchema)]
struct Output {
    target: String,
    /// The backend's exit code or HTTP status.
    status: i32,
    output: String,
}

struct DeployArtifact;

impl Tool for DeployArtifact {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "deploy-artifact";
    const DESCRIPTION: &'static str =
        "Deploy a built file from the workspace to a named deploy target.";

    fn handles() -> Vec<HandleSpec> {
        vec![HandleSpec::new(
            "workspace",
            Rights::READ,
            "where the artifact is",
        )]
    }

    fn invoke(input: Input) -> Result<Output, Error> {
        let outcome = deploy::run(&input.target, "workspace", &input.artifact)?;
        if outcome.status != 0 && !(200..300).contains(&outcome.status) {
            return Err(Error::failed(format!(
                "deploying to {} failed with status {}: {}",
                input.target, outcome.status, outcome.output
            )));
        }
        Ok(Output {
            target: input.target,
            status: outcome.status,
            output: outcome.output,
        })
    }
}

warden_tool::export!(DeployArtifact);
