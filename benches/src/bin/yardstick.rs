//! Quick ratios, measured the way a user would: every workload of the fast-path targets, each
//! against its peer in the same process, medians over rounds.
//!
//! `cargo run --release -p veltrix-benches --bin yardstick -- [--rounds R] [--messages N]
//! [--only SUBSTRING] [--subject-only]`
//!
//! `--subject-only` runs only Veltrix's side (what `ci/profile` records).

use std::time::Duration;

use veltrix_benches::tasks::{self, AsyncChan};
use veltrix_benches::{Chan, Crossbeam, Veltrix1, drain_full, engine_path, throughput};

type Run<'a> = Box<dyn Fn() -> Duration + 'a>;

struct Workload<'a> {
    name: &'static str,
    subject: Run<'a>,
    peer: &'static str,
    against: Run<'a>,
    messages: u64,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let (mut rounds, mut n, mut only, mut subject_only) = (5usize, 1_000_000u64, String::new(), false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--rounds" => rounds = value().parse().expect("--rounds: a number"),
            "--messages" => n = value().parse().expect("--messages: a number"),
            "--only" => only = value(),
            "--subject-only" => subject_only = true,
            other => panic!("unknown argument {other} (see the file's docs)"),
        }
    }
    let rt = tasks::runtime();
    const CAP: usize = 1024;
    let drains = (n / CAP as u64).max(1);
    let workloads = [
        Workload {
            name: "spsc tasks",
            subject: Box::new(|| tasks::throughput::<tasks::Veltrix1>(&rt, 1, n, CAP)),
            peer: tasks::TokioMpsc::NAME,
            against: Box::new(|| tasks::throughput::<tasks::TokioMpsc>(&rt, 1, n, CAP)),
            messages: n,
        },
        Workload {
            name: "mpsc-4p tasks",
            subject: Box::new(|| tasks::throughput::<tasks::Veltrix1>(&rt, 4, n / 4, CAP)),
            peer: tasks::TokioMpsc::NAME,
            against: Box::new(|| tasks::throughput::<tasks::TokioMpsc>(&rt, 4, n / 4, CAP)),
            messages: n,
        },
        Workload {
            name: "4 classes 4p tasks",
            subject: Box::new(|| tasks::throughput::<tasks::Veltrix4>(&rt, 4, n / 4, CAP)),
            peer: tasks::AsyncPriority::NAME,
            against: Box::new(|| tasks::throughput::<tasks::AsyncPriority>(&rt, 4, n / 4, CAP)),
            messages: n,
        },
        Workload {
            name: "4 classes vs 1 class, 4p tasks",
            subject: Box::new(|| tasks::throughput::<tasks::Veltrix4>(&rt, 4, n / 4, CAP)),
            peer: "veltrix, 1 class",
            against: Box::new(|| tasks::throughput::<tasks::Veltrix1>(&rt, 4, n / 4, CAP)),
            messages: n,
        },
        Workload {
            name: "spsc threads (blocking)",
            subject: Box::new(|| throughput::<Veltrix1>(1, 1, n, CAP, 1)),
            peer: Crossbeam::NAME,
            against: Box::new(|| throughput::<Crossbeam>(1, 1, n, CAP, 1)),
            messages: n,
        },
        Workload {
            name: "mpsc-4p threads (blocking)",
            subject: Box::new(|| throughput::<Veltrix1>(4, 1, n / 4, CAP, 1)),
            peer: Crossbeam::NAME,
            against: Box::new(|| throughput::<Crossbeam>(4, 1, n / 4, CAP, 1)),
            messages: n,
        },
        Workload {
            name: "recv_many drain of a full queue",
            subject: Box::new(|| drain_full::<Veltrix1>(CAP, drains)),
            peer: Crossbeam::NAME,
            against: Box::new(|| drain_full::<Crossbeam>(CAP, drains)),
            messages: drains * CAP as u64,
        },
        Workload {
            name: "engine submit -> worker -> handler",
            subject: Box::new(|| engine_path::veltrix(n, CAP)),
            peer: "tokio-mpsc + worker task",
            against: Box::new(|| engine_path::tokio_mpsc(n, CAP)),
            messages: n,
        },
    ];
    let rate = |d: Duration, n: u64| n as f64 / d.as_secs_f64() / 1e6;
    for w in workloads.iter().filter(|w| w.name.contains(only.as_str())) {
        let (mut s, mut p) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            s.push((w.subject)());
            if !subject_only {
                p.push((w.against)());
            }
        }
        let s = median(s);
        if subject_only {
            println!("{:<36} veltrix {:>7.2} M/s", w.name, rate(s, w.messages));
            continue;
        }
        let p = median(p);
        println!(
            "{:<36} veltrix {:>7.2} M/s   {:<24} {:>7.2} M/s   ratio {:.2}",
            w.name,
            rate(s, w.messages),
            w.peer,
            rate(p, w.messages),
            p.as_secs_f64() / s.as_secs_f64()
        );
    }
}
