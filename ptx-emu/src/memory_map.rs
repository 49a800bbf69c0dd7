//! The synthetic 64-bit address map of an emulated launch.
//!
//! Global buffers live from [`GLOBAL_BASE`] upwards with [`GUARD_BYTES`] of unmapped space
//! between them, so an overrun of one buffer never lands in the next. Generic addresses of
//! shared and local memory are the space-specific offset plus a window base, as `cvta`
//! computes them; anything else in generic space is global.

/// Address of the first global buffer.
pub const GLOBAL_BASE: u64 = 0x0000_1000_0000_0000;
/// Unmapped bytes between consecutive global buffers (and buffer alignment).
pub const GUARD_BYTES: u64 = 1 << 16;
/// Generic-address base of the block's shared window.
pub const SHARED_WINDOW: u64 = 0x0000_7e00_0000_0000;
/// Generic-address base of a thread's local window.
pub const LOCAL_WINDOW: u64 = 0x0000_7f00_0000_0000;
/// Size of each window.
pub const WINDOW_BYTES: u64 = 1 << 32;
