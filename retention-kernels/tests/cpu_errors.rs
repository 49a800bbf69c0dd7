//! Bad input gets the same typed error from the CPU kernels as from the f64 reference —
//! never a panic.

use retention_core::{CuSeqlens, Gammas, HostTensor, RetentionError};
use retention_kernels::cpu;
use retention_kernels::reference::{self, RetentionParams};

fn t32(shape: &[usize]) -> HostTensor<f32> {
    HostTensor::zeros(shape.to_vec())
}

/// (what, q, k, v, params) of one bad problem.
type Case = (
    &'static str,
    HostTensor<f32>,
    HostTensor<f32>,
    HostTensor<f32>,
    RetentionParams,
);

fn params(h: usize) -> RetentionParams {
    RetentionParams::new(Gammas::retnet(h).unwrap(), None)
}

/// Run the CPU op and the reference on the same (widened) inputs; both must fail alike.
fn same_error<A, B>(
    cpu_result: Result<A, RetentionError>,
    ref_result: Result<B, RetentionError>,
) -> RetentionError {
    let (Err(a), Err(b)) = (cpu_result, ref_result) else {
        panic!("expected both the CPU kernel and the reference to fail");
    };
    assert_eq!(a, b, "CPU and reference errors differ");
    a
}

#[test]
fn forward_forms_reject_what_the_reference_rejects() {
    let good = (t32(&[1, 4, 2, 3]), t32(&[1, 4, 2, 3]), t32(&[1, 4, 2, 5]));
    let cases: Vec<Case> = vec![
        (
            "q rank 3",
            t32(&[4, 2, 3]),
            good.1.clone(),
            good.2.clone(),
            params(2),
        ),
        (
            "k heads",
            good.0.clone(),
            t32(&[1, 4, 3, 3]),
            good.2.clone(),
            params(2),
        ),
        // [B, H, T, K] given for [B, T, H, K] (PITFALLS #7).
        (
            "v layout",
            good.0.clone(),
            good.1.clone(),
            t32(&[1, 2, 4, 5]),
            params(2),
        ),
        (
            "zero T",
            t32(&[1, 0, 2, 3]),
            t32(&[1, 0, 2, 3]),
            t32(&[1, 0, 2, 5]),
            params(2),
        ),
        (
            "gamma count",
            good.0.clone(),
            good.1.clone(),
            good.2.clone(),
            params(3),
        ),
        (
            "scale",
            good.0.clone(),
            good.1.clone(),
            good.2.clone(),
            RetentionParams::new(Gammas::retnet(2).unwrap(), Some(f64::INFINITY)),
        ),
    ];
    for (what, q, k, v, p) in cases {
        let (q6, k6, v6) = (q.to_f64(), k.to_f64(), v.to_f64());
        let e = same_error(
            cpu::chunkwise(&q, &k, &v, &p, 2, None),
            reference::chunkwise(&q6, &k6, &v6, &p, 2, None),
        );
        same_error(
            cpu::parallel(&q, &k, &v, &p),
            reference::parallel(&q6, &k6, &v6, &p),
        );
        assert!(!e.to_string().is_empty(), "{what}");
    }
    let (q, k, v) = good;
    let p = params(2);
    let (q6, k6, v6) = (q.to_f64(), k.to_f64(), v.to_f64());
    assert_eq!(
        same_error(
            cpu::chunkwise(&q, &k, &v, &p, 0, None),
            reference::chunkwise(&q6, &k6, &v6, &p, 0, None)
        ),
        RetentionError::ZeroChunk
    );
    let bad_h0 = t32(&[1, 2, 5, 3]);
    same_error(
        cpu::chunkwise(&q, &k, &v, &p, 2, Some(&bad_h0)),
        reference::chunkwise(&q6, &k6, &v6, &p, 2, Some(&bad_h0.to_f64())),
    );
}

#[test]
fn varlen_rejects_what_the_reference_rejects() {
    let (q, k, v) = (t32(&[1, 6, 2, 3]), t32(&[1, 6, 2, 3]), t32(&[1, 6, 2, 4]));
    let (q6, k6, v6) = (q.to_f64(), k.to_f64(), v.to_f64());
    let p = params(2);
    let cu = CuSeqlens::new(vec![0, 2, 6], 6).unwrap();
    let short = CuSeqlens::new(vec![0, 2, 5], 5).unwrap();
    assert!(matches!(
        same_error(
            cpu::chunkwise_varlen(&q, &k, &v, &short, &p, 2, None),
            reference::chunkwise_varlen(&q6, &k6, &v6, &short, &p, 2, None)
        ),
        RetentionError::InvalidCuSeqlens(_)
    ));
    let (qb, kb, vb) = (t32(&[2, 3, 2, 3]), t32(&[2, 3, 2, 3]), t32(&[2, 3, 2, 4]));
    let cu3 = CuSeqlens::new(vec![0, 3], 3).unwrap();
    same_error(
        cpu::chunkwise_varlen(&qb, &kb, &vb, &cu3, &p, 2, None),
        reference::chunkwise_varlen(&qb.to_f64(), &kb.to_f64(), &vb.to_f64(), &cu3, &p, 2, None),
    );
    let h0_wrong_n = t32(&[3, 2, 3, 4]);
    same_error(
        cpu::chunkwise_varlen(&q, &k, &v, &cu, &p, 2, Some(&h0_wrong_n)),
        reference::chunkwise_varlen(&q6, &k6, &v6, &cu, &p, 2, Some(&h0_wrong_n.to_f64())),
    );
    same_error(
        cpu::chunkwise_varlen(&q, &k, &v, &cu, &p, 0, None),
        reference::chunkwise_varlen(&q6, &k6, &v6, &cu, &p, 0, None),
    );
}

#[test]
fn decode_rejects_what_the_reference_rejects() {
    let (q, k, v) = (t32(&[2, 2, 3]), t32(&[2, 2, 3]), t32(&[2, 2, 4]));
    let (q6, k6, v6) = (q.to_f64(), k.to_f64(), v.to_f64());
    let p = params(2);
    let mut pool = t32(&[4, 2, 3, 4]);
    let mut pool6 = pool.to_f64();
    for (slots, kind) in [
        (&[0usize, 4][..], "outside"),
        (&[1, 1][..], "twice"),
        (&[0][..], "count"),
    ] {
        let e = same_error(
            cpu::decode_step(&q, &k, &v, &mut pool, slots, &p),
            reference::decode_step(&q6, &k6, &v6, &mut pool6, slots, &p),
        );
        match kind {
            "count" => assert!(matches!(e, RetentionError::ShapeMismatch { .. })),
            _ => assert!(matches!(e, RetentionError::Slot(_)), "{kind}: {e}"),
        }
    }
    let mut bad_pool = t32(&[4, 2, 4, 3]);
    let mut bad_pool6 = bad_pool.to_f64();
    same_error(
        cpu::decode_step(&q, &k, &v, &mut bad_pool, &[0, 1], &p),
        reference::decode_step(&q6, &k6, &v6, &mut bad_pool6, &[0, 1], &p),
    );
    let q4 = t32(&[2, 1, 2, 3]);
    same_error(
        cpu::decode_step(&q4, &k, &v, &mut pool, &[0, 1], &p),
        reference::decode_step(&q4.to_f64(), &k6, &v6, &mut pool6, &[0, 1], &p),
    );
    same_error(
        cpu::decode_step(&q, &k, &v, &mut pool, &[0, 1], &params(3)),
        reference::decode_step(&q6, &k6, &v6, &mut pool6, &[0, 1], &params(3)),
    );
    // A failed step leaves the pool untouched.
    assert!(pool.data().iter().all(|&x| x == 0.0));
}

#[test]
fn epilogue_rejects_what_the_reference_rejects() {
    let o = t32(&[1, 2, 3, 4]);
    for (g, eps) in [
        (t32(&[1, 2, 4, 3]), 0.0),
        (t32(&[1, 2, 3, 4]), -1.0),
        (t32(&[1, 2, 3, 4]), f64::NAN),
    ] {
        same_error(
            cpu::msr_epilogue(&o, &g, eps),
            reference::msr_epilogue(&o.to_f64(), &g.to_f64(), eps),
        );
    }
    let o3 = t32(&[2, 3, 4]);
    same_error(
        cpu::msr_epilogue(&o3, &o3, 0.0),
        reference::msr_epilogue(&o3.to_f64(), &o3.to_f64(), 0.0),
    );
}
