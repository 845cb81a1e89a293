//! Swarm testing of the whole stack on turmoil: for each seed, a random scenario (classes,
//! load from light to 3× overload, service distribution, deadlines, client timeouts and
//! retries) with a random fault mix (latency, jitter, partitions, capacity drops, graceful
//! restarts, hard crashes) against a randomly configured Veltrix. Every event must be
//! accounted for — handled, refused back to the client, or dead-lettered with a reason — and
//! none lost but what a hard crash took with the server's memory.
//!
//! Seeds: `VELTRIX_SWARM_SEEDS` (default 200); one seed: `VELTRIX_SWARM_SEED=N`.
#![cfg(not(veltrix_loom))]

use std::fmt::Write as _;

use veltrix_sim::rng::Xoshiro256;
use veltrix_sim::scenario::Scenario;

/// A random scenario for `seed`, as TOML.
fn scenario(seed: u64) -> String {
    let mut r = Xoshiro256::seed(seed);
    let mut pick = |n: u64| r.next_u64() % n;
    let duration = 3;
    let classes = 1 + pick(4);
    let mean_ms = [2, 5, 10][pick(3) as usize];
    let load = [0.3, 0.8, 1.5, 3.0][pick(4) as usize];
    let mut s = String::new();
    let _ = writeln!(s, "schema = 1\nname = \"swarm-{seed}\"\nduration_s = {duration}\nworkers = {}", 1 + pick(3));
    let service = match pick(4) {
        0 => format!("{{ kind = \"exponential\", mean_ms = {mean_ms} }}"),
        1 => format!("{{ kind = \"deterministic\", mean_ms = {mean_ms} }}"),
        2 => format!(
            "{{ kind = \"bimodal\", fast_ms = {}, slow_ms = {}, slow_fraction = 0.1 }}",
            mean_ms / 2 + 1,
            mean_ms * 5
        ),
        _ => format!("{{ kind = \"lognormal\", mean_ms = {mean_ms}, sigma = 1.0 }}"),
    };
    let _ = writeln!(s, "service = {service}");
    let max_attempts = 1 + pick(3);
    if max_attempts > 1 || pick(2) == 0 {
        let _ = writeln!(
            s,
            "[client]\ntimeout_ms = {}\nmax_attempts = {max_attempts}\nbackoff_ms = {}",
            20 + pick(200),
            pick(30)
        );
        if pick(2) == 0 {
            let _ = writeln!(s, "retry_budget = 0.2");
        }
    }
    let _ = writeln!(s, "[faults]\nlatency_ms = {}\njitter_ms = {}", pick(4), pick(4));
    // Partitions one after another (windows of one kind may not overlap), all before 2.5 s.
    let mut at = 0.0;
    for _ in 0..pick(3) {
        let from = at + (1 + pick(700)) as f64 / 1000.0;
        let to = from + (1 + pick(400)) as f64 / 1000.0;
        if to >= 2.5 {
            break;
        }
        let _ = writeln!(s, "[[faults.partition]]\nfrom_s = {from}\nto_s = {to}");
        at = to;
    }
    for _ in 0..pick(3) {
        let from = pick(1500) as f64 / 1000.0;
        let to = from + (1 + pick(800)) as f64 / 1000.0;
        let _ = writeln!(
            s,
            "[[faults.capacity_drop]]\nfrom_s = {from}\nto_s = {to}\nfactor = {}",
            (1 + pick(9)) as f64 / 10.0
        );
    }
    for _ in 0..pick(2) {
        let _ = writeln!(s, "[[faults.restart]]\nat_s = {}", (100 + pick(2500)) as f64 / 1000.0);
    }
    if pick(4) == 0 {
        let _ = writeln!(
            s,
            "[[faults.crash]]\nat_s = {}\ndown_s = {}",
            (100 + pick(1500)) as f64 / 1000.0,
            (1 + pick(500)) as f64 / 1000.0
        );
    }
    let rate = load * 1000.0 / mean_ms as f64 / classes as f64;
    for k in 0..classes {
        let _ = writeln!(s, "[[class]]\nname = \"c{k}\"");
        if pick(3) > 0 {
            let _ = writeln!(s, "deadline_ms = {}", 10 + pick(500));
        }
        let kind = if pick(4) == 0 { "constant" } else { "poisson" };
        let _ = writeln!(s, "arrivals = {{ kind = \"{kind}\", rate_per_s = {rate:.3} }}");
    }
    let scheduler = ["strict", "drr", "capped"][pick(3) as usize];
    let _ = writeln!(
        s,
        "[[system]]\nkind = \"veltrix\"\nname = \"veltrix\"\nscheduler = \"{scheduler}\"\ncapacity = {}",
        1 + pick(50)
    );
    let _ =
        writeln!(s, "cap = {}\nwindow = {}\ndeadlines = {}", (1 + pick(10)) as f64 / 10.0, 1 + pick(16), pick(4) > 0);
    for k in 0..classes {
        let policy = ["backpressure", "reject", "shed-oldest"][pick(3) as usize];
        let _ = writeln!(s, "[[system.class]]\nname = \"c{k}\"\npolicy = \"{policy}\"\nweight = {}", 1 + pick(8));
        if pick(4) == 0 {
            let _ = writeln!(s, "codel_target_ms = {}\ncodel_interval_ms = {}", 1 + pick(20), 20 + pick(100));
        }
    }
    let _ = writeln!(s, "[expect]\nchecks = [\"veltrix.identities_hold == 1\"]");
    s
}

fn check(seed: u64) -> Result<(), String> {
    let src = scenario(seed);
    let scenario = Scenario::parse(&src, &format!("<swarm seed {seed}>"))
        .map_err(|e| format!("generated an invalid scenario: {e}\n{src}"))?;
    let report = veltrix_sim::run_scenario(&scenario, &src, seed, Vec::new(), |_| {})?;
    let d = &report.deterministic;
    let sys = &d.systems[0];
    let broken: Vec<&str> = sys.identities.iter().filter(|i| !i.holds).map(|i| i.identity.as_str()).collect();
    // A hard crash takes what was inside the server with it (counted as `crashed`); nothing
    // else may be lost.
    if sys.total.lost != sys.total.crashed || !broken.is_empty() || d.expectations.iter().any(|e| !e.holds) {
        return Err(format!(
            "lost {} events ({} in a crash); broken identities: {broken:?}\n{src}",
            sys.total.lost, sys.total.crashed
        ));
    }
    Ok(())
}

#[test]
fn every_event_is_accounted_for_under_random_faults() {
    let seeds: Vec<u64> = match std::env::var("VELTRIX_SWARM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(one) => vec![one],
        None => {
            let n = std::env::var("VELTRIX_SWARM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200u64);
            (1..=n).collect()
        }
    };
    let start = std::time::Instant::now();
    let failures: Vec<(u64, String)> = seeds.iter().filter_map(|&seed| check(seed).err().map(|e| (seed, e))).collect();
    for (seed, e) in &failures {
        eprintln!("swarm seed {seed} failed: {e}");
        eprintln!("reproduce: VELTRIX_SWARM_SEED={seed} cargo test -p veltrix-verify --test swarm");
    }
    assert!(failures.is_empty(), "{} of {} seeds failed (first: {})", failures.len(), seeds.len(), failures[0].0);
    println!(
        "swarm: {} seeds in {:.1} s, no violation: every event accounted for",
        seeds.len(),
        start.elapsed().as_secs_f64()
    );
}
