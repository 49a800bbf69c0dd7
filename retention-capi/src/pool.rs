//! The decode state pool (ARCHITECTURE §6): create, alloc/free slots, step a batch of rows in
//! place on the handle's device, snapshot/restore one slot's state to/from host memory. Slots
//! are handed to C as ids that are never reused, so a freed or foreign id is an error, never
//! another sequence's state.

use std::collections::HashMap;

use retention::{DeviceDtype, HostState, Slot, StatePool, Stream};

use crate::handle::{DEAD_MAGIC, RetentionHandle, handle};
use crate::status::{Failure, RetentionStatus, guard, non_null};
use crate::tensor::{RetentionTensor, view};

const POOL_MAGIC: u64 = 0x5245_544e_504f_4f4c;

/// Opaque state pool for decoding: the recurrent states of up to `capacity` sequences.
pub struct RetentionStatePool {
    magic: u64,
    pool: StatePool,
    /// The creating handle's stream at creation (`None`: the pool's own).
    stream: Option<Stream>,
    slots: HashMap<u64, Slot>,
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
        _ => Err(Failure::new(
            RetentionStatus::InvalidHandle,
            "state pool is null, foreign or already destroyed",
        )),
    }
}

impl RetentionStatePool {
    fn slot(&self, id: u64) -> Result<Slot, Failure> {
        self.slots.get(&id).copied().ok_or_else(|| {
            Failure::new(
                RetentionStatus::InvalidArgument,
                format!("slot {id} is not allocated in this pool"),
            )
        })
    }
}

/// Create a state pool on `h`'s device for `capacity` sequences of `layers` layers with `h`'s
/// decays and states `[H, K, V]` f32 per layer; its steps run on `h`'s stream as set now.
///
/// # Safety
/// `h` from [`crate::retention_create`]; `out` writable for one pointer.
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
        non_null(out, "out")?;
        let dims = [heads, dk, dv, layers, capacity].map(|x| x as usize);
        let p = r
            .ret
            .state_pool(dims[0], dims[1], dims[2], dims[3], dims[4])?;
        let b = Box::into_raw(Box::new(RetentionStatePool {
            magic: POOL_MAGIC,
            pool: p,
            stream: r.stream().cloned(),
            slots: HashMap::new(),
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
/// `p` live, from [`retention_state_pool_create`]; `out_slot` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_state_pool_alloc(
    p: *mut RetentionStatePool,
    out_slot: *mut u64,
) -> RetentionStatus {
    guard(|| {
        // SAFETY: the caller's precondition.
        let r = unsafe { pool(p)? };
        non_null(out_slot, "out_slot")?;
        let slot = r.pool.alloc()?;
        let id = r.next_id;
        r.next_id += 1;
        r.slots.insert(id, slot);
        // SAFETY: non-null and writable per the caller.
        unsafe { *out_slot = id };
        Ok(())
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
        let s = r.slot(slot)?;
        r.pool.free(s)?;
        r.slots.remove(&slot);
        Ok(())
    })
}

/// One decode step of `layer` for `n` rows whose row i belongs to `slots[i]`: q, k `[N, H, K]`,
/// v, o `[N, H, V]` (rank 3, one dtype, memory of the pool's device); each slot's state
/// advances by one token in place.
///
/// # Safety
/// `p` live; `slots` readable host memory for `n` ids; tensors as in
/// [`crate::retention_chunkwise_forward`].
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
            non_null(slots, "slots")?;
            let ids = std::slice::from_raw_parts(slots, n as usize);
            let ss = ids
                .iter()
                .map(|&i| r.slot(i))
                .collect::<Result<Vec<_>, _>>()?;
            let d = r.pool.device().clone();
            let (q, k, v) = (
                view(q, "q", 3)?.borrow(&d),
                view(k, "k", 3)?.borrow(&d),
                view(v, "v", 3)?.borrow(&d),
            );
            let mut o = view(o, "o", 3)?.borrow(&d);
            let s = r.stream.clone();
            r.pool.stage(&ss, s.as_ref())?;
            r.pool
                .step_into(layer as usize, (&q, &k, &v), &mut o, s.as_ref())?;
        }
        Ok(())
    })
}

/// Copy a slot's state (all layers) into `out`: host memory `[layers, H, K, V]` f32 on every
/// device (on CUDA this waits for the pool's own stream: synchronise a caller stream first).
///
/// # Safety
/// `p` live; `out` a readable descriptor of writable host memory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_state_pool_snapshot(
    p: *mut RetentionStatePool,
    slot: u64,
    out: *const RetentionTensor,
) -> RetentionStatus {
    guard(|| {
        // SAFETY: the caller's preconditions; `write` checks dtype and shape first.
        unsafe {
            let r = pool(p)?;
            let out = view(out, "out", 4)?;
            out.expect_dtype(DeviceDtype::F32)?;
            let HostState(state) = r.pool.snapshot(r.slot(slot)?)?;
            out.write(&state)
        }
    })
}

/// Overwrite a slot's state (all layers) from `state`: host memory `[layers, H, K, V]` f32
/// (a snapshot of this or another pool of the same geometry: prefix reuse, migration).
///
/// # Safety
/// `p` live; `state` a readable descriptor of readable host memory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_state_pool_restore(
    p: *mut RetentionStatePool,
    slot: u64,
    state: *const RetentionTensor,
) -> RetentionStatus {
    guard(|| {
        // SAFETY: the caller's preconditions; `read` checks the dtype first.
        unsafe {
            let r = pool(p)?;
            let s = view(state, "state", 4)?.read::<f32>()?;
            let slot = r.slot(slot)?;
            r.pool.restore(slot, &HostState(s))?;
        }
        Ok(())
    })
}
