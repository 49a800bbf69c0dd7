//! Structure of the generated decode kernel: the memory-access plan and the baked decays.
//! (Its numbers are proven against the f64 reference by running it in the PTX emulator.)

use kernel_gen::kernels::decode::value_slice;
use kernel_gen::{Arch, GammaSet, KernelSpec, emit_ptx, launch_geometry};
use retention_core::{Dtype, Gammas};

fn count(ptx: &str, needle: &str) -> usize {
    ptx.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn state_is_streamed_once_with_128_bit_accesses() {
    let wide = |k, v, w| KernelSpec {
        chunk: Some(w),
        ..KernelSpec::decode(k, v, GammaSet::Runtime, Dtype::Bf16, Arch::Sm80)
    };
    let mut specs: Vec<KernelSpec> = [(64, 64), (64, 128), (128, 256), (256, 512)]
        .into_iter()
        .map(|(k, v)| KernelSpec::decode(k, v, GammaSet::Runtime, Dtype::Bf16, Arch::Sm80))
        .collect();
    // The wider variants the decode plan picks for larger batches.
    specs.extend([wide(128, 256, 128), wide(256, 512, 512)]);
    for s in specs {
        let (k, v) = (s.k, s.v);
        let ptx = emit_ptx(&s).unwrap();
        // Steps x rows per step x row groups covers K exactly: every row once, for each of
        // the V / W value slices on grid z.
        let slice = value_slice(&s);
        assert_eq!(slice, s.chunk.unwrap_or(v.min(32.max(4096 / k))), "{s}");
        let geo = launch_geometry(&s, 1, 8).unwrap();
        assert_eq!(geo.grid, [1, 8, v / slice], "{s}");
        let row_groups = s.tile.threads * 4 / slice;
        let rows_per_step = s.tile.rows_per_step.min(k / row_groups);
        let steps = k / (row_groups * rows_per_step);
        assert!(
            ptx.contains(&format!(
                "// stream the state: {steps} steps of {rows_per_step} rows"
            )),
            "{ptx}"
        );
        // A thread whose rows fit 32 registers loads them all before the first update (no
        // loop); otherwise one v4 load and one v4 store per row of a loop step. v and
        // everything else is 16-bit here, so no other v4.f32 access exists.
        let held = steps * rows_per_step * 4 <= 32;
        let accesses = if held {
            steps * rows_per_step
        } else {
            rows_per_step
        };
        assert_eq!(count(&ptx, "ld.global.v4.f32"), accesses as usize, "{s}");
        assert_eq!(count(&ptx, "st.global.v4.f32"), accesses as usize, "{s}");
        // The early exit, and for a loop the back edge (its trip count is known).
        assert_eq!(count(&ptx, "bra $L"), if held { 1 } else { 2 }, "{s}");
        // q, k and v arrive as bf16 and are widened before any arithmetic.
        assert!(ptx.contains("ld.global.v4.b16") && ptx.contains("cvt.f32.bf16"));
        assert!(ptx.contains("cvt.rn.bf16.f32") && ptx.contains("st.global.b16"));
        assert!(ptx.contains(&format!(".shared .align 16 .b8 s_q[{}];", k * 4)));
        assert!(ptx.contains(&format!(
            ".shared .align 16 .b8 s_part[{}];",
            s.tile.threads * 16
        )));
        assert!(ptx.contains(&format!(".shared .align 16 .b8 s_v[{}];", slice * 4)));
        // Split kernels read their slice index; an unsplit one stays grid (N, H, 1).
        assert_eq!(ptx.contains("%ctaid.z"), slice < v, "{s}");
    }
}

#[test]
fn named_gamma_sets_bake_exact_log2_gamma_immediates() {
    let s = KernelSpec::decode(
        128,
        128,
        GammaSet::Retnet { heads: 32 },
        Dtype::F16,
        Arch::Sm90,
    );
    let ptx = emit_ptx(&s).unwrap();
    let g = Gammas::retnet(32).unwrap();
    for h in 0..32 {
        let bits = (g.log2(h) as f32).to_bits();
        assert_eq!(count(&ptx, &format!("0f{bits:08X}")), 1, "head {h}");
        // log2 γ of the slowest head is tiny but not zero, unlike γ rounded to f32 (= 1.0).
        assert_ne!(bits, 0);
    }
    assert_eq!((g.get(31) as f32).to_bits(), 1.0f32.to_bits());
    // No decay ever passes through a 16-bit register (PITFALLS #5): the only 16-bit values
    // are q, k, v loads and the o store.
    assert_eq!(count(&ptx, "mov.b16"), 0);
    assert!(!ptx.contains("p_log2_gamma"));
    assert!(
        ptx.contains("mad.lo.u32 %r4, %r0, 32, %r1;"),
        "H = 32 is an immediate"
    );
}

#[test]
fn runtime_gamma_reads_log2_gamma_and_heads() {
    let s = KernelSpec::decode(64, 128, GammaSet::Runtime, Dtype::F32, Arch::Sm80);
    let ptx = emit_ptx(&s).unwrap();
    assert!(ptx.contains("ld.param.u32 %r4, [p_heads];"), "{ptx}");
    assert!(
        ptx.lines()
            .any(|l| l.contains("ld.param.u64") && l.contains("[p_log2_gamma];")),
        "{ptx}"
    );
    assert!(ptx.contains("mad.lo.u32 %r5, %r0, %r4, %r1;"), "{ptx}");
    // f32 v is loaded with one v4 access too (staged in shared memory): the thread's 4
    // state rows (16 row groups over K = 64, all held at once) + 1.
    assert_eq!(count(&ptx, "ld.global.v4.f32"), 4 + 1);
}
