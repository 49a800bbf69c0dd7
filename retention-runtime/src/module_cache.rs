//! The module cache: `KernelSpec` → PTX (generated once per process by `kernel-gen`) → a
//! module loaded for a device, shared by every caller. Generation and load times are kept so
//! a user can see what the first call cost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use kernel_gen::KernelSpec;
use kernel_gen::emu;
use retention_core::{Result, RetentionError};

/// One spec's module, ready to launch on the emulator.
#[derive(Debug)]
pub struct LoadedModule {
    /// What the module computes.
    pub spec: KernelSpec,
    /// The entry to launch.
    pub entry: String,
    /// The PTX text as emitted.
    pub ptx: String,
    /// The parsed module the emulator executes.
    pub emulated: emu::Module,
    /// Seconds `kernel-gen` took to emit the PTX.
    pub generate_seconds: f64,
    /// Seconds the load (parse) took.
    pub load_seconds: f64,
}

type Slot = Arc<OnceLock<Result<Arc<LoadedModule>>>>;

/// Thread-safe spec → module map; each spec is generated and loaded at most once.
#[derive(Debug, Default)]
pub struct ModuleCache {
    modules: Mutex<HashMap<KernelSpec, Slot>>,
}

/// What the cache holds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModuleCacheStats {
    /// Modules loaded successfully.
    pub modules: usize,
    /// Total seconds spent generating PTX.
    pub generate_seconds: f64,
    /// Total seconds spent loading modules.
    pub load_seconds: f64,
}

impl ModuleCache {
    /// The process-wide cache.
    pub fn global() -> &'static ModuleCache {
        static CACHE: OnceLock<ModuleCache> = OnceLock::new();
        CACHE.get_or_init(ModuleCache::default)
    }

    /// The module of `spec`, generating and loading it on first use. Concurrent first calls
    /// for one spec wait for a single generation.
    ///
    /// # Errors
    /// [`RetentionError::Unsupported`] when no generator serves the spec;
    /// [`RetentionError::KernelLoad`] when the emitted PTX does not load.
    pub fn get(&self, spec: &KernelSpec) -> Result<Arc<LoadedModule>> {
        let slot = {
            let mut map = self
                .modules
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(map.entry(*spec).or_default())
        };
        slot.get_or_init(|| load(spec)).clone()
    }

    /// The specs loaded successfully so far, in no particular order.
    pub fn specs(&self) -> Vec<KernelSpec> {
        let map = self
            .modules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter()
            .filter(|(_, slot)| matches!(slot.get(), Some(Ok(_))))
            .map(|(spec, _)| *spec)
            .collect()
    }

    /// Totals over the modules loaded so far.
    pub fn stats(&self) -> ModuleCacheStats {
        let map = self
            .modules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut s = ModuleCacheStats::default();
        for m in map
            .values()
            .filter_map(|slot| slot.get())
            .filter_map(|r| r.as_ref().ok())
        {
            s.modules += 1;
            s.generate_seconds += m.generate_seconds;
            s.load_seconds += m.load_seconds;
        }
        s
    }
}

fn load(spec: &KernelSpec) -> Result<Arc<LoadedModule>> {
    let t0 = Instant::now();
    let ptx = kernel_gen::emit_ptx(spec).map_err(RetentionError::from)?;
    let t1 = Instant::now();
    let emulated = emu::Module::parse(&ptx)
        .map_err(|e| RetentionError::KernelLoad(format!("{}: {e}", spec.entry())))?;
    let t2 = Instant::now();
    Ok(Arc::new(LoadedModule {
        spec: *spec,
        entry: spec.entry(),
        ptx,
        emulated,
        generate_seconds: (t1 - t0).as_secs_f64(),
        load_seconds: (t2 - t1).as_secs_f64(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel_gen::{Arch, GammaSet};
    use retention_core::Dtype;

    #[test]
    fn a_spec_is_generated_once_and_shared() {
        let cache = ModuleCache::default();
        let spec = KernelSpec::decode(64, 64, GammaSet::Runtime, Dtype::F32, Arch::Sm80);
        let handles: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(move || ModuleCache::global().get(&spec).unwrap()))
            .collect();
        let mods: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(mods.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
        let a = cache.get(&spec).unwrap();
        let b = cache.get(&spec).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.stats().modules, 1);
        assert!(a.ptx.contains(&a.entry));
        let bad = KernelSpec::decode(257, 64, GammaSet::Runtime, Dtype::F32, Arch::Sm80);
        assert!(matches!(
            cache.get(&bad),
            Err(RetentionError::Unsupported { .. })
        ));
    }
}
