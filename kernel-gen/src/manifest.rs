//! Writing a catalog to disk: one `.ptx` per spec and a `manifest.json` describing them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ptxas::{PtxasInfo, assemble_all};
use crate::spec::KernelSpec;
use crate::{GenError, emit_ptx};

/// One catalog entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The spec.
    pub spec: KernelSpec,
    /// PTX entry name.
    pub entry: String,
    /// The spec's stable hash, 16 hex digits.
    pub hash: String,
    /// File name of the module, relative to the manifest.
    pub file: String,
    /// Parameter names in launch order.
    pub params: Vec<String>,
    /// `ptxas -v` figures for the spec's arch, when ptxas was found.
    pub ptxas: Option<PtxasInfo>,
}

/// The whole `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `kernel-gen <version>`.
    pub generator: String,
    /// The ptxas used, when one was found.
    pub ptxas: Option<String>,
    /// Entries, in catalog order.
    pub kernels: Vec<ManifestEntry>,
}

/// Emit every spec into `out_dir` (created if needed), assemble each module with `ptxas`
/// when given, and write `manifest.json`.
///
/// # Errors
/// The first spec that fails to generate, any ptxas error, or an I/O failure.
pub fn write_catalog(
    specs: &[KernelSpec],
    out_dir: &Path,
    ptxas: Option<&Path>,
) -> Result<Manifest, GenError> {
    let io = |p: &Path, e: std::io::Error| GenError::Io(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(out_dir).map_err(|e| io(out_dir, e))?;
    let modules = specs
        .iter()
        .map(|s| Ok((emit_ptx(s)?, s.arch)))
        .collect::<Result<Vec<_>, GenError>>()?;
    let infos: Vec<Option<PtxasInfo>> = match ptxas {
        None => vec![None; specs.len()],
        Some(p) => assemble_all(p, &modules)
            .into_iter()
            .zip(specs)
            .map(|(r, s)| {
                r.map(Some)
                    .map_err(|e| GenError::Ptxas(format!("{}: {e}", s.slug())))
            })
            .collect::<Result<_, _>>()?,
    };
    let mut kernels = Vec::with_capacity(specs.len());
    for ((spec, (ptx, _)), info) in specs.iter().zip(&modules).zip(infos) {
        let file = format!("{}.ptx", spec.slug());
        let path = out_dir.join(&file);
        std::fs::write(&path, ptx).map_err(|e| io(&path, e))?;
        kernels.push(ManifestEntry {
            spec: *spec,
            entry: spec.entry(),
            hash: format!("{:016x}", spec.hash64()),
            file,
            params: crate::param_names(spec)
                .into_iter()
                .map(String::from)
                .collect(),
            ptxas: info,
        });
    }
    let manifest = Manifest {
        generator: format!("kernel-gen {}", env!("CARGO_PKG_VERSION")),
        ptxas: ptxas.map(|p| p.display().to_string()),
        kernels,
    };
    let path = out_dir.join("manifest.json");
    let json = serde_json::to_string_pretty(&manifest).map_err(|e| GenError::Io(e.to_string()))?;
    std::fs::write(&path, json + "\n").map_err(|e| io(&path, e))?;
    Ok(manifest)
}
