//! `[expect]` lines: `SYSTEM[.CLASS].METRIC OP NUMBER`, e.g. `veltrix.CRITICAL.latency_ms_p99 < 10`
//! or `veltrix.lost == 0`.

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

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// System name.
    pub system: String,
    /// Class name, or `None` for a system-wide metric.
    pub class: Option<String>,
    /// Metric name.
    pub metric: String,
    /// Comparison.
    pub op: Op,
    /// Right-hand side.
    pub value: f64,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.class {
            Some(c) => write!(f, "{}.{}.{} {} {}", self.system, c, self.metric, self.op.as_str(), self.value),
            None => write!(f, "{}.{} {} {}", self.system, self.metric, self.op.as_str(), self.value),
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
pub const SYSTEM_METRICS: [&str; 2] = ["recovery_s", "identities_hold"];

impl Check {
    /// Whether the line names a metric that exists where it puts it.
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
        let lhs = line[..pos].trim();
        let rhs = line[pos + text.len()..].trim();
        let value: f64 = rhs.parse().map_err(|_| format!("`{rhs}` is not a number"))?;
        let parts: Vec<&str> = lhs.split('.').collect();
        let (system, class, metric) = match parts.as_slice() {
            [s, m] => (s, None, m),
            [s, c, m] => (s, Some(c.to_string()), m),
            _ => return Err(format!("`{lhs}` is not SYSTEM.METRIC or SYSTEM.CLASS.METRIC")),
        };
        if system.is_empty() || metric.is_empty() {
            return Err(format!("`{lhs}` has an empty part"));
        }
        Ok(Check { system: system.to_string(), class, metric: metric.to_string(), op, value })
    }

    /// Whether `actual` satisfies the check.
    pub fn holds(&self, actual: f64) -> bool {
        self.op.holds(actual, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_class_and_system_metrics() {
        let c = Check::parse("veltrix.CRITICAL.latency_ms_p99 < 10").unwrap();
        assert_eq!(
            (c.system.as_str(), c.class.as_deref(), c.metric.as_str(), c.op, c.value),
            ("veltrix", Some("CRITICAL"), "latency_ms_p99", Op::Lt, 10.0)
        );
        let c = Check::parse("naive-fifo.lost >= 1").unwrap();
        assert_eq!((c.class.as_deref(), c.op), (None, Op::Ge));
        assert!(c.holds(1.0) && !c.holds(0.5));
        assert!(Check::parse("veltrix.lost = 0").is_err());
        assert!(Check::parse("a.b.c.d < 1").is_err());
        assert!(Check::parse("veltrix.lost < x").is_err());
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
