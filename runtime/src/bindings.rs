//! Host bindings of the `tool` world in `wit/`.
//!
//! No import is traced: wit-bindgen's `tracing` option logs each call's
//! string arguments and results at TRACE (a revealed secret from
//! `secrets.reveal`, an identity token, a URL, a path, deploy output), and
//! no secret value may reach any log at any level. The audit trail records
//! every host call instead, redacted.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "tool",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "warden:tool/fs.dir": crate::caps::fs::OpenDir,
        "warden:tool/secrets.secret": crate::caps::secrets::SecretRef,
    },
});

/// Log targets a subscriber must turn off: wasmtime's own WASI bindings
/// trace their imports' string arguments and results (paths, URLs with
/// their queries, directory entries) at TRACE, which would print values a
/// tool handles, secrets included. `warden` keeps them (and the targets
/// beneath them) out with a filter of its own beside `WARDEN_LOG`'s; an
/// embedder's subscriber should too. A `TARGET=off` directive in an
/// `EnvFilter` is not enough: a more specific target or a span directive
/// (`[wit-bindgen import]=trace`) turns them back on.
/// `oci_client` logs a registry's token response at DEBUG: a bearer
/// token for the registry. `tokio_postgres` logs every query's parameters.
pub const VALUE_LOG_TARGETS: [&str; 5] = [
    "wasmtime_wasi::p2::bindings",
    "wasmtime_wasi_http::p2::bindings",
    // `wasi:io` (streams, errors), linked by `wasmtime_wasi`: an error's
    // debug string, a stream error's chain.
    "wasmtime_wasi_io::bindings",
    "oci_client",
    // Every query's parameters at DEBUG: task histories, approval
    // requests, a parked call's result (redacted, but a tool's values).
    "tokio_postgres",
];
