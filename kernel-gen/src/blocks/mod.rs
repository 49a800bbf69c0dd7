//! Building blocks: the pieces every kernel family is written in, with no spec knowledge
//! beyond the dtype — CTA, warp and lane coordinates ([`cta`]), global tensor views and
//! conversions ([`global`]), staging into shared memory ([`staging`], f32 tiles of the FMA
//! paths: [`tile_f32`]), decays from log2 γ ([`decay`]), FMA tile products ([`fma`]), the FMA
//! paths' f32 state in shared memory ([`shared_state`]) and warp-wide sums ([`warp_sum`]).
//! (Tensor-core tiles and warp-level products live in the DSL's [`crate::dsl::tiles`].)
//! They import the DSL only; see ARCHITECTURE.md for the layers.

pub mod cta;
pub mod decay;
pub mod fma;
pub mod fma_weighted;
pub mod global;
pub mod shared_state;
pub mod staging;
pub mod tile_f32;
pub mod warp_sum;
