//! Minimal SVG line charts (no plotting dependency): one panel per system, one line per class.

use std::fmt::Write as _;

const W: f64 = 720.0;
const H: f64 = 240.0;
const PAD: f64 = 48.0;
const COLORS: [&str; 8] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"];

/// One panel: a title and named series of `(x, y)` points.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title.
    pub title: String,
    /// `(label, points)`.
    pub lines: Vec<(String, Vec<(f64, f64)>)>,
}

/// Renders panels stacked vertically, with shared axis labels.
pub fn svg(title: &str, x_label: &str, y_label: &str, panels: &[Panel]) -> String {
    let total_h = 40.0 + panels.len() as f64 * (H + 30.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{total_h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="20" font-size="14" text-anchor="middle">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    for (i, p) in panels.iter().enumerate() {
        let top = 40.0 + i as f64 * (H + 30.0);
        let pts = p.lines.iter().flat_map(|(_, v)| v.iter());
        let (mut x_max, mut y_max) = (1e-9f64, 1e-9f64);
        let mut x_min = f64::MAX;
        for &(x, y) in pts {
            x_max = x_max.max(x);
            x_min = x_min.min(x);
            y_max = y_max.max(y);
        }
        if x_min == f64::MAX || x_min >= x_max {
            x_min = 0.0;
        }
        let sx = |x: f64| PAD + (x - x_min) / (x_max - x_min).max(1e-9) * (W - 2.0 * PAD);
        let sy = |y: f64| top + H - 20.0 - y / y_max * (H - 40.0);
        let _ = writeln!(s, r#"<text x="{PAD}" y="{}" font-size="12">{}</text>"#, top + 10.0, esc(&p.title));
        let _ = writeln!(s, r##"<line x1="{PAD}" y1="{}" x2="{}" y2="{}" stroke="#333"/>"##, sy(0.0), W - PAD, sy(0.0));
        let _ = writeln!(s, r##"<line x1="{PAD}" y1="{}" x2="{PAD}" y2="{}" stroke="#333"/>"##, sy(0.0), sy(y_max));
        let _ = writeln!(
            s,
            r#"<text x="4" y="{}">{}</text><text x="4" y="{}">0</text>"#,
            sy(y_max) + 4.0,
            fmt_num(y_max),
            sy(0.0)
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{} = {}</text>"#,
            W - PAD,
            sy(0.0) + 14.0,
            esc(x_label),
            fmt_num(x_max)
        );
        // The unit under the axis maximum, clear of the panel title.
        let _ = writeln!(s, r#"<text x="4" y="{}">{}</text>"#, sy(y_max) + 16.0, esc(y_label));
        for (j, (label, v)) in p.lines.iter().enumerate() {
            let color = COLORS[j % COLORS.len()];
            let path: Vec<String> = v.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                path.join(" ")
            );
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" fill="{color}">{}</text>"#,
                W - PAD - 140.0,
                top + 24.0 + 13.0 * j as f64,
                esc(label)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_num(x: f64) -> String {
    if x >= 100.0 { format!("{x:.0}") } else { format!("{x:.2}") }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
