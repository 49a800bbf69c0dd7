//! `bar.sync` across warps, shared-memory race detection, unreachable barriers and runaway
//! loops.
mod common;
use common::{module, run};
use ptx_emu::{AccessKind, Buffer, Dtype, EmuError, Launch, Module, Param};

/// Block reduction through shared memory: every thread writes its id, then thread 0 sums.
/// With `barrier = false` the `bar.sync` is missing.
fn reduction(barrier: bool) -> String {
    module(
        ".param .u64 pout",
        &format!(
            ".shared .align 4 .b8 smem[1024];
             ld.param.u64 %rd1, [pout];
             mov.u32 %r1, %tid.x;
             mov.u32 %r2, smem;
             shl.b32 %r3, %r1, 2;
             add.u32 %r4, %r2, %r3;
             st.shared.u32 [%r4], %r1;
             {}
             setp.ne.u32 %p1, %r1, 0;
             @%p1 bra END;
             mov.u32 %r5, 0;      // sum
             mov.u32 %r6, 0;      // i
             mov.u32 %r9, %ntid.x;
         LOOP:
             shl.b32 %r7, %r6, 2;
             add.u32 %r8, %r2, %r7;
             ld.shared.u32 %r10, [%r8];
             add.u32 %r5, %r5, %r10;
             add.u32 %r6, %r6, 1;
             setp.lt.u32 %p2, %r6, %r9;
             @%p2 bra LOOP;
             st.global.u32 [%rd1], %r5;
         END:
             ret;",
            if barrier { "bar.sync 0;" } else { "" }
        ),
    )
}

#[test]
fn barrier_orders_shared_memory_across_warps() {
    let (r, l) = run(
        &reduction(true),
        [2, 1, 1],
        [256, 1, 1],
        vec![Param::Buffer(Buffer::zeros(Dtype::U32, 1))],
    )
    .unwrap();
    assert_eq!(l.buffer(0).unwrap().to_u32()[0], (0..256).sum::<u32>());
    assert_eq!(r.barriers, 2);
}

#[test]
fn missing_barrier_is_a_race() {
    let err = run(
        &reduction(false),
        [1, 1, 1],
        [64, 1, 1],
        vec![Param::Buffer(Buffer::zeros(Dtype::U32, 1))],
    )
    .unwrap_err();
    match err {
        EmuError::SharedRace {
            site,
            kind,
            other_kind,
            other_thread,
            offset,
        } => {
            assert_eq!(site.thread, [0, 0, 0]);
            assert_eq!(kind, AccessKind::Read);
            assert_eq!(other_kind, AccessKind::Write);
            assert_eq!(other_thread, [1, 0, 0]);
            assert_eq!(offset, 4);
            assert!(site.instruction.starts_with("ld.shared.u32"));
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn write_after_read_without_barrier_is_a_race() {
    let src = module(
        "",
        ".shared .align 4 .b8 smem[128];
         mov.u32 %r1, %tid.x;
         ld.shared.u32 %r2, [smem];
         setp.eq.u32 %p1, %r1, 5;
         @%p1 st.shared.u32 [smem], %r1;
         ret;",
    );
    let err = run(&src, [1, 1, 1], [32, 1, 1], vec![]).unwrap_err();
    assert!(
        matches!(
            err,
            EmuError::SharedRace {
                kind: AccessKind::Write,
                other_kind: AccessKind::Read,
                ..
            }
        ),
        "{err}"
    );
    // The same with a barrier between read and write is fine.
    let fixed = src.replace("setp.eq.u32", "bar.sync 0;\n setp.eq.u32");
    run(&fixed, [1, 1, 1], [32, 1, 1], vec![]).unwrap();
}

#[test]
fn barrier_skipped_by_exiting_threads_is_caught() {
    let src = module(
        "",
        "mov.u32 %r1, %tid.x;
         setp.ge.u32 %p1, %r1, 40;
         @%p1 bra END;
         bar.sync 0;
     END:
         ret;",
    );
    let err = run(&src, [1, 1, 1], [64, 1, 1], vec![]).unwrap_err();
    match err {
        EmuError::BarrierNotReached {
            waiting,
            missing,
            reason,
            line,
            ..
        } => {
            assert!(waiting[0] < 40);
            assert!(missing[0] >= 40);
            assert!(reason.contains("exited"));
            assert_eq!(line, 18); // the `bar.sync` line of the generated module
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn barrier_in_divergent_code_reached_by_every_thread_is_fine() {
    // Each half of a warp reaches the same barrier along a different path.
    let src = module(
        ".param .u64 pout",
        ".shared .align 4 .b8 smem[256];
         ld.param.u64 %rd1, [pout];
         mov.u32 %r1, %tid.x;
         and.b32 %r2, %r1, 1;
         setp.eq.u32 %p1, %r2, 0;
         shl.b32 %r3, %r1, 2;
         mov.u32 %r4, smem;
         add.u32 %r5, %r4, %r3;
         @%p1 bra EVEN;
         st.shared.u32 [%r5], 100;
         bar.sync 0;
         bra JOIN;
     EVEN:
         st.shared.u32 [%r5], 200;
         bar.sync 0;
     JOIN:
         xor.b32 %r6, %r1, 1;
         shl.b32 %r7, %r6, 2;
         add.u32 %r8, %r4, %r7;
         ld.shared.u32 %r9, [%r8];
         mul.wide.u32 %rd2, %r1, 4;
         add.s64 %rd3, %rd1, %rd2;
         st.global.u32 [%rd3], %r9;
         ret;",
    );
    let (_, l) = run(
        &src,
        [1, 1, 1],
        [64, 1, 1],
        vec![Param::Buffer(Buffer::zeros(Dtype::U32, 64))],
    )
    .unwrap();
    let out = l.buffer(0).unwrap().to_u32();
    for (i, v) in out.iter().enumerate() {
        assert_eq!(*v, if i % 2 == 0 { 100 } else { 200 });
    }
}

#[test]
fn threads_waiting_at_different_barriers_deadlock() {
    let src = module(
        "",
        "mov.u32 %r1, %tid.x;
         setp.lt.u32 %p1, %r1, 32;
         @%p1 bar.sync 1;
         @!%p1 bar.sync 2;
         ret;",
    );
    let err = run(&src, [1, 1, 1], [64, 1, 1], vec![]).unwrap_err();
    assert!(
        matches!(&err, EmuError::BarrierNotReached { reason, .. } if reason.contains("waits at barrier")),
        "{err}"
    );
}

#[test]
fn named_barrier_with_count_releases_a_subset() {
    let src = module(
        "",
        "mov.u32 %r1, %tid.x;
         setp.lt.u32 %p1, %r1, 64;
         @%p1 bar.sync 1, 64;
         ret;",
    );
    let (r, _) = run(&src, [1, 1, 1], [128, 1, 1], vec![]).unwrap();
    assert_eq!(r.barriers, 1);
}

#[test]
fn endless_loop_hits_the_step_limit() {
    let src = module("", "LOOP: bra LOOP;");
    let m = Module::parse(&src).unwrap();
    let mut l = Launch::new("k", [1, 1, 1], [32, 1, 1]);
    l.step_limit = 10_000;
    assert!(matches!(
        m.launch(&mut l).unwrap_err(),
        EmuError::StepLimit { limit: 10_000, .. }
    ));
}
