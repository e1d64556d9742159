//! A webhook receiver on loopback: records every request it reads, and
//! answers as the test says (up, failing with a status, too slow, or not
//! listening at all). A plain HTTP/1.1 server on std threads: one request
//! per connection, answered with `Connection: close`, which is all a
//! webhook sender needs (written by hand: the test needs to switch the
//! port off and on, and to see requests exactly as they arrived).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `200 OK`.
    Up,
    /// This status (e.g. 503), at once.
    Status(u16),
    /// Waits this long, then answers 503 (a sender with a shorter timeout
    /// has given up by then).
    Slow(Duration),
    /// Not listening: connections are refused.
    Closed,
}

/// One request the receiver read.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    mode: Mutex<Mode>,
    received: Mutex<Vec<Received>>,
    stop: AtomicBool,
}

/// A receiver; stops listening when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Receiver {
    /// Listens on a free loopback port, in `mode`.
    pub fn start(mode: Mode) -> Receiver {
        let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the receiver");
        let addr = probe.local_addr().expect("receiver address");
        drop(probe);
        let shared = Arc::new(Shared {
            mode: Mutex::new(mode),
            received: Mutex::default(),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || accept_loop(addr, &s));
        Receiver { addr, shared }
    }

    /// Where to send events.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        *self.shared.mode.lock().expect("mode") = mode;
    }

    /// Every request read so far, in order of arrival.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("received").clone()
    }

    /// The requests answered with a 2xx status, in order.
    pub fn delivered(&self) -> Vec<Received> {
        let all = self.received();
        all.into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

/// Binds while the mode is not `Closed`, unbinds while it is.
fn accept_loop(addr: SocketAddr, shared: &Arc<Shared>) {
    let mut listener: Option<TcpListener> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let closed = *shared.mode.lock().expect("mode") == Mode::Closed;
        if closed {
            listener = None;
        } else if listener.is_none() {
            // The port was ours; std sets SO_REUSEADDR, so it binds again
            // even with connections in TIME_WAIT.
            listener = TcpListener::bind(addr).ok();
            if let Some(l) = &listener {
                l.set_nonblocking(true).expect("non-blocking listener");
            }
        }
        match listener.as_ref().map(TcpListener::accept) {
            Some(Ok((stream, _))) => {
                let s = shared.clone();
                std::thread::spawn(move || serve(stream, &s));
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Reads one request, records it and answers it as the mode says.
fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Some(mut r) = read_request(&stream) else {
        return;
    };
    let mode = *shared.mode.lock().expect("mode");
    let status = match mode {
        Mode::Up => 200,
        Mode::Status(s) => s,
        Mode::Slow(_) | Mode::Closed => 503,
    };
    r.status = status;
    shared.received.lock().expect("received").push(r);
    if let Mode::Slow(d) = mode {
        std::thread::sleep(d);
    }
    let reason = if status < 300 { "OK" } else { "Unavailable" };
    let answer =
        format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let mut stream = stream;
    let _ = stream.write_all(answer.as_bytes());
    let _ = stream.flush();
}

fn read_request(stream: &TcpStream) -> Option<Received> {
    let at = Instant::now();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        method,
        path,
        headers,
        body,
        status: 0,
        at,
    })
}
