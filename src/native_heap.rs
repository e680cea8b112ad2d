//! glibc malloc settings for RocksDB's own allocations. mimalloc serves Rust's allocations only;
//! RocksDB (C++) allocates through glibc, whose defaults let a server that had provisioned 10M
//! devices reach 533 MiB, against 435 MiB with this setting (BENCHMARKS.md, session 9).
//! It lives in the binary because the library forbids unsafe code; these FFI calls and the CPU
//! check's `_exit` (`main.rs`) are provisiond's only unsafe code (its dependencies aside).

/// Blocks from this size up are mmapped, so their memory goes back to the kernel when freed.
///
/// glibc's default threshold (128 KiB) is dynamic: it rises to the size of the largest mmapped
/// block ever freed. A flushed memtable frees its 1 MiB arena blocks (and, for `credentials`,
/// an 8 MiB hash bucket array), so after the first flush every new memtable block came from
/// glibc's per-thread heaps, which keep freed memory for reuse instead of returning it.
/// Setting the threshold explicitly makes it fixed.
pub const MMAP_THRESHOLD_BYTES: i32 = 256 << 10;

/// Applies [`MMAP_THRESHOLD_BYTES`] to the process; returns whether glibc accepted it (always
/// `false` where the C library is not glibc, which has its own policy). Call once at start.
pub fn bound_native_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's parameters; it is thread-safe in glibc.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use std::hint::black_box;

    use super::*;

    /// Bytes glibc holds in mmapped blocks (its own statistics).
    fn mmapped_bytes() -> usize {
        // SAFETY: mallinfo2 only reads malloc's statistics.
        unsafe { libc::mallinfo2().hblkhd }
    }

    #[test]
    fn a_large_block_is_still_mmapped_after_one_was_freed() {
        assert!(bound_native_heap());
        const BLOCK: usize = 1 << 20;
        // black_box: the compiler may otherwise drop a malloc whose block is never used.
        // SAFETY: plain malloc/free pairs of our own blocks, never dereferenced.
        unsafe {
            // With the dynamic threshold, freeing this mmapped block would raise the threshold
            // above 1 MiB and the next 1 MiB block would come from a heap that keeps it.
            let first = black_box(libc::malloc(BLOCK));
            assert!(!first.is_null());
            libc::free(first);
            let before = mmapped_bytes();
            let second = black_box(libc::malloc(BLOCK));
            assert!(!second.is_null());
            let grown = mmapped_bytes().saturating_sub(before);
            libc::free(second);
            assert!(
                grown >= BLOCK,
                "a 1 MiB block came from glibc's heap, not mmap ({grown} bytes mmapped)"
            );
        }
    }
}
