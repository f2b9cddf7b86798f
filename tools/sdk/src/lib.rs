//! Guest SDK for Warden tools.
//!
//! A tool is a type implementing [`Tool`] with typed serde input and output,
//! exported with one [`export!`] call. The SDK derives the input and output
//! JSON Schemas, parses the input, and turns errors into the `tool-error` the
//! host expects.
//!
//! ```ignore
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//! use warden_tool::{fs, HandleSpec, Rights, Tool};
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct Input { path: String }
//!
//! #[derive(Serialize, JsonSchema)]
//! struct Output { bytes: usize }
//!
//! struct FileSize;
//!
//! impl Tool for FileSize {
//!     type Input = Input;
//!     type Output = Output;
//!     const NAME: &'static str = "file-size";
//!     const DESCRIPTION: &'static str = "Size of one file under the `repo` handle";
//!
//!     fn handles() -> Vec<HandleSpec> {
//!         vec![HandleSpec::new("repo", Rights::READ, "files to measure")]
//!     }
//!
//!     fn invoke(input: Input) -> Result<Output, warden_tool::Error> {
//!         let bytes = fs::handle("repo")?.read(&input.path)?.len();
//!         Ok(Output { bytes })
//!     }
//! }
//!
//! warden_tool::export!(FileSize);
//! ```

#[doc(hidden)]
pub mod bindings {
    // `wit` is a symlink to the repository's `wit/` inside this crate, so a
    // packaged (published) crate carries the WIT it was built against.
    wit_bindgen::generate!({
        path: "wit",
        world: "tool",
        pub_export_macro: true,
        export_macro_name: "__export_tool_world",
        default_bindings_module: "warden_tool::bindings",
    });
}

pub mod deploy;
pub mod fs;
pub mod http;
pub mod identity;
pub mod log;
pub mod secrets;

use bindings::exports::warden::tool::guest;
pub use bindings::warden::tool::fs::Rights;
use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};

/// A Warden tool: typed JSON in, typed JSON out.
pub trait Tool {
    type Input: DeserializeOwned + JsonSchema;
    type Output: Serialize + JsonSchema;

    /// The tool's name, as listed to agents.
    const NAME: &'static str;
    /// One or two sentences an agent reads to decide when to call the tool.
    const DESCRIPTION: &'static str;

    /// The directory handles the tool expects in its grant.
    fn handles() -> Vec<HandleSpec> {
        Vec::new()
    }

    fn invoke(input: Self::Input) -> Result<Self::Output, Error>;
}

/// A directory handle a tool expects, with the rights it needs.
pub struct HandleSpec {
    pub name: String,
    pub rights: Rights,
    pub description: String,
}

impl HandleSpec {
    pub fn new(name: &str, rights: Rights, description: &str) -> Self {
        Self {
            name: name.to_owned(),
            rights,
            description: description.to_owned(),
        }
    }
}

/// What went wrong in a tool, as the host and the agent see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub use guest::ErrorKind;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Failed, message)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<fs::Error> for Error {
    fn from(e: fs::Error) -> Self {
        // The kind carries the code where they match one to one.
        let (kind, message) = match e.code {
            fs::ErrorCode::Denied => (ErrorKind::Denied, e.message),
            fs::ErrorCode::NotFound => (ErrorKind::NotFound, e.message),
            fs::ErrorCode::InvalidPath => (ErrorKind::InvalidInput, e.describe()),
            _ => (ErrorKind::Failed, e.describe()),
        };
        Self::new(kind, message)
    }
}

impl From<secrets::Error> for Error {
    fn from(e: secrets::Error) -> Self {
        let kind = match e.code {
            secrets::ErrorCode::Denied => ErrorKind::Denied,
            secrets::ErrorCode::Expired => ErrorKind::Failed,
        };
        Self::new(kind, e.describe())
    }
}

impl From<http::Error> for Error {
    fn from(e: http::Error) -> Self {
        let kind = match e.code {
            http::ErrorCode::Denied => ErrorKind::Denied,
            http::ErrorCode::InvalidRequest => ErrorKind::InvalidInput,
            _ => ErrorKind::Failed,
        };
        let message = if kind == ErrorKind::Denied {
            e.message
        } else {
            e.describe()
        };
        Self::new(kind, message)
    }
}

impl From<deploy::Error> for Error {
    fn from(e: deploy::Error) -> Self {
        let kind = match e.code {
            deploy::ErrorCode::Denied => ErrorKind::Denied,
            deploy::ErrorCode::NotFound => ErrorKind::NotFound,
            deploy::ErrorCode::Failed => ErrorKind::Failed,
        };
        Self::new(kind, e.message)
    }
}

impl From<identity::Error> for Error {
    fn from(e: identity::Error) -> Self {
        Self::new(ErrorKind::Denied, e.message)
    }
}

#[doc(hidden)]
pub fn __describe<T: Tool>(version: &str) -> guest::ToolInfo {
    let schema = |s: schemars::Schema| serde_json::to_string(&s).unwrap_or_default();
    guest::ToolInfo {
        name: T::NAME.to_owned(),
        version: version.to_owned(),
        description: T::DESCRIPTION.to_owned(),
        input_schema: schema(schemars::schema_for!(T::Input)),
        output_schema: Some(schema(schemars::schema_for!(T::Output))),
        handles: T::handles()
            .into_iter()
            .map(|h| guest::HandleSpec {
                name: h.name,
                rights: h.rights,
                description: h.description,
            })
            .collect(),
    }
}

#[doc(hidden)]
pub fn __invoke<T: Tool>(input: &str) -> Result<String, guest::ToolError> {
    let to_wit = |e: Error| guest::ToolError {
        kind: e.kind,
        message: e.message,
    };
    let input: T::Input = serde_json::from_str(input).map_err(|e| {
        to_wit(Error::invalid_input(format!(
            "input does not match the schema: {e}"
        )))
    })?;
    let output = T::invoke(input).map_err(to_wit)?;
    serde_json::to_string(&output)
        .map_err(|e| to_wit(Error::failed(format!("output is not serializable: {e}"))))
}

/// Exports a [`Tool`] as the component's `warden:tool/guest` interface.
#[macro_export]
macro_rules! export {
    ($tool:ty) => {
        #[doc(hidden)]
        struct __WardenGuest;

        impl $crate::bindings::exports::warden::tool::guest::Guest for __WardenGuest {
            fn describe() -> $crate::bindings::exports::warden::tool::guest::ToolInfo {
                $crate::__describe::<$tool>(env!("CARGO_PKG_VERSION"))
            }

            fn invoke(
                input: ::std::string::String,
            ) -> ::std::result::Result<
                ::std::string::String,
                $crate::bindings::exports::warden::tool::guest::ToolError,
            > {
                $crate::__invoke::<$tool>(&input)
            }
        }

        $crate::bindings::__export_tool_world!(__WardenGuest with_types_in $crate::bindings);
    };
}
