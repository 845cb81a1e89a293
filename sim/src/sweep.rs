//! `sweep`: one scenario run for each value of one parameter, then latency and goodput against it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::plot::{Chart, Panel, Scale};
use crate::report::Deterministic;
use crate::scenario::Scenario;

/// Parses `KEY=A..B:STEP` into the key and the values `A, A+STEP, …, ≤ B`.
///
/// # Errors
///
/// A message saying what is malformed.
pub fn parse_param(param: &str) -> Result<(String, Vec<f64>), String> {
    let (key, range) = param.split_once('=').ok_or("expected KEY=A..B:STEP")?;
    let (span, step) = range.split_once(':').ok_or("expected A..B:STEP after =")?;
    let (a, b) = span.split_once("..").ok_or("expected A..B before :")?;
    let num = |s: &str| s.trim().parse::<f64>().map_err(|_| format!("`{s}` is not a number"));
    let (a, b, step) = (num(a)?, num(b)?, num(step)?);
    if step.is_nan() || step <= 0.0 || b < a || key.trim().is_empty() {
        return Err("need a key, A ≤ B and STEP > 0".into());
    }
    let n = ((b - a) / step + 1e-9).floor() as usize + 1;
    if n > 1000 {
        return Err(format!("{n} values: at most 1000"));
    }
    Ok((key.trim().to_string(), (0..n).map(|i| a + step * i as f64).collect()))
}

/// The scenario source with `key` (a dotted path; numbers index arrays) set to `value`.
///
/// # Errors
///
/// A message if the path does not exist.
pub fn set(source: &str, key: &str, value: f64) -> Result<String, String> {
    let mut doc: toml::Value = source.parse::<toml::Table>().map(toml::Value::Table).map_err(|e| e.to_string())?;
    let mut at = &mut doc;
    for part in key.split('.') {
        at = match at {
            toml::Value::Table(t) => t.get_mut(part).ok_or_else(|| format!("no `{part}` in `{key}`"))?,
            toml::Value::Array(a) => {
                let i: usize = part.parse().map_err(|_| format!("`{part}` in `{key}` should index an array"))?;
                a.get_mut(i).ok_or_else(|| format!("index {i} out of range in `{key}`"))?
            }
            _ => return Err(format!("`{key}` goes through a value that is not a table or array")),
        };
    }
    *at = if value.fract() == 0.0 && matches!(at, toml::Value::Integer(_)) {
        toml::Value::Integer(value as i64)
    } else {
        toml::Value::Float(value)
    };
    toml::to_string(&doc).map_err(|e| e.to_string())
}

/// Runs the sweep; `tick` hears each value as it starts.
///
/// # Errors
///
/// A message for a bad key, an invalid resulting scenario, or a failed run.
pub fn run(
    source: &str,
    key: &str,
    values: &[f64],
    seed: u64,
    mut tick: impl FnMut(f64),
) -> Result<Vec<(f64, Deterministic)>, String> {
    values
        .iter()
        .map(|&v| {
            tick(v);
            let src = set(source, key, v)?;
            let scenario = Scenario::parse(&src, &format!("<{key} = {v}>")).map_err(|e| e.to_string())?;
            let report = crate::run_scenario(&scenario, &src, seed, Vec::new(), |_| {})?;
            Ok((v, report.deterministic))
        })
        .collect()
}

/// Writes `sweep.json`, `sweep-latency.svg` and `sweep-goodput.svg`; returns the Markdown table
/// and the paths written.
///
/// # Errors
///
/// The I/O error.
pub fn write(dir: &Path, key: &str, points: &[(f64, Deterministic)]) -> std::io::Result<(String, Vec<PathBuf>)> {
    std::fs::create_dir_all(dir)?;
    let json: Vec<_> = points.iter().map(|(v, d)| serde_json::json!({ "value": v, "report": d })).collect();
    std::fs::write(dir.join("sweep.json"), serde_json::to_string_pretty(&json).expect("json"))?;
    let mut table = format!("| {key} | system | class | goodput | p99 ms |\n|---:|---|---|---:|---:|\n");
    let mut lat_panels: Vec<Panel> = Vec::new();
    let mut good_panels: Vec<Panel> = Vec::new();
    if let Some((_, first)) = points.first() {
        for (si, sys) in first.systems.iter().enumerate() {
            let mut lat = Panel { title: sys.name.clone(), lines: Vec::new() };
            let mut good = Panel { title: sys.name.clone(), lines: Vec::new() };
            for (ci, class) in sys.classes.iter().enumerate() {
                let pick = |f: &dyn Fn(&crate::report::ClassReport) -> f64| {
                    points.iter().map(|(v, d)| (*v, f(&d.systems[si].classes[ci]))).collect()
                };
                lat.lines.push((class.class.clone(), pick(&|c| c.latency_ms.p99)));
                good.lines.push((class.class.clone(), pick(&|c| c.goodput_ratio)));
            }
            lat_panels.push(lat);
            good_panels.push(good);
        }
    }
    for (v, d) in points {
        for s in &d.systems {
            for c in &s.classes {
                let _ = writeln!(
                    table,
                    "| {v} | {} | {} | {:.1}% | {:.1} |",
                    s.name,
                    c.class,
                    100.0 * c.goodput_ratio,
                    c.latency_ms.p99
                );
            }
        }
    }
    let chart = |title: String, y_label: &str, scale, panels| Chart {
        title,
        x_label: key.to_string(),
        y_label: y_label.to_string(),
        scale,
        panels,
        rules: Vec::new(),
        bands: Vec::new(),
        markers: true,
    };
    let latency = chart(format!("p99 end-to-end latency against {key}"), "p99 latency (ms)", Scale::Log, lat_panels);
    let goodput = chart(format!("goodput against {key}"), "goodput (share of offered)", Scale::Linear, good_panels);
    let mut written = vec![dir.join("sweep.json")];
    for (name, chart) in [("sweep-latency.svg", latency), ("sweep-goodput.svg", goodput)] {
        std::fs::write(dir.join(name), chart.svg())?;
        written.push(dir.join(name));
    }
    Ok((table, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_ranges_and_paths() {
        assert_eq!(parse_param("a.b=1..2:0.5").unwrap(), ("a.b".to_string(), vec![1.0, 1.5, 2.0]));
        assert!(parse_param("a=2..1:1").is_err());
        assert!(parse_param("a=1..2").is_err());
        let src = "x = 1\n[[c]]\ny = 2.0\n";
        assert!(set(src, "c.0.y", 3.5).unwrap().contains("y = 3.5"));
        assert!(set(src, "c.1.y", 3.5).is_err());
        assert!(set(src, "nope", 1.0).is_err());
    }
}
