//! Emitted text of every DSL op family, checked line by line; each test kernel is also
//! assembled by ptxas for sm_80 and sm_90 when ptxas is available, so the text is valid PTX.

use kernel_gen::dsl::{
    Address, Axis, Cmp, Imm, KernelBuilder, Operand, Precision, Rounding, ShflMode, Space, Sreg, Ty,
};
use kernel_gen::ptxas::{assemble, find_ptxas};
use kernel_gen::{Arch, GenError};

type Want = Vec<String>;

/// Build a kernel, check each wanted line is present verbatim, assemble it, return the PTX.
fn check(arch: Arch, build: impl FnOnce(&mut KernelBuilder, &mut Want)) -> String {
    let mut kb = KernelBuilder::new("dsl_test", arch);
    let mut want = Want::new();
    build(&mut kb, &mut want);
    kb.ret();
    let ptx = kb.finish().expect("kernel builds").to_ptx();
    for w in &want {
        assert!(
            ptx.lines().any(|l| l.trim() == w.as_str()),
            "missing `{w}` in\n{ptx}"
        );
    }
    match find_ptxas() {
        Some(p) => {
            if let Err(e) = assemble(&p, &ptx, arch) {
                panic!("ptxas rejected the {arch} module: {e}\n{ptx}");
            }
        }
        None => eprintln!("notice: ptxas not found (RETENTION_PTXAS / PATH); syntax not assembled"),
    }
    ptx
}

fn both(build: impl Fn(&mut KernelBuilder, &mut Want)) {
    for arch in Arch::ALL {
        check(arch, &build);
    }
}

#[test]
fn module_frame_params_and_register_ranges() {
    let ptx = check(Arch::Sm90, |kb, w| {
        kb.header("hello");
        kb.max_threads(128);
        let p = kb.param("p_x", Ty::U64);
        let n = kb.param("p_n", Ty::U32);
        let s = kb.param("p_s", Ty::F32);
        let ptr = kb.global_ptr(&p);
        let nn = kb.ld_param(&n);
        let ss = kb.ld_param(&s);
        let _ = (ptr, nn, ss);
        w.push(format!("ld.param.u32 {nn}, [p_n];"));
        w.push(format!("ld.param.f32 {ss}, [p_s];"));
        w.push("cvta.to.global.u64 %rd1, %rd0;".into());
        w.push(".maxntid 128, 1, 1".into());
        w.push(".reg .u64 %rd<2>;".into());
        w.push(".reg .f32 %f<1>;".into());
        w.push(".visible .entry dsl_test(".into());
        w.push(".param .u64 p_x,".into());
        w.push(".param .f32 p_s".into());
    });
    assert!(ptx.starts_with("//\n// hello\n//\n.version 8.0\n.target sm_90\n.address_size 64\n"));
    let sm80 = check(Arch::Sm80, |_, _| {});
    assert!(sm80.contains(".version 8.0\n.target sm_80\n"));
}

#[test]
fn integer_arithmetic_and_logic() {
    both(|kb, w| {
        let a = kb.sreg(Sreg::Tid(Axis::X));
        let b = kb.sreg(Sreg::Ntid(Axis::X));
        let add = kb.add(a, b);
        let sub = kb.sub(a, 3u32);
        let lo = kb.mul_lo(a, b);
        let hi = kb.mul_hi(a, b);
        let wide = kb.mul_wide(a, 8u32);
        let mad = kb.mad_lo(a, b, 7u32);
        let madw = kb.mad_wide(a, 4u32, wide);
        let div = kb.div(a, b);
        let rem = kb.rem(a, 5u32);
        let min = kb.min(a, b);
        let max = kb.max(a, b);
        let and = kb.and(a, 15u32);
        let or = kb.or(a, b);
        let xor = kb.xor(a, b);
        let shl = kb.shl(a, 2u32);
        let shr = kb.shr(a, 4u32);
        let not = kb.not(a);
        let s = kb.mov(Ty::S32, -5i32);
        let neg = kb.neg(s);
        let abs = kb.abs(s);
        let sar = kb.shr(s, 1u32);
        let smin = kb.min(s, -1i32);
        let w64 = kb.add(wide, 16u64);
        for line in [
            format!("add.u32 {add}, {a}, {b};"),
            format!("sub.u32 {sub}, {a}, 3;"),
            format!("mul.lo.u32 {lo}, {a}, {b};"),
            format!("mul.hi.u32 {hi}, {a}, {b};"),
            format!("mul.wide.u32 {wide}, {a}, 8;"),
            format!("mad.lo.u32 {mad}, {a}, {b}, 7;"),
            format!("mad.wide.u32 {madw}, {a}, 4, {wide};"),
            format!("div.u32 {div}, {a}, {b};"),
            format!("rem.u32 {rem}, {a}, 5;"),
            format!("min.u32 {min}, {a}, {b};"),
            format!("max.u32 {max}, {a}, {b};"),
            format!("and.b32 {and}, {a}, 15;"),
            format!("or.b32 {or}, {a}, {b};"),
            format!("xor.b32 {xor}, {a}, {b};"),
            format!("shl.b32 {shl}, {a}, 2;"),
            format!("shr.u32 {shr}, {a}, 4;"),
            format!("not.b32 {not}, {a};"),
            format!("mov.s32 {s}, -5;"),
            format!("neg.s32 {neg}, {s};"),
            format!("abs.s32 {abs}, {s};"),
            format!("shr.s32 {sar}, {s}, 1;"),
            format!("min.s32 {smin}, {s}, -1;"),
            format!("add.u64 {w64}, {wide}, 16;"),
        ] {
            w.push(line);
        }
    });
}

#[test]
fn float_arithmetic_rounds_explicitly_and_prints_exact_hex() {
    both(|kb, w| {
        let a = kb.mov(Ty::F32, 1.0f32);
        let b = kb.mov(Ty::F32, -0.1f32);
        let add = kb.add(a, b);
        let sub = kb.sub(a, 2.5f32);
        let mul = kb.mul(a, b);
        let div = kb.div(a, b);
        let fma = kb.fma(a, b, add);
        let min = kb.min(a, b);
        let max = kb.max(a, b);
        let neg = kb.neg(a);
        let abs = kb.abs(b);
        kb.fma_into(a, b, b, a);
        for line in [
            format!("mov.f32 {a}, 0f3F800000;"),
            format!("mov.f32 {b}, 0fBDCCCCCD;"),
            format!("add.rn.f32 {add}, {a}, {b};"),
            format!("sub.rn.f32 {sub}, {a}, 0f40200000;"),
            format!("mul.rn.f32 {mul}, {a}, {b};"),
            format!("div.rn.f32 {div}, {a}, {b};"),
            format!("fma.rn.f32 {fma}, {a}, {b}, {add};"),
            format!("min.f32 {min}, {a}, {b};"),
            format!("max.f32 {max}, {a}, {b};"),
            format!("neg.f32 {neg}, {a};"),
            format!("abs.f32 {abs}, {b};"),
            format!("fma.rn.f32 {a}, {b}, {b}, {a};"),
        ] {
            w.push(line);
        }
    });
}

#[test]
fn transcendentals() {
    both(|kb, w| {
        let x = kb.mov(Ty::F32, 0.5f32);
        let e = kb.ex2(x, false);
        let ef = kb.ex2(x, true);
        let l = kb.lg2(x, false);
        let r = kb.rcp(x, Precision::Rn);
        let ra = kb.rcp(x, Precision::ApproxFtz);
        let rs = kb.rsqrt(x, false);
        let sq = kb.sqrt(x, Precision::Rn);
        let sqa = kb.sqrt(x, Precision::Approx);
        for line in [
            format!("ex2.approx.f32 {e}, {x};"),
            format!("ex2.approx.ftz.f32 {ef}, {x};"),
            format!("lg2.approx.f32 {l}, {x};"),
            format!("rcp.rn.f32 {r}, {x};"),
            format!("rcp.approx.ftz.f32 {ra}, {x};"),
            format!("rsqrt.approx.f32 {rs}, {x};"),
            format!("sqrt.rn.f32 {sq}, {x};"),
            format!("sqrt.approx.f32 {sqa}, {x};"),
        ] {
            w.push(line);
        }
    });
}

#[test]
fn half_precision_arithmetic_and_immediates_are_legalised() {
    let build = |kb: &mut KernelBuilder, w: &mut Want, bf16_native: bool| {
        let f = kb.mov(Ty::F32, 1.5f32);
        let h = kb.cvt(Ty::F16, f, Some(Rounding::Rn));
        let hb = kb.cvt(Ty::Bf16, f, Some(Rounding::Rn));
        let hsum = kb.add(h, h);
        let hfma = kb.fma(h, Operand::Imm(Imm::F16(0x3C00)), h);
        let bsum = kb.add(hb, hb);
        let bmul = kb.mul(hb, hb);
        let bmin = kb.min(hb, hb);
        let hh = kb.pack(h, hsum);
        let hh2 = kb.fma(hh, hh, hh);
        let (lo, hi) = kb.unpack(hh2);
        let pb = kb.cvt_pack(Ty::Bf16x2, f, f);
        let pb2 = kb.add(pb, pb);
        w.push(format!("cvt.rn.f16.f32 {h}, {f};"));
        w.push(format!("cvt.rn.bf16.f32 {hb}, {f};"));
        w.push(format!("add.rn.f16 {hsum}, {h}, {h};"));
        // Legalised registers are numbered after the builder's own (5 f16 registers here).
        w.push("mov.b16 %h5, 0x3C00;".into());
        w.push(format!("fma.rn.f16 {hfma}, {h}, %h5, {h};"));
        w.push(format!("min.bf16 {bmin}, {hb}, {hb};"));
        w.push(format!("mov.b32 {hh}, {{{h}, {hsum}}};"));
        w.push(format!("fma.rn.f16x2 {hh2}, {hh}, {hh}, {hh};"));
        w.push(format!("mov.b32 {{{lo}, {hi}}}, {hh2};"));
        w.push(format!("cvt.rn.bf16x2.f32 {pb}, {f}, {f};"));
        if bf16_native {
            w.push(format!("add.rn.bf16 {bsum}, {hb}, {hb};"));
            w.push(format!("mul.rn.bf16 {bmul}, {hb}, {hb};"));
            w.push(format!("add.rn.bf16x2 {pb2}, {pb}, {pb};"));
        }
        kb.comment("end");
    };
    check(Arch::Sm90, |kb, w| build(kb, w, true));
    let sm80 = check(Arch::Sm80, |kb, w| build(kb, w, false));
    // sm_80 has no add/mul.bf16: a + b = a*1 + b, a * b = a*b + (-0), with 1.0 in a register.
    assert!(!sm80.contains("add.rn.bf16"), "{sm80}");
    assert!(
        sm80.contains("mov.b16 %hb4, 0x3F80;\n\tfma.rn.bf16 %hb1, %hb0, %hb4, %hb0;"),
        "{sm80}"
    );
    assert!(
        sm80.contains("mov.b16 %hb5, 0x8000;\n\tfma.rn.bf16 %hb2, %hb0, %hb0, %hb5;"),
        "{sm80}"
    );
    assert!(
        sm80.contains("mov.b32 %hbb2, 0x3F803F80;\n\tfma.rn.bf16x2 %hbb1, %hbb0, %hbb2, %hbb0;"),
        "{sm80}"
    );
}

#[test]
fn compare_and_select() {
    both(|kb, w| {
        let t = kb.sreg(Sreg::Tid(Axis::X));
        let x = kb.mov(Ty::F32, 2.0f32);
        let p = kb.setp(Cmp::Lt, t, 64u32);
        let q = kb.setp(Cmp::Ge, x, 0.0f32);
        let both = kb.and(p, q);
        let np = kb.not(both);
        let s = kb.selp(x, 0.0f32, np);
        let u = kb.selp(t, 7u32, p);
        for line in [
            format!("setp.lt.u32 {p}, {t}, 64;"),
            format!("setp.ge.f32 {q}, {x}, 0f00000000;"),
            format!("and.pred {both}, {p}, {q};"),
            format!("not.pred {np}, {both};"),
            format!("selp.f32 {s}, {x}, 0f00000000, {np};"),
            format!("selp.u32 {u}, {t}, 7, {p};"),
        ] {
            w.push(line);
        }
        for cmp in [Cmp::Eq, Cmp::Ne, Cmp::Le, Cmp::Gt] {
            let r = kb.setp(cmp, t, 1u32);
            w.push(format!("setp{}.u32 {r}, {t}, 1;", cmp.suffix()));
        }
    });
}

#[test]
fn conversions_spell_their_rounding() {
    both(|kb, w| {
        let t = kb.sreg(Sreg::Tid(Axis::X));
        let f = kb.cvt(Ty::F32, t, Some(Rounding::Rn));
        let i = kb.cvt(Ty::S32, f, Some(Rounding::Rz));
        let u = kb.cvt_sat(Ty::U32, f, Some(Rounding::Rn), true);
        let d = kb.cvt(Ty::U64, t, None);
        let h = kb.cvt(Ty::F16, f, Some(Rounding::Rn));
        let hf = kb.cvt(Ty::F32, h, None);
        let b = kb.cvt(Ty::Bf16, f, Some(Rounding::Rz));
        let bf = kb.cvt(Ty::F32, b, None);
        let hp = kb.cvt_pack(Ty::F16x2, f, hf);
        for line in [
            format!("cvt.rn.f32.u32 {f}, {t};"),
            format!("cvt.rzi.s32.f32 {i}, {f};"),
            format!("cvt.rni.sat.u32.f32 {u}, {f};"),
            format!("cvt.u64.u32 {d}, {t};"),
            format!("cvt.rn.f16.f32 {h}, {f};"),
            format!("cvt.f32.f16 {hf}, {h};"),
            format!("cvt.rz.bf16.f32 {b}, {f};"),
            format!("cvt.f32.bf16 {bf}, {b};"),
            format!("cvt.rn.f16x2.f32 {hp}, {f}, {hf};"),
        ] {
            w.push(line);
        }
        let _ = bf;
    });
}

#[test]
fn memory_scalar_vector_shared_and_predicated() {
    both(|kb, w| {
        let p = kb.param("p_x", Ty::U64);
        let g = kb.global_ptr(&p);
        let s = kb.shared_array("s_tile", 1024, 16, "test tile f32 [256]");
        let t = kb.sreg(Sreg::Tid(Axis::X));
        let x = kb.ld(Space::Global, Ty::F32, Address::reg(g, 0));
        let x2 = kb.ld_vec(Space::Global, Ty::F32, 2, Address::reg(g, 8));
        let x4 = kb.ld_vec(Space::Global, Ty::F32, 4, Address::reg(g, 16));
        let h4 = kb.ld_vec(Space::Global, Ty::F16, 4, Address::reg(g, 32));
        let u = kb.ld(Space::Global, Ty::U32, Address::reg(g, -4));
        let sa = kb.shared_addr(&s);
        let v4: Vec<Operand> = x4.iter().map(|&r| r.into()).collect();
        kb.st_vec(Space::Shared, Ty::F32, Address::reg(sa, 16), &v4);
        kb.st(Space::Shared, s.at(4), x);
        let y = kb.ld(Space::Shared, Ty::F32, s.at(8));
        let inside = kb.setp(Cmp::Lt, t, 32u32);
        kb.guarded(inside, false, |kb| {
            kb.st(Space::Global, Address::reg(g, 0), y);
        });
        kb.guarded(inside, true, |kb| {
            kb.st(Space::Global, Address::reg(g, 0), 0.0f32);
        });
        let h = kb.cvt(Ty::F16, y, Some(Rounding::Rn));
        kb.st(Space::Global, Address::reg(g, 2), h);
        kb.st_vec(
            Space::Global,
            Ty::F32,
            Address::reg(g, 8),
            &[x2[0].into(), x2[1].into()],
        );
        for line in [
            "// s_tile: 1024 bytes, test tile f32 [256]".to_string(),
            ".shared .align 16 .b8 s_tile[1024];".into(),
            format!("ld.global.f32 {x}, [{g}];"),
            format!("ld.global.v2.f32 {{{}, {}}}, [{g}+8];", x2[0], x2[1]),
            format!(
                "ld.global.v4.f32 {{{}, {}, {}, {}}}, [{g}+16];",
                x4[0], x4[1], x4[2], x4[3]
            ),
            format!(
                "ld.global.v4.b16 {{{}, {}, {}, {}}}, [{g}+32];",
                h4[0], h4[1], h4[2], h4[3]
            ),
            format!("ld.global.u32 {u}, [{g}+-4];"),
            format!("mov.u32 {sa}, s_tile;"),
            format!(
                "st.shared.v4.f32 [{sa}+16], {{{}, {}, {}, {}}};",
                x4[0], x4[1], x4[2], x4[3]
            ),
            format!("st.shared.f32 [s_tile+4], {x};"),
            format!("ld.shared.f32 {y}, [s_tile+8];"),
            format!("@{inside} st.global.f32 [{g}], {y};"),
            format!("@!{inside} st.global.f32 [{g}], 0f00000000;"),
            format!("st.global.b16 [{g}+2], {h};"),
            format!("st.global.v2.f32 [{g}+8], {{{}, {}}};", x2[0], x2[1]),
        ] {
            w.push(line);
        }
    });
}

#[test]
fn special_registers_are_moved_before_use() {
    both(|kb, w| {
        let regs = [
            (Sreg::Tid(Axis::X), "%tid.x"),
            (Sreg::Tid(Axis::Y), "%tid.y"),
            (Sreg::Ntid(Axis::Z), "%ntid.z"),
            (Sreg::Ctaid(Axis::X), "%ctaid.x"),
            (Sreg::Ctaid(Axis::Y), "%ctaid.y"),
            (Sreg::Nctaid(Axis::X), "%nctaid.x"),
            (Sreg::LaneId, "%laneid"),
        ];
        for (s, name) in regs {
            let r = kb.sreg(s);
            w.push(format!("mov.u32 {r}, {name};"));
        }
        // Used directly as an operand, a special register is read into a register first.
        let lane = kb.add(Sreg::LaneId, 1u32);
        w.push(format!("add.u32 {lane}, %r8, 1;"));
        w.push("mov.u32 %r8, %laneid;".into());
    });
}

#[test]
fn control_flow_barriers_and_runtime_loops() {
    let ptx = check(Arch::Sm80, |kb, w| {
        let t = kb.sreg(Sreg::Tid(Axis::X));
        let skip = kb.label();
        let p = kb.setp(Cmp::Ge, t, 128u32);
        kb.bra_if(p, false, skip);
        let acc = kb.mov(Ty::U32, 0u32);
        kb.for_range(0u32, t, 2, |kb, i| {
            let next = kb.add(acc, i);
            kb.assign(acc, next);
        });
        kb.bar_sync(0);
        kb.bar_sync(1);
        let join = kb.label();
        kb.bra_uni(join);
        kb.place(join);
        kb.place(skip);
        w.push(format!("@{p} bra $L1;"));
        w.push("bar.sync 0;".into());
        w.push("bar.sync 1;".into());
        w.push("bra.uni $L4;".into());
        w.push("$L4:".into());
        w.push("$L1:".into());
        w.push("ret;".into());
    });
    // The runtime loop: counter, a zero-trip check, the body, increment, back edge.
    let expected = "\tmov.u32 %r2, 0;
\tsetp.ge.u32 %p1, %r2, %r0;
\t@%p1 bra $L3;
$L2:
\tadd.u32 %r3, %r1, %r2;
\tmov.u32 %r1, %r3;
\tadd.u32 %r4, %r2, 2;
\tmov.u32 %r2, %r4;
\tsetp.lt.u32 %p2, %r2, %r0;
\t@%p2 bra $L2;
$L3:
";
    assert!(ptx.contains(expected), "{ptx}");
}

#[test]
fn warp_shuffles() {
    both(|kb, w| {
        let x = kb.mov(Ty::F32, 1.0f32);
        let u = kb.sreg(Sreg::LaneId);
        let a = kb.warp_shfl(ShflMode::Bfly, x, 16u32, 31u32, 0xffff_ffff);
        let b = kb.warp_shfl(ShflMode::Down, x, 1u32, 31u32, 0xffff_ffff);
        let c = kb.warp_shfl(ShflMode::Up, u, 1u32, 0u32, 0xffff_ffff);
        let d = kb.warp_shfl(ShflMode::Idx, u, u, 31u32, 0x0000_ffff);
        w.push(format!("shfl.sync.bfly.b32 {a}, {x}, 16, 31, 0xffffffff;"));
        w.push(format!("shfl.sync.down.b32 {b}, {x}, 1, 31, 0xffffffff;"));
        w.push(format!("shfl.sync.up.b32 {c}, {u}, 1, 0, 0xffffffff;"));
        w.push(format!("shfl.sync.idx.b32 {d}, {u}, {u}, 31, 0x0000ffff;"));
    });
}

fn dsl_error(build: impl FnOnce(&mut KernelBuilder)) -> String {
    let mut kb = KernelBuilder::new("bad", Arch::Sm80);
    build(&mut kb);
    match kb.finish() {
        Err(GenError::Dsl { kernel, message }) => {
            assert_eq!(kernel, "bad");
            message
        }
        other => panic!("expected a DSL error, got {other:?}"),
    }
}

#[test]
fn ill_typed_calls_are_typed_errors() {
    let m = dsl_error(|kb| {
        let a = kb.mov(Ty::U32, 1u32);
        let f = kb.mov(Ty::F32, 1.0f32);
        kb.add(a, f);
    });
    assert!(m.contains("does not fit"), "{m}");
    let m = dsl_error(|kb| {
        let f = kb.mov(Ty::F32, 1.0f32);
        kb.cvt(Ty::F16, f, None);
    });
    assert!(m.contains("rounding is required"), "{m}");
    let m = dsl_error(|kb| {
        let h = kb.mov(Ty::F16, Imm::F16(0x3C00));
        kb.cvt(Ty::F32, h, Some(Rounding::Rn));
    });
    assert!(m.contains("not allowed"), "{m}");
    let m = dsl_error(|kb| {
        let u = kb.mov(Ty::U32, 0u32);
        kb.ld_vec(Space::Global, Ty::F32, 4, Address::reg(u, 0));
    });
    assert!(m.contains("not .u64"), "{m}");
    let m = dsl_error(|kb| {
        let a = kb.mov(Ty::U64, 0u64);
        kb.ld_vec(Space::Global, Ty::F32, 3, Address::reg(a, 0));
    });
    assert!(m.contains("not a legal vector"), "{m}");
    let m = dsl_error(|kb| {
        let f = kb.mov(Ty::F32, 1.0f32);
        kb.mul_lo(f, f);
    });
    assert!(m.contains("integer mul"), "{m}");
    let m = dsl_error(|kb| {
        let t = kb.sreg(Sreg::Tid(Axis::X));
        let p = kb.setp(Cmp::Lt, t, 1u32);
        kb.guarded(p, false, |kb| kb.guarded(p, false, |_| {}));
    });
    assert!(m.contains("nested guards"), "{m}");
    let m = dsl_error(|kb| {
        kb.add(1u32, 2u32);
    });
    assert!(m.contains("cannot infer"), "{m}");
}
