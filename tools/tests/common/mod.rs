//! Helpers shared by the `retention run` tests: building safetensors inputs, running the
//! binary, reading its output, and an independent oracle for rounding f64 to the output dtype.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use half::{bf16, f16};
use retention_core::{Dtype, HostTensor, SplitMix64};
use safetensors::{Dtype as StDtype, SafeTensors, tensor::TensorView};

/// One tensor of a safetensors file.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    pub dtype: StDtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl Tensor {
    pub fn new(name: &str, dtype: StDtype, shape: &[usize], bytes: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            bytes,
        }
    }
}

pub fn st_dtype(dtype: Dtype) -> StDtype {
    match dtype {
        Dtype::F32 => StDtype::F32,
        Dtype::F16 => StDtype::F16,
        Dtype::Bf16 => StDtype::BF16,
    }
}

/// A float tensor stored in `dtype`: its bytes and, exactly, the values the file holds.
pub struct Stored {
    pub tensor: Tensor,
    pub values: HostTensor<f64>,
}

/// Store `values` in `dtype` (how they round does not matter: the stored values are the input).
pub fn store(name: &str, dtype: Dtype, shape: &[usize], values: &[f64]) -> Stored {
    let (bytes, exact): (Vec<u8>, Vec<f64>) = match dtype {
        Dtype::F32 => {
            let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
            (
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                v.iter().map(|&x| f64::from(x)).collect(),
            )
        }
        Dtype::F16 => {
            let v: Vec<f16> = values.iter().map(|&x| f16::from_f64(x)).collect();
            (
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                v.iter().map(|x| x.to_f64()).collect(),
            )
        }
        Dtype::Bf16 => {
            let v: Vec<bf16> = values.iter().map(|&x| bf16::from_f64(x)).collect();
            (
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                v.iter().map(|x| x.to_f64()).collect(),
            )
        }
    };
    Stored {
        tensor: Tensor::new(name, st_dtype(dtype), shape, bytes),
        values: HostTensor::new(shape.to_vec(), exact).unwrap(),
    }
}

/// Random values in [-1, 1) stored in `dtype`.
pub fn random(name: &str, dtype: Dtype, shape: &[usize], rng: &mut SplitMix64) -> Stored {
    let n = shape.iter().product();
    store(name, dtype, shape, &rng.vec(n))
}

/// Serialize tensors to safetensors bytes.
pub fn serialize(tensors: &[Tensor]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// Write tensors as a safetensors file.
pub fn write_input(path: &Path, tensors: &[Tensor]) {
    std::fs::write(path, serialize(tensors)).unwrap();
}

/// Every tensor of a safetensors file.
pub fn read_output(path: &Path) -> HashMap<String, Tensor> {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let t = Tensor::new(&name, view.dtype(), view.shape(), view.data().to_vec());
            (name, t)
        })
        .collect()
}

/// Run the `retention` binary with `args`.
pub fn retention(args: &[&str]) -> Output {
    assert_cmd::cargo::cargo_bin_cmd!("retention")
        .args(args)
        .output()
        .unwrap()
}

/// Run `retention run --input IN --output OUT <extra…>` and insist it succeeds.
pub fn run_ok(input: &Path, output: &Path, extra: &[&str]) -> HashMap<String, Tensor> {
    let (i, o) = (input.to_str().unwrap(), output.to_str().unwrap());
    let mut args = vec!["run", "--input", i, "--output", o];
    args.extend_from_slice(extra);
    let out = retention(&args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_output(output)
}

/// Nearest value of a 16-bit format (ties to even), decided independently of the tool: find
/// the two patterns bracketing |x| by bisection and compare |x| with their midpoint, which is
/// exact in f64. `overflow_edge` is 2^(emax+1), the value just past the largest finite.
fn nearest_16(x: f64, decode: impl Fn(u16) -> f64, inf: u16, overflow_edge: f64) -> u16 {
    assert!(x.is_finite());
    let sign = if x.is_sign_negative() { 0x8000 } else { 0 };
    let a = x.abs();
    let (mut lo, mut hi) = (0u16, inf);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if decode(mid) <= a {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let lo_v = decode(lo);
    if a == lo_v {
        return sign | lo;
    }
    let hi_v = if hi == inf { overflow_edge } else { decode(hi) };
    let midpoint = (lo_v + hi_v) / 2.0;
    let p = if a < midpoint || (a == midpoint && lo % 2 == 0) {
        lo
    } else {
        hi
    };
    sign | p
}

/// Little-endian bytes of `values` rounded once, to nearest even, to `dtype`.
pub fn oracle_bytes(dtype: Dtype, values: &[f64]) -> Vec<u8> {
    match dtype {
        // IEEE round-to-nearest-even, as Rust's `as` guarantees.
        Dtype::F32 => values
            .iter()
            .flat_map(|&x| (x as f32).to_le_bytes())
            .collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|&x| {
                nearest_16(x, |p| f16::from_bits(p).to_f64(), 0x7C00, 65536.0).to_le_bytes()
            })
            .collect(),
        Dtype::Bf16 => values
            .iter()
            .flat_map(|&x| {
                nearest_16(x, |p| bf16::from_bits(p).to_f64(), 0x7F80, 2f64.powi(128)).to_le_bytes()
            })
            .collect(),
    }
}

/// Assert `got` is exactly `expected` rounded to `dtype`, naming the first differing element.
pub fn assert_exact(got: &Tensor, dtype: Dtype, expected: &HostTensor<f64>, what: &str) {
    assert_eq!(got.dtype, st_dtype(dtype), "{what}: dtype");
    assert_eq!(got.shape, expected.shape(), "{what}: shape");
    let want = oracle_bytes(dtype, expected.data());
    let size = dtype.size_bytes();
    if let Some(i) = (0..expected.len())
        .find(|&i| got.bytes[i * size..(i + 1) * size] != want[i * size..(i + 1) * size])
    {
        panic!(
            "{what}: element {i} differs: got bytes {:?}, want {:?} (exact {})",
            &got.bytes[i * size..(i + 1) * size],
            &want[i * size..(i + 1) * size],
            expected.data()[i]
        );
    }
    assert_eq!(got.bytes.len(), want.len(), "{what}: byte length");
}

/// Paths `input.safetensors` and `out.safetensors` in a fresh temporary directory.
pub fn workspace() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.safetensors");
    let output = dir.path().join("out.safetensors");
    (dir, input, output)
}

/// Heads `heads` of a `[A, B, H, D]` tensor (token-major inputs, or `[B, H, K, V]` states
/// with the head on axis 1 when `head_axis` is 1).
pub fn slice_heads(
    t: &HostTensor<f64>,
    head_axis: usize,
    heads: std::ops::Range<usize>,
) -> HostTensor<f64> {
    let shape = t.shape();
    let outer: usize = shape[..head_axis].iter().product();
    let h = shape[head_axis];
    let inner: usize = shape[head_axis + 1..].iter().product();
    let mut data = Vec::new();
    for o in 0..outer {
        let base = o * h * inner;
        data.extend_from_slice(&t.data()[base + heads.start * inner..base + heads.end * inner]);
    }
    let mut new_shape = shape.to_vec();
    new_shape[head_axis] = heads.len();
    HostTensor::new(new_shape, data).unwrap()
}

/// The `__metadata__` of a safetensors file.
pub fn read_metadata(path: &Path) -> HashMap<String, String> {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    meta.metadata().clone().unwrap_or_default()
}

/// An f32 tensor's values, widened to f64.
pub fn f32_values(t: &Tensor) -> HostTensor<f64> {
    assert_eq!(t.dtype, StDtype::F32, "{}", t.name);
    let data = t
        .bytes
        .chunks_exact(4)
        .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .collect();
    HostTensor::new(t.shape.clone(), data).unwrap()
}

/// A tensor's values in `dtype` (f32, f16 or bf16), widened to f64.
pub fn tensor_values(t: &Tensor, dtype: Dtype) -> HostTensor<f64> {
    assert_eq!(t.dtype, st_dtype(dtype), "{}", t.name);
    let data: Vec<f64> = match dtype {
        Dtype::F32 => return f32_values(t),
        Dtype::F16 => t
            .bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f64())
            .collect(),
        Dtype::Bf16 => t
            .bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f64())
            .collect(),
    };
    HostTensor::new(t.shape.clone(), data).unwrap()
}
