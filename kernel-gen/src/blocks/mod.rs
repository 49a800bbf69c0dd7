//! Building blocks: the pieces every kernel family is written in, with no spec knowledge
//! beyond the dtype — global tensor views and conversions ([`global`]), staging into shared
//! memory ([`staging`], f32 tiles of the FMA paths: [`tile_f32`]), decays from log2 γ ([`decay`]) and FMA tile products ([`fma`]).
//! (Tensor-core tiles and warp-level products live in the DSL's [`crate::dsl::tiles`].)
//! They import the DSL only; see ARCHITECTURE.md for the layers.

pub mod decay;
pub mod fma;
pub mod global;
pub mod staging;
pub mod tile_f32;
