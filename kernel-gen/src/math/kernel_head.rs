//! The opening every kernel of a spec shares (ARCHITECTURE §3): a builder named for the
//! spec, header lines saying what it computes and for which spec, and its launch bounds;
//! for the chunk and parallel families also the parameters and the dynamic shared window.

use crate::GenResult;
use crate::dsl::{KernelBuilder, SharedRef};
use crate::spec::KernelSpec;

/// A builder for `spec` with the headers `"{title}: {slug}"`, `"spec: {canonical}"` and
/// `formula`, at most `threads` threads per CTA and, with `one_cta`, a register budget for one
/// CTA per SM (`.minnctapersm 1`: shared memory already limits the residency, so ptxas may
/// use registers rather than spill).
pub fn start_kernel(
    spec: &KernelSpec,
    title: &str,
    formula: &str,
    (threads, one_cta): (u32, bool),
) -> KernelBuilder {
    let mut kb = KernelBuilder::new(spec.entry(), spec.arch);
    kb.header(format!("{title}: {}", spec.slug()));
    kb.header(format!("spec: {}", spec.canonical()));
    kb.header(formula);
    kb.max_threads(threads);
    if one_cta {
        kb.min_ctas_per_sm(1);
    }
    kb
}

/// A kernel of a spec opened up to its first instruction ([`open_kernel`]).
pub struct Opened<P> {
    /// The builder.
    pub kb: KernelBuilder,
    /// The parameters, declared in launch order.
    pub params: P,
    /// The dynamic shared window.
    pub smem: SharedRef,
    /// log2 γ_h of a named gamma set (baked in as immediates); `None` for runtime γ.
    pub log2_gammas: Option<Vec<f32>>,
}

/// Open a kernel of `spec` as the chunk and parallel families do: [`start_kernel`] with
/// `head`'s title, formula and threads (one CTA per SM), the parameters `declare` makes
/// (told whether γ is a runtime parameter), then the dynamic shared window `smem` of
/// `window`'s bytes, alignment and comment.
///
/// # Errors
/// [`crate::GenError::UnsupportedSpec`] for a bad gamma set, before anything is emitted.
pub fn open_kernel<P>(
    spec: &KernelSpec,
    (title, formula, threads): (&str, &str, u32),
    (bytes, align, doc): (u32, u32, &str),
    declare: impl FnOnce(&mut KernelBuilder, bool) -> P,
) -> GenResult<Opened<P>> {
    let log2_gammas = spec.gammas.log2_gammas()?;
    let mut kb = start_kernel(spec, title, formula, (threads, true));
    let params = declare(&mut kb, log2_gammas.is_none());
    let smem = kb.dynamic_shared("smem", bytes, align, doc);
    Ok(Opened {
        kb,
        params,
        smem,
        log2_gammas,
    })
}
