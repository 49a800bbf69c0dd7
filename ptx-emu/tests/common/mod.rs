//! Helpers shared by the integration tests: wrap a kernel body into a module and run it.
#![allow(dead_code)]

use ptx_emu::{Buffer, Dtype, EmuError, EmuReport, Launch, Module, Param};

/// Register declarations every test kernel gets.
pub const REGS: &str = "
    .reg .pred %p<8>;
    .reg .b16 %h<16>;
    .reg .b32 %r<64>;
    .reg .f32 %f<64>;
    .reg .b64 %rd<32>;
    .reg .f64 %fd<16>;
";

/// A module with one entry `k` taking `params` (PTX param list) and running `body`.
pub fn module(params: &str, body: &str) -> String {
    format!(
        ".version 8.0\n.target sm_80\n.address_size 64\n\n.visible .entry k({params})\n{{\n{REGS}\n{body}\n}}\n"
    )
}

/// Elementwise harness: thread `i` loads `a[i]` into `%r2` and `b[i]` into `%r3` (32-bit),
/// runs `body`, and stores `%r4` to `out[i]`.
pub fn binary_u32(body: &str, a: &[u32], b: &[u32]) -> Result<Vec<u32>, EmuError> {
    let src = module(
        ".param .u64 pa, .param .u64 pb, .param .u64 pout",
        &format!(
            "
    ld.param.u64 %rd1, [pa];
    ld.param.u64 %rd2, [pb];
    ld.param.u64 %rd3, [pout];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd4, %r1, 4;
    add.s64 %rd5, %rd1, %rd4;
    add.s64 %rd6, %rd2, %rd4;
    add.s64 %rd7, %rd3, %rd4;
    ld.global.b32 %r2, [%rd5];
    ld.global.b32 %r3, [%rd6];
{body}
    st.global.b32 [%rd7], %r4;
    ret;"
        ),
    );
    let m = Module::parse(&src)?;
    let mut l = Launch::new("k", [1, 1, 1], [a.len() as u32, 1, 1])
        .arg(Param::Buffer(Buffer::from_u32(a)))
        .arg(Param::Buffer(Buffer::from_u32(b)))
        .arg(Param::Buffer(Buffer::zeros(Dtype::U32, a.len())));
    m.launch(&mut l)?;
    Ok(l.buffer(2).unwrap().to_u32())
}

/// Runs entry `k` of `src` with the given grid, block and params.
pub fn run(
    src: &str,
    grid: [u32; 3],
    block: [u32; 3],
    params: Vec<Param>,
) -> Result<(EmuReport, Launch), EmuError> {
    let m = Module::parse(src)?;
    let mut l = Launch::new("k", grid, block);
    l.params = params;
    let r = m.launch(&mut l)?;
    Ok((r, l))
}

/// A deterministic pseudo-random stream (xorshift64*), so tests need no RNG crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }
}
