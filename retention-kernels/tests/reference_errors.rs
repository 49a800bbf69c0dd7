//! Every `RetentionError` variant reachable from the reference's public input is produced
//! here (device-side variants — out of memory, no device, kernel load — belong to the
//! runtime's tests).

mod common;

use common::{qkv, state};
use retention_core::{CuSeqlens, Dtype, Gammas, HostTensor, RetentionError};
use retention_kernels::reference::{
    RetentionParams, chunkwise, chunkwise_varlen, decode_step, msr_epilogue, parallel, recurrent,
};

fn params(h: usize) -> RetentionParams {
    RetentionParams::new(Gammas::retnet(h).unwrap(), None)
}

#[test]
fn shape_mismatches_name_the_tensor_and_axes() {
    let (q, k, v) = qkv(1, (2, 5, 3, 4, 6));
    let p = params(3);
    // k with H and K swapped ([B,T,K,H] confusion, PITFALLS #7).
    let k_bad = HostTensor::new(vec![2, 5, 4, 3], k.data().to_vec()).unwrap();
    let err = parallel(&q, &k_bad, &v, &p).unwrap_err();
    match &err {
        RetentionError::ShapeMismatch {
            tensor,
            expected,
            got,
        } => {
            assert_eq!(tensor, "k");
            assert!(expected.contains("H=3") && got.contains("H=4"), "{err}");
        }
        other => panic!("{other:?}"),
    }
    // [B,H,T,D] given instead of [B,T,H,D]: v's T disagrees with q's.
    let v_bad = HostTensor::new(vec![2, 3, 5, 6], v.data().to_vec()).unwrap();
    assert!(matches!(
        recurrent(&q, &k, &v_bad, &p, None),
        Err(RetentionError::ShapeMismatch { ref tensor, .. }) if tensor == "v"
    ));
    // Wrong rank.
    let q3 = HostTensor::new(vec![10, 3, 4], q.data().to_vec()).unwrap();
    assert!(matches!(
        parallel(&q3, &k, &v, &p),
        Err(RetentionError::ShapeMismatch { ref tensor, .. }) if tensor == "q"
    ));
    // h0 for the wrong number of rows.
    let h0 = state(1, 1, 3, 4, 6);
    assert!(matches!(
        chunkwise(&q, &k, &v, &p, 2, Some(&h0)),
        Err(RetentionError::ShapeMismatch { ref tensor, .. }) if tensor == "h0"
    ));
}

#[test]
fn data_length_and_zero_dims() {
    assert!(matches!(
        HostTensor::<f64>::new(vec![2, 2], vec![0.0; 3]),
        Err(RetentionError::DataLength { .. })
    ));
    let q = HostTensor::<f64>::new(vec![1, 0, 2, 2], vec![]).unwrap();
    let v = HostTensor::<f64>::new(vec![1, 0, 2, 2], vec![]).unwrap();
    assert!(matches!(
        parallel(&q, &q, &v, &params(2)),
        Err(RetentionError::ZeroDim { axis: "T" })
    ));
}

#[test]
fn gamma_and_scale_errors() {
    let (q, k, v) = qkv(2, (1, 3, 2, 2, 2));
    assert!(matches!(
        Gammas::from_list(vec![0.5, 1.0]),
        Err(RetentionError::InvalidGamma { head: 1, .. })
    ));
    assert!(matches!(
        parallel(&q, &k, &v, &params(3)),
        Err(RetentionError::GammaCount { heads: 2, got: 3 })
    ));
    let p = RetentionParams::new(Gammas::retnet(2).unwrap(), Some(f64::INFINITY));
    assert!(matches!(
        parallel(&q, &k, &v, &p),
        Err(RetentionError::InvalidScale(_))
    ));
}

#[test]
fn chunk_and_cu_seqlens_errors() {
    let (q, k, v) = qkv(3, (1, 6, 2, 2, 2));
    let p = params(2);
    assert!(matches!(
        chunkwise(&q, &k, &v, &p, 0, None),
        Err(RetentionError::ZeroChunk)
    ));
    let cu = CuSeqlens::new(vec![0, 2, 6], 6).unwrap();
    assert!(matches!(
        chunkwise_varlen(&q, &k, &v, &cu, &p, 0, None),
        Err(RetentionError::ZeroChunk)
    ));
    assert!(matches!(
        CuSeqlens::new(vec![0, 4, 2, 6], 6),
        Err(RetentionError::InvalidCuSeqlens(_))
    ));
    // Boundaries valid for 5 tokens used on a 6-token batch.
    let cu5 = CuSeqlens::new(vec![0, 2, 5], 5).unwrap();
    assert!(matches!(
        chunkwise_varlen(&q, &k, &v, &cu5, &p, 2, None),
        Err(RetentionError::InvalidCuSeqlens(_))
    ));
    // A packed batch must have B = 1.
    let (q2, k2, v2) = qkv(3, (2, 3, 2, 2, 2));
    let cu3 = CuSeqlens::new(vec![0, 3], 3).unwrap();
    assert!(matches!(
        chunkwise_varlen(&q2, &k2, &v2, &cu3, &p, 2, None),
        Err(RetentionError::ShapeMismatch { .. })
    ));
}

#[test]
fn decode_slot_errors() {
    let (h, k, v) = (2, 2, 3);
    let q = HostTensor::new(vec![2, h, k], vec![0.1; 2 * h * k]).unwrap();
    let vv = HostTensor::new(vec![2, h, v], vec![0.1; 2 * h * v]).unwrap();
    let mut pool = state(1, 4, h, k, v);
    let p = params(h);
    assert!(matches!(
        decode_step(&q, &q, &vv, &mut pool, &[1, 1], &p),
        Err(RetentionError::Slot(_))
    ));
    assert!(matches!(
        decode_step(&q, &q, &vv, &mut pool, &[0, 4], &p),
        Err(RetentionError::Slot(_))
    ));
    assert!(matches!(
        decode_step(&q, &q, &vv, &mut pool, &[0], &p),
        Err(RetentionError::ShapeMismatch { .. })
    ));
}

#[test]
fn unsupported_inputs() {
    assert!(matches!(
        "fp8".parse::<Dtype>(),
        Err(RetentionError::Unsupported { .. })
    ));
    let o = HostTensor::new(vec![1, 1, 1, 2], vec![1.0, 2.0]).unwrap();
    assert!(matches!(
        msr_epilogue(&o, &o, -1.0),
        Err(RetentionError::Unsupported { .. })
    ));
}
