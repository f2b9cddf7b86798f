//! Host bindings of the `tool` world in `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "tool",
    imports: { default: async | trappable | tracing },
    exports: { default: async },
    with: {
        "warden:tool/fs.dir": crate::caps::fs::OpenDir,
        "warden:tool/secrets.secret": crate::caps::secrets::SecretRef,
    },
});
