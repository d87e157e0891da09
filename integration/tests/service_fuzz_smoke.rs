//! CI's smoke pass of the services' fuzz targets (`integration/fuzz`), in the
//! test build.
//!
//! The instrumented cargo-fuzz build of those targets compiles the three
//! services and all their dependencies again with coverage and sanitizer flags:
//! about 25 minutes on the CI machine, which CI's hour cannot spare. The
//! targets' bodies are plain functions (`integration/fuzz/src/*.rs`), so this
//! runs the very same bodies in the test build CI has already compiled: every
//! seed of the corpus that `scripts/fuzz` writes, then random mutations of the
//! seeds (bit flips, byte changes, insertions, deletions, splices) for a fixed
//! time per target. Without coverage feedback it is a smoke pass, not a
//! campaign; the campaigns run under libFuzzer with `scripts/fuzz`.
//!
//! Run by `scripts/fuzz --smoke`, which builds the corpora first and sets:
//! `SERVICE_FUZZ_CORPUS` (the corpus root), `SERVICE_FUZZ_SECONDS` (per
//! target) and `SERVICE_FUZZ_TARGETS` (space-separated; all by default). A
//! panicking input is written to `SERVICE_FUZZ_CORPUS/../artifacts/<target>/`
//! and fails the test with its path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod services_fuzz;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("witness_config", services_fuzz::witness_config::run),
    ("gateway_config", services_fuzz::gateway_config::run),
    ("signer_config", services_fuzz::signer_config::run),
    ("witness_grpc", services_fuzz::witness_grpc::run),
    ("signer_grpc", services_fuzz::signer_grpc::run),
];

/// xorshift64*: reproducible mutations from a printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Mutates `input` in place, one to four times, with `corpus` for splices.
fn mutate(input: &mut Vec<u8>, corpus: &[Vec<u8>], rng: &mut Rng) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(7) {
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = rng.next() as u8;
            }
            2 => {
                let at = rng.below(len + 1);
                input.insert(at, rng.next() as u8);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(16)).min(len);
                input.drain(at..end);
            }
            4 if len > 0 => {
                // A chunk repeated: lengths, varints and lines out of step.
                let at = rng.below(len);
                let end = (at + 1 + rng.below(32)).min(len);
                let chunk = input[at..end].to_vec();
                let to = rng.below(len + 1);
                input.splice(to..to, chunk);
            }
            5 => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let at = rng.below(len + 1);
                    input.truncate(at);
                    input.extend_from_slice(&other[from..]);
                }
            }
            _ => {
                // Interesting bytes: protobuf tags and varint edges, TOML syntax.
                const BYTES: &[u8] = b"\x00\x01\x7f\x80\xff\x08\x0a\x10\x12\x1a\"'=[]{}\n#.";
                let at = rng.below(len + 1);
                input.insert(at, BYTES[rng.below(BYTES.len())]);
            }
        }
        input.truncate(64 * 1024);
    }
}

fn seeds(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| {
            panic!(
                "no corpus at {} ({e}): run scripts/fuzz --smoke",
                dir.display()
            )
        })
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Runs `target` on `input`; on a panic, saves the input and fails.
fn run_one(name: &str, target: Target, input: &[u8], artifacts: &Path) {
    if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
        let dir = artifacts.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("smoke-crash-{:016x}", fnv(input)));
        std::fs::write(&path, input).unwrap();
        panic!(
            "{name} panicked on an input, saved to {} (reproduce with \
             `cargo +nightly fuzz run {name} {}` in integration/)",
            path.display(),
            path.display()
        );
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
#[ignore = "run by `scripts/fuzz --smoke`, which builds the seed corpora first"]
fn service_fuzz_targets_survive_their_seeds_and_random_mutations() {
    let corpus_root = PathBuf::from(
        std::env::var_os("SERVICE_FUZZ_CORPUS")
            .expect("SERVICE_FUZZ_CORPUS: run scripts/fuzz --smoke"),
    );
    let artifacts = corpus_root.parent().unwrap().join("artifacts");
    let seconds: u64 = std::env::var("SERVICE_FUZZ_SECONDS").map_or(5, |s| {
        s.parse().expect("SERVICE_FUZZ_SECONDS: whole seconds")
    });
    let selected = std::env::var("SERVICE_FUZZ_TARGETS").unwrap_or_default();
    let seed = std::env::var("SERVICE_FUZZ_SEED").map_or_else(
        |_| u64::from(std::process::id()) | 1,
        |s| s.parse().unwrap(),
    );
    println!("mutation seed {seed} (SERVICE_FUZZ_SEED reproduces the run)");
    // Panics are caught and reported with their input: the default hook's
    // message would only repeat it.
    std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
    let mut ran = 0;
    for &(name, target) in TARGETS {
        if !selected.is_empty() && !selected.split_whitespace().any(|s| s == name) {
            continue;
        }
        let corpus = seeds(&corpus_root.join(name));
        assert!(!corpus.is_empty(), "{name}: empty corpus");
        let started = Instant::now();
        for input in &corpus {
            run_one(name, target, input, &artifacts);
        }
        let mut executions = corpus.len() as u64;
        let mut rng = Rng(seed ^ fnv(name.as_bytes()) | 1);
        let deadline = started + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            let mut input = corpus[rng.below(corpus.len())].clone();
            mutate(&mut input, &corpus, &mut rng);
            run_one(name, target, &input, &artifacts);
            executions += 1;
        }
        println!(
            "{name:<18} {executions:>12} {:>8}  ok (test build, {} seeds + mutations)",
            started.elapsed().as_secs(),
            corpus.len()
        );
        ran += 1;
    }
    assert!(
        ran > 0,
        "no target matches SERVICE_FUZZ_TARGETS={selected:?}"
    );
}
