//! The start-up check that the CPU has the instruction-set features this binary was compiled
//! for (`.cargo/config.toml`: x86-64-v2 and PCLMULQDQ, for RocksDB's hardware CRC32C). Without
//! it, an older CPU would stop the server with SIGILL at some arbitrary point instead of one
//! line saying why.

/// The features this build was compiled to use that the running CPU lacks.
pub fn missing_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut missing = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! check {
            ($($feature:tt),*) => {$(
                if cfg!(target_feature = $feature) && !std::arch::is_x86_feature_detected!($feature) {
                    missing.push($feature);
                }
            )*};
        }
        check!(
            "sse3",
            "ssse3",
            "sse4.1",
            "sse4.2",
            "popcnt",
            "cmpxchg16b",
            "pclmulqdq"
        );
    }
    missing
}

/// `Err` with the line to print when the CPU lacks a feature the build uses.
pub fn check() -> Result<(), String> {
    let missing = missing_features();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "this CPU lacks {}, which this build of provisiond uses (.cargo/config.toml: x86-64-v2 \
         and PCLMULQDQ); rebuild for it with RUSTFLAGS=\"-C target-cpu=native\"",
        missing.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_build_uses_sse42_and_pclmulqdq_and_this_cpu_has_them() {
        // The flags of .cargo/config.toml reached the compiler (a RUSTFLAGS variable would
        // replace them) ...
        let built_with = [
            cfg!(target_feature = "sse4.2"),
            cfg!(target_feature = "pclmulqdq"),
        ];
        assert_eq!(built_with, [true, true], "built with SSE4.2, PCLMULQDQ");
        // ... and the machine running the tests has what the build uses.
        assert_eq!(super::missing_features(), Vec::<&str>::new());
        assert_eq!(super::check(), Ok(()));
    }
}
