//! One sample every `--sample-every`: the server process (from
//! `/proc/<pid>`), what its data directory holds, what the registry says it
//! stores, and what the soak did during the interval. Samples go to a CSV
//! file as they are taken, so a run cut short still leaves its curves.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::tally::{Counts, Op};
use crate::bench::client::Registry;

/// Clock ticks per second of the `utime`/`stime` fields of
/// `/proc/<pid>/stat`. `sysconf(_SC_CLK_TCK)` would say, but this crate
/// does not link libc for one constant that is 100 on every Linux
/// architecture Berth builds for.
const CLOCK_TICKS: f64 = 100.0;

/// One row of the CSV: named values, `None` where unknown (left empty).
#[derive(Debug, Clone, Default)]
pub struct Row(pub Vec<(&'static str, Option<f64>)>);

impl Row {
    fn push(&mut self, name: &'static str, value: Option<f64>) {
        self.0.push((name, value));
    }

    fn count(&mut self, name: &'static str, value: u64) {
        self.push(name, Some(value as f64));
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| *v)
    }

    pub fn header(&self) -> String {
        let names: Vec<&str> = self.0.iter().map(|(n, _)| *n).collect();
        names.join(",")
    }

    pub fn line(&self) -> String {
        let values: Vec<String> = self
            .0
            .iter()
            .map(|(_, v)| match v {
                None => String::new(),
                Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
                Some(v) => format!("{v:.3}"),
            })
            .collect();
        values.join(",")
    }
}

/// What `/proc/<pid>` says about the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    pub rss_bytes: u64,
    pub threads: u64,
    pub fds: u64,
    /// User and system CPU time, in clock ticks.
    pub cpu_ticks: u64,
}

impl Process {
    /// `None` once the process is gone (or on a system without `/proc`).
    pub fn read(pid: u32) -> Option<Process> {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let fds = std::fs::read_dir(dir.join("fd")).ok()?.count() as u64;
        let (rss_kib, threads) = parse_status(&status)?;
        Some(Process {
            rss_bytes: rss_kib * 1024,
            threads,
            fds,
            cpu_ticks: parse_cpu_ticks(&stat)?,
        })
    }
}

/// `VmRSS` (KiB) and `Threads` of a `/proc/<pid>/status`.
pub fn parse_status(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("Threads:")?))
}

/// `utime + stime` of a `/proc/<pid>/stat` line. The command name (in
/// parentheses) may hold spaces, so fields are counted after its `)`:
/// `utime` and `stime` are fields 14 and 15 of the line, 12th and 13th
/// after the name.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Files and bytes under a directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub files: u64,
    pub bytes: u64,
}

impl Usage {
    /// Walks `path` (a file counts as itself). Entries that vanish during
    /// the walk (a sweep, an upload committed) are skipped.
    pub fn of(path: &Path) -> Usage {
        let mut usage = Usage::default();
        usage.add(path);
        usage
    }

    fn add(&mut self, path: &Path) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        if !meta.is_dir() {
            self.files += 1;
            self.bytes += meta.len();
            return;
        }
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            self.add(&entry.path());
        }
    }
}

/// What a filesystem store's data directory holds, by part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataDir {
    pub uploads: Usage,
    /// `quarantine/` and a first release's `trash/`.
    pub quarantine: Usage,
    pub blobs: Usage,
    pub index_bytes: u64,
    /// Anything else (the token secret, files nobody expected).
    pub other: Usage,
}

impl DataDir {
    pub fn read(dir: &Path) -> DataDir {
        let mut out = DataDir::default();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return out;
        };
        for entry in entries.flatten() {
            let usage = Usage::of(&entry.path());
            let part = match entry.file_name().to_str() {
                Some("uploads") => &mut out.uploads,
                Some("quarantine" | "trash") => &mut out.quarantine,
                Some("blobs") => &mut out.blobs,
                Some("index.redb") => {
                    out.index_bytes = usage.bytes;
                    continue;
                }
                _ => &mut out.other,
            };
            part.files += usage.files;
            part.bytes += usage.bytes;
        }
        out
    }
}

/// What the registry reports about itself.
#[derive(Debug, Clone, Copy, Default)]
struct Stored {
    blobs: Option<f64>,
    bytes: Option<f64>,
    reclaimable: Option<f64>,
    upload_sessions: Option<f64>,
}

async fn stored(registry: &Registry) -> Stored {
    let mut out = Stored::default();
    if let Ok(v) = registry.admin_get("/admin/gc/reclaimable").await {
        out.blobs = v["stored_blobs"].as_f64();
        out.bytes = v["stored_bytes"].as_f64();
        out.reclaimable = v["bytes"].as_f64();
    }
    if let Ok(text) = registry.get_bytes("GET /metrics", "/metrics").await {
        out.upload_sessions = metric(&String::from_utf8_lossy(&text), "berth_uploads_in_progress");
    }
    out
}

/// The value of an unlabelled metric in Prometheus text format.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The 1-minute load average of the machine.
fn load1() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Takes the samples, remembering what the previous one needs for rates.
pub struct Sampler {
    pid: Option<u32>,
    data_dir: Option<PathBuf>,
    started: Instant,
    last: Instant,
    last_cpu_ticks: Option<u64>,
}

impl Sampler {
    pub fn new(pid: Option<u32>, data_dir: Option<PathBuf>) -> Sampler {
        let now = Instant::now();
        Sampler {
            pid,
            data_dir,
            started: now,
            last: now,
            last_cpu_ticks: None,
        }
    }

    /// A sample now, with `counts` of the interval that just ended and the
    /// number of live images the soak knows of.
    pub async fn sample(&mut self, registry: &Registry, counts: &Counts, live: usize) -> Row {
        let now = Instant::now();
        let interval = now.duration_since(self.last).max(Duration::from_millis(1));
        self.last = now;
        let (pid, data_dir) = (self.pid, self.data_dir.clone());
        let (process, data) = tokio::task::spawn_blocking(move || {
            (
                pid.and_then(Process::read),
                data_dir.as_deref().map(DataDir::read),
            )
        })
        .await
        .unwrap_or((None, None));
        let stored = stored(registry).await;

        let mut row = Row::default();
        row.push(
            "t_s",
            Some(now.duration_since(self.started).as_secs_f64().round()),
        );
        row.push("load1", load1());
        self.process_columns(&mut row, process, interval);
        data_columns(&mut row, data);
        row.push("stored_blobs", stored.blobs);
        row.push("stored_bytes", stored.bytes);
        row.push("reclaimable_bytes", stored.reclaimable);
        row.push("upload_sessions", stored.upload_sessions);
        row.count("live_images", live as u64);
        count_columns(&mut row, counts, interval);
        row
    }

    fn process_columns(&mut self, row: &mut Row, process: Option<Process>, interval: Duration) {
        let cpu = process.and_then(|p| {
            let before = self.last_cpu_ticks.replace(p.cpu_ticks)?;
            let seconds = p.cpu_ticks.saturating_sub(before) as f64 / CLOCK_TICKS;
            Some(100.0 * seconds / interval.as_secs_f64())
        });
        row.push("rss_bytes", process.map(|p| p.rss_bytes as f64));
        row.push("fds", process.map(|p| p.fds as f64));
        row.push("threads", process.map(|p| p.threads as f64));
        row.push("cpu_pct", cpu.map(|c| c.round()));
    }
}

fn data_columns(row: &mut Row, data: Option<DataDir>) {
    let field = |f: fn(&DataDir) -> u64| data.as_ref().map(|d| f(d) as f64);
    row.push("uploads_files", field(|d| d.uploads.files));
    row.push("uploads_bytes", field(|d| d.uploads.bytes));
    row.push("quarantine_files", field(|d| d.quarantine.files));
    row.push("quarantine_bytes", field(|d| d.quarantine.bytes));
    row.push("blobs_files", field(|d| d.blobs.files));
    row.push("blobs_bytes", field(|d| d.blobs.bytes));
    row.push("index_bytes", field(|d| d.index_bytes));
    row.push("other_files", field(|d| d.other.files));
    row.push("other_bytes", field(|d| d.other.bytes));
}

fn count_columns(row: &mut Row, c: &Counts, interval: Duration) {
    let pushes_per_s = c.op(Op::Push) as f64 / interval.as_secs_f64();
    row.push("pushes_per_s", Some((pushes_per_s * 100.0).round() / 100.0));
    for op in Op::ALL {
        row.count(op.column(), c.op(op));
    }
    row.count("gc_runs", c.gc_runs);
    row.count("gc_blobs_deleted", c.gc_blobs_deleted);
    row.count("gc_bytes_freed", c.gc_bytes_freed);
    row.count("gc_uploads_deleted", c.gc_uploads_deleted);
    row.push("gc_fence_max_ms", Some(c.gc_fence_max_ms));
    row.count("errors_expected", c.expected);
    row.count("errors_unexpected", c.unexpected);
}

/// The CSV file, written a row at a time.
pub struct Csv {
    out: BufWriter<File>,
    header: bool,
}

impl Csv {
    pub fn create(path: &Path) -> std::io::Result<Csv> {
        Ok(Csv {
            out: BufWriter::new(File::create(path)?),
            header: false,
        })
    }

    pub fn write(&mut self, row: &Row) -> std::io::Result<()> {
        if !self.header {
            writeln!(self.out, "{}", row.header())?;
            self.header = true;
        }
        writeln!(self.out, "{}", row.line())?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let status = "Name:\tregistry\nVmRSS:\t   51234 kB\nThreads:\t17\n";
        assert_eq!(parse_status(status), Some((51234, 17)));
        assert_eq!(parse_status("Name:\tx\n"), None);
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 17";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn this_process_reads_from_proc() {
        let me = Process::read(std::process::id()).expect("/proc/self is readable");
        assert!(me.rss_bytes > 0 && me.threads >= 1 && me.fds >= 3, "{me:?}");
        assert!(Process::read(u32::MAX).is_none());
    }

    #[test]
    fn a_data_directory_is_split_into_its_parts() {
        let dir = std::env::temp_dir().join(format!("soak-sample-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, len) in [
            ("blobs/sha256/ab/abcd", 10),
            ("blobs/sha256/cd/cdef", 5),
            ("uploads/u1", 7),
            ("quarantine/q", 1),
            ("trash/t", 2),
            ("index.redb", 100),
            ("token.key", 3),
        ] {
            let file = dir.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, vec![0u8; len]).unwrap();
        }
        let data = DataDir::read(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            data.blobs,
            Usage {
                files: 2,
                bytes: 15
            }
        );
        assert_eq!(data.uploads, Usage { files: 1, bytes: 7 });
        assert_eq!(data.quarantine, Usage { files: 2, bytes: 3 });
        assert_eq!(data.index_bytes, 100);
        assert_eq!(data.other, Usage { files: 1, bytes: 3 });
    }

    #[test]
    fn rows_print_as_csv_and_metrics_parse() {
        let mut row = Row::default();
        row.push("t_s", Some(10.0));
        row.push("load1", Some(1.25));
        row.push("rss_bytes", None);
        assert_eq!(row.header(), "t_s,load1,rss_bytes");
        assert_eq!(row.line(), "10,1.250,");
        let text = "# HELP berth_uploads_in_progress x\nberth_uploads_in_progress 12\nberth_uploads_in_progress_x 3\n";
        assert_eq!(metric(text, "berth_uploads_in_progress"), Some(12.0));
        assert_eq!(metric(text, "berth_missing"), None);
    }
}
