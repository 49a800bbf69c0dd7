//! Retention math on the GPU, one implementation each, written in the building blocks and
//! shared by the kernel families: the chunk tiling every chunk kernel follows
//! ([`chunk_tiling`]), the chunk kernels' parameter table ([`chunk_params`]), the FMA
//! chunk kernels' f32 staging ([`fma_chunk`]), the causal decay mask of the scores
//! ([`scores`]), the decay band of a tile pair of the parallel form ([`decay_band`]) and
//! the parallel form's tile walks ([`tile_walk`]), the state update ([`state_update`]) and
//! the two-phase segment fold ([`segment_fold`]);
//! every layout of a dynamic shared window adds up its offsets in [`shared_window`].
//! Every kernel opens through [`kernel_head`]. See ARCHITECTURE.md for the layers.

pub mod chunk_params;
pub mod chunk_tiling;
pub mod decay_band;
pub mod fma_chunk;
pub mod kernel_head;
pub mod scores;
pub mod segment_fold;
pub mod shared_window;
pub mod state_update;
pub mod tile_walk;
