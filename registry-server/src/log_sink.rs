//! The process's standard output and error, written so that a failing sink
//! (a full disk under the log file, a reader that went away, a closed
//! descriptor) never affects serving.
//!
//! tracing-subscriber's writer reports a failed write with `eprintln!`,
//! which panics when stderr itself fails; on a request's path that panic
//! dropped the connection without an answer. So log lines go through
//! [`LogSink`], which drops a line it cannot write and counts it
//! (`berth_log_lines_dropped_total`, registered with the server's metrics),
//! and the lines announcing the listeners go through [`announce`], which
//! does the same instead of `println!`.

use std::io::{self, Write};
use std::sync::LazyLock;

use prometheus::IntCounter;

/// Lines (log lines and announcements) that could not be written.
pub static DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "berth_log_lines_dropped_total",
        "Log lines (and start-up announcements) dropped because stderr or stdout failed.",
    )
    .expect("metric")
});

/// Writes `bytes` whole to `out`; counts them as dropped if that fails.
/// Whether they were written.
fn write_or_drop(mut out: impl Write, bytes: &[u8]) -> bool {
    let written = out.write_all(bytes).and_then(|()| out.flush()).is_ok();
    if !written {
        DROPPED.inc();
    }
    written
}

/// A `MakeWriter` for tracing-subscriber: one writer per event, writing to
/// stderr and never reporting an error back.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSink;

/// One event's line. The formatter hands over the whole line in one call;
/// should it ever split it, a failure drops the rest and counts once.
pub struct LineWriter {
    failed: bool,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.failed {
            self.failed = !write_or_drop(io::stderr().lock(), buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter { failed: false }
    }
}

/// Prints one line on stdout (where scripts and tests read which addresses
/// the server listens on), dropping it if stdout fails.
pub fn announce(line: &str) {
    write_or_drop(io::stdout().lock(), format!("{line}\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::StorageFull))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_is_counted_not_raised() {
        let before = DROPPED.get();
        assert!(!write_or_drop(Broken, b"a line\n"));
        assert_eq!(DROPPED.get(), before + 1);
        let mut ok = Vec::new();
        assert!(write_or_drop(&mut ok, b"fine\n"));
        assert_eq!(ok, b"fine\n");
        assert_eq!(DROPPED.get(), before + 1);
    }
}
