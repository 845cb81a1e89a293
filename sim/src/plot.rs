//! SVG line charts, written by hand: panels stacked on one shared y-axis (linear or log), ticks
//! and labelled axes, dashed reference lines (deadlines), shaded x-ranges (fault windows,
//! bursts), point markers for sweeps, and the legend in its own column beside the data.
//!
//! No plotting dependency: what the reports need is a few hundred lines of SVG, and writing it
//! here keeps every chart byte-identical across runs and machines (no font metrics, no
//! floating-point layout from a library that may change).

use std::fmt::Write as _;

use crate::html::esc;

const W: f64 = 880.0;
/// Left of the plot area: y tick labels and the y-axis label.
const LEFT: f64 = 78.0;
/// Right of the plot area: the legend column.
const LEGEND: f64 = 200.0;
const PANEL_H: f64 = 220.0;
/// Above each panel (its title) and below it (x tick labels).
const PANEL_TOP: f64 = 26.0;
const PANEL_BOTTOM: f64 = 34.0;
const HEADER: f64 = 34.0;
const COLORS: [&str; 8] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"];
/// Shades for the bands, one per distinct label (light, so the lines stay readable over them).
const BAND_COLORS: [&str; 6] = ["#f4c7c3", "#c6dbef", "#c7e9c0", "#fdd0a2", "#dadaeb", "#d9d9d9"];

/// How the y-axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// From 0 to a round number above the largest value.
    Linear,
    /// Decades from below the smallest positive value to above the largest; zeros sit on the
    /// bottom edge. For values that span orders of magnitude (latencies of shed and served
    /// classes side by side).
    Log,
}

/// One panel: a title and named series of `(x, y)` points. Series with the same position in
/// every panel share a colour.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title.
    pub title: String,
    /// `(label, points)`.
    pub lines: Vec<(String, Vec<(f64, f64)>)>,
}

/// A horizontal reference line drawn dashed in every panel, in the colour of series `series`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Where.
    pub y: f64,
    /// What it marks (the legend says it).
    pub label: String,
    /// The series whose colour it takes.
    pub series: usize,
}

/// An x-range shaded in every panel.
#[derive(Debug, Clone)]
pub struct Band {
    /// Start.
    pub from: f64,
    /// End (equal to `from` for an instant: drawn as a thin band).
    pub to: f64,
    /// What it marks (the legend says it).
    pub label: String,
}

/// A figure: panels stacked on shared axes.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title over the figure.
    pub title: String,
    /// The x-axis's label, with its unit.
    pub x_label: String,
    /// The y-axis's label, with its unit.
    pub y_label: String,
    /// The y-axis's scale, shared by every panel.
    pub scale: Scale,
    /// The panels, top to bottom.
    pub panels: Vec<Panel>,
    /// Reference lines in every panel.
    pub rules: Vec<Rule>,
    /// Shaded ranges in every panel.
    pub bands: Vec<Band>,
    /// A marker on every point (few points, each its own run: a sweep).
    pub markers: bool,
}

impl Chart {
    /// The SVG document.
    pub fn svg(&self) -> String {
        let points = || self.panels.iter().flat_map(|p| p.lines.iter().flat_map(|(_, v)| v.iter().copied()));
        let xs = points().map(|(x, _)| x).chain(self.bands.iter().flat_map(|b| [b.from, b.to]));
        let (x_min, x_max) = range(xs);
        let x = Axis::linear(x_min.min(0.0), x_max);
        let ys = points().map(|(_, y)| y).chain(self.rules.iter().map(|r| r.y));
        let y = match self.scale {
            Scale::Linear => Axis::linear(0.0, range(ys).1),
            Scale::Log => Axis::log(ys),
        };
        let plot_w = W - LEFT - LEGEND;
        let panel_step = PANEL_TOP + PANEL_H + PANEL_BOTTOM;
        let height = HEADER + self.panels.len() as f64 * panel_step + 24.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            esc(&self.title)
        );
        for (i, panel) in self.panels.iter().enumerate() {
            let top = HEADER + i as f64 * panel_step + PANEL_TOP;
            let sx = |v: f64| LEFT + x.fraction(v) * plot_w;
            let sy = |v: f64| top + PANEL_H - y.fraction(v) * PANEL_H;
            let _ = writeln!(s, r#"<text x="{LEFT}" y="{}" font-size="13">{}</text>"#, top - 8.0, esc(&panel.title));
            for b in &self.bands {
                let (x0, x1) = (sx(b.from), sx(b.to).max(sx(b.from) + 2.0));
                let _ = writeln!(
                    s,
                    r#"<rect x="{x0:.1}" y="{top}" width="{:.1}" height="{PANEL_H}" fill="{}" fill-opacity="0.6"/>"#,
                    x1 - x0,
                    self.band_color(&b.label)
                );
            }
            for (v, label) in y.ticks() {
                let py = sy(v);
                let _ = writeln!(
                    s,
                    r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e0e0e0"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
                    LEFT + plot_w,
                    LEFT - 6.0,
                    py + 4.0
                );
            }
            for (v, label) in x.ticks() {
                let px = sx(v);
                let _ = writeln!(
                    s,
                    r##"<line x1="{px:.1}" y1="{}" x2="{px:.1}" y2="{}" stroke="#333"/><text x="{px:.1}" y="{}" text-anchor="middle">{label}</text>"##,
                    top + PANEL_H,
                    top + PANEL_H + 4.0,
                    top + PANEL_H + 16.0
                );
            }
            let _ = writeln!(
                s,
                r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#333"/>"##
            );
            for r in &self.rules {
                let py = sy(r.y);
                let _ = writeln!(
                    s,
                    r#"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="{}" stroke-dasharray="6 4"/>"#,
                    LEFT + plot_w,
                    color(r.series)
                );
            }
            for (j, (_, v)) in panel.lines.iter().enumerate() {
                let c = color(j);
                // A point the axis cannot show (not finite; not positive on a log scale) is a
                // gap: the line stops before it and starts again after it.
                let shown = |&(px, py): &(f64, f64)| px.is_finite() && py.is_finite() && y.shows(py);
                for run in v.split(|p| !shown(p)).filter(|run| !run.is_empty()) {
                    let path: Vec<String> =
                        run.iter().map(|&(px, py)| format!("{:.1},{:.1}", sx(px), sy(py))).collect();
                    let _ = writeln!(
                        s,
                        r#"<polyline fill="none" stroke="{c}" stroke-width="1.6" points="{}"/>"#,
                        path.join(" ")
                    );
                    if self.markers {
                        for &(px, py) in run {
                            let _ = writeln!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#, sx(px), sy(py));
                        }
                    }
                }
            }
            let y_mid = top + PANEL_H / 2.0;
            let _ = writeln!(
                s,
                r#"<text x="14" y="{y_mid:.1}" text-anchor="middle" transform="rotate(-90 14 {y_mid:.1})">{}</text>"#,
                esc(&self.y_label)
            );
            if i == 0 {
                self.legend(&mut s, LEFT + plot_w + 14.0, top);
            }
        }
        let bottom = HEADER + self.panels.len() as f64 * panel_step;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            bottom + 8.0,
            esc(&self.x_label)
        );
        s.push_str("</svg>\n");
        s
    }

    /// The legend column: one entry per series (from the first panel), then rules and bands.
    fn legend(&self, s: &mut String, left: f64, top: f64) {
        let mut row = 0.0;
        let mut entry = |s: &mut String, swatch: String, label: &str| {
            let y = top + 10.0 + row * 16.0;
            let _ = writeln!(s, "{}", swatch.replace("{Y}", &format!("{y:.1}")));
            let _ = writeln!(s, r#"<text x="{}" y="{:.1}">{}</text>"#, left + 28.0, y + 4.0, esc(label));
            row += 1.0;
        };
        let series = self.panels.first().map_or(&[][..], |p| &p.lines[..]);
        for (j, (label, _)) in series.iter().enumerate() {
            let swatch = format!(
                r#"<line x1="{left}" y1="{{Y}}" x2="{}" y2="{{Y}}" stroke="{}" stroke-width="2"/>"#,
                left + 22.0,
                color(j)
            );
            entry(s, swatch, label);
        }
        for r in &self.rules {
            let swatch = format!(
                r#"<line x1="{left}" y1="{{Y}}" x2="{}" y2="{{Y}}" stroke="{}" stroke-dasharray="6 4"/>"#,
                left + 22.0,
                color(r.series)
            );
            entry(s, swatch, &r.label);
        }
        for label in self.band_labels() {
            let swatch = format!(
                r#"<rect x="{left}" y="{{Y}}" width="22" height="8" transform="translate(0 -4)" fill="{}"/>"#,
                self.band_color(label)
            );
            entry(s, swatch, label);
        }
    }

    /// The bands' distinct labels, in order of first appearance.
    fn band_labels(&self) -> Vec<&str> {
        let mut labels: Vec<&str> = Vec::new();
        for b in &self.bands {
            if !labels.contains(&b.label.as_str()) {
                labels.push(&b.label);
            }
        }
        labels
    }

    /// The shade of the bands labelled `label`.
    fn band_color(&self, label: &str) -> &'static str {
        let i = self.band_labels().iter().position(|l| *l == label).unwrap_or(0);
        BAND_COLORS[i % BAND_COLORS.len()]
    }
}

fn color(series: usize) -> &'static str {
    COLORS[series % COLORS.len()]
}

/// The smallest and largest finite value (0, 1 without any).
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi { (0.0, 1.0) } else { (lo, hi) }
}

/// An axis: where a value falls (0 at the bottom or left, 1 at the top or right) and its ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Axis {
    Linear {
        min: f64,
        max: f64,
        step: f64,
    },
    /// Decades `10^lo ..= 10^hi`.
    Log {
        lo: i32,
        hi: i32,
    },
}

impl Axis {
    /// `[min, max]` widened to whole steps of 1, 2 or 5 × 10^k (about five of them).
    fn linear(min: f64, max: f64) -> Axis {
        let max = if max > min { max } else { min + 1.0 };
        let rough = (max - min) / 5.0;
        let magnitude = 10f64.powf(rough.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|s| *s >= rough).unwrap_or(rough);
        Axis::Linear { min: (min / step).floor() * step, max: (max / step).ceil() * step, step }
    }

    /// The decades around the positive values (1 to 10 if there are none).
    fn log(values: impl Iterator<Item = f64>) -> Axis {
        let positive: Vec<f64> = values.filter(|v| v.is_finite() && *v > 0.0).collect();
        if positive.is_empty() {
            return Axis::Log { lo: 0, hi: 1 };
        }
        let (lo, hi) = range(positive.into_iter());
        let hi_exp = hi.log10().ceil() as i32;
        let lo_exp = (lo.log10().floor() as i32).min(hi_exp - 1);
        Axis::Log { lo: lo_exp, hi: hi_exp }
    }

    /// Whether a value has a place on the axis (a log axis has none for zero or less).
    fn shows(self, v: f64) -> bool {
        match self {
            Axis::Linear { .. } => true,
            Axis::Log { .. } => v > 0.0,
        }
    }

    fn fraction(self, v: f64) -> f64 {
        match self {
            Axis::Linear { min, max, .. } => ((v - min) / (max - min)).clamp(0.0, 1.0),
            Axis::Log { lo, hi } => {
                if v <= 0.0 {
                    return 0.0;
                }
                ((v.log10() - f64::from(lo)) / f64::from(hi - lo)).clamp(0.0, 1.0)
            }
        }
    }

    fn ticks(self) -> Vec<(f64, String)> {
        match self {
            Axis::Linear { min, max, step } => {
                let n = ((max - min) / step).round() as i64;
                (0..=n).map(|i| min + i as f64 * step).map(|v| (v, number(v))).collect()
            }
            Axis::Log { lo, hi } => (lo..=hi).map(|e| 10f64.powi(e)).map(|v| (v, number(v))).collect(),
        }
    }
}

/// A tick label: no trailing zeros, thousands as `k`.
fn number(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        return format!("{}k", number(v / 1000.0));
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".to_string() } else { s.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(scale: Scale) -> Chart {
        Chart {
            title: "t".into(),
            x_label: "time (s)".into(),
            y_label: "p99 (ms)".into(),
            scale,
            panels: vec![
                Panel { title: "fifo".into(), lines: vec![("A".into(), vec![(0.0, 20.0), (10.0, 29_000.0)])] },
                Panel { title: "veltrix".into(), lines: vec![("A".into(), vec![(0.0, 20.0), (10.0, 76.0)])] },
            ],
            rules: vec![Rule { y: 500.0, label: "A deadline".into(), series: 0 }],
            bands: vec![Band { from: 3.0, to: 5.0, label: "partition".into() }],
            markers: false,
        }
    }

    #[test]
    fn axes_round_to_readable_ticks() {
        assert_eq!(Axis::linear(0.0, 29_000.0), Axis::Linear { min: 0.0, max: 30_000.0, step: 10_000.0 });
        assert_eq!(Axis::linear(0.0, 76.0), Axis::Linear { min: 0.0, max: 80.0, step: 20.0 });
        let log = Axis::log([20.0, 76.0, 29_000.0, 0.0].into_iter());
        assert_eq!(log, Axis::Log { lo: 1, hi: 5 });
        assert_eq!(log.ticks().iter().map(|t| t.1.as_str()).collect::<Vec<_>>(), ["10", "100", "1000", "10k", "100k"]);
        assert_eq!(log.fraction(0.0), 0.0, "a zero sits on the bottom edge");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(2500.0), "2500");
    }

    #[test]
    fn panels_share_one_y_axis_and_draw_rules_bands_and_a_legend() {
        let svg = chart(Scale::Log).svg();
        // Both panels put 20 ms at the same height above their bottom edge: one shared axis.
        let y_of_20 = |panel: usize| {
            let top = HEADER + panel as f64 * (PANEL_TOP + PANEL_H + PANEL_BOTTOM) + PANEL_TOP;
            top + PANEL_H - Axis::Log { lo: 1, hi: 5 }.fraction(20.0) * PANEL_H
        };
        for panel in 0..2 {
            assert!(svg.contains(&format!("{:.1},{:.1}", LEFT, y_of_20(panel))), "panel {panel}: {svg}");
        }
        assert!(svg.contains("stroke-dasharray"), "the deadline is drawn");
        assert!(svg.contains("fill=\"#f4c7c3\""), "the fault window is shaded");
        for label in ["A deadline", "partition", "time (s)", "p99 (ms)", "10k"] {
            assert!(svg.contains(label), "{label}");
        }
        assert_eq!(svg, chart(Scale::Log).svg(), "deterministic");
        let markers = Chart { markers: true, ..chart(Scale::Linear) }.svg();
        assert_eq!(markers.matches("<circle").count(), 4);
    }

    #[test]
    fn bands_of_different_kinds_get_different_shades() {
        let mut c = chart(Scale::Linear);
        c.bands.push(Band { from: 6.0, to: 6.0, label: "restart".into() });
        c.bands.push(Band { from: 8.0, to: 9.0, label: "partition".into() });
        let svg = c.svg();
        assert_ne!(c.band_color("partition"), c.band_color("restart"));
        // Two panels × two partitions + the legend; two panels × one restart + the legend.
        assert_eq!(svg.matches(&format!("fill=\"{}\"", c.band_color("partition"))).count(), 5);
        assert_eq!(svg.matches(&format!("fill=\"{}\"", c.band_color("restart"))).count(), 3);
    }

    #[test]
    fn gaps_and_zeros_break_the_line_and_an_empty_log_chart_still_draws() {
        let mut c = chart(Scale::Log);
        c.panels[0].lines[0].1 = vec![(0.0, 20.0), (1.0, 30.0), (2.0, f64::NAN), (3.0, 0.0), (4.0, 40.0), (5.0, 50.0)];
        c.panels.truncate(1);
        c.rules.clear();
        let svg = c.svg();
        assert_eq!(svg.matches("<polyline").count(), 2, "two runs around the gap: {svg}");
        assert!(!svg.contains("NaN"));
        // Nothing positive to show (a run where nothing completed): one decade, no lines, no hang.
        c.panels[0].lines[0].1 = vec![(0.0, f64::NAN), (1.0, 0.0)];
        assert_eq!(Axis::log([0.0, f64::NAN].into_iter()), Axis::Log { lo: 0, hi: 1 });
        let svg = c.svg();
        assert_eq!(svg.matches("<polyline").count(), 0);
        assert!(svg.ends_with("</svg>\n"));
    }
}
