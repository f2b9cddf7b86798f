//! wasmtime configuration and the compiled-component cache.

use crate::identity::Identity;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of deadlines and of the
/// yields that let other invocations run while a tool computes.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Bytes of each pooled linear memory and table kept resident between
/// invocations (reset in place). A small tool dirties less than this; a
/// server that once ran N tools at once keeps at most N × this resident.
pub const KEEP_RESIDENT: usize = 64 << 10;

/// Core module instances, linear memories and tables one tool may hold: its
/// share of the pool. A component needing more is refused when it loads;
/// without these caps one invocation could take every slot of the pool (a
/// component instantiating a module with two memories a hundred times) and
/// every other invocation would fail instead of waiting its turn. Tools
/// built with `cargo` and componentize-js instantiate 3–4 modules, with
/// componentize-py 14 (and one more for each native extension bundled,
/// some twenty for numpy); each has one memory and two tables. Module
/// instances are only counted, not reserved: a high cap costs nothing.
pub const CORE_INSTANCES_PER_TOOL: u32 = 64;
/// See [`CORE_INSTANCES_PER_TOOL`].
pub const MEMORIES_PER_TOOL: u32 = 2;
/// See [`CORE_INSTANCES_PER_TOOL`].
pub const TABLES_PER_TOOL: u32 = 4;

/// The engine configuration Warden runs tools with: async, epoch
/// interruption, pooling allocator sized for `max_concurrent` live instances.
/// Public so benchmarks can compare against raw wasmtime on equal terms.
pub fn config(max_concurrent: u32) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(max_concurrent)
        .total_core_instances(max_concurrent.saturating_mul(CORE_INSTANCES_PER_TOOL))
        .total_memories(max_concurrent.saturating_mul(MEMORIES_PER_TOOL))
        .total_tables(max_concurrent.saturating_mul(TABLES_PER_TOOL))
        .total_stacks(max_concurrent)
        .max_core_instances_per_component(CORE_INSTANCES_PER_TOOL)
        .max_memories_per_component(MEMORIES_PER_TOOL)
        .max_tables_per_component(TABLES_PER_TOOL)
        .max_memories_per_module(MEMORIES_PER_TOOL)
        .max_tables_per_module(TABLES_PER_TOOL)
        .max_memory_size(crate::manifest::MAX_MEMORY as usize);
    // Reset what an invocation dirtied with memset (found with the
    // PAGEMAP_SCAN ioctl, Linux 6.7+) instead of madvise: no system call and
    // no page faults on the next use of the slot, for the first
    // KEEP_RESIDENT bytes of each memory; the rest is still given back.
    pool.linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(512 << 10)
        .async_stack_size(2 << 20)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

pub(crate) fn build(max_concurrent: u32) -> wasmtime::Result<Engine> {
    Engine::new(&config(max_concurrent))
}

/// Compiled components on disk, keyed by identity and engine configuration,
/// so a later process loads a tool without compiling it.
///
/// # Security
///
/// Loading a cached file runs its machine code unverified, so the cache
/// directory must be writable only by the user running Warden: it is created
/// with mode 0700, and a directory that others can write, or that another user
/// owns, is refused. Each entry opens with the identity it was compiled
/// from and the SHA-256 of its code ([`entry_header`]): an entry renamed to
/// another tool's name (by someone who can write the directory's parent and
/// swapped the directory after its check) is not loaded as that tool, and
/// one damaged on disk (a write cut short by a crash, a bad sector) is
/// compiled again rather than run. Entries are flushed to disk before they
/// take their name.
pub(crate) struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

impl CompileCache {
    pub(crate) fn open(dir: &Path, engine: &Engine) -> Result<CompileCache, String> {
        crate::dirs::create_private_dir(dir, "compile cache directory")?;
        let mut h = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        // Entries open with their identity and their code's digest (older
        // ones do not).
        "entry-header-digest".hash(&mut h);
        Ok(CompileCache {
            dir: dir.to_owned(),
            engine_key: format!("{:016x}", h.finish()),
        })
    }

    fn path(&self, identity: &Identity) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", identity.hex(), self.engine_key))
    }

    /// The cached component, if there is a usable one.
    pub(crate) fn load(&self, engine: &Engine, identity: &Identity) -> Option<Component> {
        let path = self.path(identity);
        let bytes = match crate::dirs::read_own(&path) {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring compile cache entry: {e}");
                return None;
            }
        };
        let Some(rest) = bytes.strip_prefix(entry_prefix(identity).as_bytes()) else {
            tracing::warn!(path = %path.display(), "ignoring compile cache entry: it was not compiled from this component");
            return None;
        };
        let digest = rest.get(..64).and_then(|d| std::str::from_utf8(d).ok());
        let compiled = rest.get(65..).unwrap_or_default();
        if digest != Some(code_digest(compiled).as_str()) || rest.get(64) != Some(&b'\n') {
            tracing::warn!(path = %path.display(), "ignoring damaged compile cache entry: its code does not match the digest it was written with; compiling again");
            return None;
        }
        match deserialize(engine, compiled) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unusable compile cache entry: {e}");
                None
            }
        }
    }

    /// Stores a compiled component; failures only cost a later recompile.
    pub(crate) fn store(&self, identity: &Identity, component: &Component) {
        let path = self.path(identity);
        let result = component
            .serialize()
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let mut tmp =
                    tempfile::NamedTempFile::new_in(&self.dir).map_err(|e| e.to_string())?;
                let header = entry_header(identity, &bytes);
                std::io::Write::write_all(&mut tmp, header.as_bytes())
                    .map_err(|e| e.to_string())?;
                std::io::Write::write_all(&mut tmp, &bytes).map_err(|e| e.to_string())?;
                // On disk before it has its name: a crash leaves no entry
                // rather than a named one with its code cut short.
                tmp.as_file().sync_all().map_err(|e| e.to_string())?;
                tmp.persist(&path).map_err(|e| e.to_string())?;
                Ok(())
            });
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), "cannot write compile cache entry: {e}");
        }
    }
}

/// What a cache entry opens with: the identity of the component it was
/// compiled from, and the SHA-256 of the code that follows. Only
/// [`CompileCache::store`] writes entries, each after the bytes it
/// compiled, so an entry of this user's is that component's.
fn entry_header(identity: &Identity, code: &[u8]) -> String {
    format!("{}{}\n", entry_prefix(identity), code_digest(code))
}

fn entry_prefix(identity: &Identity) -> String {
    format!("warden compiled {} ", identity.hex())
}

fn code_digest(code: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(code))
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize` trusts the bytes to be the output of
    // `Component::serialize` for this engine. Files in the cache are written
    // only by `CompileCache::store` under a content-addressed name, in a
    // directory that `dirs::create_private_dir` has checked no other user can write
    // (see the `# Security` note on `CompileCache`), and `dirs::read_own`
    // reads an entry only as a regular file this user owns and no one else
    // can write, not through a symlink (a file planted in a directory
    // swapped in after that check is another user's; one of ours renamed
    // there opens with another identity, `entry_header`), and whose code
    // hashes to the digest written with it (not damaged on disk). wasmtime itself checks
    // the header for the version and engine settings. The bytes are read into
    // memory first rather than mapped, so a cache file truncated while a
    // runtime uses it cannot fault the host (SIGBUS).
    unsafe { Component::deserialize(engine, bytes) }
}

pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("WARDEN_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("warden"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("warden"))
}

/// A short, friendlier reason for bytes that are not a component.
pub(crate) fn sniff(bytes: &[u8]) -> Option<&'static str> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Some(
            "this is a core WebAssembly module, not a component (expected a component built for wasm32-wasip2)",
        ),
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => None,
        _ => Some("not a WebAssembly component (missing the \\0asm header)"),
    }
}
