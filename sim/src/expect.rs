//! `[expect]` lines: `SYSTEM[.CLASS].METRIC OP NUMBER`, e.g. `veltrix.CRITICAL.latency_ms_p99 < 10`
//! or `veltrix.lost == 0`, or a comparison with another system's metric, optionally scaled:
//! `adaptive.CRITICAL.latency_ms_p99 <= 1.05 * static.CRITICAL.latency_ms_p99`.

use std::fmt;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

/// A metric of a system, or of one of its classes: `SYSTEM[.CLASS].METRIC`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRef {
    /// System name.
    pub system: String,
    /// Class name, or `None` for a system-wide metric.
    pub class: Option<String>,
    /// Metric name.
    pub metric: String,
}

impl MetricRef {
    fn parse(text: &str) -> Result<MetricRef, String> {
        let parts: Vec<&str> = text.split('.').collect();
        let (system, class, metric) = match parts.as_slice() {
            [s, m] => (s, None, m),
            [s, c, m] => (s, Some(c.to_string()), m),
            _ => return Err(format!("`{text}` is not SYSTEM.METRIC or SYSTEM.CLASS.METRIC")),
        };
        if system.is_empty() || metric.is_empty() || class.as_ref().is_some_and(String::is_empty) {
            return Err(format!("`{text}` has an empty part"));
        }
        Ok(MetricRef { system: system.to_string(), class, metric: metric.to_string() })
    }

    /// Whether the metric exists where the reference puts it.
    ///
    /// # Errors
    ///
    /// What is wrong, with the closest metric if one is close.
    pub fn check_metric(&self) -> Result<(), String> {
        let m = self.metric.as_str();
        let system_wide = self.class.is_none();
        if METRICS.contains(&m) || (system_wide && SYSTEM_METRICS.contains(&m)) {
            return Ok(());
        }
        if SYSTEM_METRICS.contains(&m) {
            return Err(format!("`{m}` is a metric of the whole system: write `{}.{m}`", self.system));
        }
        let known = METRICS.iter().chain(if system_wide { &SYSTEM_METRICS[..] } else { &[] }).copied();
        Err(format!("no metric `{m}`{}", crate::suggest::hint(m, known)))
    }
}

impl fmt::Display for MetricRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.class {
            Some(c) => write!(f, "{}.{}.{}", self.system, c, self.metric),
            None => write!(f, "{}.{}", self.system, self.metric),
        }
    }
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The metric judged.
    pub lhs: MetricRef,
    /// Comparison.
    pub op: Op,
    /// The number on the right, or the factor of `of`.
    pub value: f64,
    /// Another metric the right-hand side scales, if any.
    pub of: Option<MetricRef>,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.lhs, self.op.as_str())?;
        match &self.of {
            Some(of) if self.value == 1.0 => write!(f, "{of}"),
            Some(of) => write!(f, "{} * {of}", self.value),
            None => write!(f, "{}", self.value),
        }
    }
}

/// What an `[expect]` line can name, for one class (`SYSTEM.CLASS.METRIC`) or for a system
/// over all its classes (`SYSTEM.METRIC`).
pub const METRICS: [&str; 28] = [
    "offered",
    "offered_fresh",
    "offered_retry",
    "accepted",
    "rejected",
    "handled",
    "goodput",
    "goodput_ratio",
    "tail_goodput_ratio",
    "dead_lettered",
    "lost",
    "timeouts",
    "client_failed",
    "peak_in_system",
    "peak_queued_events",
    "peak_queued_bytes",
    "latency_ms_mean",
    "latency_ms_p50",
    "latency_ms_p90",
    "latency_ms_p99",
    "latency_ms_p999",
    "latency_ms_max",
    "wait_ms_mean",
    "wait_ms_p50",
    "wait_ms_p90",
    "wait_ms_p99",
    "wait_ms_p999",
    "wait_ms_max",
];

/// What only a system has (`SYSTEM.METRIC`).
pub const SYSTEM_METRICS: [&str; 4] = ["recovery_s", "identities_hold", "convergence_sbar", "convergence_cv"];

impl Check {
    /// Whether every metric the line names exists where it puts it.
    ///
    /// # Errors
    ///
    /// What is wrong, with the closest metric if one is close.
    pub fn check_metric(&self) -> Result<(), String> {
        self.lhs.check_metric()?;
        self.of.as_ref().map_or(Ok(()), MetricRef::check_metric)
    }

    /// The metrics the line names: its left-hand side, then the one on the right if any.
    pub fn metrics(&self) -> impl Iterator<Item = &MetricRef> {
        std::iter::once(&self.lhs).chain(self.of.as_ref())
    }

    /// Parses a line.
    ///
    /// # Errors
    ///
    /// A message saying what is malformed.
    pub fn parse(line: &str) -> Result<Check, String> {
        const OPS: [(&str, Op); 6] =
            [("<=", Op::Le), (">=", Op::Ge), ("==", Op::Eq), ("!=", Op::Ne), ("<", Op::Lt), (">", Op::Gt)];
        let (pos, text, op) = OPS
            .iter()
            .filter_map(|(t, op)| line.find(t).map(|p| (p, *t, *op)))
            .min_by_key(|(p, t, _)| (*p, std::cmp::Reverse(t.len())))
            .ok_or_else(|| format!("`{line}` has no comparison (<, <=, >, >=, ==, !=)"))?;
        let lhs = MetricRef::parse(line[..pos].trim())?;
        let rhs = line[pos + text.len()..].trim();
        let number = |t: &str| t.trim().parse::<f64>().map_err(|_| format!("`{}` is not a number", t.trim()));
        let (value, of) = match rhs.split_once('*') {
            Some((factor, of)) => (number(factor)?, Some(MetricRef::parse(of.trim())?)),
            None if rhs.parse::<f64>().is_ok() => (number(rhs)?, None),
            None if rhs.contains('.') && rhs.chars().next().is_some_and(|c| !c.is_ascii_digit() && c != '-') => {
                (1.0, Some(MetricRef::parse(rhs)?))
            }
            None => return Err(format!("`{rhs}` is not a number or SYSTEM[.CLASS].METRIC")),
        };
        Ok(Check { lhs, op, value, of })
    }

    /// Whether `actual` satisfies the check against `rhs`, the right-hand side's value.
    pub fn holds(&self, actual: f64, rhs: f64) -> bool {
        self.op.holds(actual, rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_class_and_system_metrics() {
        let c = Check::parse("veltrix.CRITICAL.latency_ms_p99 < 10").unwrap();
        assert_eq!(
            (c.lhs.system.as_str(), c.lhs.class.as_deref(), c.lhs.metric.as_str(), c.op, c.value, &c.of),
            ("veltrix", Some("CRITICAL"), "latency_ms_p99", Op::Lt, 10.0, &None)
        );
        let c = Check::parse("naive-fifo.lost >= 1").unwrap();
        assert_eq!((c.lhs.class.as_deref(), c.op), (None, Op::Ge));
        assert!(c.holds(1.0, c.value) && !c.holds(0.5, c.value));
        assert!(Check::parse("veltrix.lost = 0").is_err());
        assert!(Check::parse("a.b.c.d < 1").is_err());
        assert!(Check::parse("veltrix.lost < x").is_err());
        assert!(Check::parse("veltrix.lost < 2 * x").is_err());
        assert!(Check::parse("veltrix.lost < 2 * a..b").is_err());
    }

    #[test]
    fn the_right_hand_side_may_be_another_systems_metric_scaled() {
        let c = Check::parse("a.C.latency_ms_p99 <= 1.05 * b.C.latency_ms_p99").unwrap();
        let of = c.of.as_ref().unwrap();
        assert_eq!((c.value, of.system.as_str(), of.class.as_deref()), (1.05, "b", Some("C")));
        assert_eq!(c.to_string(), "a.C.latency_ms_p99 <= 1.05 * b.C.latency_ms_p99");
        let c = Check::parse("a.lost == b.lost").unwrap();
        assert_eq!((c.value, c.to_string().as_str()), (1.0, "a.lost == b.lost"));
        assert_eq!(c.metrics().count(), 2);
        assert_eq!(
            Check::parse("a.lost < b.C.recovery_s").unwrap().check_metric(),
            Err("`recovery_s` is a metric of the whole system: write `b.recovery_s`".into())
        );
    }

    #[test]
    fn metrics_are_checked_where_the_line_puts_them() {
        let check = |line: &str| Check::parse(line).unwrap().check_metric();
        assert_eq!(check("v.A.latency_ms_p99 < 1"), Ok(()));
        assert_eq!(check("v.recovery_s < 1"), Ok(()));
        assert_eq!(
            check("v.A.latncy_ms_p99 < 1"),
            Err("no metric `latncy_ms_p99`. Did you mean `latency_ms_p99`?".into())
        );
        assert_eq!(
            check("v.A.recovery_s < 1"),
            Err("`recovery_s` is a metric of the whole system: write `v.recovery_s`".into())
        );
        assert_eq!(check("v.A.nonsense < 1"), Err("no metric `nonsense`".into()));
    }
}
