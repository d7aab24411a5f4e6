//! The randomized fault campaign (docs/SAFETY.md): real `tenure run` nodes on one directory
//! store, each node through its own fault-injecting FUSE mount of it (tests/src/faultfs.rs),
//! a random schedule of faults per trial, an observer sampling every node's
//! `GET /v1/server/ha/state` and `X-HA-Epoch` every ~10 ms, and the checker over the history:
//! never two MASTER answers overlapping in time, epochs never go back, every MASTER answer's
//! epoch is a term the store granted to that node (`epochs/<n>.json`, as recorded over the
//! trial: a wipe or rollback deletes some), no epoch number granted twice, and after the last
//! fault a master exists within T + 2p (+ margin; 2T + 5p + 100 ms after a store-memory fault).
//! Besides node, process and storage faults, the store itself misbehaves: it is wiped, an
//! earlier copy of it or of its lease is written back (half the time while the master is
//! paused), and a node's mount of it vanishes.
//!
//! Run it through `scripts/chaos.sh` (it builds, runs as root, and unmounts even after a
//! crash). `chaos --help` lists the options. A violation keeps the trial's history, node logs
//! and store, and prints a one-line reproduction with the trial's seed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tenure_persistence::{ObjOptions, ObjStore};
use tenure_store::{LEASE_KEY, ReadResult, Store};
use tenure_testkit::{azurite, moto};
use tenure_tests::cluster::free_port;
use tenure_tests::faultfs::{Fault, FaultFs, Mounted};
use tenure_tests::faultfs_proxy::{FaultProxy, NetFault};
use tenure_tests::spawn::{prepare, run_args};
use tenure_tests::{Observer, Sample, dur_arg, tenure_bin};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

// ------------------------------------------------------------------------------------------
// A small deterministic generator (splitmix64): a trial's schedule depends only on its seed.

#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn trial_seed(campaign: u64, i: u64) -> u64 {
    let mut r = Rng(campaign ^ i.wrapping_mul(0xa076_1d64_78bd_642f));
    r.next()
}

// ------------------------------------------------------------------------------------------
// Options.

#[derive(Clone)]
struct Opts {
    trials: u64,
    seed: u64,
    trial_seed: Option<u64>,
    jobs: usize,
    nodes: usize,
    out: PathBuf,
    t: Duration,
    p: Duration,
    margin: Duration,
    bin: PathBuf,
    keep_all: bool,
    /// Run a trial again (same seed) when it failed only on availability (`--retry-availability`).
    retry_availability: bool,
    summary: Option<PathBuf>,
    max_minutes: u64,
    /// `--store`: dir, s3 or azure.
    store: StoreKind,
    /// Only these fault kinds (`--faults`); empty: all of the store's kinds.
    only: Vec<Kind>,
}

const USAGE: &str = "usage: chaos [--trials N] [--seed S] [--trial-seed S] [--jobs J] [--nodes N] \
[--out DIR] [--t-ms MS] [--p-ms MS] [--margin-ms MS] [--bin PATH] [--keep-all] [--summary FILE] \
[--max-minutes M] [--store dir|s3|azure] [--faults K,K,…]
  --trials N       trials to run (default 20)
  --seed S         campaign seed (default: from the clock); trial i gets a seed derived from it
  --trial-seed S   run exactly one trial with this seed (the reproduction printed on a violation)
  --jobs J         trials at once, each on its own mounts (default 2)
  --nodes N        nodes per trial (default 3)
  --out DIR        work directory: backing store, mounts, kept trials (default /tmp/tenure-chaos)
  --t-ms, --p-ms   heartbeat timeout T and poll period p (default 1000 and 100)
  --margin-ms MS   slack on the availability bound T + 2p (default 400 or TENURE_TEST_MARGIN_MS)
  --bin PATH       the tenure binary (default: as the e2e tests find it)
  --keep-all       keep every trial's directory, not only failed ones
  --retry-availability  run a trial again, with its seed, when it failed only because a master
                   came late (not on safety); it fails the campaign only if it fails again
  --summary FILE   also write the summary (markdown table) to FILE
  --max-minutes M  stop starting trials after M minutes (default 180)
  --store KIND     dir (default): a directory through one FUSE fault mount per node; s3: a
                   bucket on the S3 server at $TENURE_S3_ENDPOINT (moto, scripts/moto.sh, by
                   default; SeaweedFS with TENURE_S3_SERVER=seaweedfs), azure: a container on
                   Azurite at $TENURE_AZURITE_ENDPOINT (scripts/azurite.sh); an object store is
                   reached through one fault proxy per node (T and p default to 2000 and 200 ms)
  --faults K,K,…   only these faults (the store's weights among them), e.g. wipe,rollback,
                   lease-replay,vanished-mount; names: kill9 restart restart-at-once
                   stop-short stop-long hang
                   hang-all eio enospc erofs slow term switchover ro-namespace net-drop
                   lose-responses wipe rollback lease-replay vanished-mount";

fn parse_u64(s: &str) -> u64 {
    let s = s.trim();
    let r = if let Some(h) = s.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else {
        s.parse()
    };
    r.unwrap_or_else(|_| {
        eprintln!("chaos: not a number: {s}\n{USAGE}");
        std::process::exit(2)
    })
}

fn parse_opts() -> Opts {
    let margin_default = std::env::var("TENURE_TEST_MARGIN_MS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(400);
    let mut o = Opts {
        trials: 20,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        trial_seed: None,
        jobs: 2,
        nodes: 3,
        out: PathBuf::from("/tmp/tenure-chaos"),
        t: Duration::from_millis(1000),
        p: Duration::from_millis(100),
        margin: Duration::from_millis(margin_default),
        bin: PathBuf::new(),
        keep_all: false,
        retry_availability: false,
        summary: None,
        max_minutes: 180,
        only: Vec::new(),
        store: StoreKind::Dir,
    };
    let (mut t_set, mut p_set) = (false, false);
    let mut bin = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let mut val = || {
            i += 1;
            args.get(i).cloned().unwrap_or_else(|| {
                eprintln!("chaos: {a} needs a value\n{USAGE}");
                std::process::exit(2)
            })
        };
        match a {
            "--trials" => o.trials = parse_u64(&val()),
            "--seed" => o.seed = parse_u64(&val()),
            "--trial-seed" => o.trial_seed = Some(parse_u64(&val())),
            "--jobs" => o.jobs = parse_u64(&val()).clamp(1, 8) as usize,
            "--nodes" => o.nodes = parse_u64(&val()).clamp(2, 6) as usize,
            "--out" => o.out = PathBuf::from(val()),
            "--t-ms" => {
                o.t = Duration::from_millis(parse_u64(&val()));
                t_set = true;
            }
            "--p-ms" => {
                o.p = Duration::from_millis(parse_u64(&val()));
                p_set = true;
            }
            "--store" => {
                o.store = match val().as_str() {
                    "dir" => StoreKind::Dir,
                    "s3" => StoreKind::S3,
                    "azure" => StoreKind::Azure,
                    other => {
                        eprintln!("chaos: --store is dir, s3 or azure, not {other}\n{USAGE}");
                        std::process::exit(2)
                    }
                }
            }
            "--margin-ms" => o.margin = Duration::from_millis(parse_u64(&val())),
            "--bin" => bin = Some(PathBuf::from(val())),
            "--keep-all" => o.keep_all = true,
            "--retry-availability" => o.retry_availability = true,
            "--summary" => o.summary = Some(PathBuf::from(val())),
            "--max-minutes" => o.max_minutes = parse_u64(&val()),
            "--faults" => {
                for name in val().split(',').filter(|n| !n.is_empty()) {
                    match Kind::ALL.iter().find(|k| k.name() == name) {
                        Some(k) => o.only.push(*k),
                        None => {
                            eprintln!("chaos: --faults: no fault named {name:?}\n{USAGE}");
                            std::process::exit(2)
                        }
                    }
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            _ => {
                eprintln!("chaos: unknown argument {a}\n{USAGE}");
                std::process::exit(2)
            }
        }
        i += 1;
    }
    o.bin = bin.unwrap_or_else(tenure_bin);
    if o.store.is_object() {
        // moto answers in milliseconds but not always within 100 ms on a loaded machine.
        if !t_set {
            o.t = Duration::from_millis(2000);
        }
        if !p_set {
            o.p = Duration::from_millis(200);
        }
    }
    let dir_only = [
        Kind::Eio,
        Kind::Enospc,
        Kind::Erofs,
        Kind::RoNamespace,
        Kind::VanishedMount,
    ];
    let s3_only = [Kind::NetDrop, Kind::LoseResponses];
    let not_here: &[Kind] = if o.store.is_object() {
        &dir_only
    } else {
        &s3_only
    };
    if let Some(k) = o.only.iter().find(|k| not_here.contains(k)) {
        eprintln!(
            "chaos: --faults {}: not a fault of the {} store\n{USAGE}",
            k.name(),
            o.store.name()
        );
        std::process::exit(2)
    }
    if o.trial_seed.is_some() {
        o.trials = 1;
        o.jobs = 1;
    }
    o
}

// ------------------------------------------------------------------------------------------
// Fault kinds and the schedule.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Kill9,
    Restart,
    RestartAtOnce,
    StopShort,
    StopLong,
    Hang,
    HangAll,
    Eio,
    Enospc,
    Erofs,
    Slow,
    Term,
    Switchover,
    ClockOffset,
    RoNamespace,
    ConcurrentStart,
    NetDrop,
    LoseResponses,
    Wipe,
    Rollback,
    LeaseReplay,
    VanishedMount,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Kill9 => "kill -9 (no restart in the trial)",
            Kind::Restart => "kill -9, restart later (in place: same --state-dir)",
            Kind::RestartAtOnce => "kill -9, restarted at once (systemd Restart=; in place)",
            Kind::StopShort => "SIGSTOP < T, then SIGCONT",
            Kind::StopLong => "SIGSTOP > T, then SIGCONT",
            Kind::Hang => "storage hang (one node)",
            Kind::HangAll => "storage hang (every node: dead server)",
            Kind::Eio => "storage errors EIO",
            Kind::Enospc => "storage errors ENOSPC",
            Kind::Erofs => "read-only store (EROFS, at run time)",
            Kind::Slow => "slow storage (delay per operation near the deadline)",
            Kind::Term => "SIGTERM (graceful), restart later",
            Kind::Switchover => "planned switchover (POST mode=MASTER)",
            Kind::ClockOffset => "node started with its clock far off (libfaketime)",
            Kind::RoNamespace => "node started on a read-only bind mount (own mount namespace)",
            Kind::ConcurrentStart => "concurrent start of every node",
            Kind::NetDrop => "connections to the store dropped (one node)",
            Kind::LoseResponses => "store answers lost after the request was applied (one node)",
            Kind::Wipe => "store wiped (every record deleted), cluster.json written back later",
            Kind::Rollback => {
                "an earlier copy of the whole store written back (half with the master paused)"
            }
            Kind::LeaseReplay => "an earlier lease written back (half with the master paused)",
            Kind::VanishedMount => {
                "the node's store mount vanishes (umount -l in its namespace), mounted again later"
            }
        }
    }

    /// The name `--faults` takes: the variant in kebab case (`lease-replay`).
    fn name(self) -> String {
        let mut out = String::new();
        for (i, c) in format!("{self:?}").chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    const ALL: [Kind; 22] = [
        Kind::Kill9,
        Kind::Restart,
        Kind::RestartAtOnce,
        Kind::StopShort,
        Kind::StopLong,
        Kind::Hang,
        Kind::HangAll,
        Kind::Eio,
        Kind::Enospc,
        Kind::Erofs,
        Kind::Slow,
        Kind::Term,
        Kind::Switchover,
        Kind::ClockOffset,
        Kind::RoNamespace,
        Kind::ConcurrentStart,
        Kind::NetDrop,
        Kind::LoseResponses,
        Kind::Wipe,
        Kind::Rollback,
        Kind::LeaseReplay,
        Kind::VanishedMount,
    ];
}

/// Who a fault hits: the node answering MASTER when it starts (or a random running node).
#[derive(Clone, Copy, Debug)]
enum Target {
    Master,
    Node(usize),
}

#[derive(Clone, Debug)]
struct Event {
    kind: Kind,
    target: Target,
    /// From the end of the previous event's start (ms).
    gap_ms: u64,
    /// How long the fault lasts (ms); 0 for instantaneous ones.
    dur_ms: u64,
    /// Delay per storage operation for `Slow`.
    delay_ms: u64,
    /// `Rollback` and `LeaseReplay`: when non-zero, the master is paused (SIGSTOP) this long,
    /// the copy taken just before the pause is written back near its end, then SIGCONT: the
    /// resumed node finds its own old term in the store while another node holds a later one.
    pause_ms: u64,
}

#[derive(Clone, Debug)]
struct Plan {
    /// Per node: libfaketime setting (FAKETIME value, fake monotonic clocks too).
    clocks: Vec<Option<(String, bool)>>,
    events: Vec<Event>,
    /// Every node runs in its own mount namespace on a bind mount of the store that a
    /// `VanishedMount` fault unmounts (only in trials that have one).
    vanishable: bool,
}

fn plan(seed: u64, nodes: usize, t: Duration, object: bool, only: &[Kind]) -> Plan {
    let mut r = Rng(seed);
    let t_ms = t.as_millis() as u64;
    let mut clocks = vec![None; nodes];
    if r.chance(35) {
        let k = r.below(nodes as u64) as usize;
        let offsets = ["+2h", "-3h", "+1d", "-30m", "+2h x1.005", "-1h x0.995"];
        let off = offsets[r.below(offsets.len() as u64) as usize].to_string();
        clocks[k] = Some((off, r.chance(50)));
    }
    let n_events = r.range(1, 3);
    let mut events = Vec::new();
    for _ in 0..n_events {
        let dir_kinds = [
            (Kind::Kill9, 8),
            (Kind::Restart, 10),
            (Kind::RestartAtOnce, 8),
            (Kind::StopShort, 8),
            (Kind::StopLong, 10),
            (Kind::Hang, 12),
            (Kind::HangAll, 5),
            (Kind::Eio, 8),
            (Kind::Enospc, 5),
            (Kind::Erofs, 6),
            (Kind::Slow, 10),
            (Kind::Term, 6),
            (Kind::Switchover, 8),
            (Kind::RoNamespace, 4),
            (Kind::Wipe, 6),
            (Kind::Rollback, 8),
            (Kind::LeaseReplay, 8),
            (Kind::VanishedMount, 6),
        ];
        let s3_kinds = [
            (Kind::Kill9, 8),
            (Kind::Restart, 10),
            (Kind::RestartAtOnce, 8),
            (Kind::StopShort, 8),
            (Kind::StopLong, 10),
            (Kind::Hang, 12),
            (Kind::HangAll, 5),
            (Kind::NetDrop, 8),
            (Kind::LoseResponses, 10),
            (Kind::Slow, 10),
            (Kind::Term, 6),
            (Kind::Switchover, 8),
            (Kind::Wipe, 6),
            (Kind::Rollback, 8),
            (Kind::LeaseReplay, 8),
        ];
        let all: &[(Kind, u64)] = if object { &s3_kinds } else { &dir_kinds };
        let kinds: Vec<(Kind, u64)> = all
            .iter()
            .copied()
            .filter(|(k, _)| only.is_empty() || only.contains(k))
            .collect();
        let total: u64 = kinds.iter().map(|(_, w)| w).sum();
        let mut pick = r.below(total);
        let mut kind = Kind::Kill9;
        for &(k, w) in &kinds {
            if pick < w {
                kind = k;
                break;
            }
            pick -= w;
        }
        let target = if r.chance(70) {
            Target::Master
        } else {
            Target::Node(r.below(nodes as u64) as usize)
        };
        let dur_ms = match kind {
            Kind::Kill9 | Kind::Switchover | Kind::RoNamespace => 0,
            Kind::Restart | Kind::Term => r.range(0, t_ms),
            Kind::RestartAtOnce => r.range(0, t_ms / 5),
            Kind::StopShort => r.range(t_ms / 10, t_ms * 8 / 10),
            Kind::StopLong => r.range(t_ms * 12 / 10, t_ms * 2),
            Kind::Hang | Kind::HangAll => r.range(t_ms / 5, t_ms * 2),
            Kind::Eio | Kind::Enospc | Kind::Erofs | Kind::Slow => r.range(t_ms / 5, t_ms * 3 / 2),
            Kind::NetDrop | Kind::LoseResponses => r.range(t_ms / 5, t_ms * 3 / 2),
            Kind::ClockOffset | Kind::ConcurrentStart => 0,
            // How long the store stays wiped (until cluster.json is back) or the mount gone.
            Kind::Wipe | Kind::VanishedMount => r.range(0, t_ms * 2),
            Kind::Rollback | Kind::LeaseReplay => 0,
        };
        // Long enough for another node to take over while the master is paused.
        let pause_ms = if matches!(kind, Kind::Rollback | Kind::LeaseReplay) && r.chance(50) {
            r.range(t_ms * 13 / 10, t_ms * 2)
        } else {
            0
        };
        events.push(Event {
            kind,
            target,
            gap_ms: r.range(0, t_ms / 2),
            dur_ms,
            delay_ms: r.range(3, 40),
            pause_ms,
        });
    }
    let vanishable = events.iter().any(|e| e.kind == Kind::VanishedMount);
    Plan {
        clocks,
        events,
        vanishable,
    }
}

// ------------------------------------------------------------------------------------------
// Node processes.

struct Proc {
    name: String,
    port: u16,
    /// The `--store` argument: a path on the node's own mount, or an `s3://` or `az://` URL.
    store: String,
    /// Environment the store needs (the node's own S3 endpoint: its proxy).
    env: Vec<(String, String)>,
    mountpoint: PathBuf,
    log: PathBuf,
    clock: Option<(String, bool)>,
    child: Option<Child>,
    stopped: bool,
    /// Started on a read-only bind mount in its own mount namespace.
    read_only: bool,
    /// `(source, target)`: runs in its own mount namespace with the store directory `source`
    /// bind-mounted on the empty directory `target`, its `--store` (a `VanishedMount` trial).
    bind: Option<(PathBuf, PathBuf)>,
    /// Its bind mount is unmounted at the moment (the namespace of the current process).
    vanished: bool,
    /// Processes that did not die of SIGKILL within 10 s, or exited without being asked to.
    unkillable: Vec<String>,
    /// The current process was asked to stop (SIGTERM) or is expected to refuse to start.
    may_exit: bool,
    /// Starts refused because the store failed at that moment (expected under store faults).
    refusals: u64,
    /// The store was wiped or a mount vanished in this trial: a start refused for want of
    /// `cluster.json` is then expected too.
    store_gone_ok: bool,
}

fn faketime_lib() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

impl Proc {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self, ctx: &Ctx) {
        assert!(self.child.is_none());
        let mut args = run_args(
            &self.name,
            &self.store,
            self.port,
            &dur_arg(ctx.t),
            &dur_arg(ctx.p),
        );
        args.extend([
            "--users".into(),
            ctx.users.display().to_string(),
            "--public-state".into(),
            // Every restart is one in place, as under systemd with the package's state dir.
            "--state-dir".into(),
            self.log
                .parent()
                .expect("the log is in the trial's directory")
                .join("state")
                .display()
                .to_string(),
        ]);
        let mut cmd = if let Some((src, target)) = self.bind.as_ref().filter(|_| !self.read_only) {
            // Its own mount namespace, where the store is a bind mount that can vanish.
            let mut quoted = vec![shell_quote(&ctx.bin.display().to_string())];
            quoted.extend(args.drain(..).map(|a| shell_quote(&a)));
            let script = format!(
                "mount --bind {} {} && exec {}",
                shell_quote(&src.display().to_string()),
                shell_quote(&target.display().to_string()),
                quoted.join(" ")
            );
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .arg(script);
            c
        } else if self.read_only {
            // Its own mount namespace, where its mount of the store is remounted read-only;
            // `sh` execs the node, so the pid is the node's.
            let mut quoted = vec![shell_quote(&ctx.bin.display().to_string())];
            quoted.extend(args.drain(..).map(|a| shell_quote(&a)));
            let script = format!(
                "mount -o remount,bind,ro {} && exec {}",
                shell_quote(&self.mountpoint.display().to_string()),
                quoted.join(" ")
            );
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .arg(script);
            c
        } else {
            let mut c = Command::new(&ctx.bin);
            c.args(&args);
            c
        };
        let banner = format!(
            "=== chaos: starting {} (clock {:?}, read-only {})",
            self.name, self.clock, self.read_only
        );
        prepare(&mut cmd, &self.log, &banner, &self.env);
        if let Some((offset, fake_monotonic)) = &self.clock
            && let Some(lib) = &ctx.faketime
        {
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME", offset)
                .env("FAKETIME_NO_CACHE", "1")
                .env(
                    "FAKETIME_DONT_FAKE_MONOTONIC",
                    if *fake_monotonic { "0" } else { "1" },
                );
        }
        self.child = Some(cmd.spawn().expect("spawn node"));
        self.stopped = false;
        self.vanished = false;
        self.may_exit = self.read_only;
    }

    fn running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                r => {
                    if let Ok(Some(status)) = r
                        && !self.may_exit
                    {
                        if status.code() == Some(1) && self.refused_to_start() {
                            // Started (or restarted) while its store failed: `tenure run`
                            // refuses to start, with the reason — what it should do.
                            self.refusals += 1;
                        } else {
                            self.unkillable.push(format!(
                                "{} exited by itself ({status}) — see its log",
                                self.name
                            ));
                        }
                    }
                    self.child = None;
                    false
                }
            },
        }
    }

    /// The log of the current start ends with `tenure run`'s refusal of the store at start-up:
    /// the store failed its checks or its probe (an S3 conditional-write probe that timed out
    /// three times), or stayed unusable (hung, failing) for the start-up's bounded retries.
    fn refused_to_start(&self) -> bool {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let last = log.rsplit("=== chaos: starting").next().unwrap_or("");
        [
            "tenure run: cannot use store",
            "tenure run: the store (--store) stayed unusable during start-up",
            "tenure run: the store is not usable",
        ]
        .iter()
        .any(|m| last.contains(m))
            || (self.store_gone_ok && last.contains("the store holds no cluster.json"))
    }

    fn signal(&self, sig: libc::c_int) -> Option<Instant> {
        let c = self.child.as_ref()?;
        let at = Instant::now();
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(c.id() as i32, sig) };
        Some(at)
    }

    fn kill9(&mut self) -> Option<Instant> {
        if !self.running() {
            return None;
        }
        if self.stopped {
            self.signal(libc::SIGCONT);
        }
        let at = self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            // Bounded: a process blocked in the kernel could outlive SIGKILL (the fault
            // filesystem fails held-back requests of dying callers, so it should not).
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Ok(None) => {
                        self.unkillable.push(format!(
                            "{} (pid {}) still alive 10 s after SIGKILL",
                            self.name,
                            c.id()
                        ));
                        break;
                    }
                    _ => break,
                }
            }
        }
        self.stopped = false;
        at
    }

    /// Exit code of the last process if it ended by itself (128 + signal for a signal).
    fn exit_code(&mut self) -> Option<i32> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(s)) => Some(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))),
            _ => None,
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

// ------------------------------------------------------------------------------------------
// The store as an operator (or a misbehaving replica) sees it: the backing directory itself, or
// the bucket on the S3 server — never through a node's fault point. The store-memory faults
// (wipe, rollback, lease replay) act here.

/// A copy of every record: key (a path relative to the store root) to bytes.
type Snap = BTreeMap<String, Vec<u8>>;

enum Backing {
    Dir(PathBuf),
    S3(Box<ObjStore>),
}

/// The directory store's lease file and S3's lease key (see tenure_persistence).
const DIR_LEASE: &str = "lease.lock";

impl Backing {
    fn open(
        backing_store: &Path,
        object: Option<(&ObjectServer, &str)>,
    ) -> Result<Backing, String> {
        match object {
            None => Ok(Backing::Dir(backing_store.to_path_buf())),
            Some((server, bucket)) => ObjStore::open(
                &server.url(bucket),
                ObjOptions {
                    timeout: Duration::from_secs(10),
                    use_env: false,
                    config: server.store_config(),
                },
            )
            .map(|s| Backing::S3(Box::new(s)))
            .map_err(|e| e.to_string()),
        }
    }

    fn lease_key(&self) -> &'static str {
        match self {
            Backing::Dir(_) => DIR_LEASE,
            Backing::S3(_) => LEASE_KEY,
        }
    }

    fn keys(&self) -> Vec<String> {
        match self {
            Backing::Dir(root) => {
                let mut out = Vec::new();
                walk_files(root, "", &mut out);
                out
            }
            Backing::S3(st) => ["", "nodes/", "epochs/"]
                .iter()
                .flat_map(|pfx| st.list(pfx).unwrap_or_default())
                .collect(),
        }
    }

    fn read(&self, key: &str) -> Option<Vec<u8>> {
        match self {
            Backing::Dir(root) => std::fs::read(root.join(key)).ok(),
            Backing::S3(st) => match st.read(key) {
                Ok(ReadResult::Present(r)) => Some(r.bytes),
                _ => None,
            },
        }
    }

    /// Writes `bytes` in place, as `cp` does (a directory file keeps its inode, so a node's
    /// open lease file sees the old contents come back).
    fn write(&self, key: &str, bytes: &[u8]) -> Result<(), String> {
        match self {
            Backing::Dir(root) => {
                let path = root.join(key);
                if let Some(parent) = path.parent() {
                    std::fs::DirBuilder::new()
                        .mode(0o700)
                        .recursive(true)
                        .create(parent)
                        .map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
                }
                std::fs::write(&path, bytes).map_err(|e| format!("write {}: {e}", path.display()))
            }
            Backing::S3(st) => st.put(key, bytes).map(|_| ()).map_err(|e| e.to_string()),
        }
    }

    fn delete(&self, key: &str) -> Result<(), String> {
        match self {
            Backing::Dir(root) => std::fs::remove_file(root.join(key)).map_err(|e| e.to_string()),
            Backing::S3(st) => st.delete(key).map_err(|e| e.to_string()),
        }
    }

    fn snapshot(&self) -> Snap {
        self.keys()
            .into_iter()
            .filter_map(|k| self.read(&k).map(|b| (k, b)))
            .collect()
    }

    /// Every record deleted: `rm -rf STORE/*` (directories too), or the prefix emptied.
    fn wipe(&self) -> String {
        match self {
            Backing::Dir(root) => {
                let mut n = 0;
                for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
                    let path = e.path();
                    let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    n += usize::from(r.is_ok());
                }
                format!("removed {n} entries of the store root")
            }
            Backing::S3(_) => {
                let keys = self.keys();
                let failed = keys.iter().filter(|k| self.delete(k).is_err()).count();
                format!("deleted {} objects ({failed} failed)", keys.len())
            }
        }
    }

    /// Writes `snap` back: every record in it with its old bytes, every record not in it
    /// deleted (a snapshot restored over the live store).
    fn restore(&self, snap: &Snap) -> String {
        let mut deleted = 0;
        for k in self.keys() {
            if !snap.contains_key(&k) && self.delete(&k).is_ok() {
                deleted += 1;
            }
        }
        let failed: Vec<String> = snap
            .iter()
            .filter_map(|(k, b)| self.write(k, b).err())
            .collect();
        format!(
            "wrote back {} records, deleted {deleted} newer ones{}",
            snap.len(),
            if failed.is_empty() {
                String::new()
            } else {
                format!(" ({} writes failed: {})", failed.len(), failed.join("; "))
            }
        )
    }

    /// The holder named by every `epochs/<n>.json` record now in the store.
    fn holders(&self) -> BTreeMap<u64, String> {
        let keys: Vec<String> = match self {
            Backing::Dir(root) => std::fs::read_dir(root.join("epochs"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| format!("epochs/{}", e.file_name().to_string_lossy()))
                .collect(),
            Backing::S3(st) => st.list("epochs/").unwrap_or_default(),
        };
        keys.iter()
            .filter_map(|k| {
                let e: u64 = k
                    .strip_prefix("epochs/")?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()?;
                let v: serde_json::Value = serde_json::from_slice(&self.read(k)?).ok()?;
                Some((e, v.get("holder")?.as_str()?.to_string()))
            })
            .collect()
    }
}

fn walk_files(root: &Path, rel: &str, out: &mut Vec<String>) {
    for e in std::fs::read_dir(root.join(rel))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        let key = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        match e.file_type() {
            Ok(t) if t.is_dir() => walk_files(root, &key, out),
            Ok(t) if t.is_file() => out.push(key),
            _ => {}
        }
    }
}

// ------------------------------------------------------------------------------------------
// One trial.

/// What a slot (one trial at a time) owns: one fault point per node — its FUSE mount of the
/// store directory, or its proxy to the S3 server.
struct Slot {
    index: usize,
    mounts: Vec<Mounted>,
    proxies: Vec<FaultProxy>,
}

impl Slot {
    fn points(&self) -> usize {
        self.mounts.len().max(self.proxies.len())
    }

    /// Puts the fault of `kind` on node `k`'s path to the store (`None`: clears it).
    fn set(&self, k: usize, kind: Option<Kind>, delay: Duration) -> String {
        if let Some(m) = self.mounts.get(k) {
            let f = match kind {
                None => Fault::None,
                Some(Kind::Hang | Kind::HangAll) => Fault::Hang,
                Some(Kind::Eio | Kind::NetDrop) => Fault::Error(libc::EIO),
                Some(Kind::Enospc) => Fault::Error(libc::ENOSPC),
                Some(Kind::Erofs) => Fault::Error(libc::EROFS),
                Some(Kind::Slow) => Fault::Delay(delay),
                Some(_) => Fault::None,
            };
            m.ctl.set(f);
            return f.name();
        }
        if let Some(p) = self.proxies.get(k) {
            let f = match kind {
                None => NetFault::None,
                Some(Kind::Hang | Kind::HangAll) => NetFault::Hang,
                Some(Kind::NetDrop | Kind::Eio | Kind::Enospc | Kind::Erofs) => NetFault::Drop,
                Some(Kind::LoseResponses) => NetFault::LoseResponses,
                Some(Kind::Slow) => NetFault::Delay(delay),
                Some(_) => NetFault::None,
            };
            p.set(f);
            return f.name();
        }
        "no such node".into()
    }

    fn clear_all(&self) {
        for k in 0..self.points() {
            self.set(k, None, Duration::ZERO);
        }
    }
}

/// Which store the campaign runs on (`--store`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreKind {
    Dir,
    S3,
    Azure,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            StoreKind::Dir => "dir",
            StoreKind::S3 => "s3",
            StoreKind::Azure => "azure",
        }
    }

    fn is_object(self) -> bool {
        self != StoreKind::Dir
    }

    /// For the summary: the store, and the server behind it.
    fn describe(self) -> String {
        match self {
            StoreKind::Dir => "directory".into(),
            StoreKind::S3 => format!("S3 ({})", moto::server()),
            StoreKind::Azure => "Azure (Azurite)".into(),
        }
    }
}

/// The object store's server: where it is, and how a bucket is made, named and reached on it.
#[derive(Clone, Debug)]
struct ObjectServer {
    kind: StoreKind,
    endpoint: String,
}

impl ObjectServer {
    /// The server of `kind` (`None` for the directory store), from the environment the test
    /// script sets: `$TENURE_S3_ENDPOINT` (or a moto started here), `$TENURE_AZURITE_ENDPOINT`.
    fn find(kind: StoreKind) -> Result<Option<ObjectServer>, String> {
        let endpoint = match kind {
            StoreKind::Dir => return Ok(None),
            StoreKind::S3 => moto::endpoint().map_err(|e| {
                format!("--store s3 needs the S3 server (scripts/moto.sh start): {e}")
            })?,
            StoreKind::Azure => {
                let e = std::env::var("TENURE_AZURITE_ENDPOINT").unwrap_or_default();
                if e.is_empty() {
                    return Err("--store azure needs Azurite: \
                                TENURE_AZURITE_ENDPOINT=$(scripts/azurite.sh start)"
                        .into());
                }
                moto::loopback_addr(&e)?;
                // object_store takes the emulator's address from this variable only, and the
                // runner's own handle on the store (wipes, rollbacks, replays) goes straight
                // to the server; each node gets its proxy's address in its own environment.
                // SAFETY: set before any thread of this process starts.
                unsafe { std::env::set_var("AZURITE_BLOB_STORAGE_URL", &e) };
                e.trim_end_matches('/').to_string()
            }
        };
        Ok(Some(ObjectServer { kind, endpoint }))
    }

    fn url(&self, bucket: &str) -> String {
        match self.kind {
            StoreKind::Azure => format!("az://{bucket}/tenure"),
            _ => format!("s3://{bucket}/tenure"),
        }
    }

    fn create(&self, bucket: &str) -> Result<(), String> {
        match self.kind {
            StoreKind::Azure => azurite::create_container(&self.endpoint, bucket),
            _ => moto::create_bucket(&self.endpoint, bucket),
        }
    }

    /// The environment of a `tenure` process that reaches the server at `endpoint` (the
    /// server itself, or a node's fault proxy in front of it).
    fn env(&self, endpoint: &str) -> Vec<(String, String)> {
        match self.kind {
            StoreKind::Azure => azurite::env(endpoint),
            _ => moto::env(endpoint),
        }
    }

    /// The runner's own settings for the store (no environment but the emulator's URL).
    fn store_config(&self) -> Vec<(String, String)> {
        match self.kind {
            StoreKind::Azure => azurite::store_config(),
            _ => moto::store_config(&self.endpoint),
        }
    }
}

struct Ctx {
    bin: PathBuf,
    users: PathBuf,
    backing: PathBuf,
    trials_dir: PathBuf,
    t: Duration,
    p: Duration,
    margin: Duration,
    faketime: Option<PathBuf>,
    keep_all: bool,
    admin_auth: String,
    /// The object store's server when the store is one (S3 or Azure).
    object: Option<ObjectServer>,
    only: Vec<Kind>,
}

#[derive(Default, Debug)]
struct Outcome {
    seed: u64,
    index: u64,
    faults: BTreeMap<Kind, u64>,
    skipped: u64,
    /// Safety violations (dual master, epoch reuse or regression, epoch not granted).
    safety: Vec<String>,
    /// Availability misses (no master within T + 2p + margin after the last fault).
    availability: Vec<String>,
    /// Failovers measured (fault start to the first MASTER answer of another node, upper bound).
    failovers: Vec<(Kind, Duration)>,
    /// Masters killed and restarted at once: whether the restarted process itself answered
    /// MASTER next (a restart in place), and when, from the kill.
    resumes: Vec<(bool, Duration)>,
    /// Leases taken back by a restart in place (from the nodes' logs).
    takes_back: u64,
    /// Time from the end of the last fault to a master (upper bound).
    recovery: Option<Duration>,
    /// The longest stretch without a MASTER answer in the trial (upper bound).
    longest_gap: Option<Duration>,
    kept: Option<PathBuf>,
    /// Restarts refused by `tenure run` because the store failed at that moment.
    refusals: u64,
    samples: usize,
    took: Duration,
    /// Store-memory faults: (kind, from the end of the fault — cluster.json back, the copy
    /// written back, the mount back — to the first MASTER answer sent after it, upper bound).
    memory_recoveries: Vec<(Kind, Duration)>,
    /// Epoch numbers whose `epochs/<n>.json` named two different holders over the trial.
    regrants: u64,
    /// Availability misses of a first run that passed when run again (`--retry-availability`).
    retried: Vec<String>,
}

fn current_master(obs: &Observer, names: &[String]) -> Option<usize> {
    let h = obs.history();
    let masters: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| h.latest(n).is_some_and(Sample::is_master))
        .map(|(i, _)| i)
        .collect();
    (masters.len() == 1).then(|| masters[0])
}

fn wait_master(obs: &Observer, names: &[String], timeout: Duration) -> Option<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(m) = current_master(obs, names) {
            return Some(m);
        }
        if Instant::now() >= deadline || INTERRUPTED.load(Ordering::SeqCst) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Ends of faults still to undo, in time order.
enum Undo {
    Cont(usize),
    Clear(Vec<usize>),
    Start(usize),
    /// Write a copy back: the whole store (`true`) or only its lease.
    Restore(Snap, bool),
    /// `cluster.json` written back after a wipe.
    WriteCluster(Vec<u8>),
    /// Mount the node's store again in its namespace, if the process (pid) still runs.
    Remount(usize, u32),
}

fn run_trial(ctx: &Ctx, slot: &Slot, index: u64, seed: u64, nodes: usize) -> Outcome {
    let started = Instant::now();
    let plan = plan(seed, nodes, ctx.t, ctx.object.is_some(), &ctx.only);
    let mut r = Rng(seed ^ 0x5eed);
    let mut out = Outcome {
        seed,
        index,
        ..Outcome::default()
    };
    let tdir = ctx.trials_dir.join(format!("{index:05}-{seed:016x}"));
    std::fs::create_dir_all(&tdir).expect("trial dir");
    let sub = format!("t{index:05}-{seed:016x}");
    let backing_store = ctx.backing.join(&sub);
    let bucket = azurite::unique_container(&format!("chaos-{index}"));
    if let Some(server) = &ctx.object {
        if let Err(e) = server.create(&bucket) {
            out.availability
                .push(format!("cannot create the bucket {bucket}: {e}"));
            return out;
        }
    } else {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&backing_store)
            .expect("store dir");
        let _ = std::fs::set_permissions(&backing_store, std::fs::Permissions::from_mode(0o700));
    }
    // The cluster is created once, before any node starts (`tenure run` never creates one),
    // on the store itself rather than through a node's fault mount or proxy.
    let (init_store, init_env) = match &ctx.object {
        Some(server) => (server.url(&bucket), server.env(&server.endpoint)),
        None => (backing_store.display().to_string(), Vec::new()),
    };
    let init = Command::new(&ctx.bin)
        .args([
            "init",
            "--store",
            &init_store,
            "--heartbeat-timeout",
            &dur_arg(ctx.t),
        ])
        .envs(init_env)
        .env_remove("TENURE_STORE")
        .stdin(Stdio::null())
        .output();
    match init {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            out.availability.push(format!(
                "tenure init failed: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ));
            return out;
        }
        Err(e) => {
            out.availability
                .push(format!("cannot run tenure init: {e}"));
            return out;
        }
    }
    slot.clear_all();
    let store_of = |k: usize| -> (String, Vec<(String, String)>) {
        match &ctx.object {
            Some(server) => (server.url(&bucket), server.env(&slot.proxies[k].endpoint())),
            None => (
                slot.mounts[k].mountpoint.join(&sub).display().to_string(),
                Vec::new(),
            ),
        }
    };

    let mut procs: Vec<Proc> = (0..=nodes)
        .map(|k| Proc {
            name: format!("node-{k}"),
            port: free_port(),
            store: store_of(k).0,
            env: store_of(k).1,
            mountpoint: slot
                .mounts
                .get(k)
                .map(|m| m.mountpoint.clone())
                .unwrap_or_default(),
            log: tdir.join(format!("node-{k}.log")),
            clock: plan.clocks.get(k).cloned().flatten(),
            child: None,
            stopped: false,
            read_only: false,
            bind: None,
            vanished: false,
            unkillable: Vec::new(),
            may_exit: false,
            refusals: 0,
            store_gone_ok: false,
        })
        .collect();
    if plan.vanishable {
        for (k, p) in procs[..nodes].iter_mut().enumerate() {
            let target = tdir.join(format!("vanishing-{k}"));
            std::fs::create_dir_all(&target).expect("bind target");
            p.bind = Some((PathBuf::from(&p.store), target.clone()));
            p.store = target.display().to_string();
        }
    }
    let backing = match Backing::open(
        &backing_store,
        ctx.object.as_ref().map(|server| (server, bucket.as_str())),
    ) {
        Ok(b) => b,
        Err(e) => {
            out.availability
                .push(format!("cannot open the store for its faults: {e}"));
            return out;
        }
    };
    // Every epoch record seen over the trial (a wipe or rollback deletes some).
    let mut granted: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let note_granted = |granted: &mut BTreeMap<u64, BTreeSet<String>>| {
        for (e, h) in backing.holders() {
            granted.entry(e).or_default().insert(h);
        }
    };
    let wants_copies = plan
        .events
        .iter()
        .any(|e| matches!(e.kind, Kind::Rollback | Kind::LeaseReplay));
    let mut copies: Vec<Snap> = Vec::new();
    // Ends of store-memory faults, for their recovery times.
    let mut memory_ends: Vec<(Kind, Instant)> = Vec::new();
    let mut memory_used = false;
    let names: Vec<String> = procs[..nodes].iter().map(|p| p.name.clone()).collect();
    let mut obs = Observer::new();
    for p in &procs {
        obs.add(&p.name, &format!("{}{}", p.url(), tenure_tests::STATE_PATH));
    }
    let mut log = String::new();
    let origin = obs.origin();
    let rel = move |t: Instant| t.saturating_duration_since(origin).as_millis();

    // Every node starts at once.
    *out.faults.entry(Kind::ConcurrentStart).or_default() += 1;
    for p in procs[..nodes].iter_mut() {
        if p.clock.is_some() && ctx.faketime.is_some() {
            *out.faults.entry(Kind::ClockOffset).or_default() += 1;
        }
        p.spawn(ctx);
    }
    let settle = ctx.t * 3 + ctx.p * 2 + ctx.margin;
    let first = wait_master(&obs, &names, settle);
    let _ = writeln!(
        log,
        "+{}ms started {nodes} nodes; clocks {:?}; first master {:?}",
        rel(Instant::now()),
        plan.clocks,
        first.map(|m| &names[m])
    );
    if first.is_none() && !INTERRUPTED.load(Ordering::SeqCst) {
        out.availability.push(format!(
            "no single master within {settle:?} of a cold start"
        ));
    }
    if wants_copies {
        copies.push(backing.snapshot());
    }

    // The schedule: start actions in order; undo actions when their time comes.
    let mut undo: Vec<(Instant, Undo, Kind)> = Vec::new();
    let mut last_fault_end = Instant::now();
    // Faults that removed the master while no other fault was active: (kind, when, old master).
    let mut takeovers: Vec<(Kind, Instant, String)> = Vec::new();
    // Masters killed and restarted at once: (when, who).
    let mut resumes: Vec<(Instant, String)> = Vec::new();
    let mut starts: Vec<Instant> = Vec::new();
    let mut at = Instant::now();
    let mut ro_used = false;
    for ev in &plan.events {
        at += Duration::from_millis(ev.gap_ms);
        // Undo what ends before this event starts.
        undo.sort_by_key(|(t, _, _)| *t);
        while let Some(pos) = undo.iter().position(|(t, _, _)| *t <= at) {
            let (t, u, k) = undo.remove(pos);
            sleep_until(t);
            if matches!(u, Undo::Restore(..)) {
                note_granted(&mut granted); // the copy deletes epochs granted since
            }
            let (done, ends_memory_fault) = apply_undo(ctx, slot, &mut procs, &backing, u);
            if ends_memory_fault {
                memory_ends.push((k, Instant::now()));
            }
            let _ = writeln!(log, "+{}ms end {:?}: {done}", rel(Instant::now()), k);
            last_fault_end = last_fault_end.max(Instant::now());
        }
        sleep_until(at);
        if wants_copies {
            // Not a copy of a wiped store (see the paused rollback below).
            let copy = backing.snapshot();
            if copy.contains_key("cluster.json") {
                copies.push(copy);
            }
        }
        let running: Vec<usize> = (0..nodes)
            .filter(|&i| procs[i].running() && !procs[i].stopped)
            .collect();
        let master = current_master(&obs, &names);
        let target = match ev.target {
            Target::Master => master.or_else(|| running.first().copied()),
            Target::Node(i) => Some(i),
        };
        let Some(who) = target else {
            out.skipped += 1;
            continue;
        };
        let alive = (0..nodes).filter(|&i| procs[i].running()).count();
        let now = Instant::now();
        let dur = Duration::from_millis(ev.dur_ms);
        let what: String = match ev.kind {
            Kind::Kill9 | Kind::Restart | Kind::RestartAtOnce | Kind::Term
                if !procs[who].running() || alive <= 1 =>
            {
                out.skipped += 1;
                let _ = writeln!(
                    log,
                    "+{}ms skip {:?} of {} (not running or the last one)",
                    rel(now),
                    ev.kind,
                    procs[who].name
                );
                continue;
            }
            Kind::Kill9 => {
                procs[who].kill9();
                "killed".into()
            }
            Kind::Restart | Kind::RestartAtOnce => {
                procs[who].kill9();
                undo.push((now + dur, Undo::Start(who), ev.kind));
                format!("killed, restart in {dur:?}")
            }
            Kind::Term => {
                procs[who].may_exit = true;
                procs[who].signal(libc::SIGTERM);
                undo.push((now + dur.max(ctx.t), Undo::Start(who), ev.kind));
                "SIGTERM".into()
            }
            Kind::StopShort | Kind::StopLong => {
                if !procs[who].running() || procs[who].stopped {
                    out.skipped += 1;
                    continue;
                }
                procs[who].signal(libc::SIGSTOP);
                procs[who].stopped = true;
                undo.push((now + dur, Undo::Cont(who), ev.kind));
                format!("SIGSTOP for {dur:?}")
            }
            Kind::Hang
            | Kind::Eio
            | Kind::Enospc
            | Kind::Erofs
            | Kind::Slow
            | Kind::NetDrop
            | Kind::LoseResponses => {
                let f = slot.set(who, Some(ev.kind), Duration::from_millis(ev.delay_ms));
                undo.push((now + dur, Undo::Clear(vec![who]), ev.kind));
                format!("{f} for {dur:?}")
            }
            Kind::HangAll => {
                for k in 0..slot.points() {
                    slot.set(k, Some(Kind::HangAll), Duration::ZERO);
                }
                undo.push((
                    now + dur,
                    Undo::Clear((0..slot.points()).collect()),
                    ev.kind,
                ));
                format!("every node's store hangs for {dur:?}")
            }
            Kind::Switchover => {
                let standbys: Vec<usize> = running
                    .iter()
                    .copied()
                    .filter(|&i| Some(i) != master)
                    .collect();
                if standbys.is_empty() {
                    out.skipped += 1;
                    continue;
                }
                let to = standbys[r.below(standbys.len() as u64) as usize];
                let answer = switchover(ctx, &procs[to]);
                format!("POST mode=MASTER to {}: {answer}", procs[to].name)
            }
            Kind::RoNamespace => {
                if ro_used || ctx.object.is_some() {
                    out.skipped += 1;
                    continue;
                }
                ro_used = true;
                let extra = nodes;
                procs[extra].read_only = true;
                procs[extra].spawn(ctx);
                format!("started {} on a read-only bind mount", procs[extra].name)
            }
            Kind::Wipe => {
                note_granted(&mut granted);
                let cluster = backing.read("cluster.json");
                for p in procs.iter_mut() {
                    p.store_gone_ok = true;
                }
                let what = backing.wipe();
                memory_used = true;
                match cluster {
                    Some(bytes) => {
                        undo.push((now + dur, Undo::WriteCluster(bytes), ev.kind));
                        format!("{what}; cluster.json back in {dur:?}")
                    }
                    None => format!("{what}; no cluster.json to write back"),
                }
            }
            Kind::Rollback | Kind::LeaseReplay if ev.pause_ms > 0 => {
                if !procs[who].running() || procs[who].stopped {
                    out.skipped += 1;
                    continue;
                }
                // The copy holds this node's current term; another node takes over while it
                // is paused; the copy comes back just before it resumes.
                let mut copy = backing.snapshot();
                if ev.kind == Kind::Rollback && !copy.contains_key("cluster.json") {
                    // Taken while a wipe is on: writing it back would be a second wipe with no
                    // cluster.json to come back, after which no master is the right answer.
                    out.skipped += 1;
                    continue;
                }
                note_granted(&mut granted);
                if ev.kind == Kind::LeaseReplay {
                    copy.retain(|k, _| k == backing.lease_key());
                }
                procs[who].signal(libc::SIGSTOP);
                procs[who].stopped = true;
                memory_used = true;
                let pause = Duration::from_millis(ev.pause_ms);
                let whole = ev.kind == Kind::Rollback;
                undo.push((now + pause, Undo::Restore(copy, whole), ev.kind));
                undo.push((
                    now + pause + Duration::from_millis(20),
                    Undo::Cont(who),
                    ev.kind,
                ));
                format!(
                    "copied the {}, SIGSTOP for {pause:?}; the copy is written back just before SIGCONT",
                    if whole { "store" } else { "lease" }
                )
            }
            Kind::Rollback | Kind::LeaseReplay => {
                // An earlier copy (the first: right after the cold start), written back now.
                note_granted(&mut granted);
                let pick = r.below(copies.len().saturating_sub(1).max(1) as u64) as usize;
                let Some(copy) = copies.get(pick).cloned() else {
                    out.skipped += 1;
                    continue;
                };
                memory_used = true;
                let whole = ev.kind == Kind::Rollback;
                let what = restore(&backing, &copy, whole);
                memory_ends.push((ev.kind, Instant::now()));
                format!("copy #{pick} of {}: {what}", copies.len())
            }
            Kind::VanishedMount => {
                let (Some((_, target)), Some(pid)) = (
                    procs[who].bind.clone(),
                    procs[who].child.as_ref().map(|c| c.id()),
                ) else {
                    out.skipped += 1;
                    continue;
                };
                if procs[who].vanished || !procs[who].running() {
                    out.skipped += 1;
                    continue;
                }
                for p in procs.iter_mut() {
                    p.store_gone_ok = true;
                }
                memory_used = true;
                let res = nsenter(pid, &["umount", "-l", &target.display().to_string()]);
                procs[who].vanished = res.is_ok();
                undo.push((now + dur, Undo::Remount(who, pid), ev.kind));
                match res {
                    Ok(()) => format!("umount -l of its store mount; mounted again in {dur:?}"),
                    Err(e) => format!("umount -l failed: {e}"),
                }
            }
            Kind::ClockOffset | Kind::ConcurrentStart => unreachable!(),
        };
        *out.faults.entry(ev.kind).or_default() += 1;
        let _ = writeln!(
            log,
            "+{}ms {:?} on {}: {what}",
            rel(now),
            ev.kind,
            procs[who].name
        );
        last_fault_end = last_fault_end.max(Instant::now());
        starts.push(now);
        let own_undo = matches!(
            ev.kind,
            Kind::Restart | Kind::RestartAtOnce | Kind::Term | Kind::StopLong
        );
        let others_active = undo.len() > usize::from(own_undo);
        if matches!(
            ev.kind,
            Kind::Kill9 | Kind::Restart | Kind::StopLong | Kind::Term
        ) && Some(who) == master
            && !others_active
        {
            takeovers.push((ev.kind, now, procs[who].name.clone()));
        }
        if ev.kind == Kind::RestartAtOnce && Some(who) == master && !others_active {
            resumes.push((now, procs[who].name.clone()));
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
    }
    undo.sort_by_key(|(t, _, _)| *t);
    for (t, u, k) in undo.drain(..) {
        sleep_until(t);
        if matches!(u, Undo::Restore(..)) {
            note_granted(&mut granted);
        }
        let (done, ends_memory_fault) = apply_undo(ctx, slot, &mut procs, &backing, u);
        if ends_memory_fault {
            memory_ends.push((k, Instant::now()));
        }
        let _ = writeln!(log, "+{}ms end {:?}: {done}", rel(Instant::now()), k);
        last_fault_end = last_fault_end.max(Instant::now());
    }

    // A mount that could not come back while its store hung comes back now that every fault
    // is cleared.
    for p in procs.iter_mut() {
        if let (true, Some((src, target)), Some(pid)) =
            (p.vanished, p.bind.clone(), p.child.as_ref().map(|c| c.id()))
        {
            let res = nsenter(
                pid,
                &[
                    "mount",
                    "--bind",
                    &src.display().to_string(),
                    &target.display().to_string(),
                ],
            );
            p.vanished = res.is_err();
            let _ = writeln!(
                log,
                "+{}ms {} mounted again after the last fault: {res:?}",
                rel(Instant::now()),
                p.name
            );
            last_fault_end = last_fault_end.max(Instant::now());
        }
    }

    // Recovery: a master within T + 2p (+ margin) of the end of the last fault.
    // After a store-memory fault the nodes treat what they find as a new version (the T
    // rule), and a cautious take answers only after one more poll period, a storage deadline
    // (p here) and 100 ms, and a fresh scan: T + 3p + 100 ms more.
    let bound = if memory_used {
        2 * ctx.t + 5 * ctx.p + Duration::from_millis(100) + ctx.margin
    } else {
        ctx.t + 2 * ctx.p + ctx.margin
    };
    // Wait for a MASTER answer to a request sent after that end (a sample from before it
    // proves nothing about now).
    let wait_deadline = Instant::now() + bound + Duration::from_secs(2);
    let got = loop {
        let h = obs.history();
        if let Some(on) = h.first_master_after(last_fault_end, &[]) {
            break Some(on.node);
        }
        if Instant::now() >= wait_deadline || INTERRUPTED.load(Ordering::SeqCst) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // A few more polls, to catch a second master after the recovery.
    std::thread::sleep(4 * ctx.p);
    let history = obs.stop();
    // The node on a read-only store must have refused to start (that it never answered MASTER
    // is the checker's part).
    if ro_used {
        let code = procs[nodes].exit_code();
        let _ = writeln!(log, "read-only node exit code: {code:?}");
        if !matches!(code, Some(c) if c != 0) {
            out.availability.push(format!(
                "the node started on a read-only store did not refuse to start (exit code {code:?})"
            ));
        }
    }
    for p in procs.iter_mut() {
        p.kill9();
    }
    slot.clear_all();
    for p in &procs {
        out.availability.extend(p.unkillable.iter().cloned());
        out.refusals += p.refusals;
    }
    match history.first_master_after(last_fault_end, &[]) {
        Some(on) => {
            let rec = on.earliest().saturating_duration_since(last_fault_end);
            out.recovery = Some(on.latest().saturating_duration_since(last_fault_end));
            if rec > bound && !on.already_master() {
                out.availability.push(format!(
                    "no master within T + 2p + margin = {bound:?} of the last fault's end (+{}ms): {} answered MASTER no earlier than {rec:?} after it",
                    rel(last_fault_end),
                    on.node
                ));
            }
        }
        // An interrupted trial (ctrl-C) did not wait: nothing to conclude.
        None if INTERRUPTED.load(Ordering::SeqCst) => {}
        None => out.availability.push(format!(
            "no master at all after the last fault's end (+{}ms; waited {:?}; saw {:?})",
            rel(last_fault_end),
            bound + Duration::from_secs(2),
            got
        )),
    }
    for (kind, at, old) in &takeovers {
        // Only when no other fault started before the new master answered.
        let next = starts.iter().copied().find(|s| s > at);
        if let Some(on) = history.first_master_after(*at, &[old])
            && next.is_none_or(|n| on.latest() < n)
        {
            out.failovers
                .push((*kind, on.latest().saturating_duration_since(*at)));
        }
    }
    for (at, old) in &resumes {
        // Back as MASTER itself (restart in place), or another node after a failover.
        let next = starts.iter().copied().find(|s| s > at);
        if let Some(on) = history.first_master_after(*at, &[])
            && next.is_none_or(|n| on.latest() < n)
        {
            out.resumes
                .push((on.node == *old, on.latest().saturating_duration_since(*at)));
        }
    }
    for (kind, end) in &memory_ends {
        let next = starts.iter().copied().find(|s| s > end);
        if let Some(on) = history.first_master_after(*end, &[])
            && next.is_none_or(|n| on.latest() < n)
        {
            out.memory_recoveries
                .push((*kind, on.latest().saturating_duration_since(*end)));
        }
    }
    out.longest_gap = history.longest_no_master_after(
        history
            .samples
            .iter()
            .find(|s| s.is_master())
            .map_or(history.origin, |s| s.sent),
    );
    out.samples = history.samples.len();
    // Every restart in place that took its predecessor's lease back, whatever else happened.
    for p in procs[..nodes].iter() {
        let log = std::fs::read_to_string(&p.log).unwrap_or_default();
        out.takes_back += log
            .matches("standing for election (rank 0): restart in place")
            .count() as u64;
    }

    // Safety: the checker over the whole history, and every MASTER epoch granted to its node.
    for v in history.violations() {
        out.safety.push(v.to_string());
    }
    note_granted(&mut granted);
    for (e, holders) in &granted {
        if holders.len() > 1 {
            out.regrants += 1;
            out.safety.push(format!(
                "epoch {e} was granted twice: epochs/{e}.json named {:?} over the trial",
                holders
            ));
        }
    }
    for v in history.epoch_holder_violations(|e| granted.get(&e).cloned().unwrap_or_default()) {
        out.safety.push(v.to_string());
    }

    let failed = !out.safety.is_empty() || !out.availability.is_empty();
    if failed || ctx.keep_all {
        let mut f = File::create(tdir.join("history.txt")).expect("history file");
        let _ = writeln!(
            f,
            "trial {index} seed {seed:#018x}\nplan: {plan:#?}\n\nevents:\n{log}\nsafety: {:#?}\navailability: {:#?}\n\ntimeline:\n{}",
            out.safety,
            out.availability,
            history.timeline()
        );
        let mut csv = String::from("node,sent_ms,received_ms,answer,epoch\n");
        for s in &history.samples {
            let _ = writeln!(
                csv,
                "{},{},{},{},{}",
                s.node,
                history.rel(s.sent),
                history.rel(s.received),
                s.answer,
                s.epoch.map_or(String::new(), |e| e.to_string())
            );
        }
        let _ = std::fs::write(tdir.join("samples.csv"), csv);
        let _ = copy_dir(&backing_store, &tdir.join("store"));
        out.kept = Some(tdir.clone());
    } else {
        let _ = std::fs::remove_dir_all(&tdir);
    }
    if let Some(server) = &ctx.object {
        let _ = copy_bucket_note(&tdir, &server.url(&bucket), out.kept.is_some());
    } else {
        let _ = std::fs::remove_dir_all(&backing_store);
    }
    out.took = started.elapsed();
    out
}

/// Ends one fault; says what it did, and whether that ended a store-memory fault.
fn apply_undo(
    ctx: &Ctx,
    slot: &Slot,
    procs: &mut [Proc],
    backing: &Backing,
    u: Undo,
) -> (String, bool) {
    match u {
        Undo::Cont(i) => {
            procs[i].signal(libc::SIGCONT);
            procs[i].stopped = false;
            (format!("SIGCONT {}", procs[i].name), false)
        }
        Undo::Clear(points) => {
            for k in &points {
                slot.set(*k, None, Duration::ZERO);
            }
            (
                format!("cleared the store faults of nodes {points:?}"),
                false,
            )
        }
        Undo::Start(i) => {
            if procs[i].running() {
                // A SIGTERMed node that has not exited yet: give it up to T more, then kill.
                let deadline = Instant::now() + ctx.t;
                while procs[i].running() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                procs[i].kill9();
            }
            procs[i].child = None;
            procs[i].spawn(ctx);
            (format!("started {} again", procs[i].name), false)
        }
        Undo::Restore(copy, whole) => (
            format!("copy written back: {}", restore(backing, &copy, whole)),
            true,
        ),
        Undo::WriteCluster(bytes) => match backing.write("cluster.json", &bytes) {
            Ok(()) => ("cluster.json written back".into(), true),
            Err(e) => (format!("cannot write cluster.json back: {e}"), true),
        },
        Undo::Remount(i, pid) => {
            let same = procs[i].child.as_ref().map(|c| c.id()) == Some(pid);
            if !same || !procs[i].vanished {
                return (
                    format!(
                        "{} was restarted meanwhile: its new mount is in place",
                        procs[i].name
                    ),
                    true,
                );
            }
            let Some((src, target)) = procs[i].bind.clone() else {
                return ("no bind mount".into(), true);
            };
            let r = nsenter(
                pid,
                &[
                    "mount",
                    "--bind",
                    &src.display().to_string(),
                    &target.display().to_string(),
                ],
            );
            procs[i].vanished = r.is_err();
            match r {
                Ok(()) => (format!("{}'s store mounted again", procs[i].name), true),
                Err(e) => (
                    format!("cannot mount {}'s store again: {e}", procs[i].name),
                    true,
                ),
            }
        }
    }
}

/// Writes a copy back: the whole store, or only its lease (deleted when the copy has none).
fn restore(backing: &Backing, copy: &Snap, whole: bool) -> String {
    if whole {
        return backing.restore(copy);
    }
    let key = backing.lease_key();
    match copy.get(key) {
        Some(bytes) => match backing.write(key, bytes) {
            Ok(()) => format!("the earlier {key} written back"),
            Err(e) => format!("cannot write {key} back: {e}"),
        },
        None => match backing.delete(key) {
            Ok(()) => format!("{key} deleted (the copy had none)"),
            Err(e) => format!("cannot delete {key}: {e}"),
        },
    }
}

/// Runs a command in the mount namespace of `pid` (the node's own, see `Proc::bind`), for at
/// most 2 s: `mount --bind` looks its source up through the node's fault mount, which may hang
/// at that moment, and the runner must not wait for a fault that only it can clear (it did:
/// both slots of a campaign stuck). A command over time is killed (the fault filesystem fails
/// a dying caller's held-back requests) and reported as failed.
fn nsenter(pid: u32, cmd: &[&str]) -> Result<(), String> {
    let mut child = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "--"])
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("nsenter: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("{} exited with {status}", cmd.join(" "))),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not finish within 2 s (its store hangs?)",
                    cmd.join(" ")
                ));
            }
        }
    }
}

/// On an object store the bucket stays on the server (until it stops): note its URL.
fn copy_bucket_note(tdir: &Path, url: &str, kept: bool) -> std::io::Result<()> {
    if kept {
        std::fs::write(tdir.join("bucket.txt"), format!("{url}\n"))?;
    }
    Ok(())
}

fn switchover(ctx: &Ctx, to: &Proc) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(3)))
        .http_status_as_error(false)
        .build()
        .into();
    match agent
        .post(&format!("{}/v1/server/ha/state", to.url()))
        .header("Authorization", &ctx.admin_auth)
        .content_type("application/x-www-form-urlencoded")
        .send("mode=MASTER")
    {
        Ok(mut r) => format!(
            "{} {}",
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default().trim()
        ),
        Err(e) => format!("failed: {e}"),
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let ft = e.file_type()?;
        if ft.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else if ft.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Set-up: users file, mounts; the campaign loop; the summary.

fn users_file(bin: &Path, dir: &Path) -> PathBuf {
    let mut child = Command::new(bin)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("tenure hash-password");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"s3cret\n")
        .expect("write password");
    let out = child.wait_with_output().expect("hash-password");
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(hash.starts_with("$argon2"), "hash-password gave {hash:?}");
    let users = serde_json::json!({"users": {"admin": {"password": hash, "role": "admin"}}});
    let path = dir.join("users.json");
    std::fs::write(&path, users.to_string()).expect("users file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (c.get(1).copied().unwrap_or(0) as u32) << 8
            | c.get(2).copied().unwrap_or(0) as u32;
        for (i, shift) in [18, 12, 6, 0].iter().enumerate() {
            if i <= c.len() {
                out.push(T[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn pct(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[i])
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("–".into(), |d| format!("{} ms", d.as_millis()))
}

fn main() {
    let o = parse_opts();
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let backing = o.out.join("backing");
    let mnt = o.out.join("mnt");
    let trials_dir = o.out.join("trials");
    for d in [&backing, &mnt, &trials_dir] {
        std::fs::create_dir_all(d).expect("work dirs");
    }
    let _ = std::fs::set_permissions(&backing, std::fs::Permissions::from_mode(0o700));
    let users = users_file(&o.bin, &o.out);
    let faketime = faketime_lib();
    let object = ObjectServer::find(o.store).unwrap_or_else(|e| {
        eprintln!("chaos: {e}");
        std::process::exit(1)
    });
    if faketime.is_none() {
        eprintln!("chaos: libfaketime not found (apt-get install faketime): no clock faults");
    }
    let ctx = Arc::new(Ctx {
        bin: o.bin.clone(),
        users,
        backing: backing.clone(),
        trials_dir,
        t: o.t,
        p: o.p,
        margin: o.margin,
        faketime,
        keep_all: o.keep_all,
        admin_auth: format!("Basic {}", base64("admin:s3cret")),
        object: object.clone(),
        only: o.only.clone(),
    });

    let mut slots = Vec::new();
    for s in 0..o.jobs {
        let mut mounts = Vec::new();
        let mut proxies = Vec::new();
        if let Some(server) = &object {
            let upstream = moto::loopback_addr(&server.endpoint).unwrap_or_else(|e| {
                eprintln!("chaos: {e}");
                std::process::exit(1)
            });
            for _ in 0..=o.nodes {
                proxies.push(FaultProxy::start(upstream).expect("start a fault proxy"));
            }
            slots.push(Slot {
                index: s,
                mounts,
                proxies,
            });
            continue;
        }
        for k in 0..=o.nodes {
            let mp = mnt.join(format!("s{s}-n{k}"));
            std::fs::create_dir_all(&mp).expect("mount point");
            let m = FaultFs::mount(&backing, &mp).unwrap_or_else(|e| {
                eprintln!(
                    "chaos: cannot mount the fault filesystem at {}: {e} (needs /dev/fuse and root)",
                    mp.display()
                );
                std::process::exit(1)
            });
            mounts.push(m);
        }
        slots.push(Slot {
            index: s,
            mounts,
            proxies,
        });
    }
    let seeds: Vec<(u64, u64)> = match o.trial_seed {
        Some(s) => vec![(0, s)],
        None => (0..o.trials).map(|i| (i, trial_seed(o.seed, i))).collect(),
    };
    println!(
        "chaos: {} trial(s), campaign seed {:#018x}, {} at once, {} nodes, T = {:?}, p = {:?}, margin {:?}, binary {}, work dir {}",
        seeds.len(),
        o.seed,
        o.jobs,
        o.nodes,
        o.t,
        o.p,
        o.margin,
        o.bin.display(),
        o.out.display()
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(o.max_minutes * 60);
    let queue = Arc::new(Mutex::new(seeds.into_iter()));
    let (tx, rx) = mpsc::channel::<(usize, Outcome)>();
    let mut threads = Vec::new();
    for slot in slots {
        let (ctx, queue, tx) = (Arc::clone(&ctx), Arc::clone(&queue), tx.clone());
        let nodes = o.nodes;
        let retry = o.retry_availability;
        threads.push(
            std::thread::Builder::new()
                .name(format!("slot-{}", slot.index))
                .spawn(move || {
                    loop {
                        if INTERRUPTED.load(Ordering::SeqCst) || Instant::now() >= deadline {
                            break;
                        }
                        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                        let Some((i, seed)) = next else { break };
                        let mut out = run_trial(&ctx, &slot, i, seed, nodes);
                        // A master late once (a storage stall on the shared disk) is run
                        // again; safety violations never are.
                        if retry && out.safety.is_empty() && !out.availability.is_empty() {
                            let first = std::mem::take(&mut out.availability);
                            let kept = out.kept.take();
                            out = run_trial(&ctx, &slot, i, seed, nodes);
                            if out.safety.is_empty() && out.availability.is_empty() {
                                out.retried = first;
                                if let Some(dir) = kept {
                                    let _ = std::fs::remove_dir_all(dir);
                                }
                            }
                        }
                        if tx.send((slot.index, out)).is_err() {
                            break;
                        }
                    }
                    drop(slot); // unmounts
                })
                .expect("slot thread"),
        );
    }
    drop(tx);

    let mut all: Vec<Outcome> = Vec::new();
    for (slot, out) in rx {
        let bad = !out.safety.is_empty() || !out.availability.is_empty();
        let faults: Vec<String> = out
            .faults
            .iter()
            .filter(|(k, _)| **k != Kind::ConcurrentStart)
            .map(|(k, n)| format!("{k:?}×{n}"))
            .collect();
        println!(
            "trial {:5} seed {:#018x} slot {slot}: {} in {:.1}s, faults [{}], recovery {}, longest gap {}",
            out.index,
            out.seed,
            if bad { "VIOLATION" } else { "ok" },
            out.took.as_secs_f64(),
            faults.join(" "),
            ms(out.recovery),
            ms(out.longest_gap)
        );
        for v in out.safety.iter().chain(&out.availability) {
            println!("    {v}");
        }
        for v in &out.retried {
            println!("    (first run, passed when run again) {v}");
        }
        if bad {
            println!(
                "chaos: VIOLATION in trial {} — reproduce: scripts/chaos.sh --trial-seed {:#018x}{}{}   (history, logs and store kept in {})",
                out.index,
                out.seed,
                match o.store {
                    StoreKind::Dir => String::new(),
                    k => format!(" --store {}", k.name()),
                },
                if o.only.is_empty() {
                    String::new()
                } else {
                    format!(
                        " --faults {}",
                        o.only
                            .iter()
                            .map(|k| k.name())
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                },
                out.kept
                    .as_ref()
                    .map_or("?".into(), |p| p.display().to_string())
            );
        }
        all.push(out);
    }
    for t in threads {
        let _ = t.join();
    }

    let summary = summarize(&o, &all, started.elapsed());
    println!("{summary}");
    if let Some(path) = &o.summary {
        let _ = std::fs::write(path, &summary);
    }
    let safety: usize = all.iter().map(|o| o.safety.len()).sum();
    let avail: usize = all.iter().map(|o| o.availability.len()).sum();
    let done = all.len() as u64;
    let expected = if o.trial_seed.is_some() { 1 } else { o.trials };
    if safety > 0 || avail > 0 {
        println!(
            "chaos: FAILED: {safety} safety violation(s), {avail} availability miss(es) in {done} trial(s)"
        );
        std::process::exit(1);
    }
    if done < expected {
        println!(
            "chaos: INCOMPLETE: {done} of {expected} trials ran (interrupted or --max-minutes)"
        );
        std::process::exit(3);
    }
    println!("chaos: PASSED: {done} trial(s), 0 violations");
}

fn summarize(o: &Opts, all: &[Outcome], took: Duration) -> String {
    let mut s = String::new();
    let trials = all.len();
    let mut faults: BTreeMap<Kind, u64> = BTreeMap::new();
    for out in all {
        for (k, n) in &out.faults {
            *faults.entry(*k).or_default() += n;
        }
    }
    let dual: usize = all
        .iter()
        .flat_map(|o| &o.safety)
        .filter(|v| v.contains("two masters"))
        .count();
    let safety: usize = all.iter().map(|o| o.safety.len()).sum();
    let avail: usize = all.iter().map(|o| o.availability.len()).sum();
    let series = |kinds: &[Kind]| {
        let mut v: Vec<Duration> = all
            .iter()
            .flat_map(|o| o.failovers.iter())
            .filter(|(k, _)| kinds.contains(k))
            .map(|(_, d)| *d)
            .collect();
        v.sort();
        v
    };
    let failovers = series(&[Kind::Kill9, Kind::Restart]);
    let stops = series(&[Kind::StopLong]);
    let mut resumed: Vec<Duration> = all
        .iter()
        .flat_map(|o| o.resumes.iter())
        .filter(|(own, _)| *own)
        .map(|(_, d)| *d)
        .collect();
    resumed.sort();
    let resumes_total: usize = all.iter().map(|o| o.resumes.len()).sum();
    let handovers = series(&[Kind::Term]);
    let mut recov: Vec<Duration> = all.iter().filter_map(|o| o.recovery).collect();
    recov.sort();
    let gap = all.iter().filter_map(|o| o.longest_gap).max();
    let skipped: u64 = all.iter().map(|o| o.skipped).sum();
    let _ = writeln!(
        s,
        "| | |\n| --- | --- |\n| trials | {trials} ({} store; campaign seed {:#018x}; {} nodes each; T = {} ms, p = {} ms; {:.1} min) |",
        o.store.describe(),
        o.seed,
        o.nodes,
        o.t.as_millis(),
        o.p.as_millis(),
        took.as_secs_f64() / 60.0
    );
    let _ = writeln!(s, "| dual-master instants | {dual} |");
    let _ = writeln!(
        s,
        "| leases taken back by a restart in place (any trial, other faults or not) | {} |",
        all.iter().map(|o| o.takes_back).sum::<u64>()
    );
    let _ = writeln!(
        s,
        "| safety violations of any kind (dual master, epoch reused or going back, epoch not granted to the node) | {safety} |"
    );
    let _ = writeln!(
        s,
        "| other failures: no master within T + 2p + {} ms margin after the last fault (2T + 5p + 100 ms + margin after a store-memory fault), a node that exited by itself or outlived SIGKILL, a node on a read-only store that started | {avail} |",
        o.margin.as_millis()
    );
    let _ = writeln!(
        s,
        "| kill -9 of the master and an immediate restart in place (same --state-dir; from the signal to its first MASTER answer, upper bound; no other fault active): median / p95 / worst | {} / {} / {} ({} of {} measured came back as MASTER themselves) |",
        ms(pct(&resumed, 0.5)),
        ms(pct(&resumed, 0.95)),
        ms(resumed.last().copied()),
        resumed.len(),
        resumes_total
    );
    let _ = writeln!(
        s,
        "| failover after kill -9 of the master (from the signal to the first MASTER answer of another node, upper bound; no other fault active): median / p95 / worst | {} / {} / {} ({} measured) |",
        ms(pct(&failovers, 0.5)),
        ms(pct(&failovers, 0.95)),
        ms(failovers.last().copied()),
        failovers.len()
    );
    let _ = writeln!(
        s,
        "| failover after SIGSTOP > T of the master: median / worst | {} / {} ({} measured) |",
        ms(pct(&stops, 0.5)),
        ms(stops.last().copied()),
        stops.len()
    );
    let _ = writeln!(
        s,
        "| handover after SIGTERM of the master: median / worst | {} / {} ({} measured) |",
        ms(pct(&handovers, 0.5)),
        ms(handovers.last().copied()),
        handovers.len()
    );
    let _ = writeln!(
        s,
        "| recovery: end of the last fault to a MASTER answer (upper bound): median / worst | {} / {} |",
        ms(pct(&recov, 0.5)),
        ms(recov.last().copied())
    );
    let _ = writeln!(
        s,
        "| worst unavailability (longest stretch without any MASTER answer, faults included, upper bound) | {} |",
        ms(gap)
    );
    let regressions: usize = all
        .iter()
        .flat_map(|o| &o.safety)
        .filter(|v| v.contains("went back") || v.contains("granted twice"))
        .count();
    let _ = writeln!(
        s,
        "| epoch regressions (a MASTER answer with a lower epoch than an earlier one, or an epoch number granted twice) | {regressions} |"
    );
    for kind in [
        Kind::Wipe,
        Kind::Rollback,
        Kind::LeaseReplay,
        Kind::VanishedMount,
    ] {
        let n: u64 = all.iter().filter_map(|o| o.faults.get(&kind)).sum();
        if n == 0 {
            continue;
        }
        let mut rec: Vec<Duration> = all
            .iter()
            .flat_map(|o| &o.memory_recoveries)
            .filter(|(k, _)| *k == kind)
            .map(|(_, d)| *d)
            .collect();
        rec.sort();
        let bad = all
            .iter()
            .filter(|o| o.faults.contains_key(&kind) && !o.safety.is_empty())
            .count();
        let worst_gap = all
            .iter()
            .filter(|o| o.faults.contains_key(&kind))
            .filter_map(|o| o.longest_gap)
            .max();
        let _ = writeln!(
            s,
            "| {}: trials with a safety violation / end of the fault to a MASTER answer, median / worst / longest time without a master in those trials | {bad} / {} / {} / {} ({n} injected) |",
            kind.label(),
            ms(pct(&rec, 0.5)),
            ms(rec.last().copied()),
            ms(worst_gap)
        );
    }
    let retried: Vec<&String> = all.iter().flat_map(|o| &o.retried).collect();
    let _ = writeln!(
        s,
        "| availability misses that passed when the trial was run again with its seed (`--retry-availability`) | {} |",
        retried.len()
    );
    let refusals: u64 = all.iter().map(|o| o.refusals).sum();
    let _ = writeln!(
        s,
        "| restarts refused by `tenure run` because the store was failing at that moment (expected: exit 1 naming the store and the error) | {refusals} |"
    );
    let _ = writeln!(
        s,
        "| scheduled faults skipped (target not running, or the last node alive) | {skipped} |"
    );
    let _ = writeln!(s, "\n| fault | injected |\n| --- | --- |");
    for k in Kind::ALL {
        let _ = writeln!(
            s,
            "| {} | {} |",
            k.label(),
            faults.get(&k).copied().unwrap_or(0)
        );
    }
    s
}
