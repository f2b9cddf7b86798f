//! The committed seed corpora and the mutations applied to them.
//!
//! `tests/fuzz/corpus/<target>/*` are real inputs (manifests, grants,
//! trails, MCP lines). A target draws a seed and applies a few byte-level
//! edits: bit flips, inserted bytes or dictionary tokens, deletions,
//! duplications and splices from another seed, the mutations a coverage
//! fuzzer starts from.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use std::path::PathBuf;
use std::sync::Arc;

/// The seed files of `target`, sorted by name (at least one).
pub fn seeds(target: &str) -> Arc<Vec<Vec<u8>>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    Arc::new(seeds)
}

/// One edit of a seed; positions are fractions of the current length.
#[derive(Debug, Clone)]
pub enum Edit {
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Token(Index, Index),
    Delete(Index, usize),
    Duplicate(Index, usize),
    Splice(Index, Index, Index, usize),
}

/// One edit.
pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        1 => (any::<Index>(), vec(any::<u8>(), 1..8)).prop_map(|(at, b)| Edit::Insert(at, b)),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(at, t)| Edit::Token(at, t)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(at, n)| Edit::Delete(at, n)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(at, n)| Edit::Duplicate(at, n)),
        1 => (any::<Index>(), any::<Index>(), any::<Index>(), 1usize..128)
            .prop_map(|(at, s, from, n)| Edit::Splice(at, s, from, n)),
    ]
}

/// Applies `edits` to `seed`; `dict` holds the tokens of the input's
/// language, `seeds` the splice sources.
pub fn apply(seed: &[u8], edits: &[Edit], dict: &[&str], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seed.to_vec();
    let at = |i: &Index, len: usize| i.index(len + 1);
    for e in edits {
        match e {
            Edit::Flip(i, bit) if !b.is_empty() => {
                let p = i.index(b.len());
                b[p] ^= 1 << bit;
            }
            Edit::Flip(..) => {}
            Edit::Insert(i, bytes) => {
                let p = at(i, b.len());
                b.splice(p..p, bytes.iter().copied());
            }
            Edit::Token(i, t) => {
                let p = at(i, b.len());
                let tok = dict[t.index(dict.len())].as_bytes();
                b.splice(p..p, tok.iter().copied());
            }
            Edit::Delete(i, n) => {
                let p = at(i, b.len());
                let end = (p + n).min(b.len());
                b.drain(p..end);
            }
            Edit::Duplicate(i, n) => {
                let p = at(i, b.len());
                let end = (p + n).min(b.len());
                let copy = b[p..end].to_vec();
                b.splice(end..end, copy);
            }
            Edit::Splice(i, s, from, n) => {
                let src = &seeds[s.index(seeds.len())];
                let f = at(from, src.len()).min(src.len());
                let end = (f + n).min(src.len());
                let p = at(i, b.len());
                b.splice(p..p, src[f..end].iter().copied());
            }
        }
    }
    b
}

/// A seed with 1 to 8 edits, as `(seed index, edits)` so the shrunk input
/// names its seed.
pub fn mutations(seeds: &[Vec<u8>]) -> impl Strategy<Value = (usize, Vec<Edit>)> + use<> {
    (0..seeds.len(), vec(edit(), 1..8))
}

/// A seed with 1 to 8 edits, as bytes.
pub fn mutated(
    seeds: Arc<Vec<Vec<u8>>>,
    dict: &'static [&'static str],
) -> impl Strategy<Value = Vec<u8>> {
    mutations(&seeds).prop_map(move |(i, edits)| apply(&seeds[i], &edits, dict, &seeds))
}

/// Text built from the dictionary's tokens and random characters: deeper
/// into a parser than random bytes get.
pub fn tokens(dict: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => proptest::sample::select(dict).prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
        1 => "[a-z0-9_.-]{1,12}",
    ];
    vec(piece, 0..max).prop_map(|v| v.concat())
}

/// Random bytes, mostly short.
pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}
