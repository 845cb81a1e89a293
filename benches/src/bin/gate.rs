//! The benchmark regression gate; see `benches/gate.toml`. Run by `ci/bench-gate`.
//!
//! 1. Ratios: runs `cargo bench` for the groups named in the file (short passes), reads
//!    criterion's estimates, and checks `peer / subject ≥ min` per check; a check must hold in
//!    a majority of passes.
//! 2. Instructions: runs the `hotpath` binary under callgrind at two sizes; the difference over
//!    the extra events gives instructions per event, compared with `max_per_event`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Gate {
    pass: Pass,
    ratio: Vec<Ratio>,
    instructions: Option<Instructions>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pass {
    warm_up_s: f64,
    measurement_s: f64,
    passes: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ratio {
    group: String,
    subject: String,
    peer: String,
    min: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Instructions {
    max_per_event: f64,
}

fn main() -> ExitCode {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let text = match std::fs::read_to_string(root.join("benches/gate.toml")) {
        Ok(t) => t,
        Err(e) => return fail(&format!("benches/gate.toml: {e}")),
    };
    let gate: Gate = match toml::from_str(&text) {
        Ok(g) => g,
        Err(e) => return fail(&format!("benches/gate.toml: {e}")),
    };
    let mut failed = Vec::new();
    if std::env::var_os("VELTRIX_GATE_SKIP_RATIOS").is_none() {
        failed.extend(ratios(&root, &gate));
    }
    if let Some(limit) = &gate.instructions {
        match instructions_per_event(&root) {
            Ok(per_event) => {
                println!("instructions: {per_event:.1} per event (max {})", limit.max_per_event);
                if per_event > limit.max_per_event {
                    failed
                        .push(format!("hot path: {per_event:.1} instructions per event > max {}", limit.max_per_event));
                }
            }
            Err(e) => failed.push(format!("instruction count: {e}")),
        }
    }
    if failed.is_empty() {
        println!("bench gate: all checks hold");
        return ExitCode::SUCCESS;
    }
    for f in &failed {
        eprintln!("bench gate FAILED: {f}");
    }
    ExitCode::FAILURE
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

/// Runs the passes; returns the checks that failed in a majority of them.
fn ratios(root: &Path, gate: &Gate) -> Vec<String> {
    let groups: Vec<&str> = {
        let mut g: Vec<&str> = gate.ratio.iter().map(|r| r.group.as_str()).collect();
        g.sort_unstable();
        g.dedup();
        g
    };
    let filter = format!("^({})/", groups.iter().map(|g| regex_escape(g)).collect::<Vec<_>>().join("|"));
    let mut verdicts: BTreeMap<usize, Vec<(bool, f64)>> = BTreeMap::new();
    let needed = gate.pass.passes / 2 + 1;
    for pass in 1..=gate.pass.passes {
        let status = Command::new("cargo")
            .current_dir(root)
            .args(["bench", "--locked", "-p", "veltrix-benches", "--bench", "channels", "--"])
            .args([
                "--warm-up-time",
                &gate.pass.warm_up_s.to_string(),
                "--measurement-time",
                &gate.pass.measurement_s.to_string(),
            ])
            .arg(&filter)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            return vec![format!("pass {pass}: cargo bench failed")];
        }
        let medians = match veltrix_benches::estimates::medians(&root.join("target/criterion")) {
            Ok(m) => m,
            Err(e) => return vec![e],
        };
        for (i, r) in gate.ratio.iter().enumerate() {
            let get = |f: &str| medians.get(&(r.group.clone(), f.to_string())).copied();
            let ratio = match (get(&r.peer), get(&r.subject)) {
                (Some(p), Some(s)) if s > 0.0 => p / s,
                _ => return vec![format!("{}: no estimate for {} or {}", r.group, r.peer, r.subject)],
            };
            println!("pass {pass}: {}: {} / {} = {ratio:.2} (min {})", r.group, r.peer, r.subject, r.min);
            verdicts.entry(i).or_default().push((ratio >= r.min, ratio));
        }
        // Stop once every check has a majority either way.
        let decided = verdicts.values().all(|v| {
            let ok = v.iter().filter(|(b, _)| *b).count() as u32;
            ok >= needed || (v.len() as u32 - ok) >= needed
        });
        if decided {
            break;
        }
    }
    gate.ratio
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let v = &verdicts[&i];
            let ok = v.iter().filter(|(b, _)| *b).count() as u32;
            (ok < needed).then(|| {
                let seen: Vec<String> = v.iter().map(|(_, x)| format!("{x:.2}")).collect();
                format!(
                    "{}: {} / {} ratio {} below the threshold {} in a majority of passes",
                    r.group,
                    r.peer,
                    r.subject,
                    seen.join(", "),
                    r.min
                )
            })
        })
        .collect()
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c.to_string() } else { format!("\\{c}") })
        .collect()
}

/// Instructions per event of the hot path, from two callgrind runs.
fn instructions_per_event(root: &Path) -> Result<f64, String> {
    let status = Command::new("cargo")
        .current_dir(root)
        .args(["build", "--locked", "--release", "-p", "veltrix-benches", "--bin", "hotpath"])
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err("cargo build of hotpath failed".into());
    }
    let bin = root.join("target/release/hotpath");
    let count = |rounds: u64| -> Result<f64, String> {
        let out = std::env::temp_dir().join(format!("veltrix-callgrind-{}-{rounds}", std::process::id()));
        let o = Command::new("valgrind")
            .args(["--tool=callgrind", &format!("--callgrind-out-file={}", out.display())])
            .arg(&bin)
            .arg(rounds.to_string())
            .output()
            .map_err(|e| format!("valgrind: {e} (apt-get install -y valgrind)"))?;
        if !o.status.success() {
            return Err(format!("valgrind failed: {}", String::from_utf8_lossy(&o.stderr)));
        }
        let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        let _ = std::fs::remove_file(&out);
        text.lines()
            .find_map(|l| l.strip_prefix("summary: ").or_else(|| l.strip_prefix("totals: ")))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .ok_or_else(|| "no summary line in callgrind output".to_string())
    };
    let (small, large) = (5_000u64, 15_000u64);
    let (a, b) = (count(small)?, count(large)?);
    Ok((b - a) / (4.0 * (large - small) as f64))
}
