//! A user's experiment, written the way a service team would: their checkout handler, their
//! classes, a 3× burst of bulk traffic, their SLOs, and an allocation budget.
//!
//! ```sh
//! cargo run --release -p veltrix-sim --example checkout
//! ```
//!
//! It prints the report table and exits non-zero, with the command that reproduces the run, if
//! an objective fails.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use veltrix_engine::runtime::{Handler, HandlerContext, Outcome};
use veltrix_engine::{ClassSpec, Config, DeadLetterReason, OverloadPolicy};
use veltrix_sim::{EventSpec, Experiment, Slo, Workload};

// Counts allocations, for the budget below: one line in the binary.
#[global_allocator]
static ALLOC: veltrix_sim::CountingAllocator = veltrix_sim::CountingAllocator;

/// What the service receives.
enum Request {
    /// Take a payment: a call to the payment provider.
    Charge { order: u64 },
    /// Re-render an order's receipt: CPU and a storage write.
    Receipt { order: u64 },
}

/// The service's handler. Its waits are where the time goes; in the experiment they run on the
/// simulated clock.
struct Checkout;

impl Handler<Request> for Checkout {
    fn handle(&self, request: &Request, _cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
        let work = match request {
            // The provider answers in 1 to 3 ms.
            Request::Charge { order } => Duration::from_micros(1_000 + order % 2_000),
            // A storage write of 2.5 to 3.5 ms.
            Request::Receipt { order } => Duration::from_micros(2_500 + order % 1_000),
        };
        async move {
            tokio::time::sleep(work).await;
            Outcome::Ok
        }
    }
}

fn main() -> ExitCode {
    // The service's own engine settings: payments are never shed and wait at most 200 ms;
    // receipts queue up to 500 and shed their oldest under overload.
    let config = Config::builder()
        .class(ClassSpec::new("payments", 200).with_deadline(Duration::from_millis(200)))
        .class(ClassSpec::new("receipts", 500).with_policy(OverloadPolicy::ShedOldest))
        .build()
        .expect("a valid config");
    // 60 s on two workers: payments at 150/s (0.3 of a worker), receipts at 250/s (0.75), so
    // about half the capacity; receipts triple from 20 s to 35 s, asking for 2.55 workers.
    let workload = Workload::new(60.0)
        .warmup_s(2.0)
        .workers(2)
        .class("payments", 150.0)
        .deadline_ms("payments", 200.0)
        .class("receipts", 250.0)
        .step("receipts", 20.0, 35.0, 750.0)
        .client_timeout_ms(1_000.0);
    let make = |e: EventSpec| {
        if e.class.index() == 0 { Request::Charge { order: e.request } } else { Request::Receipt { order: e.request } }
    };
    let experiment = match workload.toml().and_then(|toml| Experiment::new(&toml, config, Checkout, make)) {
        Ok(x) => x.seed(2026),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match experiment.run() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", veltrix_sim::report::markdown(&report.report.deterministic));
    let slos = [
        Slo::goodput_at_least("payments", 0.999),
        Slo::p99_latency_at_most("payments", 50.0),
        Slo::dead_lettered_at_most(Some("payments"), Some(DeadLetterReason::Expired), 0),
        Slo::lost_at_most(None, 0),
    ];
    for slo in &slos {
        println!("- {slo}: measured {}", report.measured(slo).map_or("-".into(), |m| format!("{m}")));
    }
    if let Err(failure) = report.check(&slos) {
        eprintln!("{failure}");
        return ExitCode::FAILURE;
    }
    match experiment.check_allocations(0.1, 20_000) {
        Ok(per_event) => println!("- allocations per handled event on the engine path: {per_event:.3} (budget 0.1)"),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
