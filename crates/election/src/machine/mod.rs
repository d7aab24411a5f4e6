//! The election as a pure state machine (DESIGN §2–3). No I/O, no clock reads: the caller
//! passes the time into every call, performs the storage operations the machine asks for (at
//! most one at a time) and hands back their results.
//!
//! The driving loop is:
//! ```text
//! loop {
//!     while let Some(op) = m.poll_op(now) { perform op; m.handle_op_result(now, result) }
//!     while let Some(ev) = m.poll_event() { act on it (hooks, nudges, replies, exit) }
//!     sleep until m.poll_timeout() or an input arrives; m.handle_timeout(now)
//! }
//! ```
//!
//! Work happens in rounds, one per poll period p: the lease step (a renewal for the master, a
//! read for everyone else, possibly followed by a takeover), the heartbeat, and every few rounds
//! a scan of all node records. A round starts at max(previous start + p, previous end).
//!
//! `Machine` and its inputs and outputs are here; its behaviour is split by the state each part
//! owns:
//!
//! | module | owns |
//! | --- | --- |
//! | [`rules`] | nothing: the pure rank and evidence rules, with table-driven tests |
//! | [`takeover`] | when to take the lease, and the corroboration of an at-once take |
//! | [`lease`] | the lease as last read, the lease held, the term and its deadline V |
//! | [`epochs`] | the highest epoch known anywhere; allocating a new one |
//! | [`peers`] | other nodes' records, bad records, the rank delay |
//! | [`rounds`] | the round timer, the task queue, the one operation in flight |
//! | [`cluster`] | `cluster.json`: the store's identity, T and ρ, `fresh` |
//! | [`startup`] | taking this node's name; the mode check |
//! | [`requests`] | operator requests and their replies |
//! | [`release`] | a graceful release, then idle, exit or disable |
//! | [`report`] | transitions, waits, the snapshot for the HTTP layer |

use crate::clock::Nanos;
use crate::command::CommandError;
use crate::config::{Config, humanize};
use crate::records::OpenError;
use crate::records::{
    self, CLUSTER_KEY, ClusterRecord, EPOCHS_PREFIX, EpochRecord, FORMAT, HeartbeatRecord,
    LeaseRecord,
};
use crate::secret::{Keyring, Verified};
use crate::snapshot::{BadRecord, LeaseView, NodeRow, Snapshot, Transition, Waiting};
use crate::types::{Mode, NodeState};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};
use tenure_store::{LEASE_KEY, ReadResult, StoreError, Version};

mod cluster;
mod epochs;
mod lease;
mod peers;
mod release;
mod report;
mod requests;
mod rounds;
mod rules;
mod startup;
mod takeover;

use epochs::Epochs;
use lease::{Holding, LeaseObs, OwnLease, Seen};
use peers::Tracked;
use release::{AfterRelease, Releasing};
use rounds::{Purpose, Task, WriteKind};
use rules::{
    Candidate, Evidence, Promotion, Released, TakeReason, cautious_wait, rank_of, rank_silence,
    take_released_at_once, takeover_wait,
};
use startup::StartStep;
use takeover::Corroboration;

/// The time as the machine is told it: the protocol clock and, for records only, the wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub mono: Nanos,
    pub wall_ms: i64,
}

/// A storage operation the caller must perform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Read(String),
    Create(String, Vec<u8>),
    Replace(String, Vec<u8>, Version),
    Put(String, Vec<u8>),
    List(String),
    /// List `nodes/` and read every record, as one call.
    ScanNodes,
    /// Read these records as one call (concurrently where the store can); the output is
    /// `Scanned`, without the absent ones.
    ReadMany(Vec<String>),
    Delete(String),
}

impl Op {
    /// A short description for logs (no record bytes).
    pub fn describe(&self) -> String {
        match self {
            Op::Read(k) => format!("read {k}"),
            Op::Create(k, _) => format!("create {k}"),
            Op::Replace(k, _, v) => format!("replace {k} at {v}"),
            Op::Put(k, _) => format!("put {k}"),
            Op::List(p) => format!("list {p}"),
            Op::ScanNodes => "scan nodes/".into(),
            Op::ReadMany(keys) => format!("read {}", keys.join(", ")),
            Op::Delete(k) => format!("delete {k}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpOutput {
    Read(ReadResult),
    Written(Version),
    Listed(Vec<String>),
    Scanned(Vec<(String, ReadResult)>),
    Deleted,
}

pub type OpResult = Result<OpOutput, StoreError>;

/// Requests from the operator (the driver keeps the reply channels, keyed by ticket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    SetMode(Mode),
    SetPriority(i64),
    ClearStates,
    ClearNode(String),
    Nudge,
    Shutdown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    State(NodeState),
    Priority(i64),
    Cleared(Vec<String>),
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Detail an operator needs only when debugging (`RUST_LOG=debug`).
    Debug,
    Info,
    Warn,
    Error,
}

/// The facts of a log line as fields, for JSON logs (`--log-format json`): the lease as this
/// node knew it when it logged the line, and, where the line is about one, the epoch and the
/// reason of a take.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFields {
    /// The epoch of the term this node holds, else of the lease it last read.
    pub lease_epoch: Option<u64>,
    /// The holder of that lease.
    pub lease_holder: Option<String>,
    /// The epoch the line is about (allocated, taken), when it is not the lease's.
    pub epoch: Option<u64>,
    /// Why a take happens (`cold-start`, `expired`, `released`, `switchover`).
    pub reason: Option<&'static str>,
}

/// Effects for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The node changed state. Hooks run for it; the caller reports completion with
    /// [`Machine::handle_hook_done`] and this `hook` ticket.
    Transition {
        from: NodeState,
        to: NodeState,
        epoch: Option<u64>,
        master: Option<String>,
        reason: String,
        hook: u64,
    },
    /// Ask these nodes (base URIs) to read the store now.
    Nudge(Vec<String>),
    Reply {
        ticket: u64,
        result: Result<Reply, CommandError>,
    },
    Log {
        level: Level,
        message: String,
        fields: LogFields,
    },
    /// Stop the process with this code.
    Exit { code: i32, message: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Starting(StartStep),
    Running,
    Exited,
}

pub struct Machine {
    cfg: Config,
    mode: Mode,
    priority: i64,
    phase: Phase,
    cluster: Option<ClusterRecord>,
    /// Base state when not answering MASTER.
    base: NodeState,
    /// The lease this node knows it wrote and believes current, and the term it holds on it.
    holding: Holding,
    obs: Option<LeaseObs>,
    /// Every epoch this node knows of, and the epochs of its own takes (see [`Epochs`]).
    epochs: Epochs,
    /// Forged, replayed or foreign-secret records seen (each logged as an ALERT).
    forged_records: u64,
    /// A `--mode master` start: until this time, a change of a live lease means exit 1.
    master_start_until: Option<Nanos>,
    switchover_request: Option<u64>,
    releasing: Option<Releasing>,
    nodes: BTreeMap<String, Tracked>,
    bad: BTreeMap<String, String>,
    last_scan: Option<Nanos>,
    /// When the last full scan (a listing of `nodes/` and every record) returned; the scans
    /// between only re-read the records already known (see `Task::ReadKnown`).
    last_list: Option<Nanos>,
    /// List `nodes/` at this time, before the next 2T: a known record read absent (cleared
    /// by an operator, say) may be written again by its live node within its H.
    list_soon: Option<Nanos>,
    /// When cluster.json was last re-read (see `start_round`).
    last_cluster_check: Option<Nanos>,
    /// The heartbeat record last written (and when it was sent): a standby writes again
    /// every H or on a change, a master on a change only (its lease carries its liveness).
    hb_written: Option<(Nanos, HeartbeatRecord)>,
    /// This node's first full scan while running nudged the nodes it found, so that they list
    /// `nodes/` at once and know it (their own listings run only every 2T).
    greeted: bool,
    scan_next_round: bool,
    rounds_since_scan: u32,
    tasks: VecDeque<Task>,
    inflight: Option<(Purpose, Nanos)>,
    round_active: bool,
    round_started: Nanos,
    next_round_at: Nanos,
    last_nudge: Option<Nanos>,
    hb_seq: u64,
    startup_attempts: u32,
    storage_errors: u64,
    transitions: VecDeque<Transition>,
    events: VecDeque<Event>,
    next_hook: u64,
    failed_hooks: Vec<u64>,
    pending_clear: Vec<u64>,
    /// Re-sign cluster.json (this record, on this version) with the current secret: it
    /// verified only with the key accepted during a rotation, which is about to be retired.
    pending_cluster: Option<(ClusterRecord, Version)>,
    /// A renewal's outcome is unknown: read the lease before the next renewal.
    settle: bool,
    /// When this node last sent a lease write that would extend or begin a term: a master
    /// renews once R has passed since (see `renewal_due`), and only reads the lease meanwhile.
    renew_sent: Option<Nanos>,
    /// A nudge arrived: start the next round at once.
    nudge_pending: bool,
    /// The lease will have stood still long enough at this time: start a round then.
    election_wake: Option<Nanos>,
    /// A switchover request is on its way into our heartbeat: then nudge this holder.
    nudge_after_heartbeat: Option<String>,
    exit_after_tasks: bool,
    /// Started with `--mode disabled` and not changed since: Brooklyn's lone node, which takes
    /// the lease like `--mode master` so that no master can run beside it. A node disabled at
    /// runtime is not lone: it holds no lease until it is enabled again.
    lone: bool,
    /// What this node waits for, shown in the snapshot (see [`Waiting`]).
    waiting: Option<Waiting>,
    /// The version of cluster.json last read (for the `fresh` claim).
    cluster_version: Option<Version>,
    /// The store no longer shows the cluster this node joined (cluster.json vanished or became
    /// unusable): never a master, never a take, until it is back (DESIGN §3.3).
    lost: Option<String>,
    /// This node has seen a lease in the store (any version, even unreadable): from then on an
    /// absent lease is a version like any other, never a cold start.
    saw_lease: bool,
    /// The corroboration of an at-once take or a re-take: a listing of `epochs/` and a scan of
    /// `nodes/` done after the lease read, keyed by the lease version it judged, with its
    /// verdict once both are in (see `corroborate`).
    corroboration: Corroboration,
    /// The pending corroboration's listing of `epochs/` is in.
    corroboration_listed: bool,
    /// The take in progress is cautious (answers MASTER only after `answer_delay`): the cold
    /// start of a new cluster, and a `--mode master` start taking a released lease it never
    /// saw unreleased.
    cautious_take: bool,
}

const MAX_TRANSITIONS: usize = 200;

const NUDGE_MIN_GAP: Duration = Duration::from_millis(20);

/// The wall-clock time (ms) of the election-clock instant `at`, as far as `now` tells.
fn wall_at(now: Now, at: Nanos) -> i64 {
    let ahead = i64::try_from(at.since(now.mono).as_millis()).unwrap_or(i64::MAX / 2);
    now.wall_ms.saturating_add(ahead)
}

fn chrono_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |d| d.to_rfc3339())
}

impl Machine {
    pub fn new(cfg: Config, now: Now) -> Machine {
        let mode = cfg.mode;
        let priority = cfg.priority;
        // Every mode, `disabled` too, joins the cluster `tenure init` made and claims its name:
        // a disabled node holds the lease and writes its record like any other, so that the
        // other nodes see it.
        let first = StartStep::Cluster;
        let mut m = Machine {
            cfg,
            mode,
            priority,
            phase: Phase::Starting(first),
            cluster: None,
            base: NodeState::Initializing,
            holding: Holding::None,
            obs: None,
            epochs: Epochs::default(),
            forged_records: 0,
            master_start_until: None,
            switchover_request: None,
            releasing: None,
            nodes: BTreeMap::new(),
            bad: BTreeMap::new(),
            last_scan: None,
            last_list: None,
            list_soon: None,
            last_cluster_check: None,
            hb_written: None,
            greeted: false,
            scan_next_round: true,
            rounds_since_scan: 0,
            tasks: VecDeque::new(),
            inflight: None,
            round_active: false,
            round_started: now.mono,
            next_round_at: now.mono,
            last_nudge: None,
            hb_seq: 0,
            startup_attempts: 0,
            storage_errors: 0,
            transitions: VecDeque::new(),
            events: VecDeque::new(),
            next_hook: 1,
            failed_hooks: Vec::new(),
            pending_clear: Vec::new(),
            pending_cluster: None,
            settle: false,
            renew_sent: None,
            nudge_pending: false,
            election_wake: None,
            nudge_after_heartbeat: None,
            exit_after_tasks: false,
            lone: mode == Mode::Disabled,
            waiting: None,
            cluster_version: None,
            lost: None,
            saw_lease: false,
            corroboration: Corroboration::None,
            corroboration_listed: false,
            cautious_take: false,
        };
        m.log(
            Level::Info,
            format!(
                "starting node {} (instance {}) in mode {}: T={} p={} D={} G={}",
                m.cfg.name,
                m.cfg.instance_id,
                m.mode,
                humanize(m.cfg.heartbeat_timeout),
                humanize(m.cfg.poll_period),
                humanize(m.cfg.renew_deadline),
                humanize(m.cfg.demote_grace)
            ),
        );
        m
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// This node's answer at `now`. MASTER only while now < V.
    pub fn state_at(&self, now: Nanos) -> NodeState {
        match self.holding.term() {
            Some(t) if t.announced && now < t.deadline => NodeState::Master,
            _ => self.base,
        }
    }

    /// The epoch of the term this node holds, while it answers MASTER.
    pub fn master_epoch_at(&self, now: Nanos) -> Option<u64> {
        match self.holding.term() {
            Some(t) if t.announced && now < t.deadline => Some(t.epoch),
            _ => None,
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn has_inflight(&self) -> bool {
        self.inflight.is_some()
    }

    /// Timers: the lease deadline V, the demote grace, the next round.
    pub fn handle_timeout(&mut self, now: Now) {
        self.check_deadline(now.mono);
        if let Some(r) = &self.releasing
            && let Some(h) = r.hook
            && now.mono >= r.started + self.cfg.demote_grace
        {
            self.log(
                Level::Warn,
                format!(
                    "demote hook still running after the demote grace {}; writing the release anyway",
                    humanize(self.cfg.demote_grace)
                ),
            );
            self.hook_finished(h, false);
        }
    }

    /// The wall clock moved against CLOCK_BOOTTIME by more than a second: a VM may have been
    /// paused without the guest's clocks advancing. Demote at once (DESIGN §3.2).
    pub fn handle_clock_jump(&mut self, _now: Now, jump_ms: i64) {
        if self.holding.term().is_some() {
            self.demote(format!("the wall clock jumped {jump_ms} ms against the boot clock (VM pause or clock step); demoting at once"),
            );
        }
    }

    /// A hook run for a transition finished (`ok = false`: failed or overran its time limit).
    pub fn handle_hook_done(&mut self, _now: Now, hook: u64, ok: bool) {
        self.hook_finished(hook, ok);
    }

    fn hook_finished(&mut self, hook: u64, ok: bool) {
        if !ok {
            self.failed_hooks.push(hook);
        }
        if let Some(r) = &mut self.releasing
            && r.hook == Some(hook)
        {
            r.hook = None;
            if !ok {
                self.base = NodeState::Failed;
            }
        }
    }

    fn keys(&self) -> Option<&Keyring> {
        self.cfg.keys.as_deref()
    }

    /// Encode a record for `key`, signed when the cluster has a secret.
    fn seal<T: serde::Serialize>(&self, key: &str, rec: &T) -> Vec<u8> {
        records::seal(self.keys(), key, rec)
    }

    /// A record that must not exist if only genuine nodes wrote the store.
    fn alert(&mut self, message: String) {
        self.forged_records += 1;
        self.log(Level::Error, format!("ALERT: {message}"));
    }

    fn cluster_id(&self) -> &str {
        self.cluster.as_ref().map_or("", |c| c.cluster_id.as_str())
    }

    fn log(&mut self, level: Level, message: String) {
        self.log_about(level, None, None, message);
    }

    /// A log line about one epoch, or a take for one reason.
    fn log_about(
        &mut self,
        level: Level,
        epoch: Option<u64>,
        reason: Option<TakeReason>,
        message: String,
    ) {
        let (lease_epoch, lease_holder) = match (self.holding.term(), &self.obs) {
            (Some(t), _) => (Some(t.epoch), Some(self.cfg.name.clone())),
            (None, Some(o)) => o
                .lease()
                .map_or((None, None), |l| (Some(l.epoch), Some(l.holder.clone()))),
            (None, None) => (None, None),
        };
        let fields = LogFields {
            lease_epoch,
            lease_holder,
            epoch,
            reason: reason.map(TakeReason::as_str),
        };
        self.events.push_back(Event::Log {
            level,
            message,
            fields,
        });
    }

    /// A failed storage call. A call refused because an earlier one still hangs (`Busy`) is
    /// the same outage, already logged at WARN when that call timed out: DEBUG, or a hung
    /// store would print a WARN line per call, several per poll.
    fn storage_failed(&mut self, what: &str, e: &StoreError) {
        let level = if matches!(e, StoreError::Busy(_)) {
            Level::Debug
        } else {
            Level::Warn
        };
        self.log(level, format!("{what} failed: {e}"));
    }

    fn reply(&mut self, ticket: u64, result: Result<Reply, CommandError>) {
        self.events.push_back(Event::Reply { ticket, result });
    }

    fn exit(&mut self, code: i32, message: String) {
        if self.phase == Phase::Exited {
            return;
        }
        self.phase = Phase::Exited;
        self.holding.take_term();
        self.tasks.clear();
        self.events.push_back(Event::Exit { code, message });
    }
}
