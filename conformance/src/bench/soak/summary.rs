//! The judgement of the curves: per metric, its value at the start, once
//! warm-up is over and at the end, its range and the slope of a
//! least-squares line through the samples after warm-up. A flat curve has a
//! slope whose effect over the run is small against its level.

use std::fmt::Write as _;

use super::sample::Row;

/// The metrics summarized, in the order of the table.
pub const METRICS: [&str; 18] = [
    "rss_bytes",
    "fds",
    "threads",
    "cpu_pct",
    "uploads_files",
    "uploads_bytes",
    "upload_sessions",
    "quarantine_files",
    "quarantine_bytes",
    "blobs_files",
    "blobs_bytes",
    "index_bytes",
    "other_files",
    "stored_bytes",
    "reclaimable_bytes",
    "live_images",
    "pushes_per_s",
    "load1",
];

/// One metric's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Trend {
    pub metric: &'static str,
    pub start: f64,
    pub warm: f64,
    pub end: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// Least-squares slope after warm-up, per hour.
    pub slope_per_hour: f64,
    /// What the slope adds over the time after warm-up, against the mean
    /// (0.1: the line rises by a tenth of the level).
    pub drift: f64,
}

/// The trend of `metric` over `rows`, counting from the first row at or
/// after `warmup_s`; `None` without values after warm-up.
pub fn trend(rows: &[Row], metric: &'static str, warmup_s: f64) -> Option<Trend> {
    let points: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| Some((r.get("t_s")?, r.get(metric)?)))
        .collect();
    let start = points.first()?.1;
    let after: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(t, _)| *t >= warmup_s)
        .collect();
    let (&(t0, warm), &(t1, end)) = (after.first()?, after.last()?);
    let n = after.len() as f64;
    let mean = after.iter().map(|p| p.1).sum::<f64>() / n;
    let mean_t = after.iter().map(|p| p.0).sum::<f64>() / n;
    let var_t: f64 = after.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
    let cov: f64 = after.iter().map(|p| (p.0 - mean_t) * (p.1 - mean)).sum();
    let slope_per_s = if var_t > 0.0 { cov / var_t } else { 0.0 };
    let drift = if mean.abs() > 0.0 {
        slope_per_s * (t1 - t0) / mean.abs()
    } else {
        0.0
    };
    Some(Trend {
        metric,
        start,
        warm,
        end,
        min: after.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
        max: after.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max),
        mean,
        slope_per_hour: slope_per_s * 3600.0,
        drift,
    })
}

/// `12.3 MiB` for byte counts, the number otherwise.
fn show(metric: &str, v: f64) -> String {
    if metric.ends_with("_bytes") {
        format!("{:.1} MiB", v / (1024.0 * 1024.0))
    } else if v.fract() == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The table of every metric, in Markdown.
pub fn table(rows: &[Row], warmup_s: f64) -> String {
    let mut out = String::from(
        "| metric | start | after warm-up | end | min..max after warm-up | slope per hour | drift |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for metric in METRICS {
        let Some(t) = trend(rows, metric, warmup_s) else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {}..{} | {} | {:+.1}% |",
            t.metric,
            show(metric, t.start),
            show(metric, t.warm),
            show(metric, t.end),
            show(metric, t.min),
            show(metric, t.max),
            show(metric, t.slope_per_hour),
            t.drift * 100.0,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(values: &[(f64, f64)]) -> Vec<Row> {
        values
            .iter()
            .map(|&(t, v)| Row(vec![("t_s", Some(t)), ("fds", Some(v))]))
            .collect()
    }

    #[test]
    fn a_flat_curve_after_warm_up_has_no_slope() {
        let rows = rows(&[
            (0.0, 10.0),
            (10.0, 50.0),
            (20.0, 60.0),
            (30.0, 60.0),
            (40.0, 60.0),
        ]);
        let t = trend(&rows, "fds", 20.0).unwrap();
        assert_eq!((t.start, t.warm, t.end), (10.0, 60.0, 60.0));
        assert_eq!(
            (t.min, t.max, t.slope_per_hour, t.drift),
            (60.0, 60.0, 0.0, 0.0)
        );
    }

    #[test]
    fn a_steady_rise_shows_in_slope_and_drift() {
        let rows = rows(&[(0.0, 100.0), (1800.0, 150.0), (3600.0, 200.0)]);
        let t = trend(&rows, "fds", 0.0).unwrap();
        assert!((t.slope_per_hour - 100.0).abs() < 1e-9, "{t:?}");
        assert!((t.drift - 100.0 / 150.0).abs() < 1e-9, "{t:?}");
        assert!(trend(&rows, "fds", 7200.0).is_none());
        assert!(trend(&rows, "rss_bytes", 0.0).is_none());
        let table = table(&rows, 0.0);
        assert!(
            table.contains("| fds | 100 | 100 | 200 | 100..200 | 100 | +66.7% |"),
            "{table}"
        );
    }
}
