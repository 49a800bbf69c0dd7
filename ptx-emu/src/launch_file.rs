//! The CLI semantics of `kernel-gen emu FILE.ptx --launch LAUNCH.json`: a JSON launch
//! description whose buffers are raw little-endian files.
//!
//! ```json
//! {
//!   "entry": "decode_step",
//!   "grid": [4, 8, 1],
//!   "block": [128, 1, 1],
//!   "dynamic_shared_bytes": 0,
//!   "params": [
//!     { "file": "q.bin", "dtype": "bf16", "len": 4096, "output": false },
//!     { "file": "state.bin", "dtype": "f32", "len": 524288, "output": true },
//!     { "type": "u32", "value": 4 },
//!     { "type": "f32", "value": 0.0884 }
//!   ]
//! }
//! ```
//! Relative buffer paths are taken from the launch file's directory. Output buffers are
//! written back only after the whole launch succeeded; any error leaves every file as it was.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::EmuError;
use crate::launch::{Buffer, DEFAULT_STEP_LIMIT, Dtype, Launch, Module, Param};
use crate::report::EmuReport;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LaunchFile {
    entry: String,
    grid: [u32; 3],
    block: [u32; 3],
    #[serde(default)]
    dynamic_shared_bytes: u32,
    params: Vec<ParamFile>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ParamFile {
    Buffer {
        file: PathBuf,
        dtype: Dtype,
        len: usize,
        #[serde(default)]
        output: bool,
    },
    Scalar {
        #[serde(rename = "type")]
        ty: String,
        value: serde_json::Number,
    },
}

fn scalar(path: &Path, i: usize, ty: &str, v: &serde_json::Number) -> Result<Param, EmuError> {
    let bad = || EmuError::LaunchFile {
        path: path.display().to_string(),
        message: format!("param {i}: value {v} does not fit type `{ty}`"),
    };
    let int = || {
        v.as_i64()
            .map(i128::from)
            .or_else(|| v.as_u64().map(i128::from))
    };
    Ok(match ty {
        "u32" | "b32" => Param::U32(int().and_then(|x| u32::try_from(x).ok()).ok_or_else(bad)?),
        "s32" => Param::S32(int().and_then(|x| i32::try_from(x).ok()).ok_or_else(bad)?),
        "u64" | "b64" => Param::U64(int().and_then(|x| u64::try_from(x).ok()).ok_or_else(bad)?),
        "s64" => Param::S64(int().and_then(|x| i64::try_from(x).ok()).ok_or_else(bad)?),
        "u16" | "b16" => Param::U16(int().and_then(|x| u16::try_from(x).ok()).ok_or_else(bad)?),
        "u8" | "b8" => Param::U8(int().and_then(|x| u8::try_from(x).ok()).ok_or_else(bad)?),
        "f32" => Param::F32(v.as_f64().ok_or_else(bad)? as f32),
        "f64" => Param::F64(v.as_f64().ok_or_else(bad)?),
        other => {
            return Err(EmuError::LaunchFile {
                path: path.display().to_string(),
                message: format!("param {i}: unknown scalar type `{other}`"),
            });
        }
    })
}

fn read(path: &Path) -> Result<Vec<u8>, EmuError> {
    std::fs::read(path).map_err(|source| EmuError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Runs `ptx` with the launch described in the JSON file `launch`, writes output buffers
/// back to their files after a successful run, and returns the report. On any error (bad
/// JSON, missing or wrongly sized buffer file, PTX error, emulation error) no file changes.
///
/// # Errors
/// [`EmuError::Io`] and [`EmuError::LaunchFile`] for unreadable or inconsistent files, and
/// every error of [`Module::parse`] and [`Module::launch`].
pub fn run_launch_files(ptx: &Path, launch: &Path) -> Result<EmuReport, EmuError> {
    let lf_bytes = read(launch)?;
    let lf: LaunchFile = serde_json::from_slice(&lf_bytes).map_err(|e| EmuError::LaunchFile {
        path: launch.display().to_string(),
        message: e.to_string(),
    })?;
    let ptx_text = String::from_utf8(read(ptx)?).map_err(|_| EmuError::Parse {
        line: 0,
        message: format!("{} is not UTF-8 text", ptx.display()),
    })?;
    let module = Module::parse(&ptx_text)?;
    let dir = launch.parent().unwrap_or(Path::new("."));
    let mut params = Vec::new();
    let mut outputs = Vec::new();
    for (i, p) in lf.params.iter().enumerate() {
        match p {
            ParamFile::Buffer {
                file,
                dtype,
                len,
                output,
            } => {
                let path = dir.join(file);
                let bytes = read(&path)?;
                let want = len
                    .checked_mul(dtype.size())
                    .ok_or_else(|| EmuError::LaunchFile {
                        path: launch.display().to_string(),
                        message: format!("param {i}: len {len} is too large"),
                    })?;
                if bytes.len() != want {
                    return Err(EmuError::LaunchFile {
                        path: launch.display().to_string(),
                        message: format!(
                            "param {i}: {} holds {} bytes, {len} × {dtype:?} needs {want}",
                            path.display(),
                            bytes.len()
                        ),
                    });
                }
                if *output {
                    outputs.push((i, path));
                }
                params.push(Param::Buffer(Buffer {
                    bytes,
                    dtype: *dtype,
                    output: *output,
                }));
            }
            ParamFile::Scalar { ty, value } => params.push(scalar(launch, i, ty, value)?),
        }
    }
    let mut l = Launch {
        entry: lf.entry,
        grid: lf.grid,
        block: lf.block,
        dynamic_shared_bytes: lf.dynamic_shared_bytes,
        params,
        step_limit: DEFAULT_STEP_LIMIT,
    };
    let report = module.launch(&mut l)?;
    // Write each output to a sibling temp file first, then rename them all: a failed write
    // leaves the originals untouched.
    let mut staged = Vec::new();
    for (i, path) in &outputs {
        let Some(b) = l.buffer(*i) else { continue };
        let mut tmp = path.clone().into_os_string();
        tmp.push(".emu-tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, &b.bytes).map_err(|source| EmuError::Io {
            path: tmp.display().to_string(),
            source,
        })?;
        staged.push((tmp, path));
    }
    for (tmp, path) in staged {
        std::fs::rename(&tmp, path).map_err(|source| EmuError::Io {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(report)
}
