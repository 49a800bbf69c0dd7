//! Tensor-core warp collectives (`mma.sync` m16n8k16, `ldmatrix`) and asynchronous copies
//! (`cp.async` with its group commit/wait). The `warp_` methods need the whole warp
//! converged: every lane must execute them together.

use super::KernelBuilder;
use crate::dsl::ops::Op;
use crate::dsl::types::{Address, Operand, Reg, Space, Ty};

/// Cache policy of `cp.async`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CpAsyncCache {
    /// `.ca`: cache in L1 and L2 (4, 8 or 16 bytes).
    Ca,
    /// `.cg`: cache in L2 only (16 bytes).
    Cg,
}

/// Whether `r` holds packed `ab` pairs (ptxas rejects `.u32` fragments for `mma`).
fn packed_fragment(r: Reg, ab: Ty) -> bool {
    Some(r.ty) == ab.packed()
}

impl KernelBuilder {
    /// `d = A·B + C` on the tensor cores for one warp: A is 16×16 (row-major fragment, four
    /// registers of packed `ab` pairs), B 16×8 (column fragment, two registers), C and D
    /// 16×8 f32 (four registers each). `ab` is [`Ty::F16`] or [`Ty::Bf16`], and the fragments
    /// must be of its packed type ([`Ty::F16x2`] / [`Ty::Bf16x2`]). Returns D.
    pub fn warp_mma_m16n8k16(&mut self, ab: Ty, a: [Reg; 4], b: [Reg; 2], c: [Reg; 4]) -> [Reg; 4] {
        let d = std::array::from_fn(|_| self.reg(Ty::F32));
        self.warp_mma_m16n8k16_into(ab, d, a, b, c);
        d
    }

    /// As [`Self::warp_mma_m16n8k16`] into existing accumulators `d` (which may be `c`).
    pub fn warp_mma_m16n8k16_into(
        &mut self,
        ab: Ty,
        d: [Reg; 4],
        a: [Reg; 4],
        b: [Reg; 2],
        c: [Reg; 4],
    ) {
        if !matches!(ab, Ty::F16 | Ty::Bf16) {
            self.fail(format!(
                "mma.m16n8k16: A/B type {} is not f16/bf16",
                ab.suffix()
            ));
        }
        for r in a.iter().chain(&b) {
            if !packed_fragment(*r, ab) {
                self.fail(format!(
                    "mma.m16n8k16: fragment {r} does not hold packed {} pairs",
                    ab.suffix()
                ));
            }
        }
        for r in c.iter().chain(&d) {
            if r.ty != Ty::F32 {
                self.fail(format!("mma.m16n8k16: accumulator {r} is not .f32"));
            }
        }
        self.push(Op::WarpMma { ab, d, a, b, c });
    }

    /// `ldmatrix` of `num` ∈ {1, 2, 4} 8×8 matrices of 16-bit elements from shared memory
    /// (`trans`: each transposed); lanes 8i..8i+7 pass the 16-byte-aligned row addresses of
    /// matrix i. Returns one register of type `ty` ([`Ty::U32`], [`Ty::F16x2`] or
    /// [`Ty::Bf16x2`]) per matrix.
    pub fn warp_ldmatrix(&mut self, num: usize, trans: bool, ty: Ty, addr: Address) -> Vec<Reg> {
        if !matches!(num, 1 | 2 | 4) {
            self.fail(format!("ldmatrix.x{num}: only x1, x2 and x4 exist"));
        }
        if !matches!(ty, Ty::U32 | Ty::F16x2 | Ty::Bf16x2) {
            self.fail(format!(
                "ldmatrix into {}: not a 32-bit fragment type",
                ty.suffix()
            ));
        }
        self.check_addr(Space::Shared, &addr);
        self.push_writing(ty, num, |dsts| Op::WarpLdmatrix { trans, dsts, addr })
    }

    /// Start an asynchronous copy of `bytes` ∈ {4, 8, 16} from global `src` to shared `dst`
    /// (both aligned to `bytes`). With `src_bytes` (a `.u32`, at most `bytes`) only that many
    /// bytes are read and the rest of the destination is zero-filled. The copy lands after a
    /// [`Self::cp_async_commit`] and a [`Self::cp_async_wait`] that covers its group.
    pub fn cp_async(
        &mut self,
        cache: CpAsyncCache,
        bytes: u32,
        dst: Address,
        src: Address,
        src_bytes: Option<Operand>,
    ) {
        if !matches!(bytes, 4 | 8 | 16) || (cache == CpAsyncCache::Cg && bytes != 16) {
            self.fail(format!(
                "cp.async.{cache:?} of {bytes} bytes: .ca copies 4, 8 or 16, .cg only 16"
            ));
        }
        self.check_addr(Space::Shared, &dst);
        self.check_addr(Space::Global, &src);
        if let Some(s) = src_bytes {
            self.check("cp.async src-size", s, Ty::U32);
        }
        self.push(Op::CpAsync {
            cg: cache == CpAsyncCache::Cg,
            bytes,
            dst,
            src,
            src_bytes,
        });
    }

    /// `cp.async.commit_group`: the copies issued since the last commit form one group.
    pub fn cp_async_commit(&mut self) {
        self.push(Op::CpAsyncCommit);
    }

    /// `cp.async.wait_group pending`: wait until at most `pending` groups are in flight
    /// (0: all of this thread's committed copies have landed). Other threads' copies become
    /// visible only after a following barrier.
    pub fn cp_async_wait(&mut self, pending: u32) {
        self.push(Op::CpAsyncWait { pending });
    }
}
