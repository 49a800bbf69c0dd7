//! Runs a decoded kernel over a grid: blocks in parallel (rayon), each block's warps in
//! lockstep (see `warp.rs` for the reconvergence scheme and `block.rs` for barriers).

mod alu;
mod block;
mod collective;
pub(crate) mod global;
mod memops;
mod scalar;
mod shared;
mod warp;

use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::decode::Kernel;
use crate::error::EmuError;
use crate::report::Counters;
use global::GlobalMemory;

/// Everything blocks share during one launch.
pub(crate) struct Launched<'a> {
    pub kernel: &'a Kernel,
    pub params: &'a [u8],
    pub global: GlobalMemory,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u64,
    pub step_limit: u64,
}

/// Runs every block; returns the summed counters or the error of the lowest failing block.
pub(crate) fn run_grid(l: &Launched) -> Result<Counters, EmuError> {
    let [gx, gy, gz] = l.grid;
    let nblocks = gx as u64 * gy as u64 * gz as u64;
    let abort = AtomicBool::new(false);
    let results: Vec<Option<Result<Counters, EmuError>>> = (0..nblocks)
        .into_par_iter()
        .map(|i| {
            if abort.load(Ordering::Relaxed) {
                return None;
            }
            let ctaid = [
                (i % gx as u64) as u32,
                ((i / gx as u64) % gy as u64) as u32,
                (i / (gx as u64 * gy as u64)) as u32,
            ];
            let mut b = block::Block::new(l, ctaid);
            let r = b.run().map(|()| {
                let mut c = b.counters;
                c.shared_uninit_reads = b.shared.uninit_reads;
                c.slowest_warp_waits = b.warps.iter().map(|w| w.waits).max().unwrap_or(0);
                c
            });
            if r.is_err() {
                abort.store(true, Ordering::Relaxed);
            }
            Some(r)
        })
        .collect();
    let mut total = Counters::default();
    for r in results.into_iter().flatten() {
        total.merge(&r?);
    }
    Ok(total)
}
