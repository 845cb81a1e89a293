//! What the two stress suites (`tests/stress.rs` for the channel, `tests/stress_engine.rs` for
//! the engine) share: the lateness allowance, random class configurations, and the loop that
//! runs seeded rounds for a time budget, each under a watchdog.

use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use veltrix_engine::{ClassSpec, Config, OverloadPolicy, SchedulerMode};

/// How late a delivery or a handler attempt may be seen after its deadline before it counts as
/// a violation. The test reads the clock a little after the engine checked the deadline, and on
/// a 2-core machine running more threads than cores the thread can be preempted in between for
/// a scheduler time slice (2–4 ms was seen). The allowance still catches the failure the check
/// exists for — a slow dead-letter sink making later events of the same receive late by the
/// sink's whole duration (the channel suite's slow sink blocks for 40 ms). The exact promise is
/// tested on tokio's paused clock in `tests/channel.rs` and `tests/engine.rs`.
pub const GRACE: Duration = Duration::from_millis(20);

/// A round that runs longer than this is taken for a deadlock.
pub const WATCHDOG: Duration = Duration::from_secs(120);

/// Random classes (1 to `max_classes`, capacity 1 to 16, weight 1 to `max_weight`, any
/// overload policy, backpressure most often) under a random scheduler; `pick(n)` draws from
/// `0..n`.
///
/// # Panics
///
/// If `max_classes` or `max_weight` is 0.
pub fn random_classes(pick: &mut impl FnMut(u64) -> u64, max_classes: u64, max_weight: u64) -> Config {
    let n = 1 + pick(max_classes) as usize;
    (0..n)
        .fold(Config::builder(), |b, k| {
            let policy = match pick(4) {
                0 => OverloadPolicy::Reject,
                1 => OverloadPolicy::ShedOldest,
                _ => OverloadPolicy::Backpressure,
            };
            b.class(
                ClassSpec::new(format!("c{k}"), 1 + pick(16) as usize)
                    .with_policy(policy)
                    .with_weight(1 + pick(max_weight) as u32),
            )
        })
        .scheduler(match pick(3) {
            0 => SchedulerMode::Strict,
            1 => SchedulerMode::Drr,
            _ => SchedulerMode::default(),
        })
        .build()
        .expect("generated configurations are valid")
}

/// Runs `round` for one seed, `VELTRIX_STRESS_SEED`, if it is set; else for consecutive seeds
/// (starting from the wall clock, so each run explores new ones) until `VELTRIX_STRESS_SECS`
/// (default 8) have passed. Each round runs on its own thread under [`WATCHDOG`]: a hang
/// fails with the seed instead of stalling CI; a failing round's panic is passed on. `round`
/// prints its seed and the command that reproduces it before it starts.
///
/// # Panics
///
/// If a round fails or hangs.
pub fn run_rounds(suite: &str, round: fn(u64)) {
    let run = |seed: u64| {
        let (done, finished) = channel();
        let worker = std::thread::spawn(move || {
            round(seed);
            let _ = done.send(());
        });
        match finished.recv_timeout(WATCHDOG) {
            Ok(()) => worker.join().expect("the round finished"),
            Err(RecvTimeoutError::Disconnected) => std::panic::resume_unwind(worker.join().expect_err("it failed")),
            Err(RecvTimeoutError::Timeout) => panic!("{suite}: the round with seed {seed} hung for {WATCHDOG:?}"),
        }
    };
    if let Some(seed) = std::env::var("VELTRIX_STRESS_SEED").ok().and_then(|s| s.parse().ok()) {
        return run(seed);
    }
    let secs = std::env::var("VELTRIX_STRESS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let start = Instant::now();
    let first = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs());
    let mut rounds = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        run(first.wrapping_add(rounds));
        rounds += 1;
    }
    eprintln!("{suite}: {rounds} rounds in {:.1} s, no violation", start.elapsed().as_secs_f64());
}
