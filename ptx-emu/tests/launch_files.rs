//! `run_launch_files`: the JSON launch description behind `kernel-gen emu`.
use std::path::Path;

use ptx_emu::{EmuError, run_launch_files};

const SCALE: &str = "
.version 8.0
.target sm_80
.address_size 64
.visible .entry scale(.param .u64 x, .param .u64 y, .param .f32 s, .param .u32 n)
{
    .reg .pred %p<2>;
    .reg .b32 %r<4>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<6>;
    ld.param.u64 %rd1, [x];
    ld.param.u64 %rd2, [y];
    ld.param.f32 %f1, [s];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %tid.x;
    setp.ge.u32 %p1, %r2, %r1;
    @%p1 bra DONE;
    mul.wide.u32 %rd5, %r2, 4;
    add.s64 %rd3, %rd1, %rd5;
    add.s64 %rd4, %rd2, %rd5;
    ld.global.f32 %f2, [%rd3];
    mul.rn.f32 %f3, %f2, %f1;
    st.global.f32 [%rd4], %f3;
DONE:
    ret;
}
";

fn f32_file(path: &Path, v: &[f32]) {
    std::fs::write(
        path,
        v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn launch_json(threads: u32, y_len: usize) -> String {
    format!(
        r#"{{ "entry": "scale", "grid": [1, 1, 1], "block": [{threads}, 1, 1], "dynamic_shared_bytes": 0,
             "params": [
               {{ "file": "x.bin", "dtype": "f32", "len": 4, "output": false }},
               {{ "file": "y.bin", "dtype": "f32", "len": {y_len}, "output": true }},
               {{ "type": "f32", "value": 2.5 }},
               {{ "type": "u32", "value": {threads} }}
             ] }}"#
    )
}

#[test]
fn outputs_are_written_back_and_the_report_returned() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("k.ptx"), SCALE).unwrap();
    f32_file(&d.join("x.bin"), &[1.0, 2.0, 3.0, 4.0]);
    f32_file(&d.join("y.bin"), &[0.0; 4]);
    std::fs::write(d.join("launch.json"), launch_json(4, 4)).unwrap();
    let report = run_launch_files(&d.join("k.ptx"), &d.join("launch.json")).unwrap();
    assert_eq!(read_f32(&d.join("y.bin")), vec![2.5, 5.0, 7.5, 10.0]);
    assert_eq!(read_f32(&d.join("x.bin")), vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(report.kernel, "scale");
    assert_eq!(report.global_bytes_written, 16);
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("predicted_a100_seconds"));
}

#[test]
fn a_failing_run_changes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("k.ptx"), SCALE).unwrap();
    f32_file(&d.join("x.bin"), &[1.0, 2.0, 3.0, 4.0]);
    f32_file(&d.join("y.bin"), &[9.0; 4]);
    // 8 threads read past the 4-element x: out of bounds, after some lanes stored.
    std::fs::write(d.join("launch.json"), launch_json(8, 4)).unwrap();
    let err = run_launch_files(&d.join("k.ptx"), &d.join("launch.json")).unwrap_err();
    assert!(matches!(err, EmuError::GlobalOutOfBounds { .. }), "{err}");
    assert_eq!(read_f32(&d.join("y.bin")), vec![9.0; 4]);
}

#[test]
fn bad_launch_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("k.ptx"), SCALE).unwrap();
    f32_file(&d.join("x.bin"), &[1.0, 2.0, 3.0, 4.0]);
    f32_file(&d.join("y.bin"), &[9.0; 3]);
    // y.bin holds 3 floats, the launch says 4.
    std::fs::write(d.join("launch.json"), launch_json(4, 4)).unwrap();
    let err = run_launch_files(&d.join("k.ptx"), &d.join("launch.json")).unwrap_err();
    assert!(
        matches!(&err, EmuError::LaunchFile { message, .. } if message.contains("12 bytes")),
        "{err}"
    );
    std::fs::write(d.join("launch.json"), "{ \"entry\": 3 }").unwrap();
    assert!(matches!(
        run_launch_files(&d.join("k.ptx"), &d.join("launch.json")),
        Err(EmuError::LaunchFile { .. })
    ));
    std::fs::write(
        d.join("launch.json"),
        launch_json(4, 3).replace("\"u32\", \"value\": 4", "\"u32\", \"value\": -4"),
    )
    .unwrap();
    assert!(matches!(
        run_launch_files(&d.join("k.ptx"), &d.join("launch.json")),
        Err(EmuError::LaunchFile { .. })
    ));
    assert!(matches!(
        run_launch_files(&d.join("missing.ptx"), &d.join("launch.json")),
        Err(EmuError::Io { .. })
    ));
    std::fs::write(d.join("bad.ptx"), "garbage ;").unwrap();
    std::fs::write(d.join("launch.json"), launch_json(3, 3)).unwrap();
    assert!(run_launch_files(&d.join("bad.ptx"), &d.join("launch.json")).is_err());
    assert_eq!(read_f32(&d.join("y.bin")), vec![9.0; 3]);
}
