//! `tenure exec-guard` (internal, started by `tenure run --exec`): the small process between
//! tenure and its `--exec` child that holds its own copy of the lease deadline V, so that the
//! child stops at V even when tenure itself cannot act (frozen by SIGSTOP, killed, wedged) —
//! the idea of sanlock's watchdog daemon.
//!
//! tenure starts it in a session of its own (signals to tenure or tenure's process group do
//! not reach it), with V on its command line; the guard starts `sh -c CMD` in a process group
//! of its own, with the environment it was given, and a parent-death signal (SIGKILL) tied to
//! itself. Its standard input is one end of a Unix socket pair, a channel of lines:
//!
//! - tenure → guard: `D <ns>` a new deadline V (absolute CLOCK_BOOTTIME nanoseconds), sent at
//!   every renewal; `S <ns>` stop now: SIGTERM to the child's group, SIGKILL at `<ns>`.
//! - guard → tenure: `P <pid>` the child started; `X <why> <status>` just before the guard
//!   exits (`why`: [`Ended`], `status`: the raw wait status of the child).
//!
//! The guard sleeps (a CLOCK_BOOTTIME timer, which counts through suspend) until the last
//! deadline it received. When it passes without an extension — tenure demoted, is frozen, or
//! died (end of file on the channel: the last deadline still holds) — the guard sends SIGTERM
//! to the child's process group, SIGKILL at V + G/2, reaps the child and exits; a renewal that
//! arrives after V changes nothing (as in tenure). Either way the group is SIGKILLed once the
//! child has exited, before it is reaped, so no leftover of it outlives the guard. The guard
//! never runs a child without a deadline: the first one comes with its arguments, and one that
//! has already passed starts nothing.

use crate::args::LogFormat;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tenure_election::clock;

/// `tenure exec-guard …`: argv\[1\] when tenure starts its guard.
pub const SUBCOMMAND: &str = "exec-guard";

/// The channel to tenure: standard input, a Unix stream socket.
const CHANNEL: libc::c_int = 0;

/// Why the guard ended (the `X` line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The child exited by itself.
    Exited,
    /// tenure asked for the stop (`S`).
    Stopped,
    /// The last deadline passed without an extension.
    Deadline,
    /// The deadline had passed before the child could start: nothing was started.
    Refused,
    /// `sh` could not be started.
    Failed,
}

impl Ended {
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Exited => "exited",
            Ended::Stopped => "stopped",
            Ended::Deadline => "deadline",
            Ended::Refused => "refused",
            Ended::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Ended> {
        [
            Ended::Exited,
            Ended::Stopped,
            Ended::Deadline,
            Ended::Refused,
            Ended::Failed,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
    }
}

/// What the guard is started with.
pub struct Params {
    pub log: LogFormat,
    /// From the deadline (or the stop) to SIGKILL: G/2.
    pub kill_after: Duration,
    /// V on CLOCK_BOOTTIME, nanoseconds (`u64::MAX`: none yet: the node holds no lease).
    pub deadline: u64,
    pub cmd: String,
}

impl Params {
    /// The arguments after [`SUBCOMMAND`].
    pub fn to_args(&self) -> Vec<String> {
        vec![
            match self.log {
                LogFormat::Text => "text".into(),
                LogFormat::Json => "json".into(),
            },
            self.kill_after.as_nanos().to_string(),
            self.deadline.to_string(),
            self.cmd.clone(),
        ]
    }

    fn parse(a: &[String]) -> Result<Params, String> {
        let [log, kill_after, deadline, cmd] = a else {
            return Err("expected <text|json> <kill-after-ns> <deadline-ns> <command>".into());
        };
        let log = match log.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            o => return Err(format!("bad log format {o:?}")),
        };
        let num = |s: &str, what: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("bad {what} {s:?}: nanoseconds expected"))
        };
        Ok(Params {
            log,
            kill_after: Duration::from_nanos(num(kill_after, "kill-after")?),
            deadline: num(deadline, "deadline")?,
            cmd: cmd.clone(),
        })
    }
}

pub fn main(args: &[String]) -> u8 {
    let p = match Params::parse(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "tenure {SUBCOMMAND}: {e} (an internal command, started by `tenure run --exec`)"
            );
            return 2;
        }
    };
    crate::logging::init(p.log);
    let node = std::env::var("TENURE_NODE").unwrap_or_default();
    let span = tracing::info_span!("exec-guard", node = %node);
    let _in = span.enter();
    guard(p);
    0
}

fn guard(p: Params) {
    if clock::now().0 >= p.deadline {
        tracing::warn!("the lease deadline passed before the --exec child could start");
        report(&format!("X {} 0\n", Ended::Refused.as_str()));
        return;
    }
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(&p.cmd)
        .stdin(Stdio::null())
        .process_group(0);
    // SAFETY: prctl and getppid are async-signal-safe and touch no memory of the parent.
    unsafe {
        c.pre_exec(move || {
            // If the guard dies, so does `sh` (its group is then SIGKILLed by tenure).
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != me {
                return Err(std::io::Error::other(
                    "the guard died before the child started",
                ));
            }
            Ok(())
        });
    }
    let pid = match c.spawn() {
        Ok(child) => child.id() as i32,
        Err(e) => {
            tracing::error!("--exec {:?} could not start: {e}", p.cmd);
            report(&format!("X {} 0\n", Ended::Failed.as_str()));
            return;
        }
    };
    report(&format!("P {pid}\n"));
    let (status, why) = enforce(&p, pid);
    report(&format!("X {} {status}\n", why.as_str()));
}

/// Runs until the child has exited: follows the channel, stops the child at the deadline or on
/// request. Returns the child's raw wait status and why it ended.
fn enforce(p: &Params, pid: i32) -> (libc::c_int, Ended) {
    let timer = Fd::new(
        // SAFETY: plain syscall; the result is checked.
        unsafe {
            libc::timerfd_create(libc::CLOCK_BOOTTIME, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK)
        },
    );
    let pidfd = Fd::new(
        // SAFETY: plain syscall; the result is checked.
        unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int,
    );
    let mut deadline = p.deadline;
    // (SIGKILL time, why) once SIGTERM was sent: a stop is final.
    let mut term: Option<(u64, Ended)> = None;
    let mut killed = false;
    let mut channel_open = true;
    let mut line = Vec::new();
    let unblocked = on_signals();
    loop {
        let now = clock::now().0;
        if term.is_none() && SIGNALLED.load(Ordering::Relaxed) {
            tracing::info!(
                pid,
                "the guard got a stop signal: stopping the --exec child"
            );
            term = Some((
                now.saturating_add(p.kill_after.as_nanos() as u64),
                Ended::Stopped,
            ));
            signal_group(pid, libc::SIGTERM);
        }
        if term.is_none() && now >= deadline {
            let kill_at = deadline.saturating_add(p.kill_after.as_nanos() as u64);
            let late = ms(now.saturating_sub(deadline));
            tracing::warn!(
                pid,
                "the lease deadline passed without a renewal from tenure (demoted, frozen or dead): stopping the --exec child (SIGTERM, SIGKILL {} after the deadline){}",
                humantime::format_duration(p.kill_after),
                if late >= Duration::from_millis(100) {
                    format!(
                        "; noticed {} late (was this host frozen?)",
                        humantime::format_duration(late)
                    )
                } else {
                    String::new()
                }
            );
            term = Some((kill_at, Ended::Deadline));
            signal_group(pid, libc::SIGTERM);
        }
        if let Some((kill_at, why)) = term
            && !killed
            && now >= kill_at
        {
            if why == Ended::Deadline {
                tracing::warn!(
                    pid,
                    "--exec child still runs at its SIGKILL time: killing it"
                );
            }
            signal_group(pid, libc::SIGKILL);
            killed = true;
        }
        if exited(pid) {
            // Leftovers of its group get no second chance; the zombie keeps the group's id
            // from being reused until this is done.
            signal_group(pid, libc::SIGKILL);
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return (status, term.map_or(Ended::Exited, |(_, why)| why));
        }
        let wake = match term {
            None => Some(deadline),
            Some((kill_at, _)) if !killed => Some(kill_at),
            Some(_) => None,
        };
        if let Some(t) = &timer {
            arm(t.0, wake);
        }
        let mut fds = Vec::with_capacity(3);
        if channel_open {
            fds.push(libc::pollfd {
                fd: CHANNEL,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for f in [&timer, &pidfd].into_iter().flatten() {
            fds.push(libc::pollfd {
                fd: f.0,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // Without a timer or a pidfd (old kernels, seccomp), look again every 20 ms.
        let every_20ms = libc::timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        };
        let timeout = if timer.is_some() && pidfd.is_some() {
            std::ptr::null()
        } else {
            &raw const every_20ms
        };
        // The stop signals are blocked except inside ppoll, so one that arrives after the check
        // above interrupts the wait instead of being noticed only at the next wake-up.
        // SAFETY: `fds` is a valid array of pollfd of the given length; `unblocked` is a valid
        // signal set.
        let n = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                timeout,
                &unblocked,
            )
        };
        if n <= 0 {
            continue;
        }
        if let Some(t) = &timer {
            let mut expirations = 0u64;
            // SAFETY: reading 8 bytes into a u64 (non-blocking; clears a timer that fired).
            unsafe { libc::read(t.0, (&raw mut expirations).cast(), 8) };
        }
        if channel_open && fds[0].revents != 0 {
            let mut buf = [0u8; 512];
            // SAFETY: reading into a local buffer of the given size.
            let got = unsafe { libc::read(CHANNEL, buf.as_mut_ptr().cast(), buf.len()) };
            if got == 0
                || (got < 0
                    && !matches!(
                        std::io::Error::last_os_error().raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN)
                    ))
            {
                channel_open = false;
                if term.is_none() {
                    let remaining = ms(deadline.saturating_sub(clock::now().0));
                    tracing::warn!(
                        pid,
                        remaining_ms = remaining.as_millis() as u64,
                        "tenure closed the channel to its guard (exited or killed): the --exec child stops at the last lease deadline, in {}",
                        humantime::format_duration(remaining)
                    );
                }
            }
            for &b in &buf[..got.max(0) as usize] {
                if b != b'\n' {
                    // A line is a few dozen bytes: anything longer is garbage, dropped.
                    if line.len() < 256 {
                        line.push(b);
                    }
                    continue;
                }
                match parse_line(&line) {
                    Some(('D', v)) if term.is_none() => deadline = v,
                    Some(('S', kill_at)) => match &mut term {
                        None => {
                            term = Some((kill_at, Ended::Stopped));
                            signal_group(pid, libc::SIGTERM);
                        }
                        Some((k, _)) => *k = (*k).min(kill_at),
                    },
                    _ => {}
                }
                line.clear();
            }
        }
    }
}

/// Set by SIGTERM, SIGINT or SIGHUP to the guard itself (e.g. systemd's
/// `KillMode=control-group`): stop the child gracefully rather than die and leave it to the
/// parent-death SIGKILL.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::Relaxed);
}

/// Installs the handler and blocks the stop signals (the child is already started: it keeps
/// its own default mask); returns the mask to wait with.
fn on_signals() -> libc::sigset_t {
    // SAFETY: all-zero sigaction and sigset_t are valid and then initialised by sigemptyset;
    // the handler only stores to an atomic. A handler (unlike SIG_IGN) is reset to the default
    // in a child by execve. No SA_RESTART: the signal interrupts ppoll.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = note_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
            libc::sigaddset(&mut set, sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigdelset(&mut old, sig);
        }
        old
    }
}

fn parse_line(l: &[u8]) -> Option<(char, u64)> {
    let l = std::str::from_utf8(l).ok()?;
    let (kind, v) = l.split_once(' ')?;
    let kind = match kind {
        "D" => 'D',
        "S" => 'S',
        _ => return None,
    };
    Some((kind, v.trim().parse().ok()?))
}

fn ms(ns: u64) -> Duration {
    Duration::from_millis(ns / 1_000_000)
}

/// Has the child exited? (Without reaping it.)
fn exited(pid: i32) -> bool {
    // SAFETY: an all-zero siginfo_t is valid; waitid writes into it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child, WNOWAIT leaves it to be reaped.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid is set by waitid (zero when no child has changed state).
    rc != 0 || unsafe { info.si_pid() } != 0
}

/// Arms the timer at the absolute CLOCK_BOOTTIME `at` (disarms it for `None` or "never").
fn arm(fd: libc::c_int, at: Option<u64>) {
    let at = at.filter(|&t| t != u64::MAX).map(|t| t.max(1));
    let value = at.map_or(
        libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        |t| libc::timespec {
            tv_sec: (t / 1_000_000_000) as libc::time_t,
            tv_nsec: (t % 1_000_000_000) as libc::c_long,
        },
    );
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: value,
    };
    // SAFETY: arming our own timerfd with a valid itimerspec.
    unsafe { libc::timerfd_settime(fd, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) };
}

fn signal_group(pgid: i32, sig: libc::c_int) {
    // SAFETY: signalling the child's own process group (pgid = its pid, not yet reaped).
    unsafe { libc::kill(-pgid, sig) };
}

/// One line to tenure; lost if tenure is gone (never SIGPIPE).
fn report(msg: &str) {
    // SAFETY: sending from a valid buffer; a failure is ignored.
    unsafe { libc::send(CHANNEL, msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) };
}

/// A file descriptor closed on drop.
struct Fd(libc::c_int);

impl Fd {
    fn new(fd: libc::c_int) -> Option<Fd> {
        (fd >= 0).then_some(Fd(fd))
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closing a descriptor this struct owns.
        unsafe { libc::close(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip() {
        let p = Params {
            log: LogFormat::Json,
            kill_after: Duration::from_millis(166),
            deadline: u64::MAX,
            cmd: "echo 'a b'; exit 3".into(),
        };
        let q = Params::parse(&p.to_args()).unwrap();
        assert_eq!(q.log, LogFormat::Json);
        assert_eq!(q.kill_after, p.kill_after);
        assert_eq!(q.deadline, u64::MAX);
        assert_eq!(q.cmd, p.cmd);
        assert!(Params::parse(&["text".into()]).is_err());
        assert_eq!(parse_line(b"D 12"), Some(('D', 12)));
        assert_eq!(parse_line(b"S 7"), Some(('S', 7)));
        assert_eq!(parse_line(b"D 1D 2"), None);
        for e in ["exited", "stopped", "deadline", "refused", "failed"] {
            assert_eq!(Ended::parse(e).map(Ended::as_str), Some(e));
        }
    }
}
