//! Building blocks: the pieces every kernel family is written in, with no spec knowledge
//! beyond the dtype — CTA, warp and lane coordinates ([`cta`]), global tensor views and conversions ([`global`]), staging into shared
//! memory ([`staging`]), decays from log2 γ ([`decay`]), FMA tile products ([`fma`]) and the FMA paths' f32 state
//! in shared memory ([`shared_state`]).
//! (Tensor-core tiles and warp-level products live in the DSL's [`crate::dsl::tiles`].)
//! They import the DSL only; see ARCHITECTURE.md for the layers.

pub mod cta;
pub mod decay;
pub mod fma;
pub mod fma_weighted;
pub mod global;
pub mod shared_state;
pub mod staging;
pub mod warp_sum;
