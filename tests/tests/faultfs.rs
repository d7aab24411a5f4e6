//! The fault-injecting filesystem of the chaos campaign (tests/src/faultfs.rs): two mounts of
//! one backing directory exclude each other's flock (without that the campaign would prove
//! nothing), see each other's writes at once, and the faults do what they say: a hang blocks
//! the caller until cleared (and SIGKILL still ends it), errors fail the right operations.
//! Needs /dev/fuse and root (CI runs as root).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tenure_persistence::{DirOptions, DirStore};
use tenure_store::Store;
use tenure_testkit::conformance;
use tenure_tests::faultfs::{Fault, FaultFs, Mounted, is_mounted};
use tenure_tests::wait_until;

/// Two mounts of one backing directory, all inside one temporary directory.
///
/// Field order matters: Rust drops fields in declaration order, so the mounts are unmounted
/// first and only then is the temporary directory removed. The other way round, the removal
/// would walk into the still-mounted `a` and `b` (deleting the backing files through them),
/// fail on the busy mount points and leave a `tenure-faultfs-*` directory behind.
struct Two {
    a: Mounted,
    b: Mounted,
    backing: PathBuf,
    _tmp: tempfile::TempDir,
}

fn two_mounts() -> Two {
    let tmp = tempfile::Builder::new()
        .prefix("tenure-faultfs-")
        .tempdir()
        .unwrap();
    let backing = tmp.path().join("backing");
    let (ma, mb) = (tmp.path().join("a"), tmp.path().join("b"));
    for d in [&backing, &ma, &mb] {
        std::fs::create_dir_all(d).unwrap();
    }
    let a = FaultFs::mount(&backing, &ma).expect("mount a (needs /dev/fuse and root)");
    let b = FaultFs::mount(&backing, &mb).expect("mount b");
    Two {
        a,
        b,
        backing,
        _tmp: tmp,
    }
}

fn try_flock(f: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock on an open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn rw(p: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
        .unwrap()
}

#[test]
fn flock_through_one_mount_excludes_the_other() {
    let t = two_mounts();
    assert!(is_mounted(&t.a.mountpoint) && is_mounted(&t.b.mountpoint));
    let fa = rw(&t.a.mountpoint.join("lease.lock"));
    let fb = rw(&t.b.mountpoint.join("lease.lock"));
    try_flock(&fa, libc::LOCK_EX).expect("A locks");
    let e = try_flock(&fb, libc::LOCK_EX).expect_err("B must not get the lock A holds");
    assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
    let e = try_flock(&fb, libc::LOCK_SH).expect_err("nor a shared one");
    assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
    // A second open through the same mount is a different open file: excluded too.
    let fa2 = rw(&t.a.mountpoint.join("lease.lock"));
    assert!(try_flock(&fa2, libc::LOCK_EX).is_err());
    // And a process on the backing directory itself.
    let raw = rw(&t.backing.join("lease.lock"));
    assert!(try_flock(&raw, libc::LOCK_EX).is_err());

    // Unlock: B gets it, and then A is excluded.
    try_flock(&fa, libc::LOCK_UN).unwrap();
    try_flock(&fb, libc::LOCK_EX).expect("B locks after A unlocked");
    assert!(try_flock(&fa, libc::LOCK_EX).is_err());

    // Closing the file drops the lock (the kernel's RELEASE closes the backing descriptor).
    drop(fb);
    assert!(
        wait_until(Duration::from_secs(2), || try_flock(&fa, libc::LOCK_EX)
            .is_ok()),
        "closing B's file did not drop its lock"
    );
}

#[test]
fn a_killed_holder_releases_its_lock() {
    let t = two_mounts();
    let path = t.a.mountpoint.join("lease.lock");
    drop(rw(&path));
    // A shell opens the file through mount A, locks it (flock(1) on the shared descriptor) and
    // becomes `sleep`, holding the lock until killed. It waits for the lock rather than give up
    // (`-n`): the probe below takes it for an instant, and a holder that tried then would exit.
    let script = format!(
        "exec 9<>'{}' && flock -x 9 && exec sleep 60",
        path.display()
    );
    let mut holder = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let fb = rw(&t.b.mountpoint.join("lease.lock"));
    // Probe without keeping the lock: a probe that got it lets go at once.
    let held_elsewhere = || match try_flock(&fb, libc::LOCK_EX) {
        Ok(()) => {
            try_flock(&fb, libc::LOCK_UN).unwrap();
            false
        }
        Err(e) => e.kind() == ErrorKind::WouldBlock,
    };
    if !wait_until(Duration::from_secs(5), held_elsewhere) {
        holder.kill().unwrap();
        let out = holder.wait_with_output().unwrap();
        panic!(
            "the holder never took the lock: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || try_flock(&fb, libc::LOCK_EX)
            .is_ok()),
        "the lock of a killed holder was not dropped"
    );
}

#[test]
fn writes_through_one_mount_are_read_through_the_other_at_once() {
    let t = two_mounts();
    let fa = rw(&t.a.mountpoint.join("lease.lock"));
    let fb = rw(&t.b.mountpoint.join("lease.lock"));
    for round in 0..20u8 {
        let bytes = vec![round; 8192];
        fa.write_all_at(&bytes, 0).unwrap();
        let mut got = vec![0u8; 8192];
        fb.read_exact_at(&mut got, 0).unwrap();
        assert_eq!(got, bytes, "round {round}: B read stale data");
        // A fresh open sees it too (attributes are not cached).
        let mut again = Vec::new();
        File::open(t.b.mountpoint.join("lease.lock"))
            .unwrap()
            .read_to_end(&mut again)
            .unwrap();
        assert_eq!(again, bytes);
    }
}

#[test]
fn the_directory_store_conformance_suite_passes_across_mounts() {
    let t = two_mounts();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let opts = DirOptions {
        lock_wait: Duration::from_secs(5),
        ..DirOptions::default()
    };
    conformance::run_all_with_handles(&|n| {
        let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sub = format!("s{i}");
        std::fs::create_dir_all(t.backing.join(&sub)).unwrap();
        // Handles alternate between the two mounts, as separate nodes would.
        (0..n)
            .map(|k| {
                let m = if k % 2 == 0 { &t.a } else { &t.b };
                let s = DirStore::open(&m.mountpoint.join(&sub), opts.clone())
                    .expect("the mount check accepts a FUSE mount");
                Arc::new(s) as Arc<dyn Store>
            })
            .collect()
    });
}

/// Starts `cat FILE` (reads through the mount) and returns the child.
fn cat(path: &Path) -> std::process::Child {
    Command::new("cat")
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_hang_blocks_until_cleared_and_sigkill_still_ends_the_caller() {
    let t = two_mounts();
    std::fs::write(t.backing.join("rec.json"), b"hello").unwrap();
    let path = t.a.mountpoint.join("rec.json");

    t.a.ctl.set(Fault::Hang);
    let mut child = cat(&path);
    assert!(
        wait_until(Duration::from_secs(5), || t.a.ctl.parked() > 0),
        "the read never reached the daemon"
    );
    assert_eq!(
        child.try_wait().unwrap(),
        None,
        "cat returned during a hang"
    );
    // The other mount is not affected.
    assert_eq!(
        std::fs::read(t.b.mountpoint.join("rec.json")).unwrap(),
        b"hello"
    );
    // Clearing the fault performs the held-back request.
    t.a.ctl.set(Fault::None);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"hello");

    // SIGKILL of a caller blocked in a hung request ends it without clearing the fault.
    t.a.ctl.set(Fault::Hang);
    let mut child = cat(&path);
    assert!(wait_until(Duration::from_secs(5), || t.a.ctl.parked() > 0));
    child.kill().unwrap();
    let mut exited = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            exited = child.try_wait().unwrap();
            exited.is_some()
        }),
        "a SIGKILLed caller stayed blocked"
    );
    assert_eq!(t.a.ctl.get(), Fault::Hang);
    t.a.ctl.set(Fault::None);

    // A process killed while it holds a file open on the hung mount: its exit closes the file,
    // which is a FUSE request (FLUSH) too; the dying process still gets out.
    let script = format!("exec 9<'{}' && echo open && exec sleep 60", path.display());
    let mut holder = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = [0u8; 5];
    holder.stdout.take().unwrap().read_exact(&mut line).unwrap();
    assert_eq!(&line, b"open\n");
    t.a.ctl.set(Fault::Hang);
    holder.kill().unwrap();
    let mut exited = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            exited = holder.try_wait().unwrap();
            exited.is_some()
        }),
        "a process killed with a file open on a hung mount did not exit"
    );
    t.a.ctl.set(Fault::None);
}

#[test]
fn errors_fail_the_operations_they_name() {
    let t = two_mounts();
    std::fs::write(t.backing.join("rec.json"), b"hello").unwrap();
    let rec = t.a.mountpoint.join("rec.json");

    t.a.ctl.set(Fault::Error(libc::EIO));
    let e = std::fs::read(&rec).expect_err("EIO on reads");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");

    for errno in [libc::ENOSPC, libc::EROFS] {
        t.a.ctl.set(Fault::Error(errno));
        // Reads work; writes, creates, renames fail with the errno.
        assert_eq!(std::fs::read(&rec).unwrap(), b"hello");
        let e = std::fs::write(t.a.mountpoint.join("new.json"), b"x").expect_err("create");
        assert_eq!(e.raw_os_error(), Some(errno), "{e}");
        let e = OpenOptions::new()
            .write(true)
            .open(&rec)
            .expect_err("open for writing");
        assert_eq!(e.raw_os_error(), Some(errno), "{e}");
        let e = std::fs::rename(&rec, t.a.mountpoint.join("moved.json")).expect_err("rename");
        assert_eq!(e.raw_os_error(), Some(errno), "{e}");
        // The other mount writes.
        std::fs::write(t.b.mountpoint.join("b.json"), b"b").unwrap();
    }
    t.a.ctl.set(Fault::Delay(Duration::from_millis(200)));
    let t0 = std::time::Instant::now();
    assert_eq!(std::fs::read(&rec).unwrap(), b"hello");
    assert!(t0.elapsed() >= Duration::from_millis(200));
    t.a.ctl.set(Fault::None);
    assert!(t.a.ctl.injected() > 0);
}

/// A one-line echo server: answers each line it reads with the same line; counts lines.
fn echo_server() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            let seen = Arc::clone(&seen2);
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                for line in BufReader::new(conn).lines() {
                    let Ok(line) = line else { return };
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if w.write_all(format!("{line}\n").as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[test]
fn the_proxy_hangs_drops_and_loses_answers_on_demand() {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::Ordering::SeqCst;
    use tenure_tests::faultfs_proxy::{FaultProxy, NetFault};
    let (upstream, seen) = echo_server();
    let proxy = FaultProxy::start(upstream).unwrap();
    let addr = proxy.endpoint().trim_start_matches("http://").to_string();
    let connect = || {
        let s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let r = BufReader::new(s.try_clone().unwrap());
        (s, r)
    };
    let ask = |s: &mut std::net::TcpStream, r: &mut BufReader<std::net::TcpStream>| {
        s.write_all(b"ping\n").ok()?;
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line),
            _ => None,
        }
    };
    let (mut s, mut r) = connect();
    assert_eq!(ask(&mut s, &mut r).as_deref(), Some("ping\n"));

    // Hang: nothing gets through until cleared, then the request goes on.
    proxy.set(NetFault::Hang);
    s.write_all(b"held\n").unwrap();
    assert!(
        !wait_until(Duration::from_millis(300), || seen.load(SeqCst) > 1),
        "a request got through a hang"
    );
    proxy.set(NetFault::None);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "held\n");

    // Lose responses: the server sees the request, the client gets no answer (closed).
    proxy.set(NetFault::LoseResponses);
    let before = seen.load(SeqCst);
    assert_eq!(ask(&mut s, &mut r), None);
    assert!(wait_until(Duration::from_secs(2), || seen.load(SeqCst) > before));

    // Drop: new connections are closed at once and reach nothing.
    proxy.set(NetFault::Drop);
    let before = seen.load(SeqCst);
    let (mut s, mut r) = connect();
    assert_eq!(ask(&mut s, &mut r), None);
    assert_eq!(seen.load(SeqCst), before);

    proxy.set(NetFault::None);
    let (mut s, mut r) = connect();
    assert_eq!(ask(&mut s, &mut r).as_deref(), Some("ping\n"));
}

#[test]
fn dropping_a_mount_unmounts_it_even_with_a_file_open() {
    let t = two_mounts();
    let open = rw(&t.a.mountpoint.join("held.lock"));
    t.a.ctl.set(Fault::Hang);
    let Two { a, b, _tmp, .. } = t;
    let (pa, pb) = (a.mountpoint.clone(), b.mountpoint.clone());
    drop(a);
    drop(b);
    assert!(!is_mounted(&pa) && !is_mounted(&pb));
    drop(open);
}
