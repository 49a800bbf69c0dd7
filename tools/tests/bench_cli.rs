//! `retention bench`: a quick run on a tiny model writes a JSON report that matches the
//! documented schema (tools/docs/bench-json.md) field for field, with memory figures equal to
//! what the shapes imply; Markdown and SVG files appear; bad inputs exit 2 with one line and
//! before anything is measured or written.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use support::{assert_one_line_error, entries, ok_stdout, retention};

const DOCS: &str = include_str!("../docs/bench-json.md");

/// Tiny model: H=2, K=16, V=32, 3 layers.
const MODEL: [&str; 8] = ["--heads", "2", "--dk", "16", "--dv", "32", "--layers", "3"];

/// The documented fields of each `## section` of the schema page: name → type.
fn documented() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut sections = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in DOCS.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            current = Some(title.trim().to_string());
            continue;
        }
        let Some(section) = &current else { continue };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() >= 4 && cells[1].starts_with('`') {
            sections
                .entry(section.clone())
                .or_insert_with(BTreeMap::new)
                .insert(cells[1].trim_matches('`').to_string(), cells[2].to_string());
        }
    }
    sections
}

fn has_type(value: &Value, ty: &str) -> bool {
    ty.split(" or ").any(|t| match t {
        "integer" => value.is_u64(),
        "number" => value.as_f64().is_some_and(f64::is_finite),
        "string" => value.is_string(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        other => panic!("undocumented type {other:?}"),
    })
}

/// `object` has exactly the fields of `section`, each of its documented type.
fn check_section(object: &Value, section: &str, docs: &BTreeMap<String, BTreeMap<String, String>>) {
    let fields = &docs[section];
    let map = object
        .as_object()
        .unwrap_or_else(|| panic!("{section}: not an object"));
    let got: Vec<&String> = map.keys().collect();
    let want: Vec<&String> = fields.keys().collect();
    assert_eq!(
        {
            let mut g = got.clone();
            g.sort();
            g
        },
        want,
        "{section}: keys differ from the documentation"
    );
    for (name, ty) in fields {
        assert!(
            has_type(&map[name], ty),
            "{section}.{name} = {} is not {ty}",
            map[name]
        );
    }
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap()
}

#[test]
fn quick_bench_writes_reports_that_match_the_documented_schema() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let md = dir.path().join("report.md");
    let plots = dir.path().join("plots");
    let mut args = vec!["bench", "--quick"];
    args.extend(MODEL);
    args.extend([
        "--json",
        json.to_str().unwrap(),
        "--markdown",
        md.to_str().unwrap(),
        "--plot",
        plots.to_str().unwrap(),
    ]);
    let stdout = ok_stdout(&args, &retention(&args));
    assert!(
        stdout.contains("retention vs attention KV cache"),
        "{stdout}"
    );

    let docs = documented();
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    check_section(&report, "report", &docs);
    check_section(&report["model"], "model", &docs);
    check_section(&report["limits"], "limits", &docs);
    assert_eq!(report["schema"], 2);
    assert_eq!(report["model"]["name"], "custom");
    assert!(report["limits"]["copy_gbps"].as_f64().unwrap() > 0.0);
    assert!(report["limits"]["gemm_gflops"].as_f64().unwrap() > 0.0);
    assert_eq!(report["limits"]["predicted"], false);

    let results = report["results"].as_array().unwrap();
    let (h, k, v, layers) = (2u64, 16u64, 32u64, 3u64);
    let mut seen = BTreeMap::<(String, String), usize>::new();
    for r in results {
        check_section(r, "results[]", &docs);
        let (suite, op) = (r["suite"].as_str().unwrap(), r["op"].as_str().unwrap());
        *seen.entry((suite.into(), op.into())).or_default() += 1;
        assert_eq!((u(r, "heads"), u(r, "dk"), u(r, "dv")), (h, k, v));
        assert_eq!(r["dtype"], "bf16");
        let seconds = r["seconds"].as_f64().unwrap();
        assert!(seconds > 0.0, "{r}");
        let (batch, tokens) = (u(r, "batch"), u(r, "tokens"));
        let tps = r["tokens_per_s"].as_f64().unwrap();
        let want_tps = (batch * tokens) as f64 / (seconds * layers as f64);
        assert!((tps - want_tps).abs() <= 1e-9 * want_tps, "{r}");
        assert_eq!(r["chunk"].is_null(), op != "chunkwise", "{r}");
        match op {
            "retention_decode" => {
                assert_eq!(tokens, 1);
                // The state pool rounds to a size class (< 25% above the exact size).
                let exact = batch * layers * h * k * v * 4;
                let state = u(r, "state_bytes");
                assert!(
                    state >= exact && state * 4 < exact * 5,
                    "{r}: exact {exact}"
                );
                assert!(r["kv_cache_bytes"].is_null());
                // One step moves the staged slot rows (4 bytes each) and nothing else.
                assert_eq!(
                    (u(r, "h2d_bytes"), u(r, "d2h_bytes")),
                    (4 * batch, 0),
                    "{r}"
                );
            }
            "attention_decode" => {
                assert_eq!(tokens, 1);
                // bf16 caches of K and V for every layer.
                let want = layers * batch * h * u(r, "context") * (k + v) * 2;
                assert_eq!(u(r, "kv_cache_bytes"), want, "{r}");
                assert!(r["state_bytes"].is_null());
            }
            "chunkwise" | "parallel" => {
                assert_eq!(suite, "prefill");
                assert_eq!(u(r, "context"), tokens);
                assert!(r["gbps"].is_null());
                assert!(r["gflops"].as_f64().unwrap() > 0.0);
            }
            other => panic!("unexpected op {other}"),
        }
    }
    for key in [
        ("decode", "retention_decode"),
        ("prefill", "chunkwise"),
        ("prefill", "parallel"),
        ("compare", "retention_decode"),
        ("compare", "attention_decode"),
    ] {
        assert!(
            seen.contains_key(&(key.0.into(), key.1.into())),
            "no {key:?} result"
        );
    }
    // The paper's comparison points, both ops at each.
    for ctx in [2048u64, 8192, 32768] {
        for op in ["retention_decode", "attention_decode"] {
            assert!(
                results
                    .iter()
                    .any(|r| r["suite"] == "compare" && r["op"] == op && u(r, "context") == ctx),
                "no compare {op} at {ctx}"
            );
        }
    }

    let markdown = std::fs::read_to_string(&md).unwrap();
    assert!(markdown.starts_with("# retention bench"), "{markdown}");
    assert!(markdown.contains("| suite | op |"));
    assert_eq!(
        entries(&plots),
        ["latency_vs_context.svg", "memory_vs_context.svg"]
    );
    for f in entries(&plots) {
        let svg = std::fs::read_to_string(plots.join(f)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("retention"),
            "{svg:.200}"
        );
    }
    // Only the three outputs, no temporary or probe files.
    assert_eq!(entries(dir.path()), ["plots", "report.json", "report.md"]);
}

#[test]
fn one_suite_runs_alone() {
    let mut args = vec!["bench", "--quick", "--suite", "prefill", "--dtype", "f32"];
    args.extend(MODEL);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    args.extend(["--json", json.to_str().unwrap()]);
    ok_stdout(&args, &retention(&args));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    assert!(!results.is_empty());
    assert!(
        results
            .iter()
            .all(|r| r["suite"] == "prefill" && r["dtype"] == "f32")
    );
}

fn rejected(extra: &[&str], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["bench", "--quick"];
    args.extend_from_slice(extra);
    let out = retention(&args);
    assert_one_line_error(&args, &out, 2, needle);
    assert!(out.stdout.is_empty(), "{args:?}: measured before failing");
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn bad_models_are_rejected() {
    rejected(&["--model", "9b"], "9b");
    rejected(&["--heads", "0", "--dk", "4", "--dv", "4"], "at least 1");
    rejected(&["--heads", "2", "--dk", "0", "--dv", "4"], "at least 1");
    rejected(&["--heads", "2"], "--dk");
    rejected(
        &["--model", "1.3b", "--heads", "2", "--dk", "4", "--dv", "4"],
        "cannot be used",
    );
    rejected(&["--suite", "training"], "training");
    // Far beyond any memory: refused by the budget (with the reason), never an allocation abort.
    rejected(
        &[
            "--heads", "100000", "--dk", "100000", "--dv", "100000", "--suite", "decode",
        ],
        "nothing could be measured",
    );
    // A decay schedule that cannot hold that many heads is a typed error.
    rejected(
        &["--heads", "60", "--dk", "4", "--dv", "4"],
        "gamma for head",
    );
}

#[test]
fn unwritable_outputs_fail_before_measuring() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/r.json");
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let cases: [(&str, &Path); 4] = [
        ("--json", &missing),
        ("--markdown", &missing),
        ("--json", dir.path()),
        ("--plot", &file),
    ];
    for (flag, path) in cases {
        let mut args = vec!["bench", "--quick"];
        args.extend(MODEL);
        args.extend([flag, path.to_str().unwrap()]);
        let out = retention(&args);
        assert_one_line_error(&args, &out, 2, "cannot write output");
        assert!(out.stdout.is_empty(), "{args:?}: measured before failing");
    }
    assert_eq!(entries(dir.path()), ["file"]);
}

#[test]
fn emulated_bench_reports_predicted_kernel_times_in_the_documented_schema() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("emulated.json");
    let args = [
        "bench",
        "--device",
        "emulated",
        "--heads",
        "2",
        "--dk",
        "64",
        "--dv",
        "64",
        "--layers",
        "2",
        "--json",
        json.to_str().unwrap(),
    ];
    let stdout = ok_stdout(&args, &retention(&args));
    assert!(stdout.contains("PREDICTED"), "{stdout}");
    let docs = documented();
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    check_section(&report, "report", &docs);
    check_section(&report["limits"], "limits", &docs);
    assert_eq!(report["limits"]["predicted"], true);
    // The emulator's A100 model (the default): 1710 GB/s copy, mma.sync at 8 cycles per
    // m16n8k16 on 4 × 108 tensor cores at 1.41 GHz.
    assert_eq!(report["limits"]["gpu_model"], "a100");
    assert_eq!(report["limits"]["copy_gbps"].as_f64().unwrap(), 1710.0);
    let mma_peak = 4096.0 * 4.0 * 108.0 * 1.41e9 / 8.0 / 1e9;
    assert!((report["limits"]["gemm_gflops"].as_f64().unwrap() - mma_peak).abs() < 1e-6);
    let results = report["results"].as_array().unwrap();
    let mut ops: Vec<&str> = results.iter().map(|r| r["op"].as_str().unwrap()).collect();
    ops.sort_unstable();
    ops.dedup();
    assert_eq!(
        ops,
        [
            "attention_decode",
            "chunkwise",
            "parallel",
            "retention_decode"
        ]
    );
    for r in results {
        check_section(r, "results[]", &docs);
        assert_eq!(r["predicted"], true, "{r}");
        assert!(
            r["host_seconds"].is_null() && r["replay_seconds"].is_null(),
            "{r}"
        );
        if r["op"] == "retention_decode" {
            assert_eq!(u(r, "h2d_bytes"), 4 * u(r, "batch"), "{r}");
            assert_eq!(u(r, "d2h_bytes"), 0, "{r}");
        }
        let seconds = r["seconds"].as_f64().unwrap();
        assert!(seconds > 0.0 && seconds < 1e-2, "{r}");
        // The time model never moves the bytes a kernel must move faster than the modelled
        // copy bandwidth.
        if let Some(gbps) = r["gbps"].as_f64() {
            assert!(gbps <= 1710.0 * 1.0001, "{r}");
        }
    }
}

#[test]
fn emulated_bench_predicts_for_the_gpu_named_by_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("h200.json");
    let args = [
        "bench",
        "--device",
        "emulated",
        "--gpu",
        "h200",
        "--suite",
        "decode",
        "--heads",
        "2",
        "--dk",
        "64",
        "--dv",
        "64",
        "--layers",
        "2",
        "--json",
        json.to_str().unwrap(),
    ];
    let stdout = ok_stdout(&args, &retention(&args));
    assert!(
        stdout.contains("PREDICTED") && stdout.contains("H200"),
        "{stdout}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["limits"]["gpu_model"], "h200");
    assert_eq!(report["limits"]["predicted"], true);
    assert_eq!(report["limits"]["copy_gbps"].as_f64().unwrap(), 4300.0);
    let results = report["results"].as_array().unwrap();
    assert!(!results.is_empty());
    for r in results {
        assert_eq!(r["predicted"], true, "{r}");
        let gbps = r["gbps"].as_f64().unwrap();
        assert!(gbps > 0.0 && gbps <= 4300.0 * 1.0001, "{r}");
    }
    let args = ["bench", "--device", "cpu", "--gpu", "h100"];
    assert_one_line_error(&args, &retention(&args), 2, "--gpu");
}

#[test]
fn cuda_bench_without_a_gpu_is_a_one_line_error() {
    let args = ["bench", "--device", "cuda"];
    let out = retention(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("no such device") || !out.status.success() {
        assert_one_line_error(&args, &out, 2, "no such device");
    }
}
