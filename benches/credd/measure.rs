//! Samples to percentiles, and durations in a unit that suits them: what
//! every table of the benchmarks prints.

use std::time::Duration;

/// Percentiles of a set of samples.
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

/// Summarises samples (sorted in place).
pub fn summarise(samples: &mut [Duration]) -> Summary {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Summary { n: samples.len(), p50: at(0.5), p90: at(0.9), p99: at(0.99) }
}

/// Formats a duration with a unit that suits it.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{:.2} µs", ns as f64 / 1000.0)
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1000.0)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}
