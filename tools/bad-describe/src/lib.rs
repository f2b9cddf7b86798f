//! Test tool: its `describe` traps (a panic), so tests can show that a
//! server with one broken tool still serves the others and names the broken
//! one. Its `invoke` answers `{}`.

use warden_tool::bindings::exports::warden::tool::guest::{Guest, ToolError, ToolInfo};

struct BadDescribe;

impl Guest for BadDescribe {
    fn describe() -> ToolInfo {
        panic!("bad-describe was built to fail in describe")
    }

    fn invoke(_input: String) -> Result<String, ToolError> {
        Ok("{}".into())
    }
}

warden_tool::bindings::__export_tool_world!(BadDescribe with_types_in warden_tool::bindings);
