//! Figures the benchmarks produce, in one place, so `docs/performance.md` can be
//! generated from them instead of typed.
//!
//! Two sources feed `docs/perf-data.json` (see `perfdoc`):
//! - criterion's own results (`target/criterion/**/new/{benchmark,sample}.json`): every
//!   criterion benchmark id, each sample's time per iteration;
//! - figures a benchmark computes itself (paired minimums, load times, map bytes, the
//!   Sentinel's rounds, the daemon's resident memory), written here with [`record`] as
//!   one JSON line each to the file named by `IRONCLAD_FIGURES` (nothing is written
//!   when it is unset).

use std::io::Write;

use serde::{Deserialize, Serialize};

/// The environment variable naming the JSON Lines file figures are appended to.
pub const FIGURES_ENV: &str = "IRONCLAD_FIGURES";

/// What a figure counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Nanoseconds.
    Ns,
    /// Bytes.
    Bytes,
    /// A plain count.
    Count,
}

/// One figure: the spread of its samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// The producing benchmark's id (`group/function/parameter`).
    pub id: String,
    /// What the values count.
    pub unit: Unit,
    /// The smallest sample.
    pub min: f64,
    /// The median sample.
    pub median: f64,
    /// The largest sample.
    pub max: f64,
    /// How many samples.
    pub n: usize,
}

impl Figure {
    /// The figure of `samples` (`None` when there are none or one is not a number).
    pub fn of(id: &str, unit: Unit, samples: &[f64]) -> Option<Self> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        };
        Some(Self {
            id: id.to_string(),
            unit,
            min: sorted[0],
            median,
            max: sorted[sorted.len() - 1],
            n: sorted.len(),
        })
    }
}

/// Records the figure of `samples` under `id` (appended to `$IRONCLAD_FIGURES` when set).
///
/// Panics when the samples are empty or the file cannot be written: a benchmark whose
/// figure is lost would leave the document quoting an older one.
pub fn record(id: &str, unit: Unit, samples: &[f64]) {
    let figure = Figure::of(id, unit, samples)
        .unwrap_or_else(|| panic!("figure {id}: no samples, or one is not a number"));
    let Some(path) = std::env::var_os(FIGURES_ENV) else {
        return;
    };
    let line = serde_json::to_string(&figure).unwrap_or_else(|e| panic!("figure {id}: {e}"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{line}"))
        .unwrap_or_else(|e| panic!("writing figure {id} to {}: {e}", path.to_string_lossy()));
}

/// Records one value under `id`.
pub fn record_one(id: &str, unit: Unit, value: f64) {
    record(id, unit, &[value]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_odd_and_even_sample_counts() {
        let f = Figure::of("a", Unit::Ns, &[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((f.min, f.median, f.max, f.n), (1.0, 2.0, 3.0, 3));
        let f = Figure::of("a", Unit::Ns, &[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((f.min, f.median, f.max, f.n), (1.0, 2.5, 4.0, 4));
        assert!(Figure::of("a", Unit::Ns, &[]).is_none());
        assert!(Figure::of("a", Unit::Ns, &[1.0, f64::NAN]).is_none());
    }
}
