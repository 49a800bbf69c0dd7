//! `retention-capi`: the C ABI of the `retention` facade (header: `include/retention.h`).
//!
//! Every exported function returns a [`RetentionStatus`] code; on failure a message is kept
//! per thread and read with [`retention_last_error`]. No panic crosses the boundary: each
//! entry runs inside `catch_unwind`. Handles are opaque, created and destroyed here, and carry
//! a magic tag so a foreign pointer or a double free is reported as
//! [`RetentionStatus::InvalidHandle`] where the memory is still readable (a freed handle's
//! memory may have been reused, so double free detection is best effort).
//!
//! Scope of this version: the CPU device, f32 tensors in host memory, contiguous token-major
//! layouts (q, k `[B, T, H, K]`; v, o `[B, T, H, V]`; states `[B, H, K, V]` f32). This crate
//! uses only the public facade; it must not know about kernels. Not yet here: CUDA pointers
//! and streams, f16/bf16, strided tensors, varlen, pool snapshot/restore,
//! the backward.

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use retention::{Device, Gammas, HostTensor, Retention, RetentionParams};

/// Status code of every exported function.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionStatus {
    /// Success.
    Ok = 0,
    /// A required pointer was null.
    NullPointer = 1,
    /// The dtype is not supported by this entry point.
    BadDtype = 2,
    /// Shapes disagree, or a dimension is zero, or the rank is wrong.
    BadShape = 3,
    /// Strides are not the contiguous row-major strides of the shape.
    NonContiguous = 4,
    /// The handle is null, foreign or already destroyed.
    InvalidHandle = 5,
    /// The requested device is not supported by the C ABI yet.
    UnsupportedDevice = 6,
    /// The library reported an error (message in `retention_last_error`).
    Library = 7,
    /// A panic was caught inside the library.
    Panic = 8,
    /// An argument value is invalid (a zero chunk, a non-finite scale).
    InvalidArgument = 9,
}

/// Element type of a tensor.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionDtype {
    /// 32-bit float.
    F32 = 0,
    /// 16-bit float (not supported by this version).
    F16 = 1,
    /// bfloat16 (not supported by this version).
    Bf16 = 2,
}

/// Device kind a handle runs on.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionDeviceKind {
    /// The CPU; tensors are host pointers.
    Cpu = 0,
    /// CUDA (not supported by this version of the C ABI).
    Cuda = 1,
}

/// A borrowed tensor: data pointer, dtype, shape and strides in elements (rank ≤ 4; the
/// unused trailing entries are ignored).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RetentionTensor {
    /// Host pointer to the first element.
    pub data: *mut std::ffi::c_void,
    /// Element type, a `RetentionDtype` value.
    pub dtype: i32,
    /// Number of used dimensions (4 for the forwards, 3 for the decode step).
    pub ndim: i32,
    /// Sizes of the used dimensions.
    pub shape: [i64; 4],
    /// Strides in elements; must be contiguous row-major.
    pub strides: [i64; 4],
}

const HANDLE_MAGIC: u64 = 0x5245_544e_4854_4e44;
const DEAD_MAGIC: u64 = 0xdead_dead_dead_dead;

/// Opaque handle over a [`Retention`] (a device plus the per-head decays and scale).
pub struct RetentionHandle {
    magic: u64,
    ret: Retention,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// An error on the way out: its code and message.
struct Failure(RetentionStatus, String);

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Run `f`, catch panics, record the message, return the code.
fn guard(f: impl FnOnce() -> Result<(), Failure>) -> RetentionStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            set_error("");
            RetentionStatus::Ok
        }
        Ok(Err(Failure(code, msg))) => {
            set_error(&msg);
            code
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_error(&format!("panic inside retention: {what}"));
            RetentionStatus::Panic
        }
    }
}

/// The status code of a library error, by its kind, and its message.
fn lib_err(e: &retention::RetentionError) -> Failure {
    use retention::RetentionError as E;
    let status = match e {
        E::ShapeMismatch { .. } | E::DataLength { .. } | E::ZeroDim { .. } => {
            RetentionStatus::BadShape
        }
        E::DtypeMismatch { .. } => RetentionStatus::BadDtype,
        E::InvalidGamma { .. }
        | E::GammaCount { .. }
        | E::InvalidScale(_)
        | E::ZeroChunk
        | E::InvalidCuSeqlens(_)
        | E::Slot(_) => RetentionStatus::InvalidArgument,
        E::Unsupported { .. } | E::NoDevice(_) | E::WrongDevice { .. } => {
            RetentionStatus::UnsupportedDevice
        }
        _ => RetentionStatus::Library,
    };
    Failure(status, e.to_string())
}

/// The message of the last failed call on this thread ("" after a success).
///
/// The pointer stays valid until the next call into this library on the same thread.
#[unsafe(no_mangle)]
pub extern "C" fn retention_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Create a handle on `device` for `heads` heads with the RetNet decays of global heads
/// `head_offset..head_offset + heads` and scale `scale` (a non-positive or NaN scale means the
/// default 1/sqrt(K)).
///
/// # Safety
/// `out` must be a valid pointer to writable storage for one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_create(
    device: i32,
    heads: u32,
    head_offset: u32,
    scale: f64,
    out: *mut *mut RetentionHandle,
) -> RetentionStatus {
    guard(|| {
        if out.is_null() {
            return Err(Failure(RetentionStatus::NullPointer, "out is null".into()));
        }
        if device != RetentionDeviceKind::Cpu as i32 {
            return Err(Failure(
                RetentionStatus::UnsupportedDevice,
                format!("device {device}: only the CPU (0) is supported by the C ABI yet"),
            ));
        }
        let gammas = Gammas::retnet_sharded(heads as usize, head_offset as usize)
            .map_err(|e| lib_err(&e))?;
        let scale = (scale > 0.0).then_some(scale);
        let ret = Retention::new(&Device::Cpu, RetentionParams::new(gammas, scale))
            .map_err(|e| lib_err(&e))?;
        let h = Box::into_raw(Box::new(RetentionHandle {
            magic: HANDLE_MAGIC,
            ret,
        }));
        // SAFETY: `out` is non-null and the caller promises it is writable.
        unsafe { *out = h };
        Ok(())
    })
}

/// Destroy a handle. Null is a no-op returning `Ok`.
///
/// # Safety
/// `h` must be null or a pointer returned by [`retention_create`] not yet destroyed; a double
/// destroy is detected by the magic tag only while the freed memory is not reused.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_destroy(h: *mut RetentionHandle) -> RetentionStatus {
    guard(|| {
        if h.is_null() {
            return Ok(());
        }
        // SAFETY: the caller promises `h` came from `retention_create`; reading the tag checks it.
        let magic = unsafe { std::ptr::addr_of!((*h).magic).read() };
        if magic != HANDLE_MAGIC {
            return Err(Failure(
                RetentionStatus::InvalidHandle,
                "handle is foreign or already destroyed".into(),
            ));
        }
        // SAFETY: the tag says this is a live handle from `Box::into_raw`; we mark it dead first.
        unsafe {
            (*h).magic = DEAD_MAGIC;
            drop(Box::from_raw(h));
        }
        Ok(())
    })
}

/// Borrow the handle behind `h`, checking null and the tag.
///
/// # Safety
/// `h` must be null or point to readable memory of a `RetentionHandle`.
unsafe fn handle<'a>(h: *const RetentionHandle) -> Result<&'a RetentionHandle, Failure> {
    if h.is_null() {
        return Err(Failure(
            RetentionStatus::InvalidHandle,
            "handle is null".into(),
        ));
    }
    // SAFETY: the caller promises `h` points to a handle's memory.
    let r = unsafe { &*h };
    if r.magic != HANDLE_MAGIC {
        return Err(Failure(
            RetentionStatus::InvalidHandle,
            "handle is foreign or already destroyed".into(),
        ));
    }
    Ok(r)
}

/// Check a tensor descriptor (non-null, f32, rank 4, positive sizes, contiguous) and return
/// its shape.
///
/// # Safety
/// `t` must be null or point to a readable `RetentionTensor`.
unsafe fn describe(
    t: *const RetentionTensor,
    name: &str,
    rank: usize,
) -> Result<(Vec<usize>, RetentionTensor), Failure> {
    if t.is_null() {
        return Err(Failure(
            RetentionStatus::NullPointer,
            format!("{name} is null"),
        ));
    }
    // SAFETY: non-null and the caller promises it is readable.
    let d = unsafe { *t };
    if d.data.is_null() {
        return Err(Failure(
            RetentionStatus::NullPointer,
            format!("{name}.data is null"),
        ));
    }
    if d.dtype != RetentionDtype::F32 as i32 {
        return Err(Failure(
            RetentionStatus::BadDtype,
            format!("{name}: dtype {} unsupported, only F32 (0)", d.dtype),
        ));
    }
    if d.ndim != rank as i32 {
        return Err(Failure(
            RetentionStatus::BadShape,
            format!("{name}: rank {} != {rank}", d.ndim),
        ));
    }
    let mut shape = vec![0usize; rank];
    for (i, &s) in d.shape[..rank].iter().enumerate() {
        if s <= 0 {
            return Err(Failure(
                RetentionStatus::BadShape,
                format!("{name}: dimension {i} has size {s}"),
            ));
        }
        shape[i] = s as usize;
    }
    let mut expect = 1i64;
    for i in (0..rank).rev() {
        if d.shape[i] > 1 && d.strides[i] != expect {
            return Err(Failure(
                RetentionStatus::NonContiguous,
                format!(
                    "{name}: stride {} of dimension {i} is not the contiguous {expect}",
                    d.strides[i]
                ),
            ));
        }
        expect *= d.shape[i];
    }
    Ok((shape, d))
}

/// Copy a described f32 tensor into a `HostTensor`.
///
/// # Safety
/// `t` as in [`describe`]; its data must hold the product of its shape f32 values.
unsafe fn read_tensor(
    t: *const RetentionTensor,
    name: &str,
    rank: usize,
) -> Result<HostTensor<f32>, Failure> {
    // SAFETY: forwarded precondition.
    let (shape, d) = unsafe { describe(t, name, rank)? };
    let n: usize = shape.iter().product();
    // SAFETY: contiguous f32 data of `n` elements, per the caller's precondition.
    let data = unsafe { std::slice::from_raw_parts(d.data.cast::<f32>(), n) }.to_vec();
    HostTensor::new(shape, data).map_err(|e| Failure(RetentionStatus::BadShape, e.to_string()))
}

/// Write `src` into the described output, which must have exactly `src`'s shape.
///
/// # Safety
/// `t` as in [`describe`]; its data must be writable for the product of its shape f32 values.
unsafe fn write_tensor(
    t: *const RetentionTensor,
    name: &str,
    rank: usize,
    src: &HostTensor<f32>,
) -> Result<(), Failure> {
    // SAFETY: forwarded precondition.
    let (shape, d) = unsafe { describe(t, name, rank)? };
    if shape != src.shape() {
        return Err(Failure(
            RetentionStatus::BadShape,
            format!("{name}: expected shape {:?}, got {shape:?}", src.shape()),
        ));
    }
    // SAFETY: writable, contiguous, same element count as `src`, per the caller's precondition.
    let dst = unsafe { std::slice::from_raw_parts_mut(d.data.cast::<f32>(), src.data().len()) };
    dst.copy_from_slice(src.data());
    Ok(())
}

/// Chunkwise forward: o `[B, T, H, V]` and, if `final_state` is non-null, H_T `[B, H, K, V]`
/// from q, k `[B, T, H, K]`, v `[B, T, H, V]`, optional `initial_state` `[B, H, K, V]`.
///
/// # Safety
/// `h` from [`retention_create`]; every non-null tensor pointer points to a readable
/// descriptor whose data holds its shape's f32 elements (outputs writable, not aliasing
/// inputs). `initial_state` and `final_state` may be null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_chunkwise_forward(
    h: *const RetentionHandle,
    q: *const RetentionTensor,
    k: *const RetentionTensor,
    v: *const RetentionTensor,
    initial_state: *const RetentionTensor,
    chunk: u32,
    o: *const RetentionTensor,
    final_state: *const RetentionTensor,
) -> RetentionStatus {
    guard(|| {
        // SAFETY: preconditions forwarded from this function's contract.
        unsafe { stateful(h, (q, k, v), initial_state, Some(chunk), o, final_state) }
    })
}

/// Recurrent forward (token by token); arguments as [`retention_chunkwise_forward`].
///
/// # Safety
/// As [`retention_chunkwise_forward`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_recurrent_forward(
    h: *const RetentionHandle,
    q: *const RetentionTensor,
    k: *const RetentionTensor,
    v: *const RetentionTensor,
    initial_state: *const RetentionTensor,
    o: *const RetentionTensor,
    final_state: *const RetentionTensor,
) -> RetentionStatus {
    guard(|| {
        // SAFETY: preconditions forwarded from this function's contract.
        unsafe { stateful(h, (q, k, v), initial_state, None, o, final_state) }
    })
}

/// Shared body of the chunkwise (`chunk` = Some) and recurrent forwards.
///
/// # Safety
/// As [`retention_chunkwise_forward`].
unsafe fn stateful(
    h: *const RetentionHandle,
    (q, k, v): (
        *const RetentionTensor,
        *const RetentionTensor,
        *const RetentionTensor,
    ),
    initial_state: *const RetentionTensor,
    chunk: Option<u32>,
    o: *const RetentionTensor,
    final_state: *const RetentionTensor,
) -> Result<(), Failure> {
    // SAFETY: all pointer preconditions are the caller's.
    unsafe {
        let r = handle(h)?;
        let (q, k, v) = (
            read_tensor(q, "q", 4)?,
            read_tensor(k, "k", 4)?,
            read_tensor(v, "v", 4)?,
        );
        let h0 = if initial_state.is_null() {
            None
        } else {
            Some(read_tensor(initial_state, "initial_state", 4)?)
        };
        let (out, state) = match chunk {
            Some(0) => {
                return Err(Failure(
                    RetentionStatus::InvalidArgument,
                    "chunk is 0".into(),
                ));
            }
            Some(c) => r.ret.chunkwise(&q, &k, &v, c as usize, h0.as_ref()),
            None => r.ret.recurrent(&q, &k, &v, h0.as_ref()),
        }
        .map_err(|e| lib_err(&e))?;
        write_tensor(o, "o", 4, &out)?;
        if !final_state.is_null() {
            write_tensor(final_state, "final_state", 4, &state)?;
        }
    }
    Ok(())
}

/// Parallel forward: o `[B, T, H, V]` from q, k `[B, T, H, K]`, v `[B, T, H, V]`.
///
/// # Safety
/// As [`retention_chunkwise_forward`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_parallel_forward(
    h: *const RetentionHandle,
    q: *const RetentionTensor,
    k: *const RetentionTensor,
    v: *const RetentionTensor,
    o: *const RetentionTensor,
) -> RetentionStatus {
    guard(|| {
        // SAFETY: all pointer preconditions are the caller's.
        unsafe {
            let r = handle(h)?;
            let (q, k, v) = (
                read_tensor(q, "q", 4)?,
                read_tensor(k, "k", 4)?,
                read_tensor(v, "v", 4)?,
            );
            let out = r.ret.parallel(&q, &k, &v).map_err(|e| lib_err(&e))?;
            write_tensor(o, "o", 4, &out)
        }
    })
}

const POOL_MAGIC: u64 = 0x5245_544e_504f_4f4c;

/// Opaque state pool for decoding: the recurrent states of up to `capacity` sequences.
///
/// Slots are handed to C as ids that are never reused, so a freed or foreign id is an error,
/// never another sequence's state.
pub struct RetentionStatePool {
    magic: u64,
    pool: retention::StatePool,
    slots: std::collections::HashMap<u64, retention::Slot>,
    next_id: u64,
}

/// Borrow the pool behind `p` mutably, checking null and the tag.
///
/// # Safety
/// `p` must be null or point to writable memory of a `RetentionStatePool` not otherwise borrowed.
unsafe fn pool<'a>(p: *mut RetentionStatePool) -> Result<&'a mut RetentionStatePool, Failure> {
    // SAFETY: the caller promises `p` is null or a pool's memory.
    match unsafe { p.as_mut() } {
        Some(r) if r.magic == POOL_MAGIC => Ok(r),
        _ => Err(Failure(
            RetentionStatus::InvalidHandle,
            "state pool is null, foreign or already destroyed".into(),
        )),
    }
}

/// Create a state pool for `capacity` sequences of `layers` layers with `h`'s decays and
/// states `[H, K, V]` f32 per layer.
///
/// # Safety
/// `h` from [`retention_create`]; `out` writable for one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_state_pool_create(
    h: *const RetentionHandle,
    heads: u32,
    dk: u32,
    dv: u32,
    layers: u32,
    capacity: u32,
    out: *mut *mut RetentionStatePool,
) -> RetentionStatus {
    guard(|| {
        // SAFETY: the caller's precondition.
        let r = unsafe { handle(h)? };
        if out.is_null() {
            return Err(Failure(RetentionStatus::NullPointer, "out is null".into()));
        }
        let p = r
            .ret
            .state_pool(
                heads as usize,
                dk as usize,
                dv as usize,
                layers as usize,
                capacity as usize,
            )
            .map_err(|e| lib_err(&e))?;
        let b = Box::into_raw(Box::new(RetentionStatePool {
            magic: POOL_MAGIC,
            pool: p,
            slots: std::collections::HashMap::new(),
            next_id: 1,
        }));
        // SAFETY: `out` is non-null and writable per the caller.
        unsafe { *out = b };
        Ok(())
    })
}

/// Destroy a state pool. Null is a no-op.
///
/// # Safety
/// `p` null or from [`retention_state_pool_create`] and not yet destroyed (a double destroy
/// is caught by the tag only while the freed memory is not reused).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_state_pool_destroy(
    p: *mut RetentionStatePool,
) -> RetentionStatus {
    guard(|| {
        if p.is_null() {
            return Ok(());
        }
        // SAFETY: the caller's precondition; the tag is checked before the box is dropped.
        unsafe {
            pool(p)?.magic = DEAD_MAGIC;
            drop(Box::from_raw(p));
        }
        Ok(())
    })
}

/// Take a free slot (state zero); its id is written to `out_slot`.
///
/// # Safety
/// `p` as in [`retention_state_pool_destroy`] (live); `out_slot` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_state_pool_alloc(
    p: *mut RetentionStatePool,
    out_slot: *mut u64,
) -> RetentionStatus {
    guard(|| {
        // SAFETY: the caller's precondition.
        let r = unsafe { pool(p)? };
        if out_slot.is_null() {
            return Err(Failure(
                RetentionStatus::NullPointer,
                "out_slot is null".into(),
            ));
        }
        let slot = r.pool.alloc().map_err(|e| lib_err(&e))?;
        let id = r.next_id;
        r.next_id += 1;
        r.slots.insert(id, slot);
        // SAFETY: non-null and writable per the caller.
        unsafe { *out_slot = id };
        Ok(())
    })
}

fn slot_of(r: &RetentionStatePool, id: u64) -> Result<retention::Slot, Failure> {
    r.slots.get(&id).copied().ok_or_else(|| {
        Failure(
            RetentionStatus::InvalidArgument,
            format!("slot {id} is not allocated in this pool"),
        )
    })
}

/// Free a slot.
///
/// # Safety
/// `p` live, from [`retention_state_pool_create`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_state_pool_free(
    p: *mut RetentionStatePool,
    slot: u64,
) -> RetentionStatus {
    guard(|| {
        // SAFETY: the caller's precondition.
        let r = unsafe { pool(p)? };
        let s = slot_of(r, slot)?;
        r.pool.free(s).map_err(|e| lib_err(&e))?;
        r.slots.remove(&slot);
        Ok(())
    })
}

/// One decode step of `layer` for `n` rows whose row i belongs to `slots[i]`: q, k `[N, H, K]`,
/// v, o `[N, H, V]` (rank 3), each slot's state advances by one token.
///
/// # Safety
/// `p` live; `slots` readable for `n` ids; tensors as in [`retention_chunkwise_forward`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_state_pool_step(
    p: *mut RetentionStatePool,
    layer: u32,
    slots: *const u64,
    n: u32,
    q: *const RetentionTensor,
    k: *const RetentionTensor,
    v: *const RetentionTensor,
    o: *const RetentionTensor,
) -> RetentionStatus {
    guard(|| {
        // SAFETY: the caller's preconditions.
        unsafe {
            let r = pool(p)?;
            if slots.is_null() {
                return Err(Failure(
                    RetentionStatus::NullPointer,
                    "slots is null".into(),
                ));
            }
            let ids = std::slice::from_raw_parts(slots, n as usize);
            let ss = ids
                .iter()
                .map(|&i| slot_of(r, i))
                .collect::<Result<Vec<_>, _>>()?;
            let (q, k, v) = (
                read_tensor(q, "q", 3)?,
                read_tensor(k, "k", 3)?,
                read_tensor(v, "v", 3)?,
            );
            let out = r
                .pool
                .step(layer as usize, &ss, &q, &k, &v)
                .map_err(|e| lib_err(&e))?;
            write_tensor(o, "o", 3, &out)
        }
    })
}

/// The gated (MSR) epilogue: out = RMSNorm_head(o) ⊙ swish(g), all `[B, T, H, V]`.
///
/// # Safety
/// `h` from [`retention_create`]; tensors as in [`retention_chunkwise_forward`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_gated_epilogue_forward(
    h: *const RetentionHandle,
    o: *const RetentionTensor,
    g: *const RetentionTensor,
    eps: f64,
    out: *const RetentionTensor,
) -> RetentionStatus {
    guard(|| {
        // SAFETY: all pointer preconditions are the caller's.
        unsafe {
            let r = handle(h)?;
            let (o, g) = (read_tensor(o, "o", 4)?, read_tensor(g, "g", 4)?);
            let y = r.ret.msr_epilogue(&o, &g, eps).map_err(|e| lib_err(&e))?;
            write_tensor(out, "out", 4, &y)
        }
    })
}
