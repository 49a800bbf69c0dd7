//! Writing the tool's output files (`run`'s safetensors, `bench`'s reports), each replaced
//! atomically so a failure never leaves a partial or stale-but-new-looking file behind.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{Dtype as StDtype, tensor::TensorView};

use crate::error::CliError;

/// One tensor to write: name, dtype, shape and little-endian bytes.
pub struct OutputTensor {
    /// Name in the file (`o`, `ht`).
    pub name: &'static str,
    /// Element type as safetensors spells it.
    pub dtype: StDtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian element bytes.
    pub bytes: Vec<u8>,
}

/// Removes the temporary file unless the rename succeeded.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Serialize `tensors` (with string `metadata`) and write them to `path`: first to a hidden
/// temporary file in the same directory, then renamed over `path`, which is atomic on one
/// filesystem.
///
/// # Errors
/// [`CliError::WriteOutput`] when the directory is missing or unwritable, the path is a
/// directory, or the disk is full; nothing is left behind in any of these cases.
pub fn write(
    path: &Path,
    tensors: &[OutputTensor],
    metadata: HashMap<String, String>,
) -> Result<(), CliError> {
    let views = tensors
        .iter()
        .map(|t| TensorView::new(t.dtype, t.shape.clone(), &t.bytes).map(|view| (t.name, view)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::write_output(path, &e))?;
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| CliError::write_output(path, &e))?;
    write_atomic(path, &bytes)
}

/// Write `bytes` to `path` atomically: a hidden temporary file in the same directory, synced,
/// then renamed over `path`.
///
/// # Errors
/// [`CliError::WriteOutput`] when the directory is missing or unwritable, the path is a
/// directory, or the disk is full; nothing is left behind in any of these cases.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let name = path
        .file_name()
        .ok_or_else(|| CliError::write_output(path, &"the path names no file"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let temp_path = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    // `create_new`: never truncate (or later delete) a file that is not ours.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp_path)
        .map_err(|e| CliError::write_output(path, &e))?;
    let mut temp = TempFile {
        path: temp_path,
        keep: false,
    };
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| CliError::write_output(path, &e))?;
    drop(file);
    fs::rename(&temp.path, path).map_err(|e| CliError::write_output(path, &e))?;
    temp.keep = true;
    Ok(())
}

/// Check up front that `path` can be written (its directory exists and takes a new file), so a
/// long benchmark does not fail at the very end. Writes and removes a hidden probe file.
///
/// # Errors
/// [`CliError::WriteOutput`] naming `path` when it cannot be written.
pub fn check_writable(path: &Path) -> Result<(), CliError> {
    if path.is_dir() {
        return Err(CliError::write_output(path, &"it is a directory"));
    }
    let name = path
        .file_name()
        .ok_or_else(|| CliError::write_output(path, &"the path names no file"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let probe = dir.join(format!(
        ".{}.{}.probe",
        name.to_string_lossy(),
        std::process::id()
    ));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| CliError::write_output(path, &e))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}
