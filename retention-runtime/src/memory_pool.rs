//! `MemoryPool`: a caching allocator with size classes, reuse, trim and exact statistics, on
//! the host (CPU and emulated devices) or in a CUDA device's memory.
//!
//! Blocks are rounded up to a size class (quarter-power-of-two steps, at least 256 bytes) so
//! a freed block serves any later request of its class without touching the device
//! allocator. A pool may be capped; a request that does not fit even after releasing every
//! cached block is [`RetentionError::OutOfMemory`], and the pool stays usable.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use retention_core::{Result, RetentionError};

use crate::cuda::DeviceBuffer;
use crate::cuda_target::CudaTarget;
use crate::device::Device;

/// Smallest size class in bytes.
const MIN_CLASS: usize = 256;

/// The size class serving a request of `bytes`: the next multiple of a quarter of the
/// largest power of two not above it (so waste is below 25%), at least `MIN_CLASS` (256 bytes).
pub fn size_class(bytes: usize) -> usize {
    if bytes <= MIN_CLASS {
        return MIN_CLASS;
    }
    let step = (1usize << (usize::BITS - 1 - bytes.leading_zeros())) / 4;
    bytes.div_ceil(step) * step
}

/// Byte counts of a pool at one moment; every field is exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes (size classes) of blocks currently handed out.
    pub in_use: usize,
    /// Bytes held from the device: in use plus cached.
    pub reserved: usize,
    /// Largest `in_use` ever observed.
    pub high_water: usize,
    /// Requests served.
    pub allocations: u64,
    /// Requests served from the cache without a device allocation.
    pub cache_hits: u64,
}

/// Host memory with 64-byte alignment (enough for any vector load the CPU kernels use).
#[derive(Debug)]
pub(crate) struct HostBlock(Vec<Align64>);

#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Align64([u8; 64]);

impl HostBlock {
    fn new(bytes: usize) -> Self {
        Self(vec![Align64([0; 64]); bytes.div_ceil(64)])
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: `Align64` is `repr(C)` plain bytes with no padding; the Vec owns
        // `len * 64` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), self.0.len() * 64) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` guarantees exclusive access.
        unsafe {
            std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), self.0.len() * 64)
        }
    }
}

/// One block of a pool: host memory or device memory (f32 elements; every size class is a
/// multiple of 4 bytes).
#[derive(Debug)]
enum Block {
    Host(HostBlock),
    Cuda(DeviceBuffer<f32>),
}

/// Where a pool's blocks come from.
#[derive(Debug, Clone)]
enum Source {
    Host,
    Cuda(CudaTarget),
}

#[derive(Debug, Default)]
struct PoolState {
    cached: BTreeMap<usize, Vec<Block>>,
    stats: PoolStats,
}

#[derive(Debug)]
struct PoolShared {
    limit: Option<usize>,
    source: Source,
    state: Mutex<PoolState>,
}

impl PoolShared {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding the lock cannot leave the counters half-updated (every
        // critical section updates them after the fallible part), so poisoning is ignored.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A caching allocator. Cloning gives another handle to the same pool.
#[derive(Debug, Clone)]
pub struct MemoryPool {
    shared: Arc<PoolShared>,
}

impl MemoryPool {
    /// An uncapped pool.
    pub fn new() -> Self {
        Self::with_limit(None)
    }

    /// A pool that never reserves more than `limit` bytes (`None`: no cap).
    pub fn with_limit(limit: Option<usize>) -> Self {
        Self::with_source(Source::Host, limit)
    }

    /// A pool of `device`'s memory: device memory on a CUDA device, host memory on the CPU
    /// and on emulated devices (whose kernels read host buffers), capped at `limit` bytes.
    ///
    /// # Errors
    /// [`RetentionError::NoDevice`] when a CUDA device cannot be opened.
    pub fn on(device: &Device, limit: Option<usize>) -> Result<Self> {
        let source = match device {
            Device::Cuda(ordinal) => Source::Cuda(CudaTarget::open(*ordinal)?),
            _ => Source::Host,
        };
        Ok(Self::with_source(source, limit))
    }

    fn with_source(source: Source, limit: Option<usize>) -> Self {
        Self {
            shared: Arc::new(PoolShared {
                limit,
                source,
                state: Mutex::new(PoolState::default()),
            }),
        }
    }

    /// True when blocks live in GPU memory.
    pub fn is_device_memory(&self) -> bool {
        matches!(self.shared.source, Source::Cuda(_))
    }

    /// A fresh block of `class` bytes from the source; on a device that is out of memory,
    /// the cached blocks are released and the allocation tried once more.
    fn new_block(&self, st: &mut PoolState, class: usize, bytes: usize) -> Result<Block> {
        match &self.shared.source {
            Source::Host => Ok(Block::Host(HostBlock::new(class))),
            Source::Cuda(target) => {
                let alloc = || target.stream().alloc_zeros::<f32>(class / 4);
                let block = match alloc() {
                    Err(RetentionError::OutOfMemory { .. }) => {
                        Self::release_cached(st);
                        alloc()
                    }
                    other => other,
                };
                block.map(Block::Cuda).map_err(|e| match e {
                    RetentionError::OutOfMemory { available, .. } => RetentionError::OutOfMemory {
                        requested: bytes,
                        available,
                    },
                    other => other,
                })
            }
        }
    }

    /// Allocate at least `bytes`. The contents of a reused block are unspecified; use
    /// [`PoolBuffer::fill_zero`] when zeros are needed.
    ///
    /// # Errors
    /// [`RetentionError::OutOfMemory`] when the cap cannot accommodate the request even after
    /// releasing every cached block.
    pub fn alloc(&self, bytes: usize) -> Result<PoolBuffer> {
        let class = size_class(bytes);
        let mut st = self.shared.lock();
        let reused = st.cached.get_mut(&class).and_then(Vec::pop);
        let block = if let Some(block) = reused {
            st.stats.cache_hits += 1;
            block
        } else {
            if let Some(limit) = self.shared.limit {
                if st.stats.reserved + class > limit {
                    Self::release_cached(&mut st);
                }
                if st.stats.reserved + class > limit {
                    return Err(RetentionError::OutOfMemory {
                        requested: bytes,
                        available: limit - st.stats.reserved,
                    });
                }
            }
            let block = self.new_block(&mut st, class, bytes)?;
            st.stats.reserved += class;
            block
        };
        st.stats.allocations += 1;
        st.stats.in_use += class;
        st.stats.high_water = st.stats.high_water.max(st.stats.in_use);
        Ok(PoolBuffer {
            block: Some(block),
            len: bytes,
            class,
            pool: Arc::clone(&self.shared),
        })
    }

    fn release_cached(st: &mut PoolState) {
        let freed: usize = st.cached.iter().map(|(class, v)| class * v.len()).sum();
        st.cached.clear();
        st.stats.reserved -= freed;
    }

    /// Release every cached (free) block back to the device. Returns the bytes released.
    pub fn trim(&self) -> usize {
        let mut st = self.shared.lock();
        let before = st.stats.reserved;
        Self::release_cached(&mut st);
        before - st.stats.reserved
    }

    /// Current statistics.
    pub fn stats(&self) -> PoolStats {
        self.shared.lock().stats
    }

    /// The cap, if any.
    pub fn limit(&self) -> Option<usize> {
        self.shared.limit
    }
}

impl Default for MemoryPool {
    fn default() -> Self {
        Self::new()
    }
}

/// A block handed out by a [`MemoryPool`]; it returns to the pool's cache when dropped.
#[derive(Debug)]
pub struct PoolBuffer {
    block: Option<Block>,
    len: usize,
    class: usize,
    pool: Arc<PoolShared>,
}

impl PoolBuffer {
    /// Requested length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-byte request.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes actually reserved (the size class).
    pub fn capacity(&self) -> usize {
        self.class
    }

    /// The buffer's bytes, when it lives in host memory.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self.block.as_ref()? {
            Block::Host(b) => Some(&b.bytes()[..self.len]),
            Block::Cuda(_) => None,
        }
    }

    /// The buffer's bytes, writable, when it lives in host memory.
    pub fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        let len = self.len;
        match self.block.as_mut()? {
            Block::Host(b) => Some(&mut b.bytes_mut()[..len]),
            Block::Cuda(_) => None,
        }
    }

    /// The buffer as `T`s (whole elements only), when it lives in host memory.
    pub fn as_slice<T: bytemuck::Pod>(&self) -> Option<&[T]> {
        let n = self.len / std::mem::size_of::<T>();
        self.bytes()
            .map(|b| bytemuck::cast_slice(&b[..n * std::mem::size_of::<T>()]))
    }

    /// The buffer as writable `T`s, when it lives in host memory.
    pub fn as_mut_slice<T: bytemuck::Pod>(&mut self) -> Option<&mut [T]> {
        let n = self.len / std::mem::size_of::<T>();
        self.bytes_mut()
            .map(|b| bytemuck::cast_slice_mut(&mut b[..n * std::mem::size_of::<T>()]))
    }

    /// The device memory behind the buffer (f32 elements, at least `len() / 4` of them),
    /// when it lives on a GPU.
    pub fn device(&self) -> Option<&DeviceBuffer<f32>> {
        match self.block.as_ref()? {
            Block::Host(_) => None,
            Block::Cuda(b) => Some(b),
        }
    }

    /// The device memory behind the buffer, writable, when it lives on a GPU.
    pub fn device_mut(&mut self) -> Option<&mut DeviceBuffer<f32>> {
        match self.block.as_mut()? {
            Block::Host(_) => None,
            Block::Cuda(b) => Some(b),
        }
    }

    /// Sets every byte to zero, wherever the buffer lives.
    ///
    /// # Errors
    /// [`RetentionError::DeviceFailure`] when clearing device memory fails.
    pub fn fill_zero(&mut self) -> Result<()> {
        let source = self.pool.source.clone();
        match (self.block.as_mut(), source) {
            (Some(Block::Host(b)), _) => {
                b.bytes_mut().fill(0);
                Ok(())
            }
            (Some(Block::Cuda(b)), Source::Cuda(target)) => {
                let len = b.len();
                target.stream().zero_range(b, 0, len)
            }
            _ => Ok(()),
        }
    }
}

impl Drop for PoolBuffer {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            let mut st = self.pool.lock();
            st.stats.in_use -= self.class;
            st.cached.entry(self.class).or_default().push(block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_waste_under_a_quarter() {
        assert_eq!(size_class(0), 256);
        assert_eq!(size_class(257), 320);
        assert_eq!(size_class(1000), 1024);
        assert_eq!(size_class(1025), 1280);
        for b in [300usize, 4097, 1 << 20, (1 << 20) + 1, 123_456_789] {
            let c = size_class(b);
            assert!(c >= b && (c - b) * 4 <= b, "{b} -> {c}");
        }
    }

    #[test]
    fn stats_are_exact_and_blocks_are_reused() {
        let pool = MemoryPool::new();
        let a = pool.alloc(1000).unwrap();
        let b = pool.alloc(300).unwrap();
        assert_eq!(pool.stats().in_use, 1024 + 320);
        drop(a);
        let s = pool.stats();
        assert_eq!((s.in_use, s.reserved, s.high_water), (320, 1344, 1344));
        let c = pool.alloc(900).unwrap(); // class 1024 again: from the cache
        assert_eq!(pool.stats().cache_hits, 1);
        assert_eq!(pool.stats().reserved, 1344);
        drop((b, c));
        assert_eq!(pool.trim(), 1344);
        assert_eq!(pool.stats().reserved, 0);
        assert_eq!(pool.stats().high_water, 1344);
    }

    #[test]
    fn capped_pool_errors_then_recovers() {
        let pool = MemoryPool::with_limit(Some(4096));
        let a = pool.alloc(2048).unwrap();
        let err = pool.alloc(4096).unwrap_err();
        assert_eq!(
            err,
            RetentionError::OutOfMemory {
                requested: 4096,
                available: 2048
            }
        );
        // Cached blocks are released to make room.
        let b = pool.alloc(1024).unwrap();
        drop(b);
        drop(a);
        let big = pool.alloc(4096).unwrap();
        assert_eq!(pool.stats().reserved, 4096);
        drop(big);
    }

    #[test]
    fn typed_views_are_aligned() {
        let pool = MemoryPool::new();
        let mut buf = pool.alloc(40).unwrap();
        buf.fill_zero().unwrap();
        buf.as_mut_slice::<f32>().unwrap()[9] = 2.5;
        assert_eq!(buf.as_slice::<f32>().unwrap().len(), 10);
        assert_eq!(buf.as_slice::<f32>().unwrap()[9], 2.5);
        assert_eq!(buf.bytes().unwrap().as_ptr() as usize % 64, 0);
        assert!(buf.device_mut().is_none());
    }

    #[test]
    fn device_pools_count_exactly_and_recover_from_a_cap() {
        let device = match crate::Device::cuda(0) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("no CUDA device here: {e}");
                assert!(matches!(
                    MemoryPool::on(&crate::Device::Cuda(0), None),
                    Err(RetentionError::NoDevice(_))
                ));
                return;
            }
        };
        let pool = MemoryPool::on(&device, Some(3 * 1024 * 1024)).unwrap();
        assert!(pool.is_device_memory());
        let mut a = pool.alloc(1 << 20).unwrap();
        assert!(a.as_slice::<f32>().is_none());
        a.fill_zero().unwrap();
        assert_eq!(a.device_mut().unwrap().len(), (1 << 20) / 4);
        let b = pool.alloc(1 << 20).unwrap();
        assert_eq!(pool.stats().in_use, 2 << 20);
        assert!(matches!(
            pool.alloc(2 << 20),
            Err(RetentionError::OutOfMemory { .. })
        ));
        drop(b);
        let c = pool.alloc(1 << 20).unwrap();
        let stats = pool.stats();
        assert_eq!(
            (stats.in_use, stats.reserved, stats.cache_hits),
            (2 << 20, 2 << 20, 1)
        );
        drop((a, c));
        assert_eq!(pool.trim(), 2 << 20);
        assert_eq!(pool.stats().reserved, 0);
    }
}
