//! Test tool: keeps no contract of its own. It declares its schemas by hand
//! (no SDK, no serde types), never checks its input, and returns what its
//! `mode` asks for, so tests show that the host checks input and output
//! against the declared schemas for a tool written any way.

use warden_tool::bindings::exports::warden::tool::guest::{Guest, ToolError, ToolInfo};

struct ContractProbe;

const INPUT: &str = r#"{
  "type": "object",
  "required": ["mode"],
  "properties": {
    "mode": {"type": "string", "enum": ["ok", "wrong-type", "missing", "not-json"]},
    "count": {"type": "integer", "format": "uint16"}
  },
  "additionalProperties": false
}"#;

const OUTPUT: &str = r#"{
  "type": "object",
  "required": ["count"],
  "properties": {"count": {"type": "integer", "format": "uint"}}
}"#;

impl Guest for ContractProbe {
    fn describe() -> ToolInfo {
        ToolInfo {
            name: "contract-probe".into(),
            version: "0.1.0".into(),
            description: "Returns output that keeps or breaks its declared schema.".into(),
            input_schema: INPUT.into(),
            output_schema: Some(OUTPUT.into()),
            handles: Vec::new(),
        }
    }

    /// Runs whatever it is given: only the host stands between this and
    /// input that breaks the schema.
    fn invoke(input: String) -> Result<String, ToolError> {
        let mode = serde_json::from_str::<serde_json::Value>(&input)
            .ok()
            .and_then(|v| v.get("mode").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_default();
        Ok(match mode.as_str() {
            "ok" => r#"{"count": 3}"#.into(),
            "wrong-type" => r#"{"count": "three"}"#.into(),
            "missing" => r#"{"total": 3}"#.into(),
            "not-json" => "count: 3".into(),
            // Input the schema refuses: this line proves it ran.
            other => format!(r#"{{"count": 0, "ran-with": {other:?}}}"#),
        })
    }
}

warden_tool::bindings::__export_tool_world!(ContractProbe with_types_in warden_tool::bindings);
