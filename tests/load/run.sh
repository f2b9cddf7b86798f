#!/usr/bin/env bash
# The load and fault run (issue #11), on loopback in a scratch directory,
# each check bounded in time (see tests/load/main.rs):
#   1. 10,000 MCP HTTP tools/call from 64 concurrent clients: all answered,
#      one start and one end record per call, `warden audit verify` passes;
#   2. `warden serve` killed with SIGKILL mid-invocation: the trail verifies
#      up to its last record and reports the call unfinished (exit 3);
#   3. the trail's disk full mid-invocation (a 64 KiB tmpfs; needs root, else
#      a file size limit stands in): the invocation fails closed.
# Prints one summary line per check; exits non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked --bin warden --example load
exec "$target/release/examples/load" "$target/release/warden"
