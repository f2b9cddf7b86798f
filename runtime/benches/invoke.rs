//! `cargo bench --bench invoke`
//!
//! 1. Per-invocation time of a trivial tool (`echo`) through
//!    `Runtime::invoke`, with every check and a file audit trail on, against
//!    raw wasmtime running the same component with the same engine
//!    configuration (`InstancePre` + fresh `Store` + call), measured in the
//!    same run in alternating batches. Target: ratio at most 1.3.
//! 2. First invocation in a fresh process with a cold and a warm compile
//!    cache.
//!
//! `WARDEN_BENCH_QUICK=1` runs fewer iterations (CI smoke run).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

mod raw {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "tool",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

const INPUT: &str = r#"{"message":"hello"}"#;
const TARGET_RATIO: f64 = 1.3;

struct RawState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn raw_pre(engine: &Engine) -> raw::ToolPre<RawState> {
    let component = Component::from_file(engine, guests::ECHO).expect("echo component");
    let mut linker = Linker::<RawState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    // The warden:tool imports `echo` links but never calls.
    linker.define_unknown_imports_as_traps(&component).unwrap();
    raw::ToolPre::new(linker.instantiate_pre(&component).unwrap()).unwrap()
}

async fn raw_invoke(engine: &Engine, pre: &raw::ToolPre<RawState>) -> String {
    let state = RawState {
        wasi: WasiCtx::builder().build(),
        table: ResourceTable::new(),
    };
    let mut store = Store::new(engine, state);
    store.set_epoch_deadline(u64::MAX / 2);
    let tool = pre.instantiate_async(&mut store).await.unwrap();
    tool.warden_tool_guest()
        .call_invoke(&mut store, INPUT)
        .await
        .unwrap()
        .unwrap()
}

/// Median over `batches` of the mean µs per call of `batch` calls.
async fn per_call(
    rt: &warden::Runtime,
    grant: &warden::Grant,
    batches: usize,
    batch: usize,
) -> f64 {
    let mut us = Vec::new();
    for _ in 0..batches {
        let t = Instant::now();
        for _ in 0..batch {
            rt.invoke("echo", grant, INPUT).await.unwrap();
        }
        us.push(t.elapsed().as_secs_f64() * 1e6 / batch as f64);
    }
    median(us)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // Cargo passes `--bench`; a child run for the cache measurement passes
    // the cache directory through the environment.
    if let Ok(cache) = std::env::var("WARDEN_BENCH_CHILD") {
        return child(Path::new(&cache));
    }
    if let Ok(seconds) = std::env::var("WARDEN_BENCH_PROFILE") {
        return profile(seconds.parse().expect("WARDEN_BENCH_PROFILE=SECONDS"));
    }
    let quick = std::env::var_os("WARDEN_BENCH_QUICK").is_some();
    let (batches, batch) = if quick { (7, 100) } else { (21, 400) };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Warden: enforcement, limits, captured stdio and a file audit trail on.
    let audit = dir.path().join("audit.jsonl");
    let warden = warden::Runtime::builder()
        .tool(warden::ToolSpec::new("echo", guests::ECHO))
        .audit(Arc::new(warden::audit::FileSink::open(&audit).unwrap()))
        .build()
        .unwrap();
    let grant = warden::Grant::new("bench");

    // Raw wasmtime: same component, same engine configuration.
    let engine = Engine::new(&warden::engine::config(100)).unwrap();
    let pre = raw_pre(&engine);
    let ticker = engine.clone();
    std::thread::spawn(move || {
        loop {
            ticker.increment_epoch();
            std::thread::sleep(warden::engine::EPOCH_TICK);
        }
    });

    rt.block_on(async {
        for _ in 0..300 {
            assert_eq!(raw_invoke(&engine, &pre).await, INPUT);
            let run = warden.invoke("echo", &grant, INPUT).await.unwrap();
            assert_eq!(run.output.unwrap(), INPUT);
        }
        let (mut raw_us, mut warden_us) = (Vec::new(), Vec::new());
        for _ in 0..batches {
            let t = Instant::now();
            for _ in 0..batch {
                raw_invoke(&engine, &pre).await;
            }
            raw_us.push(t.elapsed().as_secs_f64() * 1e6 / batch as f64);
            let t = Instant::now();
            for _ in 0..batch {
                warden.invoke("echo", &grant, INPUT).await.unwrap();
            }
            warden_us.push(t.elapsed().as_secs_f64() * 1e6 / batch as f64);
        }
        // The same with signed audit checkpoints after each invocation.
        let signed_audit = dir.path().join("signed.jsonl");
        let signed = warden::Runtime::builder()
            .tool(warden::ToolSpec::new("echo", guests::ECHO))
            .audit(Arc::new(
                warden::audit::FileSink::open(&signed_audit)
                    .unwrap()
                    .with_signer(Arc::new(warden::KeyPair::from_seed(&[3; 32]))),
            ))
            .build()
            .unwrap();
        let s = per_call(&signed, &grant, batches.min(7), batch).await;
        // What the trail's file I/O and hashing cost: an in-memory sink.
        let memory = warden::Runtime::builder()
            .tool(warden::ToolSpec::new("echo", guests::ECHO))
            .audit(warden::audit::MemorySink::new())
            .build()
            .unwrap();
        let m = per_call(&memory, &grant, batches.min(7), batch).await;
        let (r, w) = (median(raw_us), median(warden_us));
        let ratio = w / r;
        println!("invoke: trivial tool, {batches} alternating batches of {batch} sequential calls, median batch mean");
        println!("  raw wasmtime (InstancePre + Store + call)   {r:8.1} µs/call");
        println!("  warden Runtime::invoke (checks + audit on)   {w:8.1} µs/call");
        println!(
            "  ratio {ratio:.2} (target <= {TARGET_RATIO}): {}",
            if ratio <= TARGET_RATIO { "met" } else { "MISSED" }
        );
        println!("  with a signed audit checkpoint per invocation    {s:8.1} µs/call (ratio {:.2})", s / r);
        println!("  with an in-memory audit sink (no file I/O)       {m:8.1} µs/call (ratio {:.2})", m / r);
    });
    let records = std::fs::read_to_string(&audit).unwrap().lines().count();
    println!("  audit records written: {records}");

    // First invocation in a fresh process: cold vs warm compile cache.
    let exe = std::env::current_exe().unwrap();
    let runs = if quick { 3 } else { 5 };
    let first = |cache: &Path| -> (f64, f64) {
        let t = Instant::now();
        let out = Command::new(&exe)
            .env("WARDEN_BENCH_CHILD", cache)
            .output()
            .unwrap();
        let wall = t.elapsed().as_secs_f64() * 1e3;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let inner: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        (inner, wall)
    };
    let mut cold = Vec::new();
    for i in 0..runs {
        cold.push(first(&dir.path().join(format!("cold-{i}"))));
    }
    let warm_dir = dir.path().join("cold-0");
    let warm: Vec<_> = (0..runs).map(|_| first(&warm_dir)).collect();
    let (cold_in, cold_wall) = (
        median(cold.iter().map(|c| c.0).collect()),
        median(cold.iter().map(|c| c.1).collect()),
    );
    let (warm_in, warm_wall) = (
        median(warm.iter().map(|c| c.0).collect()),
        median(warm.iter().map(|c| c.1).collect()),
    );
    println!(
        "first invocation in a fresh process (build runtime + load + invoke), median of {runs}:"
    );
    println!("  cold compile cache   {cold_in:7.1} ms   (process wall {cold_wall:.1} ms)");
    println!("  warm compile cache   {warm_in:7.1} ms   (process wall {warm_wall:.1} ms)");
    println!("  cold / warm          {:.1}x", cold_in / warm_in);
}

/// `WARDEN_BENCH_PROFILE=SECONDS`: only `Runtime::invoke` with a file
/// trail, in a loop, for a profiler (`perf record --call-graph dwarf`).
fn profile(seconds: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let warden = warden::Runtime::builder()
        .tool(warden::ToolSpec::new("echo", guests::ECHO))
        .audit(Arc::new(
            warden::audit::FileSink::open(dir.path().join("audit.jsonl")).unwrap(),
        ))
        .build()
        .unwrap();
    let grant = warden::Grant::new("bench");
    let until = Instant::now() + std::time::Duration::from_secs(seconds);
    let mut calls = 0u64;
    rt.block_on(async {
        while Instant::now() < until {
            warden.invoke("echo", &grant, INPUT).await.unwrap();
            calls += 1;
        }
    });
    println!(
        "{calls} calls, {:.1} µs/call",
        seconds as f64 * 1e6 / calls as f64
    );
}

/// One first invocation; prints milliseconds from start to output.
fn child(cache: &Path) {
    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let warden = warden::Runtime::builder()
        .tool(warden::ToolSpec::new("echo", guests::ECHO))
        .cache_dir(cache)
        .build()
        .unwrap();
    let run = rt
        .block_on(warden.invoke("echo", &warden::Grant::new("bench"), INPUT))
        .unwrap();
    assert_eq!(run.output.unwrap(), INPUT);
    println!("{}", start.elapsed().as_secs_f64() * 1e3);
}
