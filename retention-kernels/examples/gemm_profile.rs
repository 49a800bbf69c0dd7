//! The gemm crate's own f32 product, single-threaded, repeated — the baseline for the
//! instructions per FLOP of `train_profile` under `valgrind --tool=callgrind`.
//! Usage: `gemm_profile M N K REPS` (row-major operands, no accumulation).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|x| x.parse())
        .collect::<Result<_, _>>()?;
    let [m, n, k, reps] =
        <[usize; 4]>::try_from(a).map_err(|_| "usage: gemm_profile M N K REPS")?;
    let l = vec![0.5f32; m * k];
    let r = vec![0.25f32; k * n];
    let mut d = vec![0.0f32; m * n];
    for _ in 0..reps {
        // SAFETY: dst is m×n row-major (ld n), lhs m×k (ld k) and rhs k×n (ld n), each exactly
        // the length of its buffer; dst aliases neither operand.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                d.as_mut_ptr(),
                1,
                n as isize,
                false,
                l.as_ptr(),
                1,
                k as isize,
                r.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
    println!("flops {} check {}", 2 * m * n * k * reps, d[0]);
    Ok(())
}
