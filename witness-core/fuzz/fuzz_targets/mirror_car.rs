//! Mirror bundle CAR files (docs/mirror-bundle-v1.md §2), read as the verifier
//! reads them: whatever the bytes, reading ends with the blocks or a precise
//! error, never a panic, and never allocates past the section limit (a hostile
//! length is refused before allocating; libFuzzer's -rss_limit_mb and
//! -malloc_limit_mb catch any slip). Every block handed out hashes to its CID,
//! and a last block named by the root is parsed as an INDEX.

#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use witness_core::mirror::{MAX_BLOCK_SIZE, parse_index};
use witness_core::mirror_car::{block_cid, read_car};

/// Runs a future that never waits: reading from a byte slice is always ready.
fn run<T>(future: impl Future<Output = T>) -> T {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut context) {
            return value;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut blocks = 0usize;
    let mut last = None;
    let result = run(read_car(data, |cid, block| {
        assert!(block.len() <= MAX_BLOCK_SIZE);
        assert_eq!(block_cid(block).expect("any bytes have a CID"), *cid);
        blocks += 1;
        last = Some((*cid, block.to_vec()));
        Ok(())
    }));
    match result {
        Ok(root) => {
            // Each block takes at least its CID's bytes from the input.
            assert!(blocks * 36 <= data.len());
            // A bundle's last block is its INDEX, named by the root.
            if let Some((cid, block)) = last
                && cid == root
            {
                let _ = parse_index(&block);
            }
        }
        Err(error) => assert!(error.kind().starts_with("mirror_"), "{error}"),
    }
});
