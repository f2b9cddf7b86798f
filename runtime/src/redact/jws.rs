//! Signed tokens among secret values: their signatures are values too.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `(name, value)` pairs, each value that is a signed token (a JWS in
/// compact form: three base64url segments) followed by its signature
/// segment under the same name: a token's header and claims can be
/// guessed, its signature not, and a server that echoes a token's parts
/// apart (`{"header": …, "signature": …}`) would hand it to the tool.
pub(crate) fn and_signatures<'a>(
    secrets: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    let signature = |value: &'a str| {
        let parts: Vec<&str> = value.split('.').collect();
        let base64url = |p: &str| {
            !p.is_empty()
                && (p.bytes()).all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        // A JOSE header: base64url of a JSON object naming its `alg`.
        let header = || {
            let json = URL_SAFE_NO_PAD.decode(parts[0]).ok()?;
            let header: serde_json::Value = serde_json::from_slice(&json).ok()?;
            header.get("alg")?.as_str().map(drop)
        };
        (parts.len() == 3
            && parts.iter().all(|p| base64url(p))
            && parts[2].len() >= 16
            && header().is_some())
        .then(|| parts[2])
    };
    (secrets.into_iter())
        .flat_map(move |(name, value)| [Some((name, value)), signature(value).map(|s| (name, s))])
        .flatten()
}
