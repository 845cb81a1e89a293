//! The simulator end to end: determinism, theory on parameters other than the shipped ones,
//! bad scenario files, and the command line (exit codes, replay).

use std::process::Command;

use veltrix_sim::scenario::Scenario;
use veltrix_sim::{deterministic_json, load, run_scenario};

fn run_det(name_or_src: &str, seed: u64) -> String {
    let (scenario, src) = match load(name_or_src) {
        Ok((s, src, _)) => (s, src),
        Err(_) => (Scenario::parse(name_or_src, "<test>").unwrap(), name_or_src.to_string()),
    };
    let report = run_scenario(&scenario, &src, seed, vec!["ignored".into()], |_| {}).unwrap();
    deterministic_json(&report.deterministic)
}

#[test]
fn progress_reports_each_system_and_its_simulated_seconds() {
    let (scenario, src, _) = load("S2").unwrap();
    let mut seen: Vec<(usize, f64, f64)> = Vec::new();
    run_scenario(&scenario, &src, 1, Vec::new(), |p| seen.push((p.index, p.simulated_s, p.total_s))).unwrap();
    for system in 0..3 {
        let mine: Vec<&(usize, f64, f64)> = seen.iter().filter(|s| s.0 == system).collect();
        assert!(mine.len() > 50, "about once per simulated second: {}", mine.len());
        assert!(mine.windows(2).all(|w| w[0].1 <= w[1].1), "simulated time only grows");
        let (last, total) = (mine.last().unwrap().1, mine[0].2);
        assert!(total >= 60.0 && last >= 60.0 && last <= total, "{last} of {total}");
    }
}

#[test]
fn the_default_scenario_is_byte_identical_for_one_seed() {
    let a = run_det("S2", 42);
    let b = run_det("S2", 42);
    assert!(a == b, "two runs with seed 42 differ");
    assert_ne!(a, run_det("S2", 43), "another seed must give another report");
}

/// Theory must hold for parameters other than the shipped ones: a lighter M/M/1 and a
/// two-class strict-priority system at ρ = 0.6, one worker, exponential service of 20 ms.
#[test]
fn theory_holds_for_other_parameters() {
    let src = r#"
schema = 1
name = "theory-other"
duration_s = 400
warmup_s = 20
service = { kind = "exponential", mean_ms = 20 }
[[class]]
name = "HI"
arrivals = { kind = "poisson", rate_per_s = 10 }
[[class]]
name = "LO"
arrivals = { kind = "poisson", rate_per_s = 20 }
[[system]]
kind = "naive-fifo"
name = "fifo"
[[system]]
kind = "veltrix"
name = "strict"
scheduler = "strict"
capacity = 5000
deadlines = false
"#;
    let scenario = Scenario::parse(src, "<theory-other>").unwrap();
    let report = run_scenario(&scenario, src, 9, Vec::new(), |_| {}).unwrap();
    let checks = &report.deterministic.theory;
    // M/M/1 mean and p99, Cobham per class, Little per class per system.
    assert_eq!(checks.len(), 2 + 2 + 2 * 2, "{checks:#?}");
    for c in checks {
        assert!(c.holds, "{c:?}");
        assert!(c.measured.half_width < 0.25 * c.theory.max(0.2), "interval too wide to mean anything: {c:?}");
    }
    // ρ = 0.6: FIFO mean sojourn S̄ / (1 − ρ) = 2.5 S̄; Cobham 1 + 0.6/0.8 = 1.75 and 1 + 0.6/(0.8·0.4) = 2.875.
    let theory: Vec<f64> = checks
        .iter()
        .filter(|c| c.quantity.starts_with("mean"))
        .map(|c| (c.theory * 1000.0).round() / 1000.0)
        .collect();
    assert_eq!(theory, [2.5, 1.75, 2.875]);
}

fn bad(src: &str) -> veltrix_sim::scenario::ScenarioError {
    Scenario::parse(src, "bad.toml").unwrap_err()
}

const GOOD: &str = r#"schema = 1
name = "t"
duration_s = 5
service = { kind = "exponential", mean_ms = 10 }
[[class]]
name = "A"
arrivals = { kind = "poisson", rate_per_s = 10 }
[[system]]
kind = "veltrix"
name = "v"
[expect]
checks = ["v.lost == 0"]
"#;

#[test]
fn broken_scenarios_give_their_specific_error() {
    assert!(Scenario::parse(GOOD, "good.toml").is_ok());
    let cases: [(&str, &str, &str, usize); 8] = [
        ("schema = 1", "schema = 3", "schema", 1),
        ("duration_s = 5", "duration_s = 0", "duration_s", 3),
        ("name = \"v\"", "name = \"v\"\nturbo = true", "turbo", 11),
        ("kind = \"veltrix\"", "kind = \"kafka\"", "system[0].kind", 9),
        ("v.lost == 0", "w.lost == 0", "expect.checks[0]", 12),
        ("v.lost == 0", "v.lost = 0", "expect.checks[0]", 12),
        ("kind = \"poisson\"", "kind = \"bursty\"", "class.arrivals", 7),
        ("[[class]]\nname = \"A\"", "[[class]]\nname = \"A\"\ndeadline_ms = -5", "class.deadline_ms", 7),
    ];
    for (from, to, field, line) in cases {
        let e = bad(&GOOD.replace(from, to));
        assert_eq!((e.field.as_str(), e.line), (field, line), "{to}: {e}");
        assert_eq!(e.file, "bad.toml");
        assert!(e.column >= 1);
    }
    let e = bad("not toml at all [");
    assert_eq!(e.line, 1, "{e}");
    let e = bad(&GOOD.replace("name = \"A\"\narrivals", "name = \"\"\narrivals"));
    assert!(e.message.contains("empty or repeated"), "{e}");
}

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_veltrix-sim"))
}

#[test]
fn the_command_line_exits_2_on_a_bad_file_and_1_on_a_failed_expectation() {
    let dir = std::env::temp_dir().join(format!("veltrix-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_file = dir.join("bad.toml");
    std::fs::write(&bad_file, GOOD.replace("duration_s = 5", "duration_s = \"five\"")).unwrap();
    let out = cli().args(["check", bad_file.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3:") && err.contains("duration_s"), "{err}");

    let failing = dir.join("failing.toml");
    std::fs::write(&failing, GOOD.replace("v.lost == 0", "v.handled < 0")).unwrap();
    let out = cli()
        .args(["run", failing.to_str().unwrap(), "--seed", "5", "--out", dir.join("o").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expectation failed: v.handled < 0"), "{err}");
    assert!(
        err.contains(&format!("reproduce: cargo run --release -p veltrix-sim -- run {} --seed 5", failing.display())),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("seed: 5 (command line)"), "the seed comes first: {stdout}");
}

#[test]
fn replay_reproduces_a_report_from_its_stamp() {
    let dir = std::env::temp_dir().join(format!("veltrix-sim-replay-{}", std::process::id()));
    let ok = dir.join("ok.toml");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&ok, GOOD).unwrap();
    let out = cli()
        .args(["run", ok.to_str().unwrap(), "--seed", "8", "--out", dir.join("r").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = dir.join("r/report.json");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for f in ["report.json", "deterministic.json", "report.md", "latency.svg", "depth.svg", "report.html"] {
        assert!(dir.join("r").join(f).exists(), "{f} missing");
        assert!(stdout.contains(&format!("wrote {}", dir.join("r").join(f).display())), "the CLI names {f}: {stdout}");
    }
    // The page and the Markdown report show the same table: every cell of every row.
    let md = std::fs::read_to_string(dir.join("r/report.md")).unwrap();
    let html = std::fs::read_to_string(dir.join("r/report.html")).unwrap();
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| system")).collect();
    assert!(rows.len() >= 2, "{md}");
    for row in rows {
        let cells: Vec<String> = row.trim_matches('|').split(" | ").map(|c| format!(">{}</td>", c.trim())).collect();
        for cell in &cells {
            assert!(html.contains(cell.as_str()), "{cell} of `{row}` missing from report.html");
        }
    }
    let out = cli().args(["replay", report.to_str().unwrap()]).output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("identical"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Tamper with a number: replay must notice.
    let text = std::fs::read_to_string(&report).unwrap().replacen("\"handled\": ", "\"handled\": 1", 1);
    std::fs::write(&report, text).unwrap();
    let out = cli().args(["replay", report.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DIFFERENT"));
}

#[test]
fn list_names_every_shipped_scenario() {
    let out = cli().arg("list").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["S1 ", "S2 ", "S3 ", "S4 ", "S5 ", "S6 ", "A1 ", "A2 ", "A3 ", "A4 ", "A5 "] {
        assert!(text.contains(name), "{name} missing from {text}");
    }
}

#[test]
fn sweep_runs_each_value_and_plots_latency_and_goodput() {
    let dir = std::env::temp_dir().join(format!("veltrix-sim-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("s.toml");
    std::fs::write(&file, GOOD).unwrap();
    let out = cli()
        .args([
            "sweep",
            file.to_str().unwrap(),
            "--param",
            "class.0.arrivals.rate_per_s=50..150:50",
            "--seed",
            "2",
            "--out",
            dir.join("o").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    for v in ["| 50 |", "| 100 |", "| 150 |"] {
        assert!(table.contains(v), "{v} missing from {table}");
    }
    let latency = std::fs::read_to_string(dir.join("o/sweep-latency.svg")).unwrap();
    assert!(latency.contains("p99 latency (ms)") && latency.contains("<polyline"));
    assert_eq!(latency.matches("<circle").count(), 3, "a marker per run (one system, one class)");
    let goodput = std::fs::read_to_string(dir.join("o/sweep-goodput.svg")).unwrap();
    assert!(goodput.contains("goodput (share of offered)") && goodput.contains("<polyline"));
    assert!(table.contains("wrote ") && table.contains("sweep-latency.svg"), "the CLI names what it wrote");
    let bad = cli().args(["sweep", file.to_str().unwrap(), "--param", "class.9.nope=1..2:1"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "a path that does not exist is a bad scenario");
}

/// A hard crash loses what was inside the server, and only that: every identity still holds,
/// Veltrix's loss is exactly its `crashed` count, and it is back to full goodput at once.
#[test]
fn a_hard_crash_loses_only_what_was_inside_and_veltrix_recovers() {
    let src = r#"
schema = 1
name = "crash"
duration_s = 20
service = { kind = "exponential", mean_ms = 10 }
[client]
timeout_ms = 200
max_attempts = 3
[faults]
crash = [{ at_s = 5, down_s = 2 }]
[[class]]
name = "A"
deadline_ms = 500
arrivals = { kind = "poisson", rate_per_s = 30 }
[[class]]
name = "B"
arrivals = { kind = "poisson", rate_per_s = 30 }
[[system]]
kind = "naive-fifo"
name = "naive"
[[system]]
kind = "veltrix"
name = "veltrix"
[expect]
checks = ["veltrix.identities_hold == 1", "naive.identities_hold == 1", "veltrix.recovery_s < 3"]
"#;
    let scenario = Scenario::parse(src, "<crash>").unwrap();
    let report = run_scenario(&scenario, src, 1, Vec::new(), |_| {}).unwrap();
    let d = &report.deterministic;
    assert!(d.expectations.iter().all(|e| e.holds), "{:#?}", d.expectations);
    let v = &d.systems[1].total;
    assert!(v.crashed > 0, "something was inside when it crashed");
    assert_eq!(v.lost, v.crashed, "Veltrix loses nothing but what the crash took");
    assert!(v.lost_on_wire > 0, "attempts sent while the server was down never arrived");
}

#[test]
fn json_output_is_the_report_alone_on_stdout() {
    let dir = std::env::temp_dir().join(format!("veltrix-sim-json-{}", std::process::id()));
    let file = dir.join("ok.toml");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&file, GOOD).unwrap();
    let out = cli()
        .args(["run", file.to_str().unwrap(), "--seed", "4", "--json", "--out", dir.join("o").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(report["deterministic"]["stamp"]["seed"], 4);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("seed: 4 (command line)") && err.contains("wrote "), "{err}");
}
