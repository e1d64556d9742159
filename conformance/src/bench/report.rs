//! The report: a table on stdout and, on request, a JSON file.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::machine::Machine;
use super::options::Options;
use super::stats::CaseResult;

/// One garbage collection run, as the registry reported it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcRun {
    pub label: String,
    pub id: u64,
    pub state: String,
    pub error: Option<String>,
    /// Grace period the run was asked to use.
    pub grace_s: f64,
    /// Duration the registry reports for the run.
    pub duration_ms: f64,
    /// From the client's POST to seeing the run finished.
    pub wall_ms: f64,
    pub blobs_deleted: u64,
    pub blobs_deleted_per_s: f64,
    pub manifests_deleted: u64,
    pub bytes_freed: u64,
    pub fences: u64,
    pub fence_total_ms: f64,
    pub fence_p50_ms: f64,
    pub fence_p99_ms: f64,
    pub fence_max_ms: f64,
    pub writes_waited: u64,
    pub writes_refused: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub url: String,
    /// Seconds since the Unix epoch when the run started.
    pub started_at: u64,
    pub machine: Machine,
    pub options: Options,
    pub results: Vec<CaseResult>,
    pub gc_runs: Vec<GcRun>,
    /// Workloads skipped or cut short, and why.
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(options: Options, machine: Machine) -> Self {
        Report {
            tool: "berth-bench",
            version: env!("CARGO_PKG_VERSION"),
            url: options.url.clone(),
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            machine,
            options,
            results: Vec::new(),
            gc_runs: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n")?;
        Ok(())
    }

    /// Everything, as text for a terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&results_table(&self.results));
        let errors = error_section(&self.results);
        if !errors.is_empty() {
            out.push('\n');
            out.push_str(&errors);
        }
        if !self.gc_runs.is_empty() {
            out.push('\n');
            out.push_str(&gc_table(&self.gc_runs));
        }
        if !self.notes.is_empty() {
            out.push_str("\nNotes:\n");
            for note in &self.notes {
                let _ = writeln!(out, "  - {note}");
            }
        }
        out
    }
}

/// The figures of one case on one line (also used for progress).
pub fn result_line(r: &CaseResult) -> String {
    let l = &r.latency_ms;
    format!(
        "{:<18} {:<35} {:>5} {:>8} {:>6} {:>10.1} {:>9.1} {:>8} {:>8} {:>8} {:>9}",
        r.workload,
        r.case,
        r.concurrency,
        r.ops,
        r.errors,
        r.ops_per_s,
        r.mib_per_s,
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.max),
    )
}

pub fn results_header() -> String {
    format!(
        "{:<18} {:<35} {:>5} {:>8} {:>6} {:>10} {:>9} {:>8} {:>8} {:>8} {:>9}",
        "workload",
        "case",
        "conc",
        "ops",
        "errors",
        "ops/s",
        "MiB/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms"
    )
}

/// Milliseconds with the precision that matters at their scale.
fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn results_table(results: &[CaseResult]) -> String {
    let mut out = results_header();
    out.push('\n');
    out.push_str(&"-".repeat(out.len() - 1));
    out.push('\n');
    for r in results {
        out.push_str(&result_line(r));
        out.push('\n');
    }
    out
}

fn error_section(results: &[CaseResult]) -> String {
    let mut out = String::new();
    for r in results.iter().filter(|r| r.errors > 0) {
        let codes: Vec<String> = r
            .error_codes
            .iter()
            .map(|(code, n)| format!("{code}×{n}"))
            .collect();
        let _ = writeln!(
            out,
            "Errors in {} / {}: {} ({})",
            r.workload,
            r.case,
            r.errors,
            codes.join(", ")
        );
        for sample in &r.error_samples {
            let _ = writeln!(out, "    {sample}");
        }
    }
    out
}

fn gc_table(runs: &[GcRun]) -> String {
    let mut out = String::from("Garbage collection runs\n");
    let _ = writeln!(
        out,
        "{:<40} {:>9} {:>10} {:>9} {:>9} {:>8} {:>10} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}",
        "run",
        "state",
        "blobs del",
        "mans del",
        "MiB freed",
        "run ms",
        "blobs/s",
        "fences",
        "fence Σ",
        "f p50",
        "f p99",
        "f max",
        "waited",
        "refused"
    );
    for r in runs {
        let _ = writeln!(
            out,
            "{:<40} {:>9} {:>10} {:>9} {:>9.1} {:>8.0} {:>10.0} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}",
            r.label,
            r.state,
            r.blobs_deleted,
            r.manifests_deleted,
            r.bytes_freed as f64 / (1024.0 * 1024.0),
            r.duration_ms,
            r.blobs_deleted_per_s,
            r.fences,
            ms(r.fence_total_ms),
            ms(r.fence_p50_ms),
            ms(r.fence_p99_ms),
            ms(r.fence_max_ms),
            r.writes_waited,
            r.writes_refused,
        );
        if let Some(error) = &r.error {
            let _ = writeln!(out, "    error: {error}");
        }
    }
    out.push_str("(fence figures in ms; client-observed wall time of each run is in the JSON)\n");
    out
}
