//! The start-up check that the CPU has the instruction-set features this binary was compiled
//! for (`.cargo/config.toml`: x86-64-v2 and PCLMULQDQ, for RocksDB's hardware CRC32C). Without
//! it, an older CPU would stop the program with SIGILL at some arbitrary point instead of one
//! line saying why. The workspace builds `loadtest` with the same flags, so it includes this
//! file too (`#[path]`; it speaks only the wire protocols and does not depend on provisiond).
//!
//! The CPU is asked with CPUID itself: std's `is_x86_feature_detected!` answers `true` without
//! asking for every feature the build enables, so under it this check could never fail.

/// The features the build may use, each with its bit in ECX of CPUID leaf 1 and whether this
/// build was compiled to use it.
#[cfg(target_arch = "x86_64")]
const BUILD_FEATURES: [(&str, u32, bool); 7] = [
    ("sse3", 0, cfg!(target_feature = "sse3")),
    ("pclmulqdq", 1, cfg!(target_feature = "pclmulqdq")),
    ("ssse3", 9, cfg!(target_feature = "ssse3")),
    ("cmpxchg16b", 13, cfg!(target_feature = "cmpxchg16b")),
    ("sse4.1", 19, cfg!(target_feature = "sse4.1")),
    ("sse4.2", 20, cfg!(target_feature = "sse4.2")),
    ("popcnt", 23, cfg!(target_feature = "popcnt")),
];

/// The features this build uses that a CPU reporting `leaf1_ecx` lacks.
#[cfg(target_arch = "x86_64")]
fn missing_in(leaf1_ecx: u32) -> impl Iterator<Item = &'static str> {
    BUILD_FEATURES
        .iter()
        .filter(move |&&(_, bit, used)| used && leaf1_ecx & (1 << bit) == 0)
        .map(|&(name, _, _)| name)
}

/// The features this build was compiled to use that the running CPU lacks.
pub fn missing_features() -> impl Iterator<Item = &'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        missing_in(std::arch::x86_64::__cpuid(1).ecx)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::iter::empty()
    }
}

/// Whether the CPU has every feature the build uses; if not, writes one line naming the missing
/// ones to stderr. It allocates nothing, since provisiond runs it before anything else is set up
/// (see its `main.rs`).
pub fn check_and_report() -> bool {
    use std::io::Write as _;
    let mut missing = missing_features().peekable();
    if missing.peek().is_none() {
        return true;
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{}: this CPU lacks ", env!("CARGO_PKG_NAME"));
    for (i, name) in missing.enumerate() {
        let _ = write!(err, "{}{name}", if i == 0 { "" } else { ", " });
    }
    let _ = writeln!(
        err,
        ", which this build uses (.cargo/config.toml: x86-64-v2 and PCLMULQDQ); rebuild for it \
         with RUSTFLAGS=\"-C target-cpu=native\""
    );
    false
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    #[test]
    fn the_build_uses_sse42_and_pclmulqdq_and_this_cpu_has_them() {
        // The flags of .cargo/config.toml reached the compiler (a RUSTFLAGS variable would
        // replace them) ...
        let built_with = [
            cfg!(target_feature = "sse4.2"),
            cfg!(target_feature = "pclmulqdq"),
        ];
        assert_eq!(built_with, [true, true], "built with SSE4.2, PCLMULQDQ");
        // ... and the machine running the tests has what the build uses.
        assert_eq!(super::missing_features().count(), 0);
        assert!(super::check_and_report());
    }

    fn missing_in(leaf1_ecx: u32) -> Vec<&'static str> {
        super::missing_in(leaf1_ecx).collect()
    }

    #[test]
    fn a_cpu_without_the_features_is_named_feature_by_feature() {
        // What QEMU's `qemu64` model reports: SSE3, CMPXCHG16B and the hypervisor bit only.
        assert_eq!(
            missing_in(0x8000_2001),
            ["pclmulqdq", "ssse3", "sse4.1", "sse4.2", "popcnt"]
        );
        assert_eq!(
            missing_in(0),
            [
                "sse3",
                "pclmulqdq",
                "ssse3",
                "cmpxchg16b",
                "sse4.1",
                "sse4.2",
                "popcnt"
            ]
        );
        // A CPU with x86-64-v3 and more (this machine's leaf-1 ECX) lacks none.
        assert_eq!(missing_in(0xfffa_3203), Vec::<&str>::new());
    }
}
