//! Property-based fuzzing on stable (proptest), one module per target:
//!
//! | target | what is fuzzed | property |
//! | --- | --- | --- |
//! | `manifest` | `Manifest::parse` | never panics; a problem names its line or field |
//! | `grant` | `Grant::add_cli`, `Grant::load` | never panics; what is accepted is well formed |
//! | `path` | `caps::fs::path::check`, `caps::fs::check::decide` | no accepted path leaves the handle |
//! | `redact` | `Redactor` | every supported encoding of a secret, at any alignment, is redacted and detected |
//! | `verify` | `audit::verify::verify_text` | never panics; an edited record is never reported intact |
//! | `stdio` | the MCP stdio loop (`mcp::stdio::serve_on`) | at most one answer per line; a valid call after garbage is answered |
//!
//! Each target generates fresh inputs and mutates the seeds committed in
//! `tests/fuzz/corpus/<target>/`. `WARDEN_FUZZ_CASES` sets the cases per
//! target (default [`DEFAULT_CASES`]); each target prints
//! `fuzz <target>: N executions, M crashes` (run with `--nocapture`). A
//! failing case is shrunk, its seed saved in
//! `tests/fuzz/proptest-regressions/<target>.txt` (commit it: it is replayed
//! first on every run) and the test fails with the minimal input.
//!
//! The run's seed: `WARDEN_FUZZ_SEED`, else [`CI_SEED`] when `CI` is set (a
//! CI run is the same run every time), else a fresh one. Each target prints
//! it (`fuzz <target>: seed N`); `WARDEN_FUZZ_SEED=N` with the same
//! `WARDEN_FUZZ_CASES` replays the run, including a target whose cases share
//! state (`stdio`'s one session), which a saved case seed alone does not.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

mod corpus;
mod grant;
mod manifest;
mod path;
mod redact;
mod stdio;
mod verify;

use proptest::strategy::Strategy;
use proptest::test_runner::{
    Config, FileFailurePersistence, RngSeed, TestCaseError, TestError, TestRunner,
};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};

/// Cases per target when `WARDEN_FUZZ_CASES` is not set.
pub const DEFAULT_CASES: u32 = 2_000;

/// Cases per target: `WARDEN_FUZZ_CASES`, else [`DEFAULT_CASES`].
pub fn cases() -> u32 {
    std::env::var("WARDEN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// The seed of a run when `CI` is set and `WARDEN_FUZZ_SEED` is not.
pub const CI_SEED: u64 = 0x5741_5244_454e_0001;

/// The run's seed: `WARDEN_FUZZ_SEED`, else [`CI_SEED`] under CI, else a
/// fresh one.
pub fn seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        if let Some(seed) = std::env::var("WARDEN_FUZZ_SEED")
            .ok()
            .and_then(|v| v.trim().parse().ok())
        {
            return seed;
        }
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
            return CI_SEED;
        }
        use std::hash::{BuildHasher as _, Hasher as _};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    })
}

/// Runs `test` on `cases() * weight` inputs from `strategy` (`weight`
/// scales a target whose cases are much cheaper or dearer than the rest),
/// prints the executions, and fails with the shrunk input on a panic or a
/// broken property.
pub fn fuzz<S: Strategy>(
    target: &'static str,
    weight: f64,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: Debug,
{
    let regressions: &'static str = Box::leak(
        format!(
            "{}/../tests/fuzz/proptest-regressions/{target}.txt",
            env!("CARGO_MANIFEST_DIR")
        )
        .into_boxed_str(),
    );
    let config = Config {
        cases: ((f64::from(cases()) * weight).round() as u32).max(1),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        // Shrinking a failure is bounded too: CI must end.
        max_shrink_time: 60_000,
        rng_seed: RngSeed::Fixed(seed()),
        ..Config::default()
    };
    eprintln!(
        "fuzz {target}: seed {} ({} cases; WARDEN_FUZZ_SEED={} replays)",
        seed(),
        config.cases,
        seed()
    );
    let executions = AtomicU64::new(0);
    let started = std::time::Instant::now();
    let result = TestRunner::new(config).run(&strategy, |input| {
        executions.fetch_add(1, Ordering::Relaxed);
        test(input)
    });
    let n = executions.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    match result {
        Ok(()) => eprintln!("fuzz {target}: {n} executions, 0 crashes ({secs:.1} s)"),
        Err(TestError::Fail(reason, input)) => {
            eprintln!("fuzz {target}: {n} executions, 1 crashes ({secs:.1} s)");
            panic!(
                "fuzz {target}: {reason}\nminimal input: {input:#?}\nreplay: WARDEN_FUZZ_SEED={} WARDEN_FUZZ_CASES={}",
                seed(),
                cases()
            );
        }
        Err(TestError::Abort(reason)) => {
            eprintln!("fuzz {target}: {n} executions, aborted ({secs:.1} s)");
            panic!("fuzz {target}: aborted: {reason}");
        }
    }
}

/// `prop_assert!` with a message that does not need the input (the runner
/// prints the shrunk input).
#[macro_export]
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(proptest::test_runner::TestCaseError::fail(format!($($fmt)+)));
        }
    };
}

#[test]
fn manifest() {
    manifest::run();
}

#[test]
fn grant() {
    grant::run();
}

#[test]
fn path() {
    path::run();
}

#[test]
fn redact() {
    redact::run();
}

#[test]
fn verify() {
    verify::run();
}

#[test]
fn stdio() {
    stdio::run();
}
