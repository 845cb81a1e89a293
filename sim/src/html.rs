//! `report.html`: one self-contained page (no network, no script) with the comparison table,
//! the theory checks, the expectations and the plots inline, for a person to read in a browser.

use std::fmt::Write as _;

use crate::report::{self, Deterministic, Table};

/// The page for `d`, with `plots` (title, SVG document) inline.
pub(crate) fn page(d: &Deterministic, plots: &[(&str, &str)]) -> String {
    let mut s = String::new();
    let title = format!("{} — seed {}", d.scenario, d.stamp.seed);
    let _ = write!(
        s,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.total td {{ font-weight: bold; }}
.fail {{ color: #b00; font-weight: bold; }}
figure {{ margin: 1.5em 0; }}
</style></head><body>
<h1>{title}</h1>
<p>{description}</p>
<p>S̄ = {sbar} ms (mean service time), {duration} s of offered load, the first {warmup} s left out of the latency statistics.</p>
"#,
        title = esc(&title),
        description = esc(&d.description),
        sbar = d.mean_service_ms,
        duration = d.duration_s,
        warmup = d.warmup_s,
    );
    s.push_str("<h2>Where every event went</h2>\n");
    s.push_str(&table(&report::comparison_table(d)));
    for (title, svg) in plots {
        let _ = writeln!(s, "<figure>\n{}<figcaption>{}</figcaption>\n</figure>", svg, esc(title));
    }
    if !d.theory.is_empty() {
        s.push_str("<h2>Against queueing theory</h2>\n");
        s.push_str(&table(&report::theory_table(d)));
    }
    let convergence = report::convergence_table(d);
    if !convergence.rows.is_empty() {
        s.push_str("<h2>Convergence after each change</h2>\n");
        let _ = writeln!(s, "<p>{}.</p>", esc(&report::convergence_caption(d)));
        s.push_str(&table(&convergence));
    }
    let broken: Vec<&str> =
        d.systems.iter().flat_map(|s| s.identities.iter()).filter(|i| !i.holds).map(|i| i.identity.as_str()).collect();
    if broken.is_empty() {
        s.push_str("<p>Conservation identities: all hold.</p>\n");
    } else {
        let _ = writeln!(s, r#"<p class="fail">Conservation identities BROKEN: {}</p>"#, esc(&broken.join("; ")));
    }
    if !d.expectations.is_empty() {
        s.push_str("<h2>Expectations</h2>\n<ul>\n");
        for e in &d.expectations {
            let actual = e.actual.map_or("n/a".into(), |a| format!("{a}"));
            let verdict = if e.holds { "ok".to_string() } else { r#"<span class="fail">FAILED</span>"#.to_string() };
            let _ = writeln!(s, "<li><code>{}</code>: {verdict} (actual {actual})</li>", esc(&e.check));
        }
        s.push_str("</ul>\n");
    }
    let _ = writeln!(
        s,
        "<p><small>veltrix-sim {} ({}), PRNG {}: the same seed and scenario give the same page.</small></p>\n</body></html>",
        esc(&d.stamp.version),
        esc(&d.stamp.git_sha),
        esc(&d.stamp.prng)
    );
    s
}

/// A table as HTML: numbers right-aligned, totals bold, failed checks marked.
fn table(t: &Table) -> String {
    let mut s = String::from("<table>\n<tr>");
    for h in t.headers {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr>\n");
    for r in &t.rows {
        s.push_str(if r.total { r#"<tr class="total">"# } else { "<tr>" });
        for (cell, &numeric) in r.cells.iter().zip(t.numeric) {
            let class = match (numeric, r.failed && cell == "NO") {
                (_, true) => r#" class="fail""#,
                (true, false) => r#" class="n""#,
                (false, false) => "",
            };
            let _ = write!(s, "<td{class}>{}</td>", esc(cell));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    s
}

/// Escapes text for HTML and SVG (element content and quoted attribute values).
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
