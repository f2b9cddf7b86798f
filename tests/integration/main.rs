//! Integration tests: the guest tools under `tools/` are built for
//! wasm32-wasip2 by `runtime/build.rs` and driven through the host.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

mod agents;
mod approvals;
mod audit;
mod budget;
mod cache;
mod cli;
mod common;
mod connections;
mod console;
mod contract;
mod deploy;
mod egress;
mod escapes;
mod everyday;
mod front;
mod fs_trail;
mod gate;
mod grants;
mod identity;
mod introspect;
mod keyless;
mod kubernetes;
mod layout;
mod limits;
mod mcp;
mod policy;
mod postgres;
mod registry;
mod replicas;
mod rights;
mod rounds;
mod secrets;
mod signing;
mod telemetry;

/// Every guest must be used by some test: adding a guest to `tools/` without
/// naming it here (after writing its test) fails this test.
#[test]
fn every_guest_has_a_test() {
    let mut names = Vec::new();
    macro_rules! name {
        ($g:ident) => {
            names.push(stringify!($g))
        };
    }
    foreach_guest!(name);
    for n in &names {
        assert!(
            matches!(
                *n,
                "read_files"
                    | "line_count"
                    | "search_text"
                    | "write_file"
                    | "remove_path"
                    | "echo"
                    | "fs_probe"
                    | "hog"
                    | "secret_probe"
                    | "http_get"
                    | "egress_probe"
                    | "call_api"
                    | "wasi_http_probe"
                    | "deploy_artifact"
                    | "bad_describe"
                    | "hostile_describe"
                    | "contract_probe"
                    | "plain_echo"
            ),
            "guest {n} has no test; add one and list it here"
        );
    }
    assert_eq!(names.len(), 18);
}
