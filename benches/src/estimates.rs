//! Reading criterion's output: `target/criterion/<group>/<function>/new/estimates.json`.

use std::collections::BTreeMap;
use std::path::Path;

/// Median time per iteration (ns) of every `group/function` found under `criterion_dir`.
///
/// # Errors
///
/// A message naming the file that could not be read or parsed.
pub fn medians(criterion_dir: &Path) -> Result<BTreeMap<(String, String), f64>, String> {
    let mut out = BTreeMap::new();
    let groups = std::fs::read_dir(criterion_dir)
        .map_err(|e| format!("{}: {e} (run the benches first)", criterion_dir.display()))?;
    for group in groups.flatten() {
        let Ok(functions) = std::fs::read_dir(group.path()) else { continue };
        for function in functions.flatten() {
            let file = function.path().join("new/estimates.json");
            if !file.exists() {
                continue;
            }
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            let median = v["median"]["point_estimate"]
                .as_f64()
                .ok_or_else(|| format!("{}: no median.point_estimate", file.display()))?;
            // Criterion stores the benchmark's own name (slashes and all) in benchmark.json.
            let meta = std::fs::read_to_string(function.path().join("new/benchmark.json")).unwrap_or_default();
            let meta: serde_json::Value = serde_json::from_str(&meta).unwrap_or_default();
            let group_name = meta["group_id"]
                .as_str()
                .map_or_else(|| group.file_name().to_string_lossy().into_owned(), str::to_string);
            let function_name = meta["function_id"]
                .as_str()
                .map_or_else(|| function.file_name().to_string_lossy().into_owned(), str::to_string);
            out.insert((group_name, function_name), median);
        }
    }
    Ok(out)
}
