//! `retention run --device emulated` computes the same file through the runtime on the PTX
//! emulator (the catalog's decode kernel), within the dtype tolerances of the exact cpu run.

mod common;

use common::{f32_values, random, run_ok, workspace, write_input};
use retention_core::{Dtype, Gammas, SplitMix64};
use retention_kernels::reference::{self, RetentionParams, chunkwise};

#[test]
fn emulated_device_matches_the_exact_cpu_run() {
    let (b, t, h, dk, dv) = (1, 5, 2, 64, 64);
    for dtype in [Dtype::F32, Dtype::Bf16] {
        let mut rng = SplitMix64::new(5 + dtype as u64);
        let q = random("q", dtype, &[b, t, h, dk], &mut rng);
        let k = random("k", dtype, &[b, t, h, dk], &mut rng);
        let v = random("v", dtype, &[b, t, h, dv], &mut rng);
        let h0 = random("h0", Dtype::F32, &[b, h, dk, dv], &mut rng);
        let (_dir, input, out) = workspace();
        write_input(
            &input,
            &[
                q.tensor.clone(),
                k.tensor.clone(),
                v.tensor.clone(),
                h0.tensor.clone(),
            ],
        );
        let params = RetentionParams::new(Gammas::retnet(h).unwrap(), None);
        let (o, ht) = chunkwise(
            &q.values,
            &k.values,
            &v.values,
            &params,
            2,
            Some(&h0.values),
        )
        .unwrap();
        for form in ["recurrent", "chunkwise"] {
            let got = run_ok(
                &input,
                &out,
                &["--form", form, "--chunk", "2", "--device", "emulated"],
            );
            let got_o = common::tensor_values(&got["o"], dtype);
            let got_ht = f32_values(&got["ht"]);
            let (err_o, tol) = match dtype {
                Dtype::F32 => (reference::max_rel_diff(got_o.data(), o.data()), 1e-5),
                _ => (reference::rel_rmse(got_o.data(), o.data()), 5e-3),
            };
            assert!(err_o <= tol, "{dtype} {form} o: {err_o:e}");
            let err_ht = reference::max_rel_diff(got_ht.data(), ht.data());
            assert!(err_ht <= 1e-5, "{dtype} {form} ht: {err_ht:e}");
        }
    }
}
