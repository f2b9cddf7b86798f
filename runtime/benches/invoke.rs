//! `cargo bench --bench invoke`
//!
//! 1. Per-invocation time of a trivial tool (`echo`) through
//!    `Runtime::invoke`, with every check and a file audit trail on, against
//!    raw wasmtime running the same component with the same engine
//!    configuration (`InstancePre` + fresh `Store` + call), measured in the
//!    same run in alternating batches. Target: ratio at most 1.3.
//! 2. The cost of checking a call's input against the tool's schema, for
//!    the bundled tools (target: under 2 µs).
//! 3. Throughput from 1 and 2 threads, and raw wasmtime's.
//! 4. First invocation in a fresh process with a cold and a warm compile
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

/// The `warden` binary's allocator, so that in-process figures match it.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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

/// Raw wasmtime with Warden's engine configuration, its epoch ticking as
/// Warden's does, and the `echo` component pre-instantiated.
fn raw_engine() -> (Engine, raw::ToolPre<RawState>) {
    let engine = Engine::new(&warden::engine::config(pool_slots())).unwrap();
    let pre = raw_pre(&engine);
    let ticker = engine.clone();
    std::thread::spawn(move || {
        loop {
            ticker.increment_epoch();
            std::thread::sleep(warden::engine::EPOCH_TICK);
        }
    });
    (engine, pre)
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

/// The CPU time of the calling thread, in nanoseconds. Unlike wall time it
/// does not count time the thread waited for a core, so a busy machine (a
/// CI runner, a build in the background) skews it far less.
#[allow(unsafe_code)]
fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // The process's CPU time, every thread's: the audit trail's own thread
    // writes what an invocation leaves behind, and that is the call's cost.
    // SAFETY: `clock_gettime` writes one `timespec` to the pointer it is
    // given, here a live local; the clock id is a constant Linux defines.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Per-call process CPU and wall time of batches of sequential calls.
#[derive(Default)]
struct Meter {
    cpu: Vec<f64>,
    wall: Vec<f64>,
}

#[derive(Clone, Copy)]
struct PerCall {
    cpu: f64,
    wall: f64,
}

impl std::fmt::Display for PerCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:6.1} µs ({:6.1} µs)", self.cpu, self.wall)
    }
}

impl Meter {
    async fn batch(&mut self, n: usize, call: impl AsyncFnMut()) {
        self.batch_then(n, call, || ()).await
    }

    /// A batch ended by `finish` (writing what the calls left behind).
    async fn batch_then(&mut self, n: usize, mut call: impl AsyncFnMut(), finish: impl FnOnce()) {
        let (c, t) = (cpu_ns(), Instant::now());
        for _ in 0..n {
            call().await;
        }
        finish();
        self.wall.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        self.cpu.push((cpu_ns() - c) as f64 / 1e3 / n as f64);
    }

    fn medians(self) -> PerCall {
        PerCall {
            cpu: median(self.cpu),
            wall: median(self.wall),
        }
    }
}

/// The least and the greatest of `v`.
fn spread(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)))
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
    let (engine, pre) = raw_engine();

    // The same writing every record when it is appended.
    let sync = warden::Runtime::builder()
        .tool(warden::ToolSpec::new("echo", guests::ECHO))
        .audit(Arc::new(
            warden::audit::FileSink::open(dir.path().join("sync.jsonl"))
                .unwrap()
                .with_write_behind(warden::audit::WriteBehind::OFF),
        ))
        .build()
        .unwrap();
    // The same with signed audit checkpoints (on the default cadence).
    let signed = warden::Runtime::builder()
        .tool(warden::ToolSpec::new("echo", guests::ECHO))
        .audit(Arc::new(
            warden::audit::FileSink::open(dir.path().join("signed.jsonl"))
                .unwrap()
                .with_signer(Arc::new(warden::KeyPair::from_seed(&[3; 32]))),
        ))
        .build()
        .unwrap();
    // What the trail's file I/O and hashing cost: an in-memory sink.
    let memory = warden::Runtime::builder()
        .tool(warden::ToolSpec::new("echo", guests::ECHO))
        .audit(warden::audit::MemorySink::new())
        .build()
        .unwrap();
    let key = warden::KeyPair::from_seed(&[3; 32]);

    rt.block_on(async {
        for _ in 0..300 {
            assert_eq!(raw_invoke(&engine, &pre).await, INPUT);
            for w in [&warden, &sync, &signed, &memory] {
                let run = w.invoke("echo", &grant, INPUT).await.unwrap();
                assert_eq!(run.output.unwrap(), INPUT);
            }
        }
        // Each round runs a batch of every variant, so all share the
        // machine's conditions; each figure is the median over rounds.
        let mut m: [Meter; 6] = Default::default();
        for _ in 0..batches {
            m[0].batch(batch, async || {
                raw_invoke(&engine, &pre).await;
            })
            .await;
            for (i, w) in [&warden, &sync, &signed, &memory].into_iter().enumerate() {
                m[i + 1]
                    .batch_then(
                        batch,
                        async || {
                            w.invoke("echo", &grant, INPUT).await.unwrap();
                        },
                        || w.flush_audit().unwrap(),
                    )
                    .await;
            }
            m[5].batch(batch, async || {
                std::hint::black_box(key.sign_raw(b"warden-audit-checkpoint/1 0 0"));
            })
            .await;
        }
        let [raw, file, sync, signed, memory, sign] = m.map(|m| m.medians());
        let ratio = file.cpu / raw.cpu;
        println!("invoke: trivial tool, {batches} rounds of {batch} sequential calls per variant; median per-call process CPU time (wall time); each batch ends with its records written");
        println!("  raw wasmtime (InstancePre + Store + call)        {raw}");
        println!("  warden Runtime::invoke (checks + file trail)     {file}");
        println!(
            "  ratio {ratio:.2} CPU, {:.2} wall (target <= {TARGET_RATIO} CPU): {}",
            file.wall / raw.wall,
            if ratio <= TARGET_RATIO { "met" } else { "MISSED" }
        );
        println!("  every record written when appended (no write-behind) {sync}   ratio {:.2}", sync.cpu / raw.cpu);
        println!("  with signed checkpoints (default cadence)        {signed}   ratio {:.2}", signed.cpu / raw.cpu);
        println!("  with an in-memory audit sink (no file I/O)       {memory}   ratio {:.2}", memory.cpu / raw.cpu);
        println!("  one Ed25519 checkpoint signature                 {sign}");
    });
    warden.flush_audit().unwrap();
    let records = std::fs::read_to_string(&audit).unwrap().lines().count();
    println!("  audit records written: {records}");
    // A start and an end per call, none lost behind.
    assert_eq!(records, 2 * (300 + batches * batch), "records on the trail");
    drop(warden);
    let verified = warden::audit::verify::verify(&audit, None).unwrap();
    assert!(verified.tampered.is_none(), "{verified:?}");
    println!(
        "  the bench's trail verifies: {} records, chain intact",
        verified.records
    );

    rt.block_on(schema_checks(batches, batch));

    // Throughput: the same runtime called from 1 and 2 threads at once,
    // and raw wasmtime the same way, in rounds of the four one after the
    // other: each round's scaling compares runs seconds apart, so a busy
    // spell of the machine's skews a round, not a whole figure.
    let (calls, rounds) = if quick { (5_000, 5) } else { (10_000, 9) };
    let setups = [
        Throughput::new(1, Variant::Warden),
        Throughput::new(2, Variant::Warden),
        Throughput::new(1, Variant::Raw),
        Throughput::new(2, Variant::Raw),
    ];
    let mut rates: [Vec<f64>; 4] = Default::default();
    let (mut scaling, mut raw_scaling) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let r: Vec<f64> = setups.iter().map(|s| s.run(calls)).collect();
        for (all, rate) in rates.iter_mut().zip(&r) {
            all.push(*rate);
        }
        scaling.push(r[1] / r[0]);
        raw_scaling.push(r[3] / r[2]);
    }
    let [one, two, raw_one, raw_two] = rates.map(median);
    let (low, high) = spread(&scaling);
    let (raw_low, raw_high) = spread(&raw_scaling);
    println!(
        "throughput, in-process, {calls} calls per thread, {rounds} rounds (medians; each round's scaling in brackets):"
    );
    println!("  warden (file trail)  1 thread {one:8.0} calls/s");
    let (scaled, raw_scaled) = (median(scaling), median(raw_scaling));
    let verdict = match (scaled >= 1.8, raw_scaled >= 1.8) {
        (true, _) => "met".to_owned(),
        (false, true) => "MISSED".to_owned(),
        (false, false) => format!("MISSED, where raw wasmtime itself scaled {raw_scaled:.2}x"),
    };
    println!(
        "  warden (file trail)  2 threads {two:7.0} calls/s   ({scaled:.2}x one thread [{low:.2}-{high:.2}]; target >= 1.8: {verdict})"
    );
    println!("  raw wasmtime         1 thread {raw_one:8.0} calls/s");
    println!(
        "  raw wasmtime         2 threads {raw_two:7.0} calls/s   ({raw_scaled:.2}x one thread [{raw_low:.2}-{raw_high:.2}]: the machine's own scaling)"
    );

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

/// What checking a call's input against the tool's schema costs, for the
/// bundled tools with typical inputs: `Runtime::check_input` (size, JSON
/// parse, schema) against parsing alone. Target: under 2 µs a call.
async fn schema_checks(batches: usize, batch: usize) {
    const TARGET_US: f64 = 2.0;
    let cases = [
        (
            "read-files",
            guests::READ_FILES,
            r#"{"paths":["README.md","src/lib.rs"]}"#,
        ),
        (
            "search-text",
            guests::SEARCH_TEXT,
            r#"{"pattern":"TODO","globs":["**/*.rs","**/*.md"]}"#,
        ),
        (
            "write-file",
            guests::WRITE_FILE,
            r#"{"path":"docs/notes.md","content":"Release notes\n\n- sandboxed tools\n"}"#,
        ),
        (
            "http-get",
            guests::HTTP_GET,
            r#"{"url":"https://api.example.com/v1/items","secret":"api-token"}"#,
        ),
        (
            "deploy-artifact",
            guests::DEPLOY_ARTIFACT,
            r#"{"target":"production","artifact":"dist/app-1.0.tar"}"#,
        ),
        ("echo", guests::ECHO, INPUT),
    ];
    let mut builder = warden::Runtime::builder().audit(warden::audit::MemorySink::new());
    for (name, path, _) in cases {
        builder = builder.tool(warden::ToolSpec::new(name, path));
    }
    let rt = builder.build().unwrap();
    println!(
        "input schema check per call (Runtime::check_input: size + parse + schema), median process CPU:"
    );
    let mut worst: f64 = 0.0;
    for (name, _, input) in cases {
        rt.check_input(name, input).await.unwrap();
        let (mut check, mut parse) = (Meter::default(), Meter::default());
        for _ in 0..batches {
            check
                .batch(batch, async || {
                    rt.check_input(std::hint::black_box(name), input)
                        .await
                        .unwrap();
                })
                .await;
            parse
                .batch(batch, async || {
                    std::hint::black_box(serde_json::from_str::<serde_json::Value>(input).unwrap());
                })
                .await;
        }
        let (check, parse) = (check.medians(), parse.medians());
        let schema = (check.cpu - parse.cpu).max(0.0);
        worst = worst.max(schema);
        println!(
            "  {name:16} {:6.2} µs  (parse alone {:5.2} µs: the schema costs {schema:5.2} µs)",
            check.cpu, parse.cpu
        );
    }
    println!(
        "  the schema's cost, worst tool: {worst:.2} µs (target < {TARGET_US} µs): {}",
        if worst < TARGET_US { "met" } else { "MISSED" }
    );
}

/// Invocations in flight at once, as the pooling allocator reserves room
/// for them: Warden's default, 100, unless `WARDEN_BENCH_SLOTS` says (a
/// profile under valgrind, which cannot reserve that much address space).
fn pool_slots() -> u32 {
    std::env::var("WARDEN_BENCH_SLOTS").map_or(100, |n| n.parse().expect("WARDEN_BENCH_SLOTS=N"))
}

/// A runtime serving `echo` with a file trail at `path`.
fn echo_with_trail(path: &Path) -> warden::Runtime {
    warden::Runtime::builder()
        .max_concurrent_invocations(pool_slots())
        .tool(warden::ToolSpec::new("echo", guests::ECHO))
        .audit(Arc::new(warden::audit::FileSink::open(path).unwrap()))
        .build()
        .unwrap()
}

#[derive(Clone, Copy)]
enum Variant {
    Warden,
    Raw,
}

/// `threads` threads each making sequential invocations: through one
/// runtime (one file trail), or raw wasmtime (one engine and one
/// `InstancePre`, shared).
struct Throughput {
    rt: tokio::runtime::Runtime,
    threads: usize,
    variant: Variant,
    warden: warden::Runtime,
    grant: Arc<warden::Grant>,
    engine: Engine,
    pre: Arc<raw::ToolPre<RawState>>,
    _dir: tempfile::TempDir,
}

impl Throughput {
    /// Set up and warmed (compiled, the pool's slots in use).
    fn new(threads: usize, variant: Variant) -> Throughput {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let warden = echo_with_trail(&dir.path().join("audit.jsonl"));
        let (engine, pre) = raw_engine();
        let t = Throughput {
            rt,
            threads,
            variant,
            warden,
            grant: Arc::new(warden::Grant::new("bench")),
            engine,
            pre: Arc::new(pre),
            _dir: dir,
        };
        t.run(200);
        t
    }

    /// Calls per second over `n` calls on each thread.
    fn run(&self, n: usize) -> f64 {
        let t = Instant::now();
        let calls = self.calls(n, None);
        calls as f64 / t.elapsed().as_secs_f64()
    }

    /// Up to `n` calls on each thread, stopping at `until`; how many.
    fn calls(&self, n: usize, until: Option<Instant>) -> usize {
        let tasks: Vec<_> = (0..self.threads)
            .map(|_| {
                let (warden, grant) = (self.warden.clone(), self.grant.clone());
                let (engine, pre) = (self.engine.clone(), self.pre.clone());
                let variant = self.variant;
                self.rt.spawn(async move {
                    let mut calls = 0;
                    while calls < n && until.is_none_or(|u| Instant::now() < u) {
                        match variant {
                            Variant::Warden => {
                                warden.invoke("echo", &grant, INPUT).await.unwrap();
                            }
                            Variant::Raw => {
                                raw_invoke(&engine, &pre).await;
                            }
                        }
                        calls += 1;
                    }
                    calls
                })
            })
            .collect();
        self.rt.block_on(async {
            let mut sum = 0;
            for task in tasks {
                sum += task.await.unwrap();
            }
            sum
        })
    }
}

/// `WARDEN_BENCH_PROFILE=SECONDS`: only `Runtime::invoke` with a file
/// trail (or, with `WARDEN_BENCH_RAW=1`, raw wasmtime), in a loop on each
/// of `WARDEN_BENCH_THREADS` threads (default 1), for a profiler
/// (`perf record --call-graph dwarf`).
fn profile(seconds: u64) {
    let threads: usize = std::env::var("WARDEN_BENCH_THREADS")
        .map_or(1, |t| t.parse().expect("WARDEN_BENCH_THREADS=N"));
    let variant = match std::env::var_os("WARDEN_BENCH_RAW") {
        Some(_) => Variant::Raw,
        None => Variant::Warden,
    };
    let warden = Throughput::new(threads, variant);
    let until = Instant::now() + std::time::Duration::from_secs(seconds);
    let calls = warden.calls(usize::MAX, Some(until));
    println!(
        "{calls} calls on {threads} threads, {:.0} calls/s",
        calls as f64 / seconds as f64
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
