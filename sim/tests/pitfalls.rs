//! Every pitfall `check-config` flags, run in the simulator: the predicted failure happens, and
//! where a fix is named, the fixed configuration is not flagged and does not fail that way.

use veltrix_sim::pitfalls::{Pitfall, check_scenario};
use veltrix_sim::report::{ClassReport, Deterministic};
use veltrix_sim::run_scenario;
use veltrix_sim::scenario::Scenario;

/// One worker, S̄ = 10 ms (100 events/s), 30 s; `classes` and `system` are TOML.
fn scenario(classes: &str, system: &str) -> (Scenario, String) {
    let src = format!(
        "schema = 1\nname = \"pitfall\"\nseed = 5\nduration_s = 30\nwarmup_s = 2\n\
         service = {{ kind = \"exponential\", mean_ms = 10 }}\n{classes}\n[[system]]\nkind = \"veltrix\"\nname = \"v\"\n{system}\n"
    );
    (Scenario::parse(&src, "<pitfall>").unwrap(), src)
}

fn run(s: &(Scenario, String)) -> Deterministic {
    run_scenario(&s.0, &s.1, 5, Vec::new(), |_| {}).unwrap().deterministic
}

fn class<'a>(d: &'a Deterministic, name: &str) -> &'a ClassReport {
    d.systems[0].classes.iter().find(|c| c.class == name).unwrap()
}

fn pitfalls(s: &(Scenario, String), budget: Option<u64>) -> Vec<Pitfall> {
    check_scenario(&s.0, None, budget.map(|b| (b, 96))).unwrap()
}

#[test]
fn a_queue_longer_than_its_deadline_can_drain_expires_its_tail() {
    // 200/s offered to 100/s of service: the queue stays full.
    let classes = "[[class]]\nname = \"A\"\ndeadline_ms = 1000\narrivals = { kind = \"poisson\", rate_per_s = 200 }";
    let flagged = scenario(classes, "capacity = 500\n[[system.class]]\nname = \"A\"\npolicy = \"reject\"");
    let found = pitfalls(&flagged, None);
    assert!(
        matches!(&found[0], Pitfall::QueueOutlivesDeadline { class, capacity: 500, .. } if class == "A"),
        "{found:?}"
    );
    println!("{}", found[0]);
    let expired = class(&run(&flagged), "A").dead_lettered.get("expired").copied().unwrap_or(0);
    assert!(expired > 500, "the tail of the full queue expires: {expired}");

    // Half the capacity the message names (100/s × 1 s) drains in half the deadline.
    let fixed = scenario(classes, "capacity = 50\n[[system.class]]\nname = \"A\"\npolicy = \"reject\"");
    assert!(!pitfalls(&fixed, None).iter().any(|p| matches!(p, Pitfall::QueueOutlivesDeadline { .. })));
    let expired = class(&run(&fixed), "A").dead_lettered.get("expired").copied().unwrap_or(0);
    assert!(expired < 20, "a queue that drains within the deadline expires (almost) nothing: {expired}");
}

#[test]
fn a_share_below_the_load_refuses_the_excess() {
    // DRR 1:4; B takes 50/s of its 80/s share, A gets the other 50/s of its 70/s.
    let classes = "[[class]]\nname = \"A\"\narrivals = { kind = \"poisson\", rate_per_s = 70 }\n\
                   [[class]]\nname = \"B\"\narrivals = { kind = \"poisson\", rate_per_s = 50 }";
    let flagged = scenario(
        classes,
        "scheduler = \"drr\"\n[[system.class]]\nname = \"A\"\nweight = 1\npolicy = \"reject\"\n\
         [[system.class]]\nname = \"B\"\nweight = 4",
    );
    let found = pitfalls(&flagged, None);
    let Some(Pitfall::ShareBelowLoad { offered_per_s, served_per_s, .. }) =
        found.iter().find(|p| matches!(p, Pitfall::ShareBelowLoad { class, .. } if class == "A"))
    else {
        panic!("{found:?}")
    };
    assert_eq!((*offered_per_s, served_per_s.round()), (70.0, 50.0));
    let report = run(&flagged);
    let a = class(&report, "A");
    let refused = a.rejected.values().sum::<u64>() + a.dead_lettered.values().sum::<u64>();
    let share = refused as f64 / (a.offered_fresh as f64);
    // At most 20 of the 70/s when B uses its whole 50/s; B's Poisson lulls leave A a little more.
    assert!((0.1..0.35).contains(&share), "a sizeable part refused or shed: {share:.3}");
}

#[test]
fn an_uncapped_strict_tier_starves_the_classes_below_it() {
    let classes = "[[class]]\nname = \"T\"\narrivals = { kind = \"poisson\", rate_per_s = 120 }\n\
                   [[class]]\nname = \"B\"\narrivals = { kind = \"poisson\", rate_per_s = 20 }";
    let flagged = scenario(classes, "scheduler = \"strict\"");
    let found = pitfalls(&flagged, None);
    assert!(found.iter().any(|p| matches!(p, Pitfall::UncappedStrictTier { class, .. } if class == "T")), "{found:?}");
    let starved = class(&run(&flagged), "B").goodput_ratio;
    assert!(starved < 0.05, "B gets nothing while T asks for the whole server: goodput {starved}");

    // The capped tier (the default) bounds it.
    let fixed = scenario(classes, "");
    assert!(!pitfalls(&fixed, None).iter().any(|p| matches!(p, Pitfall::UncappedStrictTier { .. })));
    // (B still loses a little at admission: while T's queue is full, B sheds to admit.)
    let served = class(&run(&fixed), "B").goodput_ratio;
    assert!(served > 0.8, "the capped tier leaves B served: goodput {served}");
}

#[test]
fn a_codel_target_below_the_service_time_sheds_without_overload() {
    // ρ = 0.5: no overload at all.
    let classes = "[[class]]\nname = \"A\"\narrivals = { kind = \"poisson\", rate_per_s = 50 }";
    let flagged = scenario(classes, "[[system.class]]\nname = \"A\"\ncodel_target_ms = 2\ncodel_interval_ms = 20");
    let found = pitfalls(&flagged, None);
    assert!(found.iter().any(|p| matches!(p, Pitfall::CodelBelowService { .. })), "{found:?}");
    let shed = class(&run(&flagged), "A").dead_lettered.get("codel").copied().unwrap_or(0);
    assert!(shed >= 20, "CoDel sheds at half load: {shed}");
}

#[test]
fn queues_larger_than_the_memory_budget_hold_more_than_it() {
    let classes = "[[class]]\nname = \"A\"\narrivals = { kind = \"poisson\", rate_per_s = 300 }";
    let flagged = scenario(classes, "capacity = 1000");
    let budget = 64 * 1024;
    let found = pitfalls(&flagged, Some(budget));
    assert!(matches!(found.last(), Some(Pitfall::MemoryOverBudget { events: 1000, bytes: 96_000, .. })), "{found:?}");
    let peak = run(&flagged).systems[0].peak_queued_bytes;
    assert!(peak > budget, "at 3× overload the queue fills: {peak} B > {budget} B");
}
