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

impl Check {
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
}
