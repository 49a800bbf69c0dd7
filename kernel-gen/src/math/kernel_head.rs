//! The opening every kernel of a spec shares (ARCHITECTURE §3): a builder named for the
//! spec, header lines saying what it computes and for which spec, and its launch bounds.

use crate::dsl::KernelBuilder;
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
