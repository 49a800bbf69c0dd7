//! The model suite's device-resident decode step (`net::DeviceNet`) equals the host model's
//! step (`net::RetNet::step`, `net::Transformer::step`) on a tiny model (2 layers, width 64,
//! 2 heads), on `Cpu`, `Emulated(sm_80)` (the exact PTX of the layer ops, the retention
//! decode, the epilogue and the attention kernels; GEMMs by the gemm crate on the emulator's
//! memory) and `Cuda(0)` where a GPU answers (cuBLAS), for two consecutive steps (the state
//! and the cache carry over), with no byte moved between host and device during a step.
//!
//! Tolerance: f32, DESIGN's 1e-5 max relative difference against the host step (both compute
//! in f32; they differ in the order of the f32 sums).

#[allow(
    dead_code,
    unused_imports,
    reason = "the tests use part of the model's API"
)]
#[path = "../src/bench/model/net/mod.rs"]
mod net;

use kernel_gen::Arch as GpuArch;
use retention_core::{HostTensor, SplitMix64};
use retention_kernels::reference::max_rel_diff;
use retention_runtime::{Device, DeviceTensor};

use net::{DeviceNet, Ledger, NetConfig, RetNet, Transformer};

const TOL: f64 = 1e-5;
const BATCH: usize = 3;

fn devices() -> Vec<Device> {
    let mut all = vec![Device::Cpu, Device::Emulated(GpuArch::Sm80)];
    if let Ok(gpu) = Device::cuda(0) {
        all.push(gpu);
    }
    all
}

fn tiny() -> NetConfig {
    NetConfig::custom(2, 32, 64, 2).unwrap()
}

fn input(d: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    rng.vec(BATCH * d).into_iter().map(|x| x as f32).collect()
}

/// Two steps of the host model `host_step` and of `dev`, compared after each.
fn compare(what: &str, d: usize, mut host_step: impl FnMut(&mut [f32]), dev: &mut DeviceNet) {
    for step in 0..2 {
        let x = input(d, 10 + step);
        let mut host_x = x.clone();
        host_step(&mut host_x);
        let stream = dev.stream().clone();
        let h = HostTensor::new(vec![BATCH, d], x).unwrap();
        let mut dx = DeviceTensor::upload(dev.memory(), &h, &stream).unwrap();
        let before = stream.transfers();
        dev.step(&mut dx).unwrap();
        let moved = stream.transfers().since(&before);
        assert_eq!((moved.h2d_bytes, moved.d2h_bytes), (0, 0), "{what}");
        let got: Vec<f64> = dx
            .download::<f32>(&stream)
            .unwrap()
            .data()
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let want: Vec<f64> = host_x.iter().map(|&v| f64::from(v)).collect();
        let e = max_rel_diff(&got, &want);
        assert!(e <= TOL, "{what} step {step}: error {e:e} > {TOL:e}");
        eprintln!("{what} step {step}: max relative difference {e:e}");
    }
}

#[test]
fn retnet_device_step_equals_the_host_step() {
    for device in devices() {
        let ledger = Ledger::new(u64::MAX);
        let mut host = RetNet::<f32>::new(&tiny(), &ledger, 5).unwrap();
        host.start(BATCH).unwrap();
        let mut dev = DeviceNet::retnet(&device, &host, BATCH).unwrap();
        let what = format!("retnet on {}", device.name());
        compare(&what, 64, |x| host.step(x).unwrap(), &mut dev);
    }
}

#[test]
fn transformer_device_step_equals_the_host_step() {
    for device in devices() {
        let ledger = Ledger::new(u64::MAX);
        let cfg = tiny().transformer_twin();
        let mut host = Transformer::<f32>::new(&cfg, &ledger, 6).unwrap();
        host.start(BATCH, 40, 7).unwrap();
        let mut dev = DeviceNet::transformer(&device, &host).unwrap();
        let what = format!("transformer on {}", device.name());
        compare(&what, 64, |x| host.step(x).unwrap(), &mut dev);
    }
}

#[test]
fn zeroed_transformer_steps_on_the_device_and_its_cache_is_measured() {
    let device = Device::Emulated(GpuArch::Sm80);
    let ledger = Ledger::new(u64::MAX);
    let cfg = tiny().transformer_twin();
    let host = Transformer::<f32>::new(&cfg, &ledger, 6).unwrap();
    let (batch, context) = (BATCH, 300);
    let mut dev = DeviceNet::transformer_zeroed(&device, &host, (batch, context)).unwrap();
    let kv_bytes = (2 * cfg.layers * batch * cfg.heads * context * cfg.dk * 4) as u64;
    let (cache, weights) = dev.bytes();
    assert!(
        cache >= kv_bytes && cache < 2 * kv_bytes,
        "{cache} vs {kv_bytes}"
    );
    assert!(weights >= (cfg.params() * 4) as u64, "{weights}");
    let h = HostTensor::new(vec![batch, cfg.d_model], input(cfg.d_model, 3)).unwrap();
    let stream = dev.stream().clone();
    let mut dx = DeviceTensor::upload(dev.memory(), &h, &stream).unwrap();
    dev.step(&mut dx).unwrap();
    let out = dx.download::<f32>(&stream).unwrap();
    assert!(out.data().iter().all(|v| v.is_finite()));
}
