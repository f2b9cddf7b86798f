//! One module per capability: its configuration, its checks and its host
//! implementation side by side.

pub mod deploy;
pub mod fs;
pub mod http;
pub mod identity;
pub mod log;
pub mod secrets;
pub mod stdio;
