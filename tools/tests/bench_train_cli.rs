//! `retention bench --suite train --quick` on a tiny custom shape writes JSON rows that match
//! the documented layout (tools/docs/bench-json.md, "train suite") field for field, with
//! FLOPs counted as documented, consistent times and a measured peak at least the bytes the
//! step must hold; GPU-like devices are refused in one line.

mod common;

use std::collections::BTreeMap;

use serde_json::Value;

const DOCS: &str = include_str!("../docs/bench-json.md");

/// name → type of every field of a `## section` of the schema page.
fn documented(section: &str) -> BTreeMap<String, String> {
    let mut current = None;
    let mut fields = BTreeMap::new();
    for line in DOCS.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            current = Some(title.trim() == section);
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if current == Some(true) && cells.len() >= 4 && cells[1].starts_with('`') {
            fields.insert(cells[1].trim_matches('`').to_string(), cells[2].to_string());
        }
    }
    assert!(!fields.is_empty(), "no section {section}");
    fields
}

fn check_section(object: &Value, section: &str) {
    let fields = documented(section);
    let map = object.as_object().unwrap();
    let got: Vec<&String> = map.keys().collect();
    assert_eq!(got, fields.keys().collect::<Vec<_>>(), "{section}: keys");
    for (name, ty) in &fields {
        let v = &map[name];
        let ok = match ty.as_str() {
            "integer" => v.is_u64(),
            "number" => v.as_f64().is_some_and(f64::is_finite),
            "string" => v.is_string(),
            "object" => v.is_object(),
            "array" => v.is_array(),
            other => panic!("undocumented type {other}"),
        };
        assert!(ok, "{section}.{name} = {v} is not {ty}");
    }
}

#[test]
fn quick_train_suite_writes_documented_rows() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("train.json");
    let args = [
        "bench", "--suite", "train", "--quick", "--dtype", "f32", "--heads", "2", "--dk", "16",
        "--dv", "32", "--json",
    ];
    let mut args = args.to_vec();
    args.push(json.to_str().unwrap());
    let out = common::retention(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    check_section(&report, "train suite report");
    assert_eq!(report["suite"], "train");
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "--quick with one shape: T = 2048 only");
    let r = &rows[0];
    check_section(r, "train suite rows[]");
    assert_eq!(r["suite"], "train");
    assert_eq!(r["shape"], "custom");
    let u = |k: &str| r[k].as_u64().unwrap();
    let f = |k: &str| r[k].as_f64().unwrap();
    assert_eq!(
        (u("batch"), u("tokens"), u("heads"), u("dk"), u("dv")),
        (1, 2048, 2, 16, 32)
    );
    // Counted per (row, head, token): forward 2C(K+V) + 4KV, backward 2C(3K+2V) + 8KV.
    let per_token = (2 * 64 * 48 + 4 * 512) + (2 * 64 * (48 + 64) + 8 * 512);
    assert_eq!(f("flops"), (2 * 2048 * per_token) as f64);
    let (fw, bw) = (f("forward_seconds"), f("backward_seconds"));
    assert!(fw > 0.0 && bw > 0.0);
    assert!((f("seconds") - (fw + bw)).abs() <= 1e-12 * f("seconds"));
    assert!((f("gflops") - f("flops") / f("seconds") / 1e9).abs() <= 1e-9 * f("gflops"));
    let gemm = report["limits"]["gemm_gflops"].as_f64().unwrap();
    assert!((f("gemm_fraction") - f("gflops") / gemm).abs() <= 1e-9);
    // States: 32 chunks × 2 heads × K·V·4 bytes; the peak holds at least q, k, v, do, o,
    // dq, dk, dv (f32) and the states.
    assert_eq!(u("saved_state_bytes"), 32 * 2 * 16 * 32 * 4);
    let tensors = 2048 * 2 * (4 * 16 + 4 * 32) * 4;
    assert!(u("peak_bytes") >= tensors + u("saved_state_bytes"), "{r}");
    assert!(u("peak_bytes") < 64 * tensors, "{r}");
}

#[test]
fn the_emulated_device_is_refused_in_one_line() {
    let out = common::retention(&[
        "bench", "--suite", "train", "--device", "emulated", "--quick",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("instruction by instruction"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
