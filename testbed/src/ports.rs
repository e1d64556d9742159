//! Free loopback ports, and starting a server again when it lost one.
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Mutex;

/// Ports already handed out by this process: the kernel may offer a port
/// again once its probe socket is closed, and two servers of one test must
/// not be given the same one.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// How many times a server that could not bind is started on new ports.
const ATTEMPTS: usize = 5;

/// A loopback port that was free a moment ago: bind port 0, read the port
/// the kernel chose, close the socket. Another process can still take it
/// before the server binds it; the starters in this crate retry on new
/// ports when that happens.
pub fn free_port() -> u16 {
    loop {
        let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback probe");
        let port = probe.local_addr().expect("probe address").port();
        if HANDED_OUT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port)
        {
            return port;
        }
    }
}

/// [`free_port`] as `127.0.0.1:PORT`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}

/// Why a server did not come up.
#[derive(Debug)]
pub(crate) enum StartFailure {
    /// One of its ports was taken: worth another try on new ports.
    PortInUse(String),
    /// Anything else: retrying will not help.
    Other(String),
}

impl StartFailure {
    /// Classifies a failure by the server's log: every server here says
    /// "Address already in use" (the text of EADDRINUSE) when a bind fails.
    pub(crate) fn from_log(what: String, log: &str) -> StartFailure {
        let message = format!("{what}\n--- log ---\n{log}");
        if log.contains("Address already in use") {
            StartFailure::PortInUse(message)
        } else {
            StartFailure::Other(message)
        }
    }
}

/// Runs `start` (which picks its own fresh ports each call) until it does not
/// fail for a port in use; panics with the server's log otherwise.
pub(crate) fn with_port_retry<T>(
    server: &str,
    mut start: impl FnMut() -> Result<T, StartFailure>,
) -> T {
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        match start() {
            Ok(started) => return started,
            Err(StartFailure::PortInUse(message)) => last = message,
            Err(StartFailure::Other(message)) => panic!("{server} did not start: {message}"),
        }
    }
    panic!("{server} did not start: its ports were taken {ATTEMPTS} times; last: {last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_not_handed_out_twice() {
        let ports: BTreeSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50);
    }

    #[test]
    fn a_taken_port_is_retried_and_other_failures_are_not() {
        let mut calls = 0;
        let got = with_port_retry("demo", || {
            calls += 1;
            if calls < 3 {
                Err(StartFailure::from_log(
                    "exited".into(),
                    "bind: Address already in use",
                ))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(got, 3);
        let other = std::panic::catch_unwind(|| {
            with_port_retry("demo", || -> Result<(), _> {
                Err(StartFailure::from_log("exited".into(), "bad config"))
            })
        });
        assert!(other.is_err());
    }
}
