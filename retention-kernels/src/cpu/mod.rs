//! Fast CPU kernels (multi-threaded, vectorised), each checked against [`crate::reference`].
