//! Veltrix's correctness gates live in `tests/`: loom models (`loom.rs`, under
//! `--cfg veltrix_loom`), the proptest state machine (`model.rs`), dhat allocation budgets (one
//! binary each), channel behaviour (`channel.rs`), the stress suites (`stress.rs`,
//! `stress_engine.rs`) and compile-time auto-trait checks (`send_sync.rs`). This library holds
//! what they share.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod reference;
pub mod scripted;
pub mod stress;

/// Proptest cases: `VELTRIX_PROPTEST_CASES` if set (read here because a `cases` written in a
/// test's config would override proptest's own `PROPTEST_CASES`), else `default`.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("VELTRIX_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
