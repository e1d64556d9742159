//! `powercut MOUNTPOINT BACKING_DIR`: mounts the power-cut layer over a
//! directory until it is unmounted (`umount MOUNTPOINT`, SIGINT, SIGTERM or
//! the `unmount` command). SIGUSR1 or the `cut` command cuts the power.
//!
//! With `--control SOCKET`, a unix socket takes one command per line and
//! answers one line: `cut` (answers what was lost), `sync`, `status` (what a
//! cut would lose now), `unmount`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use powercut::{Control, Mount, Unsynced};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

#[derive(Parser)]
#[command(about = "Mount a directory through a layer that loses unsynced writes at a power cut")]
struct Args {
    /// Where to mount the layer.
    mountpoint: PathBuf,
    /// The directory holding the durable state.
    backing: PathBuf,
    /// A unix socket taking the commands cut, sync, status and unmount.
    #[arg(long)]
    control: Option<PathBuf>,
}

fn describe(u: Unsynced) -> String {
    format!("files={} bytes={} dirs={}", u.files, u.bytes, u.dirs)
}

/// Answers one command line; `true` asks for the unmount.
fn command(control: &Control, line: &str) -> (String, bool) {
    let answer = |r: std::io::Result<String>| match r {
        Ok(s) => format!("ok {s}").trim_end().to_owned(),
        Err(e) => format!("error {e}"),
    };
    match line.trim() {
        "cut" => (answer(control.cut().map(describe)), false),
        "sync" => (answer(control.sync().map(|()| String::new())), false),
        "status" => (answer(Ok(describe(control.unsynced()))), false),
        "unmount" => ("ok".into(), true),
        other => (format!("error unknown command {other:?}"), false),
    }
}

fn serve_client(stream: UnixStream, control: &Control, unmount: &mpsc::Sender<()>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let (reply, stop) = command(control, &line);
        if writeln!(out, "{reply}").is_err() {
            return;
        }
        if stop {
            let _ = unmount.send(());
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    // Handlers first: a signal's default action would leave a dead mount.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1])?;
    let mount = Mount::start(&args.mountpoint, &args.backing)
        .with_context(|| format!("mounting {}", args.mountpoint.display()))?;
    let control = mount.control();

    let (ctl, tx) = (control.clone(), stop_tx.clone());
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal == SIGUSR1 {
                match ctl.cut() {
                    Ok(lost) => eprintln!("powercut: power cut, lost {}", describe(lost)),
                    Err(e) => eprintln!("powercut: {e}"),
                }
            } else {
                let _ = tx.send(());
            }
        }
    });
    if let Some(path) = &args.control {
        let _ = std::fs::remove_file(path);
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        let tx = stop_tx.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (ctl, tx) = (control.clone(), tx.clone());
                std::thread::spawn(move || serve_client(stream, &ctl, &tx));
            }
        });
    }
    println!(
        "powercut: {} mounted over {}",
        mount.mountpoint().display(),
        args.backing.display()
    );
    while !mount.session_ended() {
        match stop_rx.recv_timeout(Duration::from_millis(200)) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    mount.unmount().context("unmounting")?;
    if let Some(path) = &args.control {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
