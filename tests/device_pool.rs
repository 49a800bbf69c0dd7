//! The state pool on device tensors: a decode step stages the slot rows (4·N bytes) and then
//! moves no q, k, v or o bytes between host and device, on the emulator where the counter
//! proves it; a captured step (all layers) replays identically and refuses to replay once its
//! pool is gone; four threads, each with its own pool, serve what one thread serves.

use std::sync::Arc;

use retention::{
    Device, DeviceDtype, DeviceTensor, Gammas, HostTensor, MemoryPool, Retention, RetentionError,
    RetentionParams, Slot, StatePool, Stream, reference,
};

const H: usize = 2;
const K: usize = 64;
const V: usize = 64;
const LAYERS: usize = 2;

fn emulated() -> Device {
    Device::Emulated(kernel_gen::Arch::Sm80)
}

/// The emulator, and CUDA device 0 where a GPU answers.
fn gpu_like() -> Vec<Device> {
    let mut d = vec![emulated()];
    if let Ok(cuda) = Device::cuda(0) {
        d.push(cuda);
    }
    d
}

fn params() -> RetentionParams {
    RetentionParams::new(Gammas::retnet(H).unwrap(), None)
}

fn input(shape: Vec<usize>, seed: u64) -> HostTensor<f32> {
    let mut rng = retention_core::SplitMix64::new(seed);
    let n = shape.iter().product();
    HostTensor::from_f64(shape, &rng.vec(n)).unwrap()
}

fn pool_on(device: &Device, capacity: usize) -> (StatePool, Vec<Slot>) {
    let ret = Retention::new(device, params()).unwrap();
    let mut pool = ret.state_pool(H, K, V, LAYERS, capacity).unwrap();
    let slots = (0..capacity).map(|_| pool.alloc().unwrap()).collect();
    (pool, slots)
}

/// Device q, k, v and o for N rows.
struct StepTensors {
    q: DeviceTensor,
    k: DeviceTensor,
    v: DeviceTensor,
    o: DeviceTensor,
}

fn step_tensors(device: &Device, stream: &Stream, n: usize, seed: u64) -> StepTensors {
    let mem = MemoryPool::on(device, None).unwrap();
    let up =
        |shape: Vec<usize>, s: u64| DeviceTensor::upload(&mem, &input(shape, s), stream).unwrap();
    StepTensors {
        q: up(vec![n, H, K], seed),
        k: up(vec![n, H, K], seed + 1),
        v: up(vec![n, H, V], seed + 2),
        o: DeviceTensor::zeros(&mem, device, DeviceDtype::F32, &[n, H, V]).unwrap(),
    }
}

fn device_step(pool: &mut StatePool, slots: &[Slot], t: &mut StepTensors, stream: &Stream) {
    pool.stage(slots, Some(stream)).unwrap();
    for layer in 0..LAYERS {
        pool.step_into(layer, (&t.q, &t.k, &t.v), &mut t.o, Some(stream))
            .unwrap();
    }
}

#[test]
fn a_hundred_decode_steps_move_only_the_slot_rows() {
    for device in gpu_like() {
        hundred_steps(&device);
    }
}

fn hundred_steps(device: &Device) {
    let device = device.clone();
    let stream = Stream::new(&device).unwrap();
    let (mut pool, slots) = pool_on(&device, 3);
    let (mut cpu, cpu_slots) = pool_on(&Device::Cpu, 3);
    let batch = [slots[2], slots[0]];
    let mut t = step_tensors(&device, &stream, 2, 20);
    let (hq, hk, hv) = (
        input(vec![2, H, K], 20),
        input(vec![2, H, K], 21),
        input(vec![2, H, V], 22),
    );
    let mut last = HostTensor::<f32>::zeros(vec![2, H, V]);
    for _ in 0..100 {
        let before = stream.transfers();
        device_step(&mut pool, &batch, &mut t, &stream);
        let moved = stream.transfers().since(&before);
        assert_eq!(moved.d2h_bytes, 0, "no q, k, v or o bytes come back");
        assert_eq!(
            moved.h2d_bytes,
            4 * batch.len() as u64,
            "only the slot rows go up"
        );
        for layer in 0..LAYERS {
            last = cpu
                .step(layer, &[cpu_slots[2], cpu_slots[0]], &hq, &hk, &hv)
                .unwrap();
        }
    }
    let o = t.o.download::<f32>(&stream).unwrap();
    let e = reference::max_rel_diff(o.to_f64().data(), last.to_f64().data());
    assert!(e <= 1e-5, "o after 100 steps: {e:e}");
    for (&s, &c) in batch.iter().zip(&[cpu_slots[2], cpu_slots[0]]) {
        let (a, b) = (pool.snapshot(s).unwrap(), cpu.snapshot(c).unwrap());
        let e = reference::max_rel_diff(a.0.to_f64().data(), b.0.to_f64().data());
        assert!(e <= 1e-5, "state after 100 steps: {e:e}");
    }
    // The untouched slot stayed zero.
    assert!(
        pool.snapshot(slots[1])
            .unwrap()
            .0
            .data()
            .iter()
            .all(|&x| x == 0.0)
    );
}

#[test]
fn a_captured_decode_step_replays_identically() {
    for device in gpu_like() {
        captured_step(&device);
    }
}

fn captured_step(device: &Device) {
    let device = device.clone();
    let stream = Stream::new(&device).unwrap();
    let (mut direct, d_slots) = pool_on(&device, 2);
    let (mut graphed, g_slots) = pool_on(&device, 2);
    let mut a = step_tensors(&device, &stream, 2, 30);
    let mut b = step_tensors(&device, &stream, 2, 30);
    graphed.stage(&g_slots, Some(&stream)).unwrap();
    stream.begin_capture().unwrap();
    // Host copies are refused while capturing.
    assert!(matches!(
        graphed.stage(&g_slots, Some(&stream)),
        Err(RetentionError::Unsupported { .. })
    ));
    for layer in 0..LAYERS {
        graphed
            .step_into(layer, (&b.q, &b.k, &b.v), &mut b.o, Some(&stream))
            .unwrap();
    }
    let graph = stream.end_capture().unwrap();
    if matches!(device, Device::Emulated(_)) {
        assert_eq!(graph.launches(), Some(LAYERS));
    }
    // Capturing ran nothing.
    assert!(
        graphed
            .snapshot(g_slots[0])
            .unwrap()
            .0
            .data()
            .iter()
            .all(|&x| x == 0.0)
    );
    for _ in 0..3 {
        device_step(&mut direct, &d_slots, &mut a, &stream);
        let before = stream.transfers();
        graph.replay().unwrap();
        assert_eq!(stream.transfers(), before, "a replay moves no host bytes");
    }
    assert_eq!(
        a.o.download::<f32>(&stream).unwrap(),
        b.o.download::<f32>(&stream).unwrap()
    );
    for (&x, &y) in d_slots.iter().zip(&g_slots) {
        assert_eq!(direct.snapshot(x).unwrap(), graphed.snapshot(y).unwrap());
    }
    drop(graphed);
    assert!(matches!(
        graph.replay(),
        Err(RetentionError::Unsupported { .. })
    ));
    assert!(Stream::new(&Device::Cpu).unwrap().begin_capture().is_err());
}

#[test]
fn four_threads_with_their_own_pools_serve_the_single_threaded_results() {
    let device = emulated();
    let ret = Arc::new(Retention::new(&device, params()).unwrap());
    let serve = |ret: &Retention, seed: u64| -> Vec<f32> {
        let mut pool = ret.state_pool(H, K, V, 1, 1).unwrap();
        let slot = pool.alloc().unwrap();
        let mut out = Vec::new();
        for step in 0..4 {
            let s = seed * 10 + step;
            let o = pool
                .step(
                    0,
                    &[slot],
                    &input(vec![1, H, K], s),
                    &input(vec![1, H, K], s + 1),
                    &input(vec![1, H, V], s + 2),
                )
                .unwrap();
            out.extend_from_slice(o.data());
        }
        out
    };
    let single: Vec<Vec<f32>> = (0..4).map(|i| serve(&ret, i)).collect();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let ret = Arc::clone(&ret);
            std::thread::spawn(move || serve(&ret, i))
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), single[i], "thread {i}");
    }
}
