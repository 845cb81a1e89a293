//! `veltrix-sim`: run, sweep, check and replay overload experiments.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use veltrix_sim::{DEFAULT_SCENARIO, SCENARIOS, report, scenario::Scenario};

/// Counts heap allocations for the report's allocations-per-event figure.
#[global_allocator]
static ALLOC: veltrix_sim::CountingAllocator = veltrix_sim::CountingAllocator;

#[derive(Parser, Debug)]
#[command(
    name = "veltrix-sim",
    version,
    about = "Reproducible overload experiments: Veltrix against naive FIFO queues"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a scenario (a shipped name such as S2, or a TOML file) and print the comparison.
    Run {
        /// Scenario name or file; default S2.
        scenario: Option<String>,
        /// Seed (default: the scenario's, else a drawn one, printed first).
        #[arg(long)]
        seed: Option<u64>,
        /// Print the JSON report (alone on stdout; the seed and the files written go to stderr)
        /// instead of the table.
        #[arg(long)]
        json: bool,
        /// Output directory (default target/veltrix-sim/NAME-SEED).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run a scenario for each value of one parameter and plot latency and goodput against it.
    Sweep {
        /// Scenario name or file.
        scenario: String,
        /// `KEY=A..B:STEP`, KEY a dotted path into the scenario, e.g. `class.3.arrivals.rate_per_s=20..120:20`.
        #[arg(long)]
        param: String,
        /// Seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Output directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Validate a scenario file.
    Check {
        /// Scenario name or file.
        scenario: String,
    },
    /// Flag the classic pitfalls of a scenario's static `veltrix` system under the scenario's
    /// load, with the numbers behind each (exit 1 if any is found).
    CheckConfig {
        /// Scenario name or file.
        scenario: String,
        /// The `veltrix` system to check (needed when the scenario has several).
        #[arg(long)]
        system: Option<String>,
        /// A memory budget for the queues, in bytes.
        #[arg(long)]
        memory_budget: Option<u64>,
        /// Bytes one queued event takes, for the budget (default: the simulator's 96).
        #[arg(long, default_value_t = 96)]
        event_bytes: u64,
    },
    /// Re-run a report from its stamp and compare the deterministic part.
    Replay {
        /// A report.json written by `run`.
        report: PathBuf,
    },
    /// Check the simulator against queueing theory over a grid of service times, loads and
    /// models (every cell: mean sojourn within 5% of theory and inside its 95% interval,
    /// Little's law per class).
    TheoryGrid {
        /// Four times the arrivals per cell (for a closing check, not CI).
        #[arg(long)]
        thorough: bool,
        /// Output directory for grid.md and grid.json (default target/veltrix-sim/theory-grid).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List the shipped scenarios.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let argv: Vec<String> = std::env::args().collect();
    match cli.command.unwrap_or(Command::Run { scenario: None, seed: None, json: false, out: None }) {
        Command::Run { scenario, seed, json, out } => {
            run(scenario.as_deref().unwrap_or(DEFAULT_SCENARIO), seed, json, out, argv)
        }
        Command::Sweep { scenario, param, seed, out } => sweep(&scenario, &param, seed, out),
        Command::Check { scenario } => match veltrix_sim::load(&scenario) {
            Ok((s, _, label)) => {
                println!(
                    "{label}: ok — {} ({} classes, {} systems, {} expectations)",
                    s.name,
                    s.classes.get_ref().len(),
                    s.systems.len(),
                    s.expect.checks.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => bad_scenario(&e),
        },
        Command::CheckConfig { scenario, system, memory_budget, event_bytes } => {
            check_config(&scenario, system.as_deref(), memory_budget.map(|b| (b, event_bytes)))
        }
        Command::Replay { report } => replay(&report),
        Command::TheoryGrid { thorough, out } => theory_grid(thorough, out),
        Command::List => {
            for (name, file, src) in SCENARIOS {
                let desc = Scenario::parse(src, file).map(|s| s.description).unwrap_or_default();
                println!("{name:7} {file:28} {desc}");
            }
            ExitCode::SUCCESS
        }
    }
}

fn check_config(scenario: &str, system: Option<&str>, budget: Option<(u64, u64)>) -> ExitCode {
    let (s, _, label) = match veltrix_sim::load(scenario) {
        Ok(loaded) => loaded,
        Err(e) => return bad_scenario(&e),
    };
    match veltrix_sim::pitfalls::check_scenario(&s, system, budget) {
        Ok(found) if found.is_empty() => {
            println!("{label}: no pitfall found");
            ExitCode::SUCCESS
        }
        Ok(found) => {
            for p in &found {
                println!("- {p}");
            }
            println!("{label}: {} pitfall(s)", found.len());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn bad_scenario(e: &veltrix_sim::scenario::ScenarioError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// Prints a line about the run: to stdout beside the Markdown report, to stderr beside `--json`
/// (whose stdout is the JSON document alone).
fn say(json: bool, line: &str) {
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

fn pick_seed(given: Option<u64>, scenario: &Scenario, json: bool) -> u64 {
    let (seed, from) = match (given, scenario.seed) {
        (Some(s), _) => (s, "command line"),
        (None, Some(s)) => (s, "scenario"),
        (None, None) => {
            let t =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
            (veltrix_sim::rng::Xoshiro256::seed(t ^ u64::from(std::process::id())).next_u64() >> 16, "drawn")
        }
    };
    say(json, &format!("seed: {seed} ({from})"));
    seed
}

fn run(name: &str, seed: Option<u64>, json: bool, out: Option<PathBuf>, argv: Vec<String>) -> ExitCode {
    let (scenario, source, label) = match veltrix_sim::load(name) {
        Ok(x) => x,
        Err(e) => return bad_scenario(&e),
    };
    let seed = pick_seed(seed, &scenario, json);
    let mut progress = RunProgress::new();
    let report = match veltrix_sim::run_scenario(&scenario, &source, seed, argv, |p| progress.show(p)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    progress.finish();
    let dir = out.unwrap_or_else(|| PathBuf::from("target/veltrix-sim").join(format!("{}-{seed}", scenario.name)));
    let written = match veltrix_sim::write_outputs(&report, &dir) {
        Ok(paths) => paths,
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serializable"));
    } else {
        println!("{}", report::markdown(&report.deterministic));
        println!(
            "simulated {:.0} s in {:.2} s wall ({:.1} sim-s per wall-s){}",
            report.host.sim_seconds_per_wall_second * report.host.wall_seconds,
            report.host.wall_seconds,
            report.host.sim_seconds_per_wall_second,
            report.host.allocations_per_event.map_or(String::new(), |a| format!(", {a:.1} allocations per event")),
        );
    }
    for path in &written {
        say(json, &format!("wrote {}", path.display()));
    }
    let failed: Vec<_> = report.deterministic.expectations.iter().filter(|e| !e.holds).collect();
    let theory_failed: Vec<_> = report.deterministic.theory.iter().filter(|t| !t.holds).collect();
    if failed.is_empty() && theory_failed.is_empty() {
        return ExitCode::SUCCESS;
    }
    for e in &failed {
        eprintln!("expectation failed: {} (actual {:?})", e.check, e.actual);
    }
    for t in &theory_failed {
        eprintln!(
            "theory check failed: {} {} {}: theory {:.3}, measured {:.3} ± {:.3}",
            t.system, t.class, t.quantity, t.theory, t.measured.mean, t.measured.half_width
        );
    }
    eprintln!(
        "reproduce: cargo run --release -p veltrix-sim -- run {label_arg} --seed {seed}",
        label_arg = if label.starts_with("<built-in") { scenario.name.clone() } else { label }
    );
    ExitCode::FAILURE
}

fn replay(path: &PathBuf) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {}: not a report: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let stamp = &value["deterministic"]["stamp"];
    let (Some(seed), Some(source)) = (stamp["seed"].as_u64(), stamp["scenario_source"].as_str()) else {
        eprintln!("error: {}: no stamp (deterministic.stamp.seed, .scenario_source)", path.display());
        return ExitCode::from(2);
    };
    let scenario = match Scenario::parse(source, &format!("{} (stamp)", path.display())) {
        Ok(s) => s,
        Err(e) => return bad_scenario(&e),
    };
    println!("replaying {} with seed {seed}", scenario.name);
    let report = match veltrix_sim::run_scenario(&scenario, source, seed, Vec::new(), |_| {}) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let before = serde_json::to_string_pretty(&value["deterministic"]).expect("json");
    let after =
        serde_json::to_string_pretty(&serde_json::to_value(&report.deterministic).expect("json")).expect("json");
    if before == after {
        println!("identical: the deterministic part reproduces byte for byte");
        return ExitCode::SUCCESS;
    }
    let (a, b): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    let first = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    eprintln!(
        "DIFFERENT from line {}:\n- {}\n+ {}",
        first + 1,
        a.get(first).unwrap_or(&""),
        b.get(first).unwrap_or(&"")
    );
    ExitCode::FAILURE
}

fn sweep(name: &str, param: &str, seed: Option<u64>, out: Option<PathBuf>) -> ExitCode {
    let (scenario, source, _) = match veltrix_sim::load(name) {
        Ok(x) => x,
        Err(e) => return bad_scenario(&e),
    };
    let (key, values) = match veltrix_sim::sweep::parse_param(param) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: --param {param}: {e}");
            return ExitCode::from(2);
        }
    };
    let seed = pick_seed(seed, &scenario, false);
    let bar = indicatif::ProgressBar::new(values.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("valid template"));
    let result = veltrix_sim::sweep::run(&source, &key, &values, seed, |v| {
        bar.set_message(format!("{key} = {v}"));
        bar.inc(1);
    });
    bar.finish_and_clear();
    let points = match result {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let dir =
        out.unwrap_or_else(|| PathBuf::from("target/veltrix-sim").join(format!("{}-sweep-{seed}", scenario.name)));
    match veltrix_sim::sweep::write(&dir, &key, &points) {
        Ok((table, written)) => {
            println!("{table}");
            for path in &written {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

fn theory_grid(thorough: bool, out: Option<PathBuf>) -> ExitCode {
    let cells = veltrix_sim::grid::Cell::all();
    let bar = indicatif::ProgressBar::new(cells.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} cells {msg}").expect("valid template"));
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let started = std::time::Instant::now();
    let rows = veltrix_sim::grid::run(&cells, thorough, threads, |c| {
        bar.set_message(format!("{} ρ={} S̄={} ms", c.model.name(), c.rho, c.service_ms));
        bar.inc(1);
    });
    bar.finish_and_clear();
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let table = veltrix_sim::grid::markdown(&rows);
    println!("{table}");
    let failed: Vec<_> = rows.iter().filter(|r| !r.holds).collect();
    println!(
        "{} cells, {} checks, {} outside 5% or their 99.9% interval, in {:.0} s on {threads} threads (seed {})",
        cells.len(),
        rows.len(),
        failed.len(),
        started.elapsed().as_secs_f64(),
        veltrix_sim::grid::SEED
    );
    let dir = out.unwrap_or_else(|| PathBuf::from("target/veltrix-sim/theory-grid"));
    let json = serde_json::to_string_pretty(&rows).expect("serializable");
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("grid.md"), &table))
        .and_then(|()| std::fs::write(dir.join("grid.json"), json));
    match written {
        Ok(()) => println!("wrote {}\nwrote {}", dir.join("grid.md").display(), dir.join("grid.json").display()),
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    if failed.is_empty() {
        return ExitCode::SUCCESS;
    }
    for r in failed {
        eprintln!("theory check failed: {r}");
    }
    eprintln!(
        "reproduce: cargo run --release -p veltrix-sim -- theory-grid{}",
        if thorough { " --thorough" } else { "" }
    );
    ExitCode::FAILURE
}

/// What `run` shows on stderr while it simulates: on a terminal, a bar of simulated seconds
/// per system; otherwise one line per system.
struct RunProgress {
    bar: Option<indicatif::ProgressBar>,
    system: Option<usize>,
}

impl RunProgress {
    fn new() -> RunProgress {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} simulated s")
                    .expect("valid template"),
            );
            bar
        });
        RunProgress { bar, system: None }
    }

    fn show(&mut self, p: &veltrix_sim::Progress<'_>) {
        let new_system = self.system != Some(p.index);
        self.system = Some(p.index);
        match &self.bar {
            Some(bar) => {
                if new_system {
                    bar.set_length(p.total_s.ceil() as u64);
                    bar.set_message(format!("[{}/{}] {}", p.index + 1, p.count, p.system));
                }
                bar.set_position(p.simulated_s as u64);
            }
            None if new_system => eprintln!("[{}/{}] {}", p.index + 1, p.count, p.system),
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
