//! `report.html`: one self-contained page (no network, no script) with the comparison table,
//! the theory checks, the expectations and the plots inline, for a person to read in a browser.

use std::fmt::Write as _;

use crate::report::Deterministic;

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
    s.push_str("<h2>Where every event went</h2>\n<table>\n<tr><th>system</th><th>class</th><th>offered</th><th>handled</th><th>goodput</th><th>rejected</th><th>dead-lettered</th><th>lost</th><th>p50 ms</th><th>p99 ms</th><th>max ms</th><th>p99 / S̄</th></tr>\n");
    for sys in &d.systems {
        for (c, total) in sys.classes.iter().map(|c| (c, false)).chain(std::iter::once((&sys.total, true))) {
            let _ = writeln!(
                s,
                r#"<tr{}><td>{}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{:.1}%</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{:.1}</td><td class="n">{:.1}</td><td class="n">{:.1}</td><td class="n">{:.1}</td></tr>"#,
                if total { r#" class="total""# } else { "" },
                esc(&sys.name),
                esc(&c.class),
                c.offered_fresh + c.offered_retry,
                c.handled,
                100.0 * c.goodput_ratio,
                c.rejected.values().sum::<u64>(),
                c.dead_lettered.values().sum::<u64>(),
                c.lost,
                c.latency_ms.p50,
                c.latency_ms.p99,
                c.latency_ms.max,
                c.latency_ms.p99 / d.mean_service_ms,
            );
        }
    }
    s.push_str("</table>\n");
    for (title, svg) in plots {
        let _ = writeln!(s, "<figure>\n{}<figcaption>{}</figcaption>\n</figure>", svg, esc(title));
    }
    if !d.theory.is_empty() {
        s.push_str("<h2>Against queueing theory</h2>\n<table>\n<tr><th>system</th><th>class</th><th>quantity</th><th>theory</th><th>measured (95% CI)</th><th>holds</th></tr>\n");
        for t in &d.theory {
            let _ = writeln!(
                s,
                r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="n">{:.2}</td><td class="n">{:.2} ± {:.2}</td><td{}>{}</td></tr>"#,
                esc(&t.system),
                esc(&t.class),
                esc(&t.quantity),
                t.theory,
                t.measured.mean,
                t.measured.half_width,
                if t.holds { "" } else { r#" class="fail""# },
                if t.holds { "yes" } else { "NO" }
            );
        }
        s.push_str("</table>\n");
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

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
