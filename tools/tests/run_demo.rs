//! `retention run --demo`: the README's "run the main job" command.

mod common;

use common::retention;

#[test]
fn demo_compares_every_form_and_passes() {
    let out = retention(&["run", "--demo"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("seed 42"), "{stdout}");
    assert!(stdout.contains("B=2 T=100 H=4 K=32 V=48"), "{stdout}");
    for row in [
        "recurrent vs parallel (h0 = 0)",
        "chunkwise C=1 vs parallel (h0 = 0)",
        "chunkwise C=7 vs parallel (h0 = 0)",
        "chunkwise C=128 vs parallel (h0 = 0)",
        "chunkwise C=1 vs recurrent (random h0)",
        "chunkwise C=100 vs recurrent (random h0)",
    ] {
        assert!(stdout.contains(row), "missing row {row:?} in\n{stdout}");
    }
    let table: Vec<&str> = stdout.lines().filter(|l| l.contains(" vs ")).collect();
    assert_eq!(table.len(), 19, "{stdout}");
    for line in &table {
        assert!(line.ends_with("  ok"), "{line}");
        // The relative difference column must be a number at most 1e-12.
        let rel: f64 = line
            .split_whitespace()
            .rev()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert!(rel <= 1e-12, "{line}");
    }
    assert_eq!(
        table.iter().filter(|l| l.contains(" ht ")).count(),
        6,
        "final states compared for every chunk size"
    );
    assert!(stdout.contains("all 19 comparisons within 1e-12 relative"));
}

#[test]
fn demo_seed_changes_the_problem() {
    let a = retention(&["run", "--demo", "--seed", "7"]);
    let b = retention(&["run", "--demo"]);
    assert!(a.status.success() && b.status.success());
    assert!(String::from_utf8_lossy(&a.stdout).contains("seed 7"));
    assert_ne!(a.stdout, b.stdout);
}

#[test]
fn demo_flags_conflict_with_file_flags() {
    for args in [
        &["run", "--demo", "--input", "x.safetensors"][..],
        &["run", "--demo", "--chunk", "3"][..],
        &["run", "--seed", "3", "--form", "parallel"][..],
        &["run", "--demo", "--device", "cuda"][..],
    ] {
        let out = retention(args);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
}
