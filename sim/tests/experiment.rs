//! The experiment API as a user's test would call it: their handler and `Config`, a workload,
//! typed SLOs, an allocation budget.

use std::future::Future;
use std::time::Duration;

use veltrix_engine::runtime::{Handler, HandlerContext, Outcome};
use veltrix_engine::{ClassSpec, Config, DeadLetterReason, OverloadPolicy};
use veltrix_sim::experiment::{ExperimentError, SloFailure};
use veltrix_sim::{EventSpec, Experiment, Slo, Workload};

#[global_allocator]
static ALLOC: veltrix_sim::CountingAllocator = veltrix_sim::CountingAllocator;

/// Works for the service time the workload drew (on the simulated clock).
struct Sleeper;
impl Handler<Duration> for Sleeper {
    fn handle(&self, work: &Duration, _cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
        let work = *work;
        async move {
            tokio::time::sleep(work).await;
            Outcome::Ok
        }
    }
}

/// Like `Sleeper`, but builds a buffer for every event.
struct Allocating;
impl Handler<Duration> for Allocating {
    fn handle(&self, work: &Duration, _cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
        let work = *work;
        async move {
            let buffer = vec![0u8; 64];
            tokio::time::sleep(work).await;
            std::hint::black_box(buffer);
            Outcome::Ok
        }
    }
}

fn config() -> Config {
    Config::builder()
        .class(ClassSpec::new("CRITICAL", 200))
        .class(ClassSpec::new("BULK", 200).with_policy(OverloadPolicy::ShedOldest))
        .build()
        .unwrap()
}

/// ρ = 0.5 at 2 ms mean service, then BULK triples for 5 s (ρ = 1.1).
fn workload() -> Workload {
    Workload::new(20.0)
        .warmup_s(1.0)
        .service("exponential", 2.0)
        .class("CRITICAL", 100.0)
        .deadline_ms("CRITICAL", 100.0)
        .class("BULK", 150.0)
        .step("BULK", 8.0, 13.0, 450.0)
}

fn spend(e: EventSpec) -> Duration {
    e.service
}

#[test]
fn a_burst_keeps_critical_within_its_slo_and_the_same_seed_gives_the_same_report() {
    let run = || Experiment::new(&workload().toml().unwrap(), config(), Sleeper, spend).unwrap().seed(3).run().unwrap();
    let report = run();
    report.assert(&[
        Slo::goodput_at_least("CRITICAL", 0.99),
        Slo::p99_latency_at_most("CRITICAL", 100.0),
        Slo::lost_at_most(None, 0),
        Slo::dead_lettered_at_most(Some("CRITICAL"), Some(DeadLetterReason::Expired), 0),
    ]);
    // Only what was in service when the run stopped.
    let critical = report.class("CRITICAL").unwrap();
    assert!(critical.dead_lettered.keys().all(|r| r == "shutdown"), "{:?}", critical.dead_lettered);
    let bulk = report.class("BULK").unwrap();
    assert!(bulk.dead_lettered.get("shed").copied().unwrap_or(0) > 0, "the burst sheds bulk: {bulk:?}");
    assert!(report.class("CRITICAL").unwrap().handled > 1500);
    let again = run();
    assert_eq!(
        veltrix_sim::deterministic_json(&report.report.deterministic),
        veltrix_sim::deterministic_json(&again.report.deterministic)
    );
}

#[test]
fn a_failed_slo_names_the_measurement_and_the_command_that_reproduces_it() {
    let report = Experiment::new(&workload().toml().unwrap(), config(), Sleeper, spend).unwrap().seed(3).run().unwrap();
    let slos = [
        Slo::goodput_at_least("BULK", 0.999),
        Slo::dead_lettered_at_most(Some("BULK"), Some(DeadLetterReason::Shed), 0),
        Slo::mean_latency_at_most("NOPE", 1.0),
    ];
    let failure: SloFailure = report.check(&slos).unwrap_err();
    assert_eq!(failure.failed.len(), 3);
    assert!(failure.failed[2].1.is_none(), "no such class");
    assert!(text_of(&report, &[Slo::p99_latency_at_most("CRITICAL", 1e9)]).is_none(), "CRITICAL was handled");
    let text = failure.to_string();
    assert!(text.contains("SLO failed: BULK goodput ≥ 0.999 (measured 0."), "{text}");
    assert!(text.contains("SLO failed: BULK dead-lettered (shed) ≤ 0 (measured "), "{text}");
    assert!(
        text.ends_with(
            "reproduce: VELTRIX_SIM_SEED=3 cargo test -- --exact \
             a_failed_slo_names_the_measurement_and_the_command_that_reproduces_it   (test binary `experiment`)"
        ),
        "{text}"
    );
    let panic = std::panic::catch_unwind(|| report.assert(&slos[..1])).unwrap_err();
    assert!(panic.downcast_ref::<String>().unwrap().contains("reproduce: VELTRIX_SIM_SEED=3"));
}

fn text_of(report: &veltrix_sim::ExperimentReport, slos: &[Slo]) -> Option<String> {
    report.check(slos).err().map(|e| e.to_string())
}

/// Fails every event.
struct Failing;
impl Handler<Duration> for Failing {
    fn handle(&self, _: &Duration, _cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
        std::future::ready(Outcome::Fatal)
    }
}

#[test]
fn a_latency_objective_fails_when_nothing_was_handled_and_a_zero_attempt_policy_is_an_error() {
    let report = Experiment::new(&workload().toml().unwrap(), config(), Failing, spend).unwrap().run().unwrap();
    let text = text_of(&report, &[Slo::p99_latency_at_most("CRITICAL", 100.0)]).expect("nothing was handled");
    assert!(text.contains("nothing to measure"), "{text}");
    let mut zero = veltrix_engine::runtime::RetryPolicy::none();
    zero.max_attempts = 0;
    let e =
        Experiment::new(&workload().toml().unwrap(), config(), Sleeper, spend).unwrap().retry(zero).run().unwrap_err();
    assert!(matches!(e, ExperimentError::Engine(_)), "{e}");
}

#[test]
fn the_allocation_budget_passes_a_quiet_handler_and_catches_one_that_allocates() {
    let quiet = Experiment::new(&workload().toml().unwrap(), config(), Sleeper, spend).unwrap();
    let per_event = quiet.check_allocations(0.05, 20_000).unwrap();
    assert!(per_event <= 0.05, "{per_event}");
    let noisy = Experiment::new(&workload().toml().unwrap(), config(), Allocating, spend).unwrap();
    match noisy.check_allocations(0.05, 20_000) {
        Err(ExperimentError::AllocationBudget { measured, .. }) => assert!(measured >= 1.0, "{measured}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_workload_that_does_not_fit_the_config_is_a_typed_error() {
    let one_class = Workload::new(5.0).class("CRITICAL", 10.0).toml().unwrap();
    let e = Experiment::new(&one_class, config(), Sleeper, spend).unwrap_err();
    assert!(matches!(&e, ExperimentError::Classes { workload, .. } if workload == &["CRITICAL"]), "{e}");
    let with_system = workload().toml().unwrap() + "[[system]]\nkind = \"naive-fifo\"\nname = \"n\"\n";
    let e = Experiment::new(&with_system, config(), Sleeper, spend).unwrap_err();
    assert!(e.to_string().contains("no [[system]] tables"), "{e}");
    let e = Experiment::new(
        &workload().toml().unwrap().replace("duration_s = 20", "duration_s = -1"),
        config(),
        Sleeper,
        spend,
    )
    .unwrap_err();
    assert!(matches!(&e, ExperimentError::Workload(w) if w.field == "duration_s"), "{e}");
    let e = Workload::new(5.0).class("CRITICAL", 10.0).step("BLUK", 1.0, 2.0, 5.0).toml().unwrap_err();
    assert_eq!(e.to_string(), "the workload has no class `BLUK` (add it with `class` first)");
}

#[test]
fn faults_reach_the_users_engine_and_every_event_is_accounted_for() {
    let workload =
        workload().client_timeout_ms(200.0).retries(2, 10.0).latency_ms(1.0).partition(3.0, 4.0).crash(6.0, 1.0);
    let report = Experiment::new(&workload.toml().unwrap(), config(), Sleeper, spend).unwrap().seed(5).run().unwrap();
    let system = &report.report.deterministic.systems[0];
    assert!(system.identities.iter().all(|i| i.holds), "{:#?}", system.identities);
    let total = report.total();
    assert!(total.crashed > 0 && total.lost == total.crashed, "only the crash loses events: {total:?}");
    assert!(total.offered_retry > 0, "the client retried what the partition and the crash held up");
}
