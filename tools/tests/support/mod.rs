//! Helpers shared by the `bench`, `autotune`, `verify` and `info` CLI tests: running the
//! binary with a chosen environment and checking the one-line error contract.

#![allow(dead_code)]

use std::path::Path;
use std::process::Output;

/// Run `retention <args>` with extra environment variables.
pub fn retention_env(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = assert_cmd::cargo::cargo_bin_cmd!("retention");
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Run `retention <args>`.
pub fn retention(args: &[&str]) -> Output {
    retention_env(args, &[])
}

/// Stdout as text, after insisting on exit code 0.
pub fn ok_stdout(args: &[&str], out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Insist `out` exited with `code` and exactly one stderr line containing `needle`.
pub fn assert_one_line_error(args: &[&str], out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: stderr {stderr:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: not one line: {stderr:?}");
    assert!(
        stderr.contains(needle),
        "{args:?}: {stderr:?} does not mention {needle:?}"
    );
}

/// Names of the entries of `dir`, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
