//! `retention bench --suite model --quick` on a tiny model writes JSON rows that match the
//! documented layout (tools/docs/bench-json.md) field for field, with measured memory that
//! behaves as the architectures imply; a memory limit shows where the Transformer runs out;
//! the plots have clean axes; other devices and bad limits are refused with one line.

mod support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::{assert_one_line_error, entries, ok_stdout, retention};

const DOCS: &str = include_str!("../docs/bench-json.md");

/// Tiny RetNet: H=2, K=16, V=32 (d = 32), 2 layers; its Transformer twin has 2 heads of 16.
const TINY: [&str; 8] = ["--heads", "2", "--dk", "16", "--dv", "32", "--layers", "2"];

/// name → type of every field of each `## section` of the schema page.
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

fn check_section(object: &Value, section: &str) {
    let docs = documented();
    let fields = &docs[section];
    let map = object.as_object().unwrap();
    let mut got: Vec<&String> = map.keys().collect();
    got.sort();
    assert_eq!(got, fields.keys().collect::<Vec<_>>(), "{section}: keys");
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

/// Run the quick model suite on the tiny model with `extra` flags; the parsed JSON.
fn run(extra: &[&str], dir: &std::path::Path) -> Value {
    let json = dir.join("model.json");
    let mut args = vec!["bench", "--suite", "model", "--quick", "--dtype", "f32"];
    args.extend(TINY);
    args.extend(extra);
    args.extend(["--json", json.to_str().unwrap()]);
    let out = retention(&args);
    let stdout = ok_stdout(&args, &out);
    assert!(
        stdout.contains("Figure 1 at custom / 8192 tokens"),
        "{stdout}"
    );
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn rows<'a>(report: &'a Value, arch: &str, sweep: &str) -> Vec<&'a Value> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["arch"] == arch && r["sweep"] == sweep)
        .collect()
}

#[test]
fn quick_model_suite_writes_documented_rows_with_measured_memory() {
    let dir = tempfile::tempdir().unwrap();
    let plots = dir.path().join("plots");
    let report = run(&["--plot", plots.to_str().unwrap()], dir.path());
    check_section(&report, "model suite report");
    check_section(&report["limits"], "limits");
    check_section(&report["grid"], "model suite grid");
    check_section(&report["summary"], "model suite summary");
    for m in report["models"].as_array().unwrap() {
        check_section(m, "model suite models[]");
    }
    for r in report["rows"].as_array().unwrap() {
        check_section(r, "model suite rows[]");
    }
    for m in report["summary"]["max_batch"].as_array().unwrap() {
        check_section(m, "model suite summary.max_batch[]");
    }
    assert_eq!(report["suite"], "model");
    assert_eq!(report["dtype"], "f32");

    // Equal parameter counts, measured as the weights allocated (f32: 4 bytes each).
    let models = report["models"].as_array().unwrap();
    let (ret, tra) = (&models[0], &models[1]);
    assert_eq!(
        (ret["arch"].as_str(), tra["arch"].as_str()),
        (Some("retnet"), Some("transformer"))
    );
    assert_eq!(u(ret, "params"), u(tra, "params"));
    assert_eq!((u(tra, "heads"), u(tra, "dk"), u(tra, "ffn")), (2, 16, 128));

    // Every row (prefills included) fitted the default limit and was timed; rates follow
    // from seconds.
    for r in report["rows"].as_array().unwrap() {
        assert_eq!(r["fits"], true, "{r}");
        let s = r["seconds"].as_f64().unwrap();
        assert!(s > 0.0);
        let tokens = (u(r, "batch") * u(r, "tokens")) as f64;
        assert!((r["tokens_per_s"].as_f64().unwrap() * s / tokens - 1.0).abs() < 1e-9);
        assert_eq!(u(r, "weights_bytes"), 4 * u(ret, "params"));
        assert!(u(r, "total_bytes") >= u(r, "weights_bytes") + u(r, "cache_bytes"));
    }

    // RetNet's state: layers·H·K·V f32 per sequence whatever the context.
    for r in rows(&report, "retnet", "context") {
        assert_eq!(u(r, "cache_bytes"), 2 * 2 * 16 * 32 * 4);
    }
    // The Transformer's cache: keys and values of every layer and token.
    let t_ctx = rows(&report, "transformer", "context");
    assert!(t_ctx.len() >= 2);
    for r in &t_ctx {
        assert_eq!(u(r, "cache_bytes"), 2 * 2 * 2 * u(r, "context") * 16 * 4);
    }
    let s = &report["summary"];
    assert!(s["memory_ratio"].as_f64().unwrap() > 10.0, "{s}");
    assert!(s["throughput_ratio"].as_f64().unwrap() > 0.0);
    assert!(s["latency_ratio"].as_f64().unwrap() > 0.0);
    // Both prefills measured: the summary's times to first token are their rows'.
    for (arch, key) in [
        ("retnet", "retnet_ttft_ms"),
        ("transformer", "transformer_ttft_ms"),
    ] {
        let p = rows(&report, arch, "prefill");
        assert_eq!(
            (p.len(), u(p[0], "context"), u(p[0], "tokens")),
            (1, 16, 16)
        );
        assert_eq!(p[0]["latency_ms"], s[key]);
    }
    let ttft = s["transformer_ttft_ms"].as_f64().unwrap() / s["retnet_ttft_ms"].as_f64().unwrap();
    assert!((s["ttft_ratio"].as_f64().unwrap() / ttft - 1.0).abs() < 1e-12);
    // Under the default limit (a quarter of RAM) both tiny models fit the batch cap at 8k:
    // the limit search stops there and does not claim a memory limit.
    let cap = u(&report["grid"], "batch_cap");
    let m = &s["max_batch"][0];
    assert_eq!((u(m, "retnet"), u(m, "transformer")), (cap, cap), "{m}");
    assert_eq!(
        (
            m["retnet_ran_out"].as_bool(),
            m["transformer_ran_out"].as_bool()
        ),
        (Some(false), Some(false))
    );

    assert_eq!(
        entries(&plots),
        [
            "latency_vs_batch.svg",
            "memory_vs_length.svg",
            "throughput_vs_batch.svg"
        ]
    );
    let memory = std::fs::read_to_string(plots.join("memory_vs_length.svg")).unwrap();
    // plotters writes each label on a line of its own.
    assert!(
        memory.contains("\n2k\n") && memory.contains("\n8k\n"),
        "clean token ticks"
    );
}

#[test]
fn a_memory_limit_shows_where_the_transformer_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    // 1 MiB: the weights (about 0.1 MB each model) and RetNet's state (8 KiB a sequence)
    // fit; an 8k-token KV cache (4 MiB) does not.
    let limit = 1u64 << 20;
    let plots = dir.path().join("plots");
    let report = run(
        &["--memory-limit", "1M", "--plot", plots.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(u(&report, "memory_limit_bytes"), 1 << 20);
    for r in rows(&report, "transformer", "batch") {
        assert_eq!(r["fits"], false);
        assert!(r["seconds"].is_null());
        assert!(r["note"].as_str().unwrap().contains("out of memory"), "{r}");
    }
    let s = &report["summary"];
    assert!(s["memory_ratio"].is_null() && s["latency_ratio"].is_null());
    let m = &s["max_batch"][0];
    assert_eq!((u(m, "context"), m["transformer"].is_null()), (8192, true));
    assert_eq!(m["transformer_ran_out"].as_bool(), Some(true));
    // RetNet's limit is exact: its largest batch ran, measured within the limit, and the next
    // one ran out of memory; every batch below it that was tried fitted.
    assert_eq!(m["retnet_ran_out"].as_bool(), Some(true), "{m}");
    let largest = u(m, "retnet");
    assert!(
        largest > 4 && largest < u(&report["grid"], "batch_cap"),
        "{m}"
    );
    let retnet = rows(&report, "retnet", "batch");
    let at = |b: u64| retnet.iter().find(|r| u(r, "batch") == b).unwrap();
    assert_eq!(at(largest)["fits"], true);
    assert!(u(at(largest), "total_bytes") <= limit);
    assert!(at(largest)["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(at(largest + 1)["fits"], false);
    assert!(
        at(largest + 1)["note"]
            .as_str()
            .unwrap()
            .contains("out of memory")
    );
    for r in &retnet {
        assert_eq!(r["fits"] == true, u(r, "batch") <= largest, "{r}");
    }
    // The throughput plot says where the line ends.
    let svg = std::fs::read_to_string(plots.join("throughput_vs_batch.svg")).unwrap();
    assert!(
        svg.contains(&format!(
            "RetNet at 8192 tokens (out of memory above {largest})"
        )),
        "{svg}"
    );
    // What is left under the limit is less than one more sequence's state and activations
    // (the measured bytes per sequence between batch 4 and the largest; 1.5× for the state
    // pool's size classes, which make the step uneven).
    let per_sequence =
        (u(at(largest), "total_bytes") - u(at(4), "total_bytes")) as f64 / (largest - 4) as f64;
    let left = (limit - u(at(largest), "total_bytes")) as f64;
    assert!(
        left < 1.5 * per_sequence,
        "{left} left, {per_sequence} a sequence"
    );
}

#[test]
fn compare_plots_have_clean_ticks_and_honest_titles() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["bench", "--suite", "compare", "--quick"];
    args.extend(TINY);
    args.extend(["--plot", dir.path().to_str().unwrap()]);
    ok_stdout(&args, &retention(&args));
    let svg = std::fs::read_to_string(dir.path().join("latency_vs_context.svg")).unwrap();
    assert!(
        !svg.contains("6000.0") && !svg.contains("whole model"),
        "{svg}"
    );
    assert!(svg.contains("\n2k\n") && svg.contains("\n32k\n") && svg.contains("mixer only"));
}

#[test]
fn the_emulated_device_predicts_the_mixer_kernels_only_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("emulated.json");
    let args = [
        "bench",
        "--suite",
        "model",
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
    ok_stdout(&args, &retention(&args));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    check_section(&report, "model suite report");
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        check_section(r, "model suite rows[]");
        assert_eq!(r["predicted"], true, "{r}");
        assert!(r["seconds"].as_f64().unwrap() > 0.0);
        assert!(r["total_bytes"].is_null() && r["weights_bytes"].is_null());
        assert!(r["note"].as_str().unwrap().contains("PREDICTED"));
    }
    let s = &report["summary"];
    assert!(s["memory_ratio"].is_null() && s["throughput_ratio"].is_null());
    assert!(s["retnet_ttft_ms"].is_null() && s["transformer_ttft_ms"].is_null());
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("PREDICTED") && notes.contains("kernels only"),
        "{notes}"
    );
}

#[test]
fn cuda_and_bad_limits_are_refused_in_one_line() {
    let args = ["bench", "--suite", "model", "--memory-limit", "6X"];
    assert_one_line_error(&args, &retention(&args), 2, "unknown unit");
    // Without a GPU the device cannot be opened (a typed "no such device" error, not a
    // panic, exit 2), never numbers from another device; with one, the device-resident step
    // runs (covered where GPU tests run).
    let args = ["bench", "--suite", "model", "--device", "cuda", "--quick"];
    if retention_runtime::cuda::device_count() == 0 {
        let out = retention(&args);
        assert_one_line_error(&args, &out, 2, "device");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no such device"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
