//! Quick ratios, as a user would measure them: every workload of the table once per
//! round, medians over rounds, each against its peer in the same process.
//! `cargo run --release -p veltrix-benches --bin yardstick [ROUNDS] [MESSAGES]`

use std::time::Duration;

use veltrix_benches::tasks::{self, AsyncChan};
use veltrix_benches::{Chan, Crossbeam, Veltrix1, drain_full, engine_path, throughput};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let rt = tasks::runtime();
    let rate = |d: Duration, n: u64| n as f64 / d.as_secs_f64() / 1e6;
    let row = |name: &str, subject: &dyn Fn() -> Duration, peer_name: &str, peer: &dyn Fn() -> Duration, n: u64| {
        let (mut s, mut p) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            s.push(subject());
            p.push(peer());
        }
        let (s, p) = (median(s), median(p));
        println!(
            "{name:<40} veltrix {:>7.2} M/s   {peer_name:<24} {:>7.2} M/s   ratio {:.2}",
            rate(s, n),
            rate(p, n),
            p.as_secs_f64() / s.as_secs_f64()
        );
    };
    const CAP: usize = 1024;
    row(
        "spsc tasks",
        &|| tasks::throughput::<tasks::Veltrix1>(&rt, 1, n, CAP),
        tasks::TokioMpsc::NAME,
        &|| tasks::throughput::<tasks::TokioMpsc>(&rt, 1, n, CAP),
        n,
    );
    row(
        "mpsc-4p tasks",
        &|| tasks::throughput::<tasks::Veltrix1>(&rt, 4, n / 4, CAP),
        tasks::TokioMpsc::NAME,
        &|| tasks::throughput::<tasks::TokioMpsc>(&rt, 4, n / 4, CAP),
        n,
    );
    row(
        "4 classes 4p tasks",
        &|| tasks::throughput::<tasks::Veltrix4>(&rt, 4, n / 4, CAP),
        tasks::AsyncPriority::NAME,
        &|| tasks::throughput::<tasks::AsyncPriority>(&rt, 4, n / 4, CAP),
        n,
    );
    row(
        "4 classes vs 1 class, 4p tasks",
        &|| tasks::throughput::<tasks::Veltrix4>(&rt, 4, n / 4, CAP),
        "veltrix 1 class",
        &|| tasks::throughput::<tasks::Veltrix1>(&rt, 4, n / 4, CAP),
        n,
    );
    row(
        "spsc threads (blocking)",
        &|| throughput::<Veltrix1>(1, 1, n, CAP, 1),
        Crossbeam::NAME,
        &|| throughput::<Crossbeam>(1, 1, n, CAP, 1),
        n,
    );
    row(
        "mpsc-4p threads (blocking)",
        &|| throughput::<Veltrix1>(4, 1, n / 4, CAP, 1),
        Crossbeam::NAME,
        &|| throughput::<Crossbeam>(4, 1, n / 4, CAP, 1),
        n,
    );
    let drains = (n / CAP as u64).max(1);
    row(
        "recv_many drain of a full queue",
        &|| drain_full::<Veltrix1>(CAP, drains),
        Crossbeam::NAME,
        &|| drain_full::<Crossbeam>(CAP, drains),
        drains * CAP as u64,
    );
    row(
        "engine submit -> worker -> handler",
        &|| engine_path::veltrix(n, CAP),
        "tokio-mpsc + worker task",
        &|| engine_path::tokio_mpsc(n, CAP),
        n,
    );
}
