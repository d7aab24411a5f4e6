//! The `tenure run` command line and process setup shared by the e2e harness ([`crate::Node`])
//! and the fault campaign (`chaos`), so both start nodes the same way.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// `run --node-name … --store … --bind 127.0.0.1:<port> --node-uri http://127.0.0.1:<port>
/// --heartbeat-timeout … --poll-period …`; callers append their own arguments.
pub fn run_args(
    name: &str,
    store: &str,
    port: u16,
    heartbeat_timeout: &str,
    poll_period: &str,
) -> Vec<String> {
    [
        "run",
        "--node-name",
        name,
        "--store",
        store,
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--node-uri",
        &format!("http://127.0.0.1:{port}"),
        "--heartbeat-timeout",
        heartbeat_timeout,
        "--poll-period",
        poll_period,
    ]
    .map(String::from)
    .to_vec()
}

/// Prepares `cmd` to run one node: appends `banner` as a line to the log at `log_path` (the
/// harnesses split the log at it), sends stdout and stderr there, closes stdin, removes every
/// inherited `TENURE_*` variable (the node gets only the configuration given here), sets
/// `NO_COLOR=1` and `env`, and makes the kernel SIGKILL the process when the spawning thread
/// dies, so no node outlives a killed test or campaign.
pub fn prepare<'a>(
    cmd: &mut Command,
    log_path: &Path,
    banner: &str,
    env: impl IntoIterator<Item = &'a (String, String)>,
) {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("open node log");
    let _ = writeln!(log, "{banner}");
    let err = log.try_clone().expect("clone log handle");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TENURE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    die_with_spawner(cmd);
}

/// Makes the kernel SIGKILL the process `cmd` starts when the thread that spawns it dies, so
/// nothing a test starts outlives a killed test.
pub fn die_with_spawner(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            Ok(())
        });
    }
}
