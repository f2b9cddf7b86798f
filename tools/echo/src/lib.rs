//! The trivial tool used by benchmarks: returns its input.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use warden_tool::{Error, Tool};

#[derive(Deserialize, Serialize, JsonSchema)]
struct Message {
    #[serde(default)]
    message: String,
}

struct Echo;

impl Tool for Echo {
    type Input = Message;
    type Output = Message;
    const NAME: &'static str = "echo";
    const DESCRIPTION: &'static str = "Returns its input message.";

    fn invoke(input: Message) -> Result<Message, Error> {
        Ok(input)
    }
}

warden_tool::export!(Echo);
