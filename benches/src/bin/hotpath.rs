//! The engine's hot path, single-threaded and deterministic, for instruction counting under
//! valgrind's callgrind (`ci/bench-gate`): `N` rounds of four `try_send`s (one per class) and
//! four `try_recv`s. Usage: `hotpath N`.

use veltrix_engine::{ClassId, Config, channel};

fn main() {
    let rounds: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let (tx, rx) = channel::<u64>(&Config::default());
    let mut sum = 0u64;
    for i in 0..rounds {
        for k in 0..4 {
            tx.try_send(i * 4 + k, ClassId::new(k as usize)).expect("room");
        }
        for _ in 0..4 {
            sum = sum.wrapping_add(rx.try_recv().expect("queued").event);
        }
    }
    let n = rounds * 4;
    assert_eq!(sum, n * n.saturating_sub(1) / 2, "every event once");
    println!("{n} events");
}
