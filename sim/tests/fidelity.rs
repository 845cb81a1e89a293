//! The simulator's time fidelity: what it measures does not depend on its step, and its
//! scheduling decisions are those of the exact (continuous-time) system, at service times far
//! below a step.

use veltrix_sim::run::{Completion, run_system};
use veltrix_sim::scenario::Scenario;
use veltrix_sim::workload::{Arrival, schedule};

/// Two classes under strict priority and a naive FIFO, 0.5 ms mean service (half a default
/// step), ρ = 0.7 on each of `workers` workers.
fn scenario(tick_ms: u32, workers: u32) -> Scenario {
    let (hi, lo) = (500 * workers, 900 * workers);
    let src = format!(
        r#"
schema = 1
name = "fidelity"
duration_s = 20
tick_ms = {tick_ms}
workers = {workers}
service = {{ kind = "exponential", mean_ms = 0.5 }}
[[class]]
name = "HI"
arrivals = {{ kind = "poisson", rate_per_s = {hi} }}
[[class]]
name = "LO"
arrivals = {{ kind = "poisson", rate_per_s = {lo} }}
[[system]]
kind = "veltrix"
name = "strict"
scheduler = "strict"
capacity = 100000
deadlines = false
[[system]]
kind = "naive-fifo"
name = "fifo"
"#
    );
    Scenario::parse(&src, "<fidelity>").unwrap()
}

/// One completion: `(class, arrival, start, done)`, ns.
type Times = (u8, u64, u64, u64);

/// `(class, arrival, start, done)` of every completion that ended well before the end (the
/// last few steps of a run depend on when the step lets the server stop).
fn completions(tick_ms: u32, workers: u32, system: usize, seed: u64) -> (Vec<Times>, Vec<Arrival>) {
    let s = scenario(tick_ms, workers);
    let arrivals = schedule(&s, seed);
    let run = run_system(&s, &s.systems[system], &arrivals, seed).unwrap();
    let end = (s.duration_s.0 * 1e9) as u64 - 100_000_000;
    let mut v: Vec<Times> = run
        .completions
        .iter()
        .filter(|c: &&Completion| c.done_ns < end)
        .map(|c| (c.class, c.arrival_ns, c.start_ns, c.done_ns))
        .collect();
    v.sort_unstable_by_key(|c| (c.2, c.1));
    (v, arrivals)
}

#[test]
fn every_completion_is_the_same_at_a_step_of_1_and_3_ms() {
    for system in 0..2 {
        let (one, _) = completions(1, 1, system, 11);
        let (three, _) = completions(3, 1, system, 11);
        assert!(one.len() > 25_000, "{}", one.len());
        assert_eq!(one.len(), three.len(), "system {system}");
        let first_difference = one.iter().zip(&three).position(|(a, b)| a != b);
        assert_eq!(first_difference, None, "system {system}: {:?}", first_difference.map(|i| (one[i], three[i])));
    }
}

/// The exact non-preemptive strict-priority queue with `workers` servers, event by event: when
/// a server is free (the one free first), the most critical waiting event (earliest within its
/// class) starts on it; if none waits, the next arrival does, when it arrives.
fn oracle(arrivals: &[Arrival], workers: usize) -> Vec<Times> {
    let mut by_time: Vec<&Arrival> = arrivals.iter().collect();
    by_time.sort_by_key(|a| (a.at_ns, a.id));
    let mut waiting: std::collections::BTreeSet<(u8, u64, u64)> = std::collections::BTreeSet::new();
    let mut service = std::collections::HashMap::new();
    let (mut next, mut free_at, mut out) = (0, vec![0u64; workers], Vec::new());
    while next < by_time.len() || !waiting.is_empty() {
        let server = (0..workers).min_by_key(|&i| (free_at[i], i)).expect("a server");
        let mut at = free_at[server];
        if waiting.is_empty() {
            at = at.max(by_time[next].at_ns);
        }
        while next < by_time.len() && by_time[next].at_ns <= at {
            let a = by_time[next];
            waiting.insert((a.class, a.at_ns, a.id));
            service.insert(a.id, a.service_ns);
            next += 1;
        }
        let (class, arrival, id) = waiting.pop_first().expect("something waits");
        let done = at + service[&id];
        out.push((class, arrival, at, done));
        free_at[server] = done;
    }
    out.sort_unstable_by_key(|c| (c.2, c.1));
    out
}

fn matches_the_oracle(workers: u32) {
    let (measured, arrivals) = completions(1, workers, 0, 5);
    let last = measured.last().unwrap().3;
    let expected: Vec<_> = oracle(&arrivals, workers as usize).into_iter().filter(|c| c.3 <= last).collect();
    assert!(measured.len() > 25_000 * workers as usize, "{}", measured.len());
    let first_difference = measured.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(
        first_difference,
        None,
        "{workers} workers: {:?}",
        first_difference.map(|i| (&measured[i.saturating_sub(2)..=i], &expected[i.saturating_sub(2)..=i]))
    );
    assert_eq!(measured.len(), expected.len());
}

#[test]
fn strict_priority_decides_exactly_as_the_continuous_time_queue() {
    matches_the_oracle(1);
}

#[test]
fn with_two_workers_too() {
    matches_the_oracle(2);
}
