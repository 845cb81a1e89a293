//! Veltrix against the channels people would pick instead. Every workload is one criterion
//! group with one function per peer, so ratios come from the same run on the same machine.
//! `benches/RESULTS.md` is generated from these groups' estimates (`cargo run -p
//! veltrix-benches --bin results`); `ci/bench-gate` compares chosen ratios with `benches/gate.toml`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use veltrix_benches::tasks::{self, AsyncChan};
use veltrix_benches::{
    AsyncChannel, AsyncPriority, Chan, Crossbeam, Flume, Kanal, MultiConsumer, Thingbuf, TokioMpsc, Veltrix1, Veltrix4,
    drain_full, engine_path, flood_starvation, flood_urgent_p99, ping_pong, throughput, throughput_mc,
};

const CAPACITY: usize = 1024;
const MESSAGES: u64 = 20_000;

fn per_message<'c>(
    c: &'c mut Criterion,
    group: &str,
    messages: u64,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(messages));
    g.sample_size(10);
    g
}

macro_rules! peers {
    ($g:expr, $run:ident, [$($peer:ty),+], $args:tt) => {
        $( $g.bench_function(<$peer as Chan>::NAME, |b| b.iter_custom(|iters| (0..iters).map(|_| $run::<$peer> $args).sum())); )+
    };
}

fn spsc(c: &mut Criterion) {
    let mut g = per_message(c, "spsc", MESSAGES);
    peers!(
        g,
        throughput,
        [Veltrix1, TokioMpsc, Crossbeam, Flume, AsyncChannel, Thingbuf, Kanal],
        (1, 1, MESSAGES, CAPACITY, 1)
    );
    g.finish();
}

fn mpsc(c: &mut Criterion) {
    let mut g = per_message(c, "mpsc-4p", MESSAGES);
    peers!(
        g,
        throughput,
        [Veltrix1, TokioMpsc, Crossbeam, Flume, AsyncChannel, Thingbuf, Kanal],
        (4, 1, MESSAGES / 4, CAPACITY, 1)
    );
    g.finish();
}

fn mpmc(c: &mut Criterion) {
    let mut g = per_message(c, "mpmc-4x4", MESSAGES);
    fn run<C: MultiConsumer>() -> Duration {
        throughput_mc::<C>(4, 4, MESSAGES / 4, CAPACITY)
    }
    peers!(g, run, [Veltrix1, Crossbeam, Flume, AsyncChannel, Kanal], ());
    g.finish();
}

fn classes(c: &mut Criterion) {
    let mut g = per_message(c, "classes-4p", MESSAGES);
    peers!(g, throughput, [Veltrix1, Veltrix4, AsyncPriority], (4, 1, MESSAGES / 4, CAPACITY, 1));
    g.finish();
}

fn batch(c: &mut Criterion) {
    let mut g = per_message(c, "batch-recv", MESSAGES);
    peers!(g, throughput, [Veltrix1, TokioMpsc, Crossbeam, Flume], (1, 1, MESSAGES, CAPACITY, 64));
    g.finish();
}

fn full(c: &mut Criterion) {
    let mut g = per_message(c, "full-backpressure", MESSAGES / 4);
    peers!(g, throughput, [Veltrix1, TokioMpsc, Crossbeam, Flume, AsyncChannel, Kanal], (2, 1, MESSAGES / 8, 1, 1));
    g.finish();
}

fn pingpong(c: &mut Criterion) {
    let mut g = per_message(c, "ping-pong", 2_000);
    peers!(g, ping_pong, [Veltrix1, TokioMpsc, Crossbeam, Flume, AsyncChannel, Kanal], (2_000));
    g.finish();
}

fn flood(c: &mut Criterion) {
    const FLOOD: (u64, Duration, Duration) = (200, Duration::from_micros(500), Duration::from_micros(20));
    // The "time" is the urgent class's p99 latency under the flood (lower is better).
    let mut g = c.benchmark_group("priority-flood-p99");
    g.sample_size(10);
    peers!(g, flood_urgent_p99, [Veltrix4, AsyncPriority, TokioMpsc], (FLOOD.0, FLOOD.1, FLOOD.2));
    g.finish();
    // The same flood: the longest the flooded class went without a delivery (lower is better).
    let mut g = c.benchmark_group("priority-flood-starvation");
    g.sample_size(10);
    peers!(g, flood_starvation, [Veltrix4, AsyncPriority, TokioMpsc], (FLOOD.0, FLOOD.1, FLOOD.2));
    g.finish();
}

/// The async workloads: producer tasks and a consumer task on a two-worker tokio runtime.
fn async_tasks(c: &mut Criterion) {
    let rt = tasks::runtime();
    macro_rules! async_peers {
        ($g:expr, [$($peer:ty),+], $producers:expr) => {
            $( $g.bench_function(<$peer as AsyncChan>::NAME, |b| {
                b.iter_custom(|iters| {
                    (0..iters).map(|_| tasks::throughput::<$peer>(&rt, $producers, MESSAGES / $producers, CAPACITY)).sum()
                })
            }); )+
        };
    }
    let mut g = per_message(c, "spsc-tasks", MESSAGES);
    async_peers!(g, [tasks::Veltrix1, tasks::TokioMpsc], 1);
    g.finish();
    let mut g = per_message(c, "mpsc-4p-tasks", MESSAGES);
    async_peers!(g, [tasks::Veltrix1, tasks::TokioMpsc], 4);
    g.finish();
    let mut g = per_message(c, "classes-4p-tasks", MESSAGES);
    async_peers!(g, [tasks::Veltrix1, tasks::Veltrix4, tasks::AsyncPriority], 4);
    g.finish();
}

fn drain(c: &mut Criterion) {
    const ROUNDS: u64 = 20;
    let mut g = per_message(c, "drain-full", ROUNDS * CAPACITY as u64);
    peers!(g, drain_full, [Veltrix1, Crossbeam, Flume, TokioMpsc], (CAPACITY, ROUNDS));
    g.finish();
}

fn engine(c: &mut Criterion) {
    let mut g = per_message(c, "engine-submit-to-handler", MESSAGES);
    g.bench_function("veltrix", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| engine_path::veltrix(MESSAGES, CAPACITY)).sum())
    });
    g.bench_function("tokio-mpsc", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| engine_path::tokio_mpsc(MESSAGES, CAPACITY)).sum())
    });
    g.finish();
}

criterion_group!(benches, spsc, mpsc, mpmc, classes, batch, full, pingpong, flood, async_tasks, drain, engine);
criterion_main!(benches);
