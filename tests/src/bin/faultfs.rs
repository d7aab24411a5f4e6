//! The fault-injecting filesystem on its own, for experiments by hand (the campaign runner,
//! `chaos`, uses the same module in-process):
//!
//! ```sh
//! faultfs --control /tmp/ctl.sock /srv/backing /mnt/node-a /mnt/node-b &
//! echo 'set 0 hang'       | socat - UNIX-CONNECT:/tmp/ctl.sock   # node-a's mount hangs
//! echo 'set 1 eio'        | socat - UNIX-CONNECT:/tmp/ctl.sock   # node-b's fails with EIO
//! echo 'set 0 delay 80'   | socat - UNIX-CONNECT:/tmp/ctl.sock   # 80 ms per operation
//! echo 'set all none'     | socat - UNIX-CONNECT:/tmp/ctl.sock
//! echo 'status'           | socat - UNIX-CONNECT:/tmp/ctl.sock
//! ```
//!
//! Faults: `none`, `hang`, `eio`, `enospc`, `erofs`, `delay MS`. Each mount point gets its own
//! mount of BACKING (index in the order given). SIGINT/SIGTERM (or `quit`) clears every fault
//! and unmounts.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tenure_tests::faultfs::{Fault, FaultFs, Mounted};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

const USAGE: &str = "usage: faultfs --control SOCKET BACKING MOUNTPOINT...";

fn parse_fault(words: &[&str]) -> Result<Fault, String> {
    match words {
        ["none"] => Ok(Fault::None),
        ["hang"] => Ok(Fault::Hang),
        ["eio"] => Ok(Fault::Error(libc::EIO)),
        ["enospc"] => Ok(Fault::Error(libc::ENOSPC)),
        ["erofs"] => Ok(Fault::Error(libc::EROFS)),
        ["delay", ms] => ms
            .parse::<u64>()
            .map(|ms| Fault::Delay(Duration::from_millis(ms)))
            .map_err(|_| format!("not a number of milliseconds: {ms}")),
        other => Err(format!("unknown fault {other:?}")),
    }
}

fn command(line: &str, mounts: &[Mounted]) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["status"] => mounts
            .iter()
            .enumerate()
            .map(|(i, m)| {
                format!(
                    "{i} {} {} parked={} injected={}\n",
                    m.mountpoint.display(),
                    m.ctl.get().name(),
                    m.ctl.parked(),
                    m.ctl.injected()
                )
            })
            .collect(),
        ["quit"] => {
            STOP.store(true, Ordering::SeqCst);
            "ok\n".into()
        }
        ["set", which, rest @ ..] => {
            let fault = match parse_fault(rest) {
                Ok(f) => f,
                Err(e) => return format!("error: {e}\n"),
            };
            let targets: Vec<usize> = if *which == "all" {
                (0..mounts.len()).collect()
            } else {
                match which.parse::<usize>() {
                    Ok(i) if i < mounts.len() => vec![i],
                    _ => return format!("error: no mount {which}\n"),
                }
            };
            for i in targets {
                mounts[i].ctl.set(fault);
            }
            "ok\n".into()
        }
        _ => "error: commands are `set N|all FAULT`, `status`, `quit`\n".into(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (control, paths) = match args.as_slice() {
        [flag, sock, rest @ ..] if flag == "--control" && rest.len() >= 2 => {
            (PathBuf::from(sock), rest.to_vec())
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2)
        }
    };
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let backing = PathBuf::from(&paths[0]);
    let mut mounts = Vec::new();
    for mp in &paths[1..] {
        match FaultFs::mount(&backing, &PathBuf::from(mp)) {
            Ok(m) => mounts.push(m),
            Err(e) => {
                eprintln!("faultfs: cannot mount {mp}: {e} (needs /dev/fuse and root)");
                std::process::exit(1)
            }
        }
    }
    let _ = std::fs::remove_file(&control);
    let listener = UnixListener::bind(&control).unwrap_or_else(|e| {
        eprintln!("faultfs: cannot listen on {}: {e}", control.display());
        std::process::exit(1)
    });
    listener.set_nonblocking(true).expect("non-blocking socket");
    println!(
        "faultfs: {} mount(s) of {}; control socket {}",
        mounts.len(),
        backing.display(),
        control.display()
    );
    while !STOP.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut out = match conn.try_clone() {
                    Ok(c) => c,
                    Err(_) => continue,
                };
                for line in BufReader::new(conn).lines().take(100) {
                    let Ok(line) = line else { break };
                    if out.write_all(command(&line, &mounts).as_bytes()).is_err() {
                        break;
                    }
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    drop(mounts); // clears the faults and unmounts
    let _ = std::fs::remove_file(&control);
}
