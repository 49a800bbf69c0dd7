//! Every kind of bad input to `retention run` exits with code 2, prints one line on stderr
//! naming the problem, and leaves no output (or temporary) file behind.

mod common;

use std::path::Path;

use common::{Tensor, random, retention, serialize, workspace, write_input};
use retention_core::{Dtype, SplitMix64};
use safetensors::Dtype as StDtype;

const B: usize = 1;
const T: usize = 6;
const H: usize = 2;
const K: usize = 3;
const V: usize = 4;

/// A valid f32 problem: q, k, v (and an h0 to add where a case wants one).
fn valid() -> (Tensor, Tensor, Tensor, Tensor) {
    let mut rng = SplitMix64::new(1);
    (
        random("q", Dtype::F32, &[B, T, H, K], &mut rng).tensor,
        random("k", Dtype::F32, &[B, T, H, K], &mut rng).tensor,
        random("v", Dtype::F32, &[B, T, H, V], &mut rng).tensor,
        random("h0", Dtype::F32, &[B, H, K, V], &mut rng).tensor,
    )
}

fn f32_tensor(name: &str, shape: &[usize]) -> Tensor {
    random(name, Dtype::F32, shape, &mut SplitMix64::new(2)).tensor
}

fn cu(dtype: StDtype, bounds: &[i64], shape: &[usize]) -> Tensor {
    let bytes = match dtype {
        StDtype::I64 => bounds.iter().flat_map(|b| b.to_le_bytes()).collect(),
        StDtype::I32 => bounds
            .iter()
            .flat_map(|&b| (b as i32).to_le_bytes())
            .collect(),
        _ => bounds
            .iter()
            .flat_map(|&b| (b as f32).to_le_bytes())
            .collect(),
    };
    Tensor::new("cu_seqlens", dtype, shape, bytes)
}

/// Names of the entries of `dir`.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Run with `args`; insist on exit code 2, exactly one stderr line containing `needle`, and
/// that the directory holds exactly `expected_entries` afterwards.
fn assert_rejected(dir: &Path, args: &[&str], needle: &str, expected_entries: &[&str]) {
    let out = retention(args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}: stderr {stderr:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: not one line: {stderr:?}");
    assert!(
        stderr.contains(needle),
        "{args:?}: {stderr:?} does not mention {needle:?}"
    );
    assert!(out.stdout.is_empty(), "{args:?}: wrote to stdout");
    assert_eq!(
        entries(dir),
        expected_entries,
        "{args:?}: files left behind"
    );
}

/// Write `tensors` as the input, run `run --input … --output … <flags>`, expect rejection.
fn reject_file(tensors: &[Tensor], flags: &[&str], needle: &str) {
    let (dir, input, output) = workspace();
    write_input(&input, tensors);
    let mut args = vec![
        "run",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    assert_rejected(dir.path(), &args, needle, &["input.safetensors"]);
}

#[test]
fn missing_tensors_are_named() {
    let (q, k, v, _) = valid();
    let rec = ["--form", "recurrent"];
    reject_file(&[k.clone(), v.clone()], &rec, "missing tensor `q`");
    reject_file(&[q.clone(), v.clone()], &rec, "missing tensor `k`");
    reject_file(&[q, k], &rec, "missing tensor `v`");
}

#[test]
fn wrong_ranks_and_mismatched_dims_are_named() {
    let (q, k, v, h0) = valid();
    let rec = ["--form", "recurrent"];
    let q3 = f32_tensor("q", &[T, H, K]);
    reject_file(&[q3, k.clone(), v.clone()], &rec, "`q` must have rank 4");
    let v5 = f32_tensor("v", &[B, T, H, V, 1]);
    reject_file(&[q.clone(), k.clone(), v5], &rec, "`v` must have rank 4");
    let k_short = f32_tensor("k", &[B, T - 1, H, K]);
    reject_file(&[q.clone(), k_short, v.clone()], &rec, "T=5");
    let k_dim = f32_tensor("k", &[B, T, H, K + 1]);
    reject_file(&[q.clone(), k_dim, v.clone()], &rec, "`k`");
    let v_heads = f32_tensor("v", &[B, T, H + 1, V]);
    reject_file(&[q.clone(), k.clone(), v_heads], &rec, "`v`");
    let h0_bad = f32_tensor("h0", &[B, H, V, K]);
    reject_file(&[q.clone(), k.clone(), v.clone(), h0_bad], &rec, "`h0`");
    let h0_rank = f32_tensor("h0", &[H, K, V]);
    reject_file(&[q.clone(), k.clone(), v.clone(), h0_rank], &rec, "`h0`");
    // A zero-length axis is not a problem at all.
    let (q0, k0, v0) = (
        f32_tensor("q", &[B, 0, H, K]),
        f32_tensor("k", &[B, 0, H, K]),
        f32_tensor("v", &[B, 0, H, V]),
    );
    reject_file(&[q0, k0, v0], &rec, "dimension T");
    // The parallel form has no initial state.
    reject_file(&[q, k, v, h0], &["--form", "parallel"], "`h0`");
}

#[test]
fn bad_and_mixed_dtypes_are_named() {
    let (q, k, v, _) = valid();
    let rec = ["--form", "recurrent"];
    let widen = |t: &Tensor| {
        let bytes = t
            .bytes
            .chunks_exact(4)
            .flat_map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])).to_le_bytes())
            .collect();
        Tensor::new(&t.name, StDtype::F64, &t.shape, bytes)
    };
    reject_file(&[widen(&q), widen(&k), widen(&v)], &rec, "F64");
    let mut rng = SplitMix64::new(3);
    let k16 = random("k", Dtype::F16, &[B, T, H, K], &mut rng).tensor;
    reject_file(&[q.clone(), k16, v.clone()], &rec, "share one dtype");
    let v16 = random("v", Dtype::Bf16, &[B, T, H, V], &mut rng).tensor;
    reject_file(&[q.clone(), k.clone(), v16], &rec, "`v` has dtype BF16");
    let h0_16 = random("h0", Dtype::Bf16, &[B, H, K, V], &mut rng).tensor;
    reject_file(
        &[q.clone(), k.clone(), v.clone(), h0_16],
        &rec,
        "`h0` has dtype",
    );
    let cu_f = cu(StDtype::F32, &[0, 6], &[2]);
    reject_file(&[q, k, v, cu_f], &rec, "`cu_seqlens` has dtype F32");
}

#[test]
fn malformed_cu_seqlens_are_rejected() {
    let (q, k, v, _) = valid();
    let chunk = ["--form", "chunkwise", "--chunk", "2"];
    let base = [q.clone(), k.clone(), v.clone()];
    let with = |c: Tensor| {
        let mut t = base.to_vec();
        t.push(c);
        t
    };
    reject_file(
        &with(cu(StDtype::I64, &[0, 2, 5], &[3])),
        &chunk,
        "ends at 5",
    );
    reject_file(
        &with(cu(StDtype::I32, &[0, -1, 6], &[3])),
        &chunk,
        "negative",
    );
    reject_file(
        &with(cu(StDtype::I64, &[0, 4, 2, 6], &[4])),
        &chunk,
        "not monotone",
    );
    reject_file(
        &with(cu(StDtype::I64, &[0, 3, 3, 6], &[2, 2])),
        &chunk,
        "rank 1",
    );
    // Packed batches have B = 1, for every form.
    let mut rng = SplitMix64::new(4);
    let two_rows = [
        random("q", Dtype::F32, &[2, T, H, K], &mut rng).tensor,
        random("k", Dtype::F32, &[2, T, H, K], &mut rng).tensor,
        random("v", Dtype::F32, &[2, T, H, V], &mut rng).tensor,
        cu(StDtype::I64, &[0, 6], &[2]),
    ];
    reject_file(&two_rows, &chunk, "B=2");
    reject_file(&two_rows, &["--form", "parallel"], "B=2");
    // One state per sequence: h0 [N, H, K, V].
    let h0_rows = f32_tensor("h0", &[1, H, K, V]);
    let mut t = with(cu(StDtype::I64, &[0, 2, 6], &[3]));
    t.push(h0_rows);
    reject_file(&t, &chunk, "`h0`");
}

#[test]
fn bad_flags_are_rejected() {
    let (q, k, v, _) = valid();
    let t = [q, k, v];
    let rec = |extra: &[&'static str]| {
        let mut a = vec!["--form", "recurrent"];
        a.extend_from_slice(extra);
        a
    };
    reject_file(
        &t,
        &rec(&["--gammas", "0.9,1.5"]),
        "gamma for head 1 is 1.5",
    );
    reject_file(&t, &rec(&["--gammas", "0.9,0"]), "gamma for head 1 is 0");
    reject_file(
        &t,
        &rec(&["--gammas", "0.9,abc"]),
        "invalid --gammas entry 1 `abc`",
    );
    reject_file(
        &t,
        &rec(&["--gammas", "0.9,0.8,0.7"]),
        "3 gammas given for 2 heads",
    );
    reject_file(&t, &rec(&["--gammas", "0.9"]), "1 gammas given for 2 heads");
    reject_file(
        &t,
        &rec(&["--gammas", "0.9,0.8", "--head-offset", "1"]),
        "--head-offset",
    );
    reject_file(&t, &rec(&["--head-offset", "60"]), "gamma for head 60");
    reject_file(&t, &rec(&["--scale", "nan"]), "scale NaN");
    reject_file(&t, &rec(&["--scale", "inf"]), "scale inf");
    reject_file(&t, &["--form", "chunkwise", "--chunk", "0"], "chunk size");
    if retention_runtime::cuda::device_count() == 0 {
        reject_file(&t, &rec(&["--device", "cuda"]), "no such device");
    }
    // The emulated device generates decode kernels for any K <= 256 and V <= 512 (this
    // file's K = 3, V = 4 run), so it has no head-dim rejection to check here.
    // Parse errors from the argument parser are one line too.
    reject_file(&t, &["--form", "sideways"], "invalid value 'sideways'");
    reject_file(
        &t,
        &rec(&["--chunk", "abc"]),
        "invalid value 'abc' for '--chunk",
    );
    reject_file(&t, &rec(&["--chunk", "-3"]), "'-3'");
    reject_file(&t, &rec(&["--device", "tpu"]), "invalid value 'tpu'");
    reject_file(&t, &[], "--form");
}

#[test]
fn unreadable_and_corrupt_inputs_are_rejected() {
    let (q, k, v, _) = valid();
    let good = serialize(&[q, k, v]);
    let cases: [(&str, Vec<u8>); 4] = [
        ("truncated", good[..good.len() - 7].to_vec()),
        ("header only", good[..8].to_vec()),
        ("empty", Vec::new()),
        ("garbage", b"this is not a safetensors file at all".to_vec()),
    ];
    for (what, bytes) in cases {
        let (dir, input, output) = workspace();
        std::fs::write(&input, bytes).unwrap();
        let args = [
            "run",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--form",
            "recurrent",
        ];
        eprintln!("case: {what}");
        assert_rejected(
            dir.path(),
            &args,
            "not a valid safetensors file",
            &["input.safetensors"],
        );
    }
    let (dir, input, output) = workspace();
    let args = [
        "run",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--form",
        "recurrent",
    ];
    assert_rejected(dir.path(), &args, "cannot read input", &[]);
}

#[test]
fn unwritable_outputs_leave_nothing_behind() {
    let (q, k, v, _) = valid();
    let (dir, input, _) = workspace();
    write_input(&input, &[q, k, v]);
    let inp = input.to_str().unwrap();

    let missing_dir = dir.path().join("no/such/dir/out.safetensors");
    let args = [
        "run",
        "--input",
        inp,
        "--output",
        missing_dir.to_str().unwrap(),
        "--form",
        "parallel",
    ];
    assert_rejected(
        dir.path(),
        &args,
        "cannot write output",
        &["input.safetensors"],
    );

    // The output path is an existing directory: the rename fails and the temporary goes.
    let is_dir = dir.path().join("taken");
    std::fs::create_dir(&is_dir).unwrap();
    let args = [
        "run",
        "--input",
        inp,
        "--output",
        is_dir.to_str().unwrap(),
        "--form",
        "parallel",
    ];
    assert_rejected(
        dir.path(),
        &args,
        "cannot write output",
        &["input.safetensors", "taken"],
    );
    assert!(entries(&is_dir).is_empty());
}

#[test]
fn a_failed_run_leaves_an_existing_output_untouched() {
    let (q, k, v, _) = valid();
    let (dir, input, output) = workspace();
    write_input(&input, &[q, k, v]);
    std::fs::write(&output, b"previous result").unwrap();
    let args = [
        "run",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--form",
        "recurrent",
        "--gammas",
        "2.0,0.5",
    ];
    assert_rejected(
        dir.path(),
        &args,
        "gamma for head 0 is 2",
        &["input.safetensors", "out.safetensors"],
    );
    assert_eq!(std::fs::read(&output).unwrap(), b"previous result");
}
