//! Finding, starting, waiting for and stopping server processes.
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::ports::StartFailure;

/// How long a server may take to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// The first `name` found on `PATH` or in `extra_dirs` (sbin directories are
/// often missing from a normal user's `PATH`).
pub(crate) fn find_binary(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Panics with a message that stands out in a test log: what is missing and
/// the command that installs it.
pub(crate) fn missing(what: &str, install: &str) -> ! {
    panic!(
        "\n\n************************************************************\n\
         testbed: cannot find {what}.\n\
         Install it with:\n    {install}\n\
         (.ci/run installs it; these tests never skip.)\n\
         ************************************************************\n"
    )
}

/// Starts `cmd` with stdout and stderr appended to `log`.
pub(crate) fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open log {}: {e}", log.display()));
    let err = out.try_clone().expect("clone log handle");
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// The log file's text, or a note that there is none.
pub(crate) fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_else(|e| format!("(no log at {}: {e})", log.display()))
}

/// Waits until every address in `addrs` accepts connections, while `child`
/// keeps running. A child that exits or a timeout is a [`StartFailure`]
/// carrying its log; a child that timed out is killed.
pub(crate) fn wait_listening(
    child: &mut Child,
    addrs: &[SocketAddr],
    log: &Path,
) -> Result<(), StartFailure> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            return Err(StartFailure::from_log(
                format!("it exited with {status}"),
                &read_log(log),
            ));
        }
        let up = addrs
            .iter()
            .all(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok());
        // A port that answers may belong to someone else, while the child
        // failed to bind it: some servers exit then, but Garage only logs
        // it and goes on without that listener.
        let log_text = read_log(log);
        if log_text.contains("Address already in use") {
            kill(child);
            return Err(StartFailure::from_log("a port was taken".into(), &log_text));
        }
        if up && child.try_wait().expect("poll child").is_none() {
            return Ok(());
        }
        if Instant::now() > deadline {
            kill(child);
            let what = format!("nothing listened on {addrs:?} within {READY_TIMEOUT:?}");
            return Err(StartFailure::Other(format!(
                "{what}\n--- log ---\n{}",
                read_log(log)
            )));
        }
        sleep(Duration::from_millis(50));
    }
}

/// SIGKILL, then reap.
pub(crate) fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGTERM, a short wait for a clean exit, then SIGKILL. For servers whose
/// master process must take its workers down with it.
pub(crate) fn terminate(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid; the child is not reaped yet,
    // so the pid cannot have been reused.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + TERM_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        sleep(Duration::from_millis(20));
    }
    kill(child);
}

/// Runs `cmd` to completion: its stdout, or a description of the failure
/// with both output streams.
pub(crate) fn run(cmd: &mut Command) -> Result<String, String> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(describe_failure(cmd, &output))
    }
}

fn describe_failure(cmd: &Command, output: &Output) -> String {
    format!(
        "{cmd:?} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// [`run`], retried for up to `within` while it fails: for commands that
/// fail until a cluster has settled.
pub(crate) fn run_until_ok(within: Duration, mut cmd: impl FnMut() -> Command) -> String {
    let deadline = Instant::now() + within;
    loop {
        match run(&mut cmd()) {
            Ok(out) => return out,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => sleep(Duration::from_millis(200)),
        }
    }
}

/// Polls `ready` every 100 ms until it is true; panics with `what` after
/// `within`.
pub(crate) fn wait_until(within: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        sleep(Duration::from_millis(100));
    }
}
