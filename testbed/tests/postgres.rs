//! PostgreSQL started for real, queried with psql over TCP.
use std::process::Command;

use testbed::Postgres;

#[test]
fn postgres_answers_queries_over_its_url() {
    let pg = Postgres::start();
    assert!(
        pg.url().starts_with("postgres://berth@127.0.0.1:"),
        "{}",
        pg.url()
    );
    assert_eq!(pg.psql("select 1").trim(), "1");

    // The URL alone is enough for a client.
    let out = Command::new("psql")
        .args([
            "-X",
            "-t",
            "-A",
            "-c",
            "select current_user, current_database()",
        ])
        .arg(pg.url())
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "berth|berth");

    let other = pg.create_database("second");
    assert!(other.ends_with("/second"), "{other}");
    pg.psql("create table t (id int primary key); insert into t values (1), (2)");
    assert_eq!(pg.psql("select count(*) from t").trim(), "2");
}

#[test]
fn stop_removes_the_server_and_its_directory() {
    let pg = Postgres::start();
    let (port, dir) = (pg.port(), pg.socket_dir().to_path_buf());
    pg.stop();
    assert!(!dir.exists(), "{} is still there", dir.display());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
