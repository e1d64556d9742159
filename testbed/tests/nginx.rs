//! nginx started for real in front of two tiny HTTP servers.
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};

use testbed::Nginx;

/// An HTTP server on a free loopback port that answers every request with
/// `NAME Host X-Forwarded-For X-Forwarded-Proto`, one request a connection.
fn tiny_server(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            answer(name, stream);
        }
    });
    addr
}

fn answer(name: &str, mut stream: TcpStream) {
    let mut headers = Vec::new();
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        headers.push(line.trim().to_owned());
    }
    let header = |h: &str| {
        let found = headers.iter().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(h).then(|| v.trim().to_owned())
        });
        found.unwrap_or_else(|| "-".into())
    };
    let body = format!(
        "{name} {} {} {}",
        header("host"),
        header("x-forwarded-for"),
        header("x-forwarded-proto")
    );
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
}

/// GET / through `addr` with `Host: registry.test`; the response body.
fn get(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to nginx");
    let request = "GET / HTTP/1.1\r\nHost: registry.test\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).expect("send");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    reply.split_once("\r\n\r\n").expect("body").1.to_owned()
}

#[test]
fn requests_alternate_between_the_upstreams() {
    let nginx = Nginx::round_robin(&[tiny_server("a"), tiny_server("b")]);
    assert!(nginx.url().starts_with("http://127.0.0.1:"));
    let bodies: Vec<String> = (0..6).map(|_| get(nginx.addr())).collect();
    let names: Vec<&str> = bodies.iter().map(|b| &b[..1]).collect();
    assert!(
        names == ["a", "b", "a", "b", "a", "b"] || names == ["b", "a", "b", "a", "b", "a"],
        "{bodies:?}"
    );
    // The client's Host and its address reach the upstream.
    assert_eq!(
        &bodies[0][2..],
        "registry.test 127.0.0.1 http",
        "{bodies:?}"
    );
    assert_eq!(
        nginx.access_log().lines().count(),
        6,
        "{}",
        nginx.access_log()
    );
}

#[test]
fn drop_stops_nginx() {
    let nginx = Nginx::round_robin(&[tiny_server("a")]);
    let addr = nginx.addr();
    assert!(get(addr).starts_with("a "));
    drop(nginx);
    assert!(
        TcpStream::connect(addr).is_err(),
        "nginx still listens on {addr}"
    );
}
