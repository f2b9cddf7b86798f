//! A tool's identity: `sha256:<hex>` of its component bytes.

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Identity([u8; 32]);

impl Identity {
    pub fn of(bytes: &[u8]) -> Identity {
        Identity(Sha256::digest(bytes).into())
    }

    /// The SHA-256 digest itself.
    pub fn digest(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hex digest without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        self.hex_into(&mut [0; 64]).to_owned()
    }

    /// The hex digest, written into `buf`: `hex::encode` builds its string
    /// a character at a time, and an MCP answer names the identity.
    fn hex_into<'b>(&self, buf: &'b mut [u8; 64]) -> &'b str {
        // The buffer is exactly twice the digest's length, and hex is ASCII.
        let _ = hex::encode_to_slice(self.0, buf);
        std::str::from_utf8(buf).unwrap_or_default()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex_into(&mut [0; 64]))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({self})")
    }
}

impl FromStr for Identity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected sha256: followed by 64 lower-case hex digits";
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("invalid identity '{s}' ({expected})"))?;
        if hex.len() != 64 || hex.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(format!("invalid identity '{s}' ({expected})"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex, &mut out)
            .map_err(|_| format!("invalid identity '{s}' ({expected})"))?;
        Ok(Identity(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_forms() {
        let id = Identity::of(b"abc");
        assert_eq!(
            id.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            id.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(id.to_string().parse::<Identity>().unwrap(), id);
        assert!("md5:00".parse::<Identity>().is_err());
        assert!("sha256:ABC".parse::<Identity>().is_err());
        assert!(
            id.to_string()
                .to_uppercase()
                .replace("SHA256", "sha256")
                .parse::<Identity>()
                .is_err()
        );
    }
}
