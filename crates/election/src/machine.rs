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
    },
    /// Stop the process with this code.
    Exit {
        code: i32,
        message: String,
    },
}

/// What the lease write is for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum WriteKind {
    Renew,
    Take { reason: String },
    Retake,
    Release,
}

#[derive(Clone, Debug)]
enum Purpose {
    ReadCluster,
    /// Re-signing cluster.json with the current secret (start-up, during a rotation).
    CreateCluster(ClusterRecord),
    /// The periodic re-read of cluster.json: the store's identity and the cluster's T and ρ.
    CheckCluster,
    /// Clearing cluster.json's `fresh` flag before the first term (see `ClaimFresh`).
    ClaimFresh(ClusterRecord),
    ReadOwnRecord,
    /// Claiming this node's name: its record created, or replaced on the version watched.
    ClaimName,
    ReadLease,
    ListEpochs,
    CreateEpoch(u64),
    /// Whether an epoch file whose create had an unknown outcome is ours.
    ReadEpoch(u64),
    WriteLease {
        kind: WriteKind,
        record: LeaseRecord,
    },
    Heartbeat,
    Scan,
    ClearList,
    Delete(String),
}

#[derive(Clone, Debug)]
enum Task {
    LeaseStep,
    Heartbeat,
    Scan,
    ListEpochs,
    CheckCluster,
    /// The first term of a store made by `tenure init`: clear `fresh` in cluster.json by a
    /// conditional replace; exactly one node wins and cold-starts at once.
    ClaimFresh,
    /// Continue a takeover with a freshly allocated epoch.
    Take {
        reason: String,
    },
    CreateEpoch {
        epoch: u64,
        reason: String,
    },
    WriteLease {
        kind: WriteKind,
        record: LeaseRecord,
    },
    ClearStates,
    Delete(String),
    ReadEpoch(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum StartStep {
    Cluster,
    /// Watching a foreign instance's record under our name: (version, first seen, and that
    /// record's instance and the highest seq seen of it, when it could be read).
    Identity(Option<(Version, Nanos, Option<InstanceSeq>)>),
    /// Writing our own record conditionally: created if absent, or replaced on this version.
    /// Of two processes started with one name at the same instant, exactly one succeeds.
    Claim(Option<Version>),
    ModeCheck,
}

/// A node record's writer and sequence number: (instance id, seq).
type InstanceSeq = (String, u64);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Starting(StartStep),
    Running,
    /// A lone `--mode disabled` node, or a node disabled at runtime: no storage I/O.
    Idle,
    Exited,
}

/// The lease as this node last read it.
#[derive(Clone, Debug)]
struct LeaseObs {
    /// `None`: absent.
    version: Option<Version>,
    lease: Option<LeaseRecord>,
    /// When a read first returned this version (r in DESIGN §3.3).
    first_returned: Nanos,
    /// The highest epoch this node knew of then. A newer one found before a take means a term
    /// began while we watched: the version we see again may be an old copy written back
    /// (the store lost writes), so the watch starts over.
    floor: u64,
    /// Every node record's sequence number at the first scan after `first_returned`: a record
    /// that says MASTER and moved on since belongs to a node that answered MASTER during the
    /// watch, whatever the lease in the store says.
    seqs: Option<BTreeMap<String, u64>>,
    /// When a read last returned this version. A watch with a gap (this node paused, or its
    /// storage failing) saw nothing meanwhile: under a store that lost writes, the version it
    /// sees again may have been replaced and written back, so the watch starts over.
    last_read: Nanos,
    /// An at-once take of this version was refused by its corroboration: only the T rule
    /// applies to it now.
    no_at_once: bool,
}

/// The lease record this node knows it wrote and believes current.
#[derive(Clone, Debug)]
struct OwnLease {
    version: Version,
    record: LeaseRecord,
}

#[derive(Clone, Debug)]
struct Term {
    epoch: u64,
    /// V: this node answers MASTER only while now < V.
    deadline: Nanos,
    /// A cautious take (see `answer_delay`) answers MASTER only from this instant on; until
    /// then it holds and renews the lease but is not announced (no MASTER answer, no hook).
    from: Nanos,
    announced: bool,
    /// A cautious take announces only after a scan of `nodes/` done since `from` shows no
    /// other node that held this epoch or a later one (a store that lost the writes of a
    /// term just begun shows nothing else of it).
    check_records: bool,
    /// `from` has passed; the announcement waits for that scan (no timer meanwhile).
    awaiting_scan: bool,
}

#[derive(Clone, Debug)]
enum AfterRelease {
    Idle(NodeState),
    Shutdown,
    Disable,
}

#[derive(Clone, Debug)]
struct Releasing {
    successor: Option<String>,
    started: Nanos,
    hook: Option<u64>,
    then: AfterRelease,
    ticket: Option<u64>,
    written: bool,
}

#[derive(Clone, Debug)]
struct Tracked {
    version: Version,
    record: HeartbeatRecord,
    last_change: Nanos,
    modified: Option<SystemTime>,
}

pub struct Machine {
    cfg: Config,
    mode: Mode,
    priority: i64,
    phase: Phase,
    cluster: Option<ClusterRecord>,
    /// Base state when not answering MASTER.
    base: NodeState,
    term: Option<Term>,
    own: Option<OwnLease>,
    obs: Option<LeaseObs>,
    /// Highest epoch this node has seen in any lease, and the highest it saw unreleased.
    max_epoch_seen: u64,
    /// Highest (epoch, renewal) of any authentic lease seen: an older one is a replay.
    max_lease_seen: (u64, u64),
    /// Forged, replayed or foreign-secret records seen (each logged as an ALERT).
    forged_records: u64,
    last_unreleased_seen: Option<u64>,
    /// Whether `epochs/` holds anything (None: not listed yet).
    epochs_nonempty: Option<bool>,
    max_epoch_file: u64,
    /// The last epoch this instance allocated (see `reusable_epoch`).
    allocated_epoch: Option<u64>,
    /// Don't take a released lease of this epoch at once (we released it ourselves).
    yielded_epoch: Option<u64>,
    /// A `--mode master` start: until this time, a change of a live lease means exit 1.
    master_start_until: Option<Nanos>,
    switchover_request: Option<u64>,
    releasing: Option<Releasing>,
    nodes: BTreeMap<String, Tracked>,
    bad: BTreeMap<String, String>,
    last_scan: Option<Nanos>,
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
    /// A nudge arrived: start the next round at once.
    nudge_pending: bool,
    /// The lease will have stood still long enough at this time: start a round then.
    election_wake: Option<Nanos>,
    /// A switchover request is on its way into our heartbeat: then nudge this holder.
    nudge_after_heartbeat: Option<String>,
    exit_after_tasks: bool,
    disable_after_tasks: bool,
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
    /// Epochs reported by records of other clusters (a wiped store's old nodes): a new term
    /// is numbered above them too, so the fencing token never goes back.
    foreign_max_epoch: u64,
    /// The highest epoch other nodes of this cluster report in their records.
    records_max_epoch: u64,
    /// The corroboration of an at-once take or a re-take: a listing of `epochs/` and a scan of
    /// `nodes/` done after the lease read, keyed by the lease version it judged, with its
    /// verdict once both are in (see `corroborate`).
    corroboration: Corroboration,
    /// The pending corroboration's listing of `epochs/` is in.
    corroboration_listed: bool,
    /// The epoch of a create that failed or whose outcome is unknown: the next attempt uses
    /// it again (see `on_create_epoch`).
    tried_epoch: Option<u64>,
    /// The take in progress is cautious (answers MASTER only after `answer_delay`): the cold
    /// start of a new cluster, and a `--mode master` start taking a released lease it never
    /// saw unreleased.
    cautious_take: bool,
    /// The reason of a held, not yet announced term.
    promote_reason: String,
    generation: u64,
}

/// See `Machine::corroboration`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Corroboration {
    None,
    Pending(Option<Version>),
    /// With the time it was complete: evidence is used only while fresh (see
    /// `corroboration_for`).
    Done(Option<Version>, Evidence, Nanos),
}

/// What a fresh listing of `epochs/` and scan of `nodes/` showed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Evidence {
    /// The highest epoch anywhere (files, records, leases seen).
    newest: u64,
    /// Another node whose record changed since this lease version was first read and says
    /// MASTER: it believes it holds a term the store does not show.
    live_master: Option<(String, Option<u64>)>,
}

impl Evidence {
    /// Whether acting on a lease of `epoch` contradicts nothing: no newer epoch than `floor`
    /// anywhere and no live master elsewhere. `Err` says what contradicts it.
    fn allows(&self, epoch: u64, floor: u64) -> Result<(), String> {
        if let Some((name, e)) = &self.live_master {
            return Err(format!(
                "node {name} reports MASTER{} in a record written since",
                e.map_or(String::new(), |e| format!(" at epoch {e}"))
            ));
        }
        if self.newest > epoch.max(floor) {
            return Err(format!(
                "epoch {} exists in epochs/ or a node's record, above the lease's epoch {epoch}",
                self.newest
            ));
        }
        Ok(())
    }
}

const MAX_TRANSITIONS: usize = 200;
const NUDGE_MIN_GAP: Duration = Duration::from_millis(20);

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
            term: None,
            own: None,
            obs: None,
            max_epoch_seen: 0,
            max_lease_seen: (0, 0),
            allocated_epoch: None,
            forged_records: 0,
            last_unreleased_seen: None,
            epochs_nonempty: None,
            max_epoch_file: 0,
            yielded_epoch: None,
            master_start_until: None,
            switchover_request: None,
            releasing: None,
            nodes: BTreeMap::new(),
            bad: BTreeMap::new(),
            last_scan: None,
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
            nudge_pending: false,
            election_wake: None,
            nudge_after_heartbeat: None,
            exit_after_tasks: false,
            disable_after_tasks: false,
            waiting: None,
            cluster_version: None,
            lost: None,
            saw_lease: false,
            foreign_max_epoch: 0,
            records_max_epoch: 0,
            corroboration: Corroboration::None,
            corroboration_listed: false,
            tried_epoch: None,
            cautious_take: false,
            promote_reason: String::new(),
            generation: 1,
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

    // ----- queries -------------------------------------------------------------------------

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// This node's answer at `now`. MASTER only while now < V.
    pub fn state_at(&self, now: Nanos) -> NodeState {
        match &self.term {
            Some(t) if t.announced && now < t.deadline => NodeState::Master,
            _ => self.base,
        }
    }

    /// The epoch of the term this node holds, while it answers MASTER.
    pub fn master_epoch_at(&self, now: Nanos) -> Option<u64> {
        match &self.term {
            Some(t) if t.announced && now < t.deadline => Some(t.epoch),
            _ => None,
        }
    }

    /// When the caller must call [`Machine::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        let mut t: Option<Nanos> = None;
        let mut consider = |x: Nanos| t = Some(t.map_or(x, |t| t.min(x)));
        if let Some(term) = &self.term {
            consider(term.deadline);
            if !term.announced && !term.awaiting_scan {
                consider(term.from);
            }
        }
        if let Some(r) = &self.releasing
            && r.hook.is_some()
        {
            consider(r.started + self.cfg.demote_grace);
        }
        match self.phase {
            Phase::Exited | Phase::Idle => {}
            _ => {
                // While a release waits for its demote hook, rounds are suspended: only the
                // grace deadline above may wake the machine.
                let waiting_release = self.releasing.as_ref().is_some_and(|r| !r.written);
                if self.inflight.is_none() && self.tasks.is_empty() && !waiting_release {
                    consider(self.next_round_at);
                }
            }
        }
        t
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn has_inflight(&self) -> bool {
        self.inflight.is_some()
    }

    // ----- inputs --------------------------------------------------------------------------

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
        if self.term.is_some() {
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
                self.bump();
            }
        }
    }

    pub fn handle_request(&mut self, now: Now, ticket: u64, req: Request) {
        if matches!(self.phase, Phase::Exited) {
            self.reply(ticket, Err(CommandError::ShuttingDown));
            return;
        }
        match req {
            Request::Nudge => self.nudge(now.mono),
            Request::SetPriority(p) => {
                let prev = self.priority;
                self.priority = p;
                self.bump();
                self.log(Level::Info, format!("priority changed from {prev} to {p}"));
                self.reply(ticket, Ok(Reply::Priority(prev)));
            }
            Request::SetMode(mode) => self.set_mode(now, ticket, mode),
            Request::ClearStates => {
                if self.phase != Phase::Running {
                    self.reply(
                        ticket,
                        Err(CommandError::Conflict("the node is not running".into())),
                    );
                    return;
                }
                self.pending_clear.push(ticket);
                self.tasks.push_back(Task::ClearStates);
            }
            Request::ClearNode(name) => {
                if self.phase != Phase::Running {
                    self.reply(
                        ticket,
                        Err(CommandError::Conflict("the node is not running".into())),
                    );
                    return;
                }
                if crate::types::validate_node_name(&name).is_err() {
                    self.reply(
                        ticket,
                        Err(CommandError::BadRequest(format!(
                            "no such node name {name:?}"
                        ))),
                    );
                    return;
                }
                if self.current_master_name(now.mono).as_deref() == Some(name.as_str()) {
                    self.reply(
                        ticket,
                        Err(CommandError::Conflict(format!(
                            "{name} is the master; its record is never cleared"
                        ))),
                    );
                    return;
                }
                self.tasks.push_back(Task::Delete(name));
                self.reply(ticket, Ok(Reply::Done));
            }
            Request::Shutdown => self.shutdown(now, Some(ticket)),
        }
    }

    fn set_mode(&mut self, now: Now, ticket: u64, mode: Mode) {
        let prev = self.state_at(now.mono);
        if self.phase != Phase::Running {
            self.reply(
                ticket,
                Err(CommandError::Conflict(format!(
                    "the node is {prev}; its mode can be changed once it is running"
                ))),
            );
            return;
        }
        if self.releasing.is_some() {
            self.reply(
                ticket,
                Err(CommandError::Conflict(
                    "a release is already in progress".into(),
                )),
            );
            return;
        }
        let is_master = self.term.is_some();
        match mode {
            Mode::Master => {
                if is_master {
                    self.reply(ticket, Ok(Reply::State(prev)));
                    return;
                }
                // A planned switchover: ask the holder (through our record, which it reads when
                // nudged) to hand over to us. One-shot: the mode stays auto.
                self.mode = Mode::Auto;
                if self.base == NodeState::Failed {
                    self.base = NodeState::Standby;
                }
                match self.obs.as_ref().and_then(|o| o.lease.clone()) {
                    Some(l) if !l.released => {
                        self.switchover_request = Some(l.epoch);
                        self.log(
                            Level::Info,
                            format!(
                                "asking {} (epoch {}) to hand over to this node",
                                l.holder, l.epoch
                            ),
                        );
                        // Write the request now; nudge the holder once it is in the store, so
                        // the scan the nudge triggers finds it.
                        self.tasks.push_back(Task::Heartbeat);
                        if !l.holder_uri.is_empty() {
                            self.nudge_after_heartbeat = Some(l.holder_uri.clone());
                        }
                    }
                    _ => {
                        self.log(Level::Info, "promotion requested and no live master is known: standing for election".into());
                    }
                }
                self.scan_next_round = true;
                self.bump();
                self.reply(ticket, Ok(Reply::State(prev)));
            }
            Mode::Disabled => {
                self.mode = Mode::Disabled;
                self.bump();
                if is_master {
                    self.start_release(
                        now.mono,
                        None,
                        AfterRelease::Disable,
                        Some(ticket),
                        "disabled by the operator",
                    );
                } else {
                    self.disable(now);
                    self.reply(ticket, Ok(Reply::State(prev)));
                }
            }
            m => {
                self.mode = m;
                self.switchover_request = None;
                self.base = m.idle_state();
                self.bump();
                if is_master && m != Mode::Auto {
                    self.start_release(
                        now.mono,
                        None,
                        AfterRelease::Idle(m.idle_state()),
                        Some(ticket),
                        "demoted by the operator",
                    );
                } else {
                    self.reply(ticket, Ok(Reply::State(prev)));
                }
            }
        }
    }

    fn disable(&mut self, now: Now) {
        let from = self.state_at(now.mono);
        self.base = NodeState::Failed;
        self.term = None;
        self.tasks.clear();
        // One last heartbeat so the others see FAILED, then no more I/O.
        self.tasks.push_back(Task::Heartbeat);
        self.disable_after_tasks = true;
        self.transition(
            from,
            NodeState::Failed,
            None,
            "disabled by the operator: no more polling".into(),
        );
    }

    fn shutdown(&mut self, now: Now, ticket: Option<u64>) {
        if self.releasing.is_some() {
            if let Some(r) = &mut self.releasing {
                r.then = AfterRelease::Shutdown;
            }
            if let Some(t) = ticket {
                self.reply(t, Ok(Reply::Done));
            }
            return;
        }
        match self.phase {
            Phase::Running if self.term.is_some() => {
                self.start_release(
                    now.mono,
                    None,
                    AfterRelease::Shutdown,
                    None,
                    "shutting down",
                );
                if let Some(t) = ticket {
                    self.reply(t, Ok(Reply::Done));
                }
            }
            Phase::Running => {
                let from = self.state_at(now.mono);
                self.base = NodeState::Terminated;
                self.tasks.clear();
                self.tasks.push_back(Task::Heartbeat);
                self.exit_after_tasks = true;
                self.transition(from, NodeState::Terminated, None, "shutting down".into());
                if let Some(t) = ticket {
                    self.reply(t, Ok(Reply::Done));
                }
            }
            _ => {
                if let Some(t) = ticket {
                    self.reply(t, Ok(Reply::Done));
                }
                self.exit(0, "shut down".into());
            }
        }
    }

    fn nudge(&mut self, now: Nanos) {
        if self.phase != Phase::Running {
            return;
        }
        let earliest = self
            .last_nudge
            .map_or(now, |l| (l + NUDGE_MIN_GAP).max(now));
        self.last_nudge = Some(earliest);
        self.scan_next_round = true;
        // A round in progress may have read the store before the change we are told about:
        // run another one as soon as it ends.
        self.nudge_pending = true;
        if earliest < self.next_round_at {
            self.next_round_at = earliest;
        }
    }

    // ----- the op cycle --------------------------------------------------------------------

    /// The next storage operation to perform, if any. At most one is outstanding: after an
    /// `Op` is returned, nothing more is returned until its result is handled.
    pub fn poll_op(&mut self, now: Now) -> Option<Op> {
        self.check_deadline(now.mono);
        if self.inflight.is_some() {
            return None;
        }
        loop {
            match &self.phase {
                Phase::Exited | Phase::Idle => return None,
                Phase::Starting(step) => {
                    if now.mono < self.next_round_at {
                        return None;
                    }
                    let step = step.clone();
                    return Some(self.start_op(now, step));
                }
                Phase::Running => {}
            }
            if let Some(op) = self.release_op(now) {
                return Some(op);
            }
            if self.releasing.as_ref().is_some_and(|r| !r.written) {
                // Waiting for the demote hook.
                return None;
            }
            if let Some(task) = self.tasks.pop_front() {
                if let Some(op) = self.task_op(now, task) {
                    return Some(op);
                }
                continue;
            }
            if self.exit_after_tasks {
                self.exit(0, "shut down".into());
                return None;
            }
            if self.disable_after_tasks {
                self.disable_after_tasks = false;
                self.phase = Phase::Idle;
                return None;
            }
            if self.round_active {
                self.round_active = false;
                let normal = (self.round_started + self.cfg.poll_period).max(now.mono);
                self.next_round_at = if self.nudge_pending {
                    self.last_nudge.map_or(now.mono, |l| l.max(now.mono))
                } else {
                    match self.election_wake.take() {
                        Some(w) if w < normal => w.max(now.mono),
                        _ => normal,
                    }
                };
            }
            if now.mono < self.next_round_at {
                return None;
            }
            self.start_round(now);
        }
    }

    fn start_round(&mut self, now: Now) {
        self.nudge_pending = false;
        self.round_active = true;
        self.round_started = now.mono;
        self.tasks.push_back(Task::LeaseStep);
        self.tasks.push_back(Task::Heartbeat);
        self.rounds_since_scan += 1;
        if self.scan_next_round || self.rounds_since_scan >= self.scan_every() {
            self.scan_next_round = false;
            self.tasks.push_back(Task::Scan);
            // As often as the scan: is the store still this cluster's, with the same T and ρ?
            self.tasks.push_back(Task::CheckCluster);
        }
    }

    /// Scan all node records often enough that `/ha/states` and election ranks are fresh
    /// within T/4, but not every poll (n nodes reading n records every p is O(n²)).
    fn scan_every(&self) -> u32 {
        let p = self.cfg.poll_period.as_nanos().max(1);
        ((self.cfg.heartbeat_timeout.as_nanos() / 4 / p) as u32).clamp(1, 10)
    }

    fn issue(&mut self, now: Now, purpose: Purpose, op: Op) -> Op {
        self.inflight = Some((purpose, now.mono));
        op
    }

    fn start_op(&mut self, now: Now, step: StartStep) -> Op {
        match step {
            StartStep::Cluster => match self.pending_cluster.take() {
                Some((rec, version)) => {
                    let bytes = self.seal(CLUSTER_KEY, &rec);
                    let op = Op::Replace(CLUSTER_KEY.into(), bytes, version);
                    self.issue(now, Purpose::CreateCluster(rec), op)
                }
                None => self.issue(now, Purpose::ReadCluster, Op::Read(CLUSTER_KEY.into())),
            },
            StartStep::Identity(_) => {
                let key = records::node_key(&self.cfg.name);
                self.issue(now, Purpose::ReadOwnRecord, Op::Read(key))
            }
            StartStep::Claim(version) => {
                let key = records::node_key(&self.cfg.name);
                let rec = self.heartbeat_record(now);
                let bytes = self.seal(&key, &rec);
                let op = match version {
                    None => Op::Create(key, bytes),
                    Some(v) => Op::Replace(key, bytes, v),
                };
                self.issue(now, Purpose::ClaimName, op)
            }
            StartStep::ModeCheck => {
                if matches!(self.mode, Mode::Master | Mode::Disabled)
                    && self.obs.as_ref().is_some_and(|o| o.version.is_none())
                    && self.epochs_nonempty.is_none()
                {
                    return self.issue(now, Purpose::ListEpochs, Op::List(EPOCHS_PREFIX.into()));
                }
                self.issue(now, Purpose::ReadLease, Op::Read(LEASE_KEY.into()))
            }
        }
    }

    fn task_op(&mut self, now: Now, task: Task) -> Option<Op> {
        match task {
            Task::LeaseStep => {
                if self.term.is_some() && self.settle {
                    return Some(self.issue(now, Purpose::ReadLease, Op::Read(LEASE_KEY.into())));
                }
                if let Some(term) = &self.term {
                    let own = self.own.clone().expect("a master knows its lease");
                    let mut rec = own.record.clone();
                    rec.renew_seq += 1;
                    rec.written_at_ms = now.wall_ms;
                    rec.holder_uri = self.cfg.uri.clone();
                    debug_assert_eq!(rec.epoch, term.epoch);
                    let bytes = self.seal(LEASE_KEY, &rec);
                    return Some(self.issue(
                        now,
                        Purpose::WriteLease {
                            kind: WriteKind::Renew,
                            record: rec,
                        },
                        Op::Replace(LEASE_KEY.into(), bytes, own.version),
                    ));
                }
                if let Some(own) = self.retake_candidate() {
                    // Our own lease is still current as far as the store tells: corroborate
                    // that first (a rolled-back store shows its old self here).
                    let key = Some(own.version.clone());
                    let epoch = own.record.epoch;
                    match self
                        .corroboration_for(&key, now.mono)
                        .map(|ev| ev.allows(epoch, epoch))
                    {
                        Some(Ok(())) => {}
                        Some(Err(why)) => {
                            self.log(
                                Level::Error,
                                format!("not re-taking this node's own lease (epoch {epoch}): {why}; the store may have rolled back"),
                            );
                            self.own = None;
                            return Some(self.issue(
                                now,
                                Purpose::ReadLease,
                                Op::Read(LEASE_KEY.into()),
                            ));
                        }
                        None => {
                            self.corroborate(key);
                            return Some(self.issue(
                                now,
                                Purpose::ReadLease,
                                Op::Read(LEASE_KEY.into()),
                            ));
                        }
                    }
                    let mut rec = own.record.clone();
                    rec.renew_seq += 1;
                    rec.written_at_ms = now.wall_ms;
                    let bytes = self.seal(LEASE_KEY, &rec);
                    return Some(self.issue(
                        now,
                        Purpose::WriteLease {
                            kind: WriteKind::Retake,
                            record: rec,
                        },
                        Op::Replace(LEASE_KEY.into(), bytes, own.version),
                    ));
                }
                Some(self.issue(now, Purpose::ReadLease, Op::Read(LEASE_KEY.into())))
            }
            Task::Heartbeat => {
                let rec = self.heartbeat_record(now);
                let key = records::node_key(&self.cfg.name);
                let bytes = self.seal(&key, &rec);
                Some(self.issue(now, Purpose::Heartbeat, Op::Put(key, bytes)))
            }
            Task::Scan => Some(self.issue(now, Purpose::Scan, Op::ScanNodes)),
            Task::CheckCluster => {
                Some(self.issue(now, Purpose::CheckCluster, Op::Read(CLUSTER_KEY.into())))
            }
            Task::ClaimFresh => {
                let (Some(c), Some(v)) = (self.cluster.clone(), self.cluster_version.clone())
                else {
                    return None;
                };
                let rec = ClusterRecord { fresh: false, ..c };
                let bytes = self.seal(CLUSTER_KEY, &rec);
                Some(self.issue(
                    now,
                    Purpose::ClaimFresh(rec),
                    Op::Replace(CLUSTER_KEY.into(), bytes, v),
                ))
            }
            Task::ListEpochs => {
                Some(self.issue(now, Purpose::ListEpochs, Op::List(EPOCHS_PREFIX.into())))
            }
            Task::Take { reason } => {
                // Allocate on what the store shows now: after a pause the evidence is stale.
                let version = self.obs.as_ref().and_then(|o| o.version.clone());
                if self.corroboration_for(&version, now.mono).is_none() {
                    // Behind the listing and the scan (queued now, or already).
                    self.corroborate(version);
                    self.tasks.push_back(Task::Take { reason });
                    return None;
                }
                if let Some(epoch) = self.reusable_epoch() {
                    // Our earlier attempt allocated this epoch and no lease has used it: try
                    // again with it rather than burning a new epoch file on every attempt.
                    let record = self.fresh_lease(epoch, now);
                    return self.task_op(
                        now,
                        Task::WriteLease {
                            kind: WriteKind::Take { reason },
                            record,
                        },
                    );
                }
                // Allocate the epoch: 1 + the highest known anywhere.
                let lease_epoch = self
                    .obs
                    .as_ref()
                    .and_then(|o| o.lease.as_ref())
                    .map_or(0, |l| l.epoch);
                let highest = lease_epoch.max(self.highest_epoch_known());
                // An earlier create whose outcome is unknown (or that failed) is tried again
                // with the same number, even if a listing since showed it: no epoch is burnt
                // on a failure (the conflict then tells whether the file is ours).
                let others = lease_epoch
                    .max(self.max_epoch_seen)
                    .max(self.records_max_epoch)
                    .max(self.foreign_max_epoch);
                if let Some(n) = self.tried_epoch
                    && n > others
                    && self.max_epoch_file <= n
                {
                    return self.task_op(now, Task::CreateEpoch { epoch: n, reason });
                }
                if highest >= records::MAX_EPOCH {
                    self.log(
                        Level::Error,
                        format!(
                            "no epoch left to allocate: {} is the highest tenure uses ({}), so this cluster cannot elect a master; stop every node, remove {} (garbage, or a writer exhausting the range) and restart them",
                            records::epoch_key(highest),
                            records::MAX_EPOCH,
                            records::epoch_key(highest)
                        ),
                    );
                    return None;
                }
                self.task_op(
                    now,
                    Task::CreateEpoch {
                        epoch: highest + 1,
                        reason,
                    },
                )
            }
            Task::CreateEpoch { epoch, reason } => {
                let prev = self.obs.as_ref().and_then(|o| o.lease.clone());
                let rec = EpochRecord {
                    format: FORMAT,
                    cluster_id: self.cluster_id().to_string(),
                    epoch,
                    holder: self.cfg.name.clone(),
                    instance_id: self.cfg.instance_id.clone(),
                    started_at_ms: now.wall_ms,
                    previous: prev.as_ref().map(|l| l.epoch),
                    previous_holder: prev.as_ref().map(|l| l.holder.clone()),
                    reason: reason.clone(),
                };
                let lease = self.fresh_lease(epoch, now);
                self.tasks.push_front(Task::WriteLease {
                    kind: WriteKind::Take { reason },
                    record: lease,
                });
                let key = records::epoch_key(epoch);
                let bytes = self.seal(&key, &rec);
                Some(self.issue(now, Purpose::CreateEpoch(epoch), Op::Create(key, bytes)))
            }
            Task::WriteLease { kind, mut record } => {
                record.written_at_ms = now.wall_ms;
                let bytes = self.seal(LEASE_KEY, &record);
                let op = match self.obs.as_ref().and_then(|o| o.version.clone()) {
                    Some(v) => Op::Replace(LEASE_KEY.into(), bytes, v),
                    None => Op::Create(LEASE_KEY.into(), bytes),
                };
                Some(self.issue(now, Purpose::WriteLease { kind, record }, op))
            }
            Task::ClearStates => Some(self.issue(
                now,
                Purpose::ClearList,
                Op::List(records::NODES_PREFIX.into()),
            )),
            Task::Delete(name) => {
                let key = records::node_key(&name);
                Some(self.issue(now, Purpose::Delete(name), Op::Delete(key)))
            }
            Task::ReadEpoch(epoch) => Some(self.issue(
                now,
                Purpose::ReadEpoch(epoch),
                Op::Read(records::epoch_key(epoch)),
            )),
        }
    }

    /// This node's heartbeat record, with the next sequence number.
    fn heartbeat_record(&mut self, now: Now) -> HeartbeatRecord {
        self.hb_seq += 1;
        HeartbeatRecord {
            format: FORMAT,
            cluster_id: self.cluster_id().to_string(),
            name: self.cfg.name.clone(),
            instance_id: self.cfg.instance_id.clone(),
            seq: self.hb_seq,
            status: self.state_at(now.mono),
            mode: self.mode,
            priority: self.priority,
            app_version: self.cfg.app_version.clone(),
            uri: self.cfg.uri.clone(),
            local_timestamp_ms: now.wall_ms,
            epoch: self.master_epoch_at(now.mono),
            switchover_request: self.switchover_request,
            poll_period_ms: Some(self.cfg.poll_period.as_millis() as u64),
            max_epoch: Some(self.highest_term_known()).filter(|&e| e > 0),
            heartbeat_timeout_ms: Some(self.cfg.heartbeat_timeout.as_millis() as u64),
        }
    }

    /// The highest epoch of a term this node knows of (in a lease, or reported by a record):
    /// what its heartbeat reports. Epoch files alone are not terms (a take may have failed).
    fn highest_term_known(&self) -> u64 {
        self.max_epoch_seen
            .max(self.foreign_max_epoch)
            .max(self.records_max_epoch)
            .max(self.term.as_ref().map_or(0, |t| t.epoch))
    }

    /// The highest epoch this node knows of: in leases, `epochs/`, and every record it read
    /// (this cluster's and, from a wiped store's old nodes, other clusters').
    fn highest_epoch_known(&self) -> u64 {
        self.max_epoch_seen
            .max(self.max_epoch_file)
            .max(self.foreign_max_epoch)
            .max(self.records_max_epoch)
            .max(self.term.as_ref().map_or(0, |t| t.epoch))
    }

    /// During a release: once the hook is done, write the released lease.
    fn release_op(&mut self, now: Now) -> Option<Op> {
        let r = self.releasing.as_ref()?;
        if r.written || r.hook.is_some() {
            return None;
        }
        let successor = r.successor.clone();
        let Some(own) = self.own.clone() else {
            self.finish_release("the lease was not ours any more");
            return None;
        };
        let mut rec = own.record.clone();
        rec.renew_seq += 1;
        rec.released = true;
        rec.successor = successor;
        rec.written_at_ms = now.wall_ms;
        let bytes = self.seal(LEASE_KEY, &rec);
        if let Some(r) = &mut self.releasing {
            r.written = true;
        }
        Some(self.issue(
            now,
            Purpose::WriteLease {
                kind: WriteKind::Release,
                record: rec,
            },
            Op::Replace(LEASE_KEY.into(), bytes, own.version),
        ))
    }

    /// The result of the operation last returned by [`Machine::poll_op`].
    pub fn handle_op_result(&mut self, now: Now, result: OpResult) {
        let Some((purpose, started)) = self.inflight.take() else {
            return;
        };
        if let Err(e) = &result
            && !matches!(e, StoreError::Conflict(_))
        {
            self.storage_errors += 1;
            self.bump();
        }
        match purpose {
            Purpose::ReadCluster => self.on_read_cluster(now, result),
            Purpose::CreateCluster(rec) => self.on_create_cluster(now, rec, result),
            Purpose::CheckCluster => self.on_check_cluster(now, result),
            Purpose::ClaimFresh(rec) => self.on_claim_fresh(now, rec, result),
            Purpose::ReadOwnRecord => self.on_read_own(now, result),
            Purpose::ClaimName => self.on_claim_name(now, result),
            Purpose::ReadLease => self.on_read_lease(now, result),
            Purpose::ListEpochs => self.on_list_epochs(now, result),
            Purpose::CreateEpoch(epoch) => self.on_create_epoch(now, epoch, result),
            Purpose::ReadEpoch(epoch) => self.on_read_epoch(epoch, result),
            Purpose::WriteLease { kind, record } => {
                self.on_write_lease(now, started, kind, record, result)
            }
            Purpose::Heartbeat => match result {
                Ok(_) => {
                    if let Some(uri) = self.nudge_after_heartbeat.take() {
                        self.events.push_back(Event::Nudge(vec![uri]));
                    }
                }
                Err(e) => self.storage_failed("heartbeat write", &e),
            },
            Purpose::Scan => self.on_scan(now, result),
            Purpose::ClearList => self.on_clear_list(now, result),
            Purpose::Delete(name) => match result {
                Ok(_) => {
                    self.nodes.remove(&name);
                    self.bad.remove(&records::node_key(&name));
                    self.bump();
                    self.log(Level::Info, format!("cleared the record of node {name}"));
                }
                Err(e) => self.log(
                    Level::Warn,
                    format!("could not clear the record of node {name}: {e}"),
                ),
            },
        }
        self.check_deadline(now.mono);
    }

    // ----- start-up --------------------------------------------------------------------------

    fn startup_retry(&mut self, now: Now, what: &str, e: &StoreError) {
        self.startup_attempts += 1;
        // About 3T (at least 30 polls): start-up now writes (the claim of the name), and a
        // store that is merely slow (a first fsync on a busy disk) must not stop a node.
        let limit = (3 * self.cfg.heartbeat_timeout.as_nanos()
            / self.cfg.poll_period.as_nanos().max(1))
        .max(30) as u32;
        if self.startup_attempts >= limit {
            self.exit(
                1,
                format!(
                    "the store (--store) stayed unusable during start-up ({what}): {e}; check that it is mounted and writable"
                ),
            );
        } else {
            self.log(
                Level::Warn,
                format!("start-up: {what} failed: {e}; retrying"),
            );
            self.next_round_at = now.mono + self.cfg.poll_period;
        }
    }

    fn on_read_cluster(&mut self, now: Now, result: OpResult) {
        match result {
            // A store without cluster.json is never made a cluster by `run`: a mistyped path,
            // a mount that is not there (the empty directory beneath it) and a wiped store all
            // look like this, and a cold start there would be a second cluster beside the real
            // one. Creating a cluster is the operator's explicit step (DESIGN §3.3, §3.8).
            Ok(OpOutput::Read(ReadResult::Absent)) => self.exit(
                1,
                "the store holds no cluster.json, so it is not a tenure cluster: create a new cluster once with `tenure init` on this --store (and the same --heartbeat-timeout); if this cluster exists already, its store is not mounted here or was wiped — then do not init it, mount or restore it".into(),
            ),
            Ok(OpOutput::Read(ReadResult::Present(r))) => match records::open_verified::<ClusterRecord>(self.keys(), CLUSTER_KEY, &r.bytes) {
                Ok((c, Some(Verified::Accepted))) => {
                    let keys = self.keys().expect("a verified record means a keyring");
                    self.log(Level::Info, format!("cluster.json is signed with the accepted key {}, not with the current key {}: re-signing it", keys.accepted_id().unwrap_or("?"), keys.current_id()));
                    self.pending_cluster = Some((c, r.version));
                    self.next_round_at = now.mono;
                }
                Ok((c, _)) => self.adopt_cluster(now, c, r.version),
                Err(OpenError::Unauthentic(e)) => {
                    self.alert(format!("cluster.json is not signed with this node's cluster secret ({e})"));
                    self.exit(
                        1,
                        format!("cluster.json is not signed with this node's cluster secret ({e}): give every node the same --secret-file; if the cluster was created without a secret, stop all nodes and remove cluster.json so that it is recreated signed"),
                    )
                }
                Err(OpenError::Malformed(e)) => self.exit(
                    1,
                    format!("cluster.json in the store is not a tenure cluster record ({e}); restore it from a backup or use an empty --store"),
                ),
            },
            Ok(OpOutput::Read(ReadResult::Unreadable { reason, .. })) => self.exit(
                1,
                format!("cluster.json in the store is unreadable ({reason}); restore it from a backup or use an empty --store"),
            ),
            Ok(other) => self.exit(1, format!("internal error: unexpected {other:?} for cluster.json")),
            Err(e) => self.startup_retry(now, "reading cluster.json", &e),
        }
    }

    fn on_create_cluster(&mut self, now: Now, rec: ClusterRecord, result: OpResult) {
        match result {
            Ok(OpOutput::Written(version)) => {
                self.log(
                    Level::Info,
                    format!("re-signed cluster.json of cluster {}", rec.cluster_id),
                );
                self.adopt_cluster(now, rec, version);
            }
            Ok(_) => self.next_round_at = now.mono,
            // Someone else re-signed it first, or our write may have landed: read it.
            Err(StoreError::Conflict(_)) => self.next_round_at = now.mono,
            Err(e) => self.startup_retry(now, "re-signing cluster.json", &e),
        }
    }

    /// The periodic re-read of cluster.json (every scan): the store must still show the
    /// cluster this node joined, with the same T and ρ (DESIGN §3.3, §3.4).
    fn on_check_cluster(&mut self, now: Now, result: OpResult) {
        let joined = self.cluster_id().to_string();
        let problem = match result {
            Err(e) => {
                // Storage trouble is handled like any failing call: a master that cannot renew
                // self-fences; nothing here.
                self.storage_failed("reading cluster.json", &e);
                return;
            }
            Ok(OpOutput::Read(ReadResult::Absent)) => {
                "cluster.json vanished from the store (wiped, or an earlier copy restored)"
                    .to_string()
            }
            Ok(OpOutput::Read(ReadResult::Unreadable { reason, .. })) => {
                format!("cluster.json became unreadable ({reason})")
            }
            Ok(OpOutput::Read(ReadResult::Present(r))) => {
                match records::open_verified::<ClusterRecord>(self.keys(), CLUSTER_KEY, &r.bytes) {
                    Ok((c, _)) if c.cluster_id != joined => {
                        self.lose(now, format!("cluster.json now names cluster {}, not cluster {joined} that this node joined", c.cluster_id));
                        return self.exit(
                            1,
                            format!("the store now belongs to cluster {} (cluster.json was replaced or re-created), not to cluster {joined} that this node joined; restart this node to join it, or restore the store", c.cluster_id),
                        );
                    }
                    Ok((c, _))
                        if c.heartbeat_timeout_ms
                            != self.cfg.heartbeat_timeout.as_millis() as u64
                            || c.clock_drift_ppm != self.cfg.clock_drift_ppm =>
                    {
                        let stored = format!(
                            "--heartbeat-timeout {} --clock-drift {}ppm",
                            humanize(Duration::from_millis(c.heartbeat_timeout_ms)),
                            c.clock_drift_ppm
                        );
                        self.lose(now, format!("cluster.json now says {stored}"));
                        return self.exit(
                            2,
                            format!("cluster.json now says {stored}, but this node runs with --heartbeat-timeout {} --clock-drift {}ppm: T and ρ are cluster-wide; stopped answering MASTER; restart it with {stored}", humanize(self.cfg.heartbeat_timeout), self.cfg.clock_drift_ppm),
                        );
                    }
                    Ok((c, _)) => {
                        self.cluster_version = Some(r.version);
                        self.cluster = Some(c);
                        if let Some(was) = self.lost.take() {
                            self.log(Level::Info, format!("the store shows this node's cluster again (it had lost it: {was})"));
                            if self.base == NodeState::Failed && self.mode.eligible() {
                                let from = self.state_at(now.mono);
                                self.base = self.mode.idle_state();
                                self.transition(
                                    from,
                                    self.base,
                                    None,
                                    "the store shows this node's cluster again".into(),
                                );
                            }
                            self.bump();
                        }
                        return;
                    }
                    Err(e) => format!("cluster.json can no longer be used ({e})"),
                }
            }
            Ok(other) => {
                return self.log(
                    Level::Error,
                    format!("internal error: unexpected {other:?} for cluster.json"),
                );
            }
        };
        self.lose(now, problem);
    }

    /// The store no longer shows this node's cluster: stop answering MASTER at once and take
    /// nothing until it does again. Absence is never a new, empty cluster.
    fn lose(&mut self, now: Now, why: String) {
        if self.lost.as_deref() == Some(why.as_str()) {
            return;
        }
        self.log(
            Level::Error,
            format!("{why}: the store is unavailable to this node, which will not be master until it shows cluster {} again", self.cluster_id()),
        );
        self.lost = Some(why.clone());
        let from = self.state_at(now.mono);
        if self.term.is_some() {
            self.term = None;
        }
        self.own = None;
        if self.base != NodeState::Failed || from == NodeState::Master {
            self.base = NodeState::Failed;
            self.transition(from, NodeState::Failed, None, why);
        }
        self.bump();
    }

    fn on_claim_fresh(&mut self, now: Now, rec: ClusterRecord, result: OpResult) {
        match result {
            Ok(OpOutput::Written(version)) => {
                self.log(
                    Level::Info,
                    "claimed the first term of this new cluster (cleared `fresh` in cluster.json)"
                        .into(),
                );
                self.cluster = Some(rec);
                self.cluster_version = Some(version);
                // A store rolled back to before its first term looks fresh too.
                self.cautious_take = true;
                self.tasks.push_front(Task::Take {
                    reason: "cold-start".into(),
                });
            }
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => {
                self.log(
                    Level::Info,
                    "another node claimed the first term of this cluster; staying standby".into(),
                );
                self.tasks.push_front(Task::CheckCluster);
            }
            Err(e) => {
                // Maybe it landed: read cluster.json again before deciding anything.
                self.log(Level::Warn, format!("claiming the first term failed: {e}"));
                self.tasks.push_front(Task::CheckCluster);
            }
        }
        let _ = now;
    }

    fn adopt_cluster(&mut self, now: Now, c: ClusterRecord, version: Version) {
        if c.format != FORMAT {
            return self.exit(1, format!("cluster.json has format {} but this tenure understands format {FORMAT}; upgrade tenure", c.format));
        }
        let t = self.cfg.heartbeat_timeout.as_millis() as u64;
        if c.heartbeat_timeout_ms != t {
            return self.exit(
                2,
                format!(
                    "this cluster's heartbeat timeout is {} (stored in cluster.json) but this node was started with --heartbeat-timeout {}; T is cluster-wide: start with --heartbeat-timeout {}",
                    humanize(Duration::from_millis(c.heartbeat_timeout_ms)),
                    humanize(self.cfg.heartbeat_timeout),
                    humanize(Duration::from_millis(c.heartbeat_timeout_ms)),
                ),
            );
        }
        if c.clock_drift_ppm != self.cfg.clock_drift_ppm {
            return self.exit(
                2,
                format!(
                    "this cluster's clock drift bound is {} ppm (stored in cluster.json) but this node uses {} ppm; start with --clock-drift {}ppm",
                    c.clock_drift_ppm, self.cfg.clock_drift_ppm, c.clock_drift_ppm
                ),
            );
        }
        self.cluster = Some(c);
        self.cluster_version = Some(version);
        self.bump();
        self.phase = Phase::Starting(StartStep::Identity(None));
        self.next_round_at = now.mono;
    }

    fn on_read_own(&mut self, now: Now, result: OpResult) {
        let watching = match &self.phase {
            Phase::Starting(StartStep::Identity(w)) => w.clone(),
            _ => None,
        };
        let (version, desc, seen) = match result {
            Ok(OpOutput::Read(ReadResult::Absent)) => return self.claim_name(now, None),
            Ok(OpOutput::Read(ReadResult::Present(r))) => {
                match records::open::<HeartbeatRecord>(
                    self.keys(),
                    &records::node_key(&self.cfg.name),
                    &r.bytes,
                ) {
                    Ok(h)
                        if h.status == NodeState::Terminated
                            || h.instance_id == self.cfg.instance_id =>
                    {
                        return self.claim_name(now, Some(r.version));
                    }
                    Ok(h) => (
                        r.version,
                        format!(
                            "instance {} (status {}, seq {})",
                            h.instance_id, h.status, h.seq
                        ),
                        Some((h.instance_id.clone(), h.seq)),
                    ),
                    Err(OpenError::Unauthentic(_)) => (
                        r.version,
                        "a record not signed with this cluster's secret".to_string(),
                        None,
                    ),
                    Err(OpenError::Malformed(_)) => {
                        (r.version, "an unreadable record".to_string(), None)
                    }
                }
            }
            Ok(OpOutput::Read(ReadResult::Unreadable { version, .. })) => {
                (version, "an unreadable record".to_string(), None)
            }
            Ok(_) => return self.identity_ok(now),
            Err(e) => return self.startup_retry(now, "reading this node's record", &e),
        };
        match watching {
            None => {
                self.wait_for(
                    now,
                    format!(
                        "nodes/{}.json, which holds {desc}, to stand still for T={} before taking the name over (a live process changes it: then this one exits as a duplicate)",
                        self.cfg.name,
                        humanize(self.cfg.heartbeat_timeout)
                    ),
                    now.mono + self.cfg.heartbeat_timeout,
                );
                self.phase =
                    Phase::Starting(StartStep::Identity(Some((version, now.mono, seen))));
                self.next_round_at = now.mono + self.cfg.poll_period;
            }
            // The same instance's record at a seq no higher than the highest seen: a live
            // process only moves its seq beyond every seq it wrote, so this is an older copy
            // written back (a rollback, a restored snapshot; twice in a row, the second copy
            // may be newer than the first but is still old), not a duplicate. Watch the new
            // version for T again, remembering the highest seq seen.
            Some((v, _, Some((was_instance, highest))))
                if v != version
                    && seen
                        .as_ref()
                        .is_some_and(|(i, q)| *i == was_instance && *q <= highest) =>
            {
                self.log(
                    Level::Warn,
                    format!(
                        "nodes/{}.json went back to an earlier copy ({desc}, seq {highest} seen before): the store may have rolled back; watching it for T again",
                        self.cfg.name
                    ),
                );
                self.phase = Phase::Starting(StartStep::Identity(Some((
                    version,
                    now.mono,
                    Some((was_instance, highest)),
                ))));
                self.next_round_at = now.mono + self.cfg.poll_period;
            }
            Some((v, since, seen_before)) if v == version => {
                if now.mono >= since + self.cfg.heartbeat_timeout {
                    self.log(Level::Info, format!("the previous instance of {} stood still for T: taking the name over", self.cfg.name));
                    self.claim_name(now, Some(v));
                } else {
                    self.phase =
                        Phase::Starting(StartStep::Identity(Some((v, since, seen_before))));
                    self.next_round_at = now.mono + self.cfg.poll_period;
                }
            }
            Some(_) => self.exit(
                1,
                format!(
                    "duplicate node name: a live process already runs as {} ({desc}, its record changed while this one watched); stop it or choose another --node-name",
                    self.cfg.name
                ),
            ),
        }
    }

    /// Write our own record conditionally (create if absent, else replace on the version
    /// read): two processes started with one name at the same instant cannot both win.
    fn claim_name(&mut self, now: Now, version: Option<Version>) {
        self.phase = Phase::Starting(StartStep::Claim(version));
        self.next_round_at = now.mono;
    }

    fn on_claim_name(&mut self, now: Now, result: OpResult) {
        match result {
            Ok(_) => self.identity_ok(now),
            Err(StoreError::Conflict(why)) => self.exit(
                1,
                format!(
                    "duplicate node name: another process wrote nodes/{}.json while this one claimed the name ({why}); two processes run as {} — stop the other one or choose another --node-name",
                    self.cfg.name, self.cfg.name
                ),
            ),
            Err(e) => {
                // The claim may have landed: read the record again (ours: claim it again).
                self.phase = Phase::Starting(StartStep::Identity(None));
                self.startup_retry(now, "claiming this node's record", &e)
            }
        }
    }

    fn identity_ok(&mut self, now: Now) {
        self.stop_waiting();
        self.phase = Phase::Starting(StartStep::ModeCheck);
        self.next_round_at = now.mono;
    }

    /// The end of a `--mode master` start's privileges (rank 0, a released lease at once, exit
    /// 1 if the lease is renewed meanwhile): T from its first read, plus the whole round after
    /// the watched lease expires, so a plain standby cannot win that round.
    fn master_head_start(&self, now: Now) -> Nanos {
        now.mono + self.cfg.heartbeat_timeout + self.cfg.poll_period * 2 + self.cfg.storage_timeout
    }

    /// Start-up rules of the modes, applied to the first lease read (DESIGN §2).
    fn mode_check(&mut self, now: Now) {
        let obs = self.obs.clone().expect("mode check after a lease read");
        let unreleased = obs.version.is_some() && obs.lease.as_ref().is_none_or(|l| !l.released);
        match self.mode {
            Mode::Disabled => {
                if unreleased {
                    let who = obs
                        .lease
                        .as_ref()
                        .map_or("an unreadable lease".to_string(), |l| {
                            format!("{} holds epoch {}", l.holder, l.epoch)
                        });
                    return self.exit(
                        1,
                        format!("--mode disabled runs a lone node that reports MASTER, but the store holds an unreleased lease ({who}); use another --store or another mode"),
                    );
                }
                // A lone node, made safe: it holds the lease like a `--mode master` start (and
                // never hands it over), so no other node can be master beside it; it reports
                // MASTER only under the lease's deadline, FAILED otherwise.
                self.master_start_until = Some(self.master_head_start(now));
            }
            Mode::Standby | Mode::HotStandby if !unreleased && !self.cfg.allow_no_master => {
                return self.exit(
                    1,
                    format!(
                        "no master: a --mode {} node starts only while a master holds the lease (Brooklyn's rule); start a master first, or pass --allow-no-master",
                        self.mode
                    ),
                );
            }
            Mode::Master => {
                self.master_start_until = Some(self.master_head_start(now));
            }
            _ => {}
        }
        self.phase = Phase::Running;
        self.base = self.mode.idle_state();
        // Nodes started together would poll in lock-step, a standby reading just before each
        // renewal lands and so learning every lease version a whole period late (failover
        // ≈ T + p). A per-instance phase in [0, p) spreads them; the machine stays
        // deterministic (no RNG: the offset comes from the instance id).
        self.next_round_at = now.mono + self.phase_offset();
        self.transition(
            NodeState::Initializing,
            self.base,
            None,
            format!("joined cluster {} in mode {}", self.cluster_id(), self.mode),
        );
        // Decide on what we just read instead of waiting for the next round.
        self.decide(now);
    }

    // ----- the lease ----------------------------------------------------------------------

    fn observe_lease(&mut self, now: Now, rr: ReadResult) {
        let mut forged = false;
        let (version, lease, unusable) = match rr {
            ReadResult::Absent => (None, None, None),
            ReadResult::Unreadable { version, reason } => (Some(version), None, Some(reason)),
            ReadResult::Present(r) => {
                match records::open::<LeaseRecord>(self.keys(), LEASE_KEY, &r.bytes) {
                    Ok(l) if l.epoch > records::MAX_EPOCH => (
                        Some(r.version),
                        None,
                        Some(format!("epoch {} is out of range", l.epoch)),
                    ),
                    // Epochs only grow and a holder's renewals count up: an older record than one
                    // already seen is a replay (or a restored backup), never a live lease.
                    Ok(l) if (l.epoch, l.renew_seq) < self.max_lease_seen => {
                        forged = true;
                        (
                            Some(r.version),
                            None,
                            Some(format!(
                                "a replayed old lease: epoch {} renewal {} is older than epoch {} renewal {} seen before",
                                l.epoch, l.renew_seq, self.max_lease_seen.0, self.max_lease_seen.1
                            )),
                        )
                    }
                    Ok(l)
                        if l.format == FORMAT
                            && self
                                .cluster
                                .as_ref()
                                .is_none_or(|c| c.cluster_id == l.cluster_id) =>
                    {
                        (Some(r.version), Some(l), None)
                    }
                    Ok(l) => (
                        Some(r.version),
                        None,
                        Some(format!(
                            "a lease of another cluster {} or format {}",
                            l.cluster_id, l.format
                        )),
                    ),
                    Err(e) => {
                        forged = e.is_unauthentic();
                        (Some(r.version), None, Some(e.to_string()))
                    }
                }
            }
        };
        if version.is_some() && !self.saw_lease {
            self.saw_lease = true;
        }
        let changed = self.obs.as_ref().is_none_or(|o| o.version != version);
        if !changed {
            let gap = self.cfg.poll_period * 2 + self.cfg.storage_timeout;
            let floor = self.highest_epoch_known();
            if let Some(o) = self.obs.as_mut() {
                if now.mono > o.last_read + gap {
                    o.first_returned = now.mono;
                    o.floor = floor;
                    o.seqs = None;
                    self.corroboration = Corroboration::None;
                }
                o.last_read = now.mono;
            }
            return;
        }
        if matches!(self.phase, Phase::Running) {
            // A new version ends a wait for the old one to stand still.
            self.stop_waiting();
        }
        if let Some(reason) = &unusable {
            if forged {
                self.alert(format!("the lease in the store is forged or replayed ({reason}); nobody obeys it, and it is replaced after T like any dead lease"));
            }
            self.bad.insert(LEASE_KEY.into(), reason.clone());
            self.log(Level::Warn, format!("the lease record is unusable ({reason}); it counts as an opaque version and expires after T"));
        } else {
            self.bad.remove(LEASE_KEY);
        }
        if let Some(l) = &lease {
            if l.epoch > self.max_epoch_seen {
                self.max_epoch_seen = l.epoch;
            }
            self.max_lease_seen = self.max_lease_seen.max((l.epoch, l.renew_seq));
            if !l.released && self.last_unreleased_seen.is_none_or(|e| l.epoch >= e) {
                self.last_unreleased_seen = Some(l.epoch);
            }
            if l.instance_id == self.cfg.instance_id {
                // Our own write: keep its version for renewals and re-takes.
                self.own = Some(OwnLease {
                    version: version.clone().expect("present"),
                    record: l.clone(),
                });
            } else {
                self.own = None;
            }
        } else {
            self.own = None;
        }
        if self.own.is_none() && self.term.is_some() {
            self.demote("the lease no longer names this node: another node took over".into());
        }
        if let (Some(until), Some(prev)) = (self.master_start_until, &self.obs) {
            let was_live =
                prev.version.is_some() && prev.lease.as_ref().is_none_or(|l| !l.released);
            let foreign = lease
                .as_ref()
                .is_none_or(|l| l.instance_id != self.cfg.instance_id);
            if now.mono < until && was_live && foreign && self.term.is_none() {
                let holder = lease
                    .as_ref()
                    .map_or("unknown (unreadable lease)".into(), |l| {
                        format!("{} (epoch {})", l.holder, l.epoch)
                    });
                self.exit(
                    1,
                    format!("a live master exists: {holder}; its lease was renewed while this --mode master node watched it. A master start never steals a live lease: use `tenure promote` for a planned switchover"),
                );
            }
        }
        self.obs = Some(LeaseObs {
            version,
            lease,
            first_returned: now.mono,
            floor: self.highest_epoch_known(),
            seqs: None,
            last_read: now.mono,
            no_at_once: false,
        });
        self.bump();
    }

    fn on_read_lease(&mut self, now: Now, result: OpResult) {
        match result {
            Ok(OpOutput::Read(rr)) => {
                self.observe_lease(now, rr);
                if self.phase == Phase::Exited {
                    return;
                }
                if self.settle && self.term.is_some() {
                    // The unknown renewal is settled: renew at once on the version now known.
                    self.settle = false;
                    self.tasks.push_front(Task::LeaseStep);
                    return;
                }
                if matches!(self.phase, Phase::Starting(StartStep::ModeCheck)) {
                    if matches!(self.mode, Mode::Master | Mode::Disabled)
                        && self.obs.as_ref().is_some_and(|o| o.version.is_none())
                        && self.epochs_nonempty.is_none()
                    {
                        // Absent lease: a cold start only if epochs/ is empty. List it next.
                        self.next_round_at = now.mono;
                        return;
                    }
                    return self.mode_check(now);
                }
                self.decide(now);
            }
            Ok(other) => self.log(
                Level::Error,
                format!("internal error: unexpected {other:?} for the lease read"),
            ),
            Err(e) => {
                if matches!(self.phase, Phase::Starting(_)) {
                    return self.startup_retry(now, "reading the lease", &e);
                }
                self.storage_failed("lease read", &e);
            }
        }
    }

    fn on_list_epochs(&mut self, now: Now, result: OpResult) {
        match result {
            Ok(OpOutput::Listed(keys)) => {
                let max = keys
                    .iter()
                    .filter_map(|k| records::parse_epoch_key(k))
                    .filter(|&e| e <= records::MAX_EPOCH)
                    .max()
                    .unwrap_or(0);
                self.max_epoch_file = self.max_epoch_file.max(max);
                // Anything in epochs/, even garbage, means the cluster has had a master.
                self.epochs_nonempty = Some(!keys.is_empty() || self.epochs_nonempty == Some(true));
                if matches!(self.corroboration, Corroboration::Pending(_)) {
                    self.corroboration_listed = true;
                }
                if matches!(self.phase, Phase::Starting(StartStep::ModeCheck)) {
                    return self.mode_check(now);
                }
                if !self.tasks.iter().any(|t| matches!(t, Task::Take { .. })) {
                    // The listing was needed to judge an absent lease: decide now.
                    self.decide(now);
                }
            }
            Ok(other) => self.log(
                Level::Error,
                format!("internal error: unexpected {other:?} for the epochs listing"),
            ),
            Err(e) => {
                if matches!(self.phase, Phase::Starting(_)) {
                    return self.startup_retry(now, "listing epochs/", &e);
                }
                self.log(
                    Level::Warn,
                    format!("listing epochs/ failed: {e}; the takeover waits for the next round"),
                );
                if matches!(self.corroboration, Corroboration::Pending(_)) {
                    self.corroboration = Corroboration::None;
                }
                // Do not continue a takeover on an unknown epoch.
                self.tasks.retain(|t| !matches!(t, Task::Take { .. }));
            }
        }
    }

    fn on_create_epoch(&mut self, _now: Now, epoch: u64, result: OpResult) {
        match result {
            Ok(_) => {
                self.max_epoch_file = self.max_epoch_file.max(epoch);
                self.epochs_nonempty = Some(true);
                self.allocated_epoch = Some(epoch);
                self.tried_epoch = None;
            }
            Err(StoreError::Conflict(_)) if self.tried_epoch == Some(epoch) => {
                // Our earlier create of this epoch had an unknown outcome: is the file ours?
                // (The lease write stays queued behind the answer.)
                self.tasks.push_front(Task::ReadEpoch(epoch));
            }
            Err(e) => {
                if !matches!(e, StoreError::Conflict(_)) {
                    self.tried_epoch = Some(epoch);
                }
                // Conflict: another node allocated this epoch first (it is taking over), or an
                // earlier attempt of ours whose outcome we did not learn landed: the next attempt
                // allocates a higher one. Any other error: the file was not created as far as
                // anyone can tell (disk full, permissions) or the outcome is unknown; the next
                // attempt tries the same number again, so failing writes burn no epochs (an
                // unknown outcome that landed costs one, at the conflict).
                if matches!(e, StoreError::Conflict(_)) {
                    self.max_epoch_file = self.max_epoch_file.max(epoch);
                }
                self.tasks.retain(|t| !matches!(t, Task::WriteLease { .. }));
                let level = if matches!(e, StoreError::Conflict(_)) {
                    Level::Info
                } else {
                    Level::Warn
                };
                self.log(
                    level,
                    format!(
                        "could not allocate epoch {epoch}: {e}; staying {}",
                        self.base
                    ),
                );
            }
        }
    }

    fn on_write_lease(
        &mut self,
        now: Now,
        started: Nanos,
        kind: WriteKind,
        record: LeaseRecord,
        result: OpResult,
    ) {
        match result {
            Ok(OpOutput::Written(version)) => {
                self.own = Some(OwnLease {
                    version: version.clone(),
                    record: record.clone(),
                });
                // Our own write is the newest version: watch it from now.
                self.obs = Some(LeaseObs {
                    version: Some(version),
                    lease: Some(record.clone()),
                    first_returned: now.mono,
                    floor: self.highest_epoch_known().max(record.epoch),
                    seqs: None,
                    last_read: now.mono,
                    no_at_once: false,
                });
                self.max_epoch_seen = self.max_epoch_seen.max(record.epoch);
                self.max_lease_seen = self.max_lease_seen.max((record.epoch, record.renew_seq));
                if !record.released {
                    self.last_unreleased_seen = Some(record.epoch);
                }
                self.bad.remove(LEASE_KEY);
                self.bump();
                let new_deadline = started + self.cfg.renew_deadline;
                match kind {
                    WriteKind::Renew => match &mut self.term {
                        // Confirmed before V: V := s + D. After V nothing changes (already demoted).
                        Some(t) if now.mono < t.deadline => {
                            t.deadline = t.deadline.max(new_deadline)
                        }
                        _ => {}
                    },
                    WriteKind::Take { reason } => {
                        if now.mono < new_deadline && self.releasing.is_none() {
                            let from = if std::mem::take(&mut self.cautious_take) {
                                now.mono + self.answer_delay()
                            } else {
                                now.mono
                            };
                            self.promote(now, record.epoch, new_deadline, reason, from);
                        }
                    }
                    WriteKind::Retake => {
                        if now.mono < new_deadline
                            && self.releasing.is_none()
                            && self.may_take()
                            && self.base != NodeState::Failed
                            && self.lost.is_none()
                        {
                            let from = now.mono + self.answer_delay();
                            self.promote(
                                now,
                                record.epoch,
                                new_deadline,
                                "re-took its own current lease after a self-demotion".into(),
                                from,
                            );
                        }
                    }
                    WriteKind::Release => {
                        self.own = None;
                        self.yielded_epoch = Some(record.epoch);
                        self.finish_release("released the lease");
                    }
                }
            }
            Ok(other) => self.log(
                Level::Error,
                format!("internal error: unexpected {other:?} for a lease write"),
            ),
            Err(StoreError::Conflict(why)) => {
                self.own = None;
                match kind {
                    WriteKind::Renew => self.demote(format!("lost the lease: the renewal's conditional write failed ({why}); another node took over")),
                    WriteKind::Release => self.finish_release("the lease had already changed"),
                    WriteKind::Take { .. } | WriteKind::Retake => {
                        self.log(Level::Info, format!("lost the race for the lease ({why}); staying {}", self.base));
                    }
                }
                // Read the lease in the next round to learn who holds it.
                self.obs = None;
            }
            Err(e) => {
                // Unknown outcome: never extends V. The next round's read settles it: the lease
                // carrying our instance and renewSeq means it landed (and may be re-taken).
                self.log(Level::Warn, format!("lease write ({kind:?}) failed or timed out: {e}; the deadline is not extended"));
                match kind {
                    WriteKind::Release => self
                        .finish_release("the release write failed; the others take over after T"),
                    WriteKind::Renew => self.settle = true,
                    _ => {}
                }
            }
        }
    }

    fn on_read_epoch(&mut self, epoch: u64, result: OpResult) {
        self.tried_epoch = None;
        let ours = match &result {
            Ok(OpOutput::Read(ReadResult::Present(r))) => {
                records::open::<EpochRecord>(self.keys(), &records::epoch_key(epoch), &r.bytes)
                    .is_ok_and(|e| e.instance_id == self.cfg.instance_id)
            }
            _ => false,
        };
        self.max_epoch_file = self.max_epoch_file.max(epoch);
        self.epochs_nonempty = Some(true);
        if ours {
            // It landed: the term goes on with it, no epoch burnt.
            self.allocated_epoch = Some(epoch);
        } else {
            self.tasks.retain(|t| !matches!(t, Task::WriteLease { .. }));
            self.log(
                Level::Info,
                format!(
                    "epoch {epoch} was allocated by another node; staying {}",
                    self.base
                ),
            );
        }
    }

    /// A self-demoted node whose own last lease write is still current may re-take it.
    fn retake_candidate(&self) -> Option<OwnLease> {
        if self.term.is_some()
            || self.releasing.is_some()
            || !self.may_take()
            || (self.base == NodeState::Failed && self.mode != Mode::Disabled)
            || self.lost.is_some()
        {
            return None;
        }
        let own = self.own.clone()?;
        if own.record.released {
            return None;
        }
        Some(own)
    }

    /// After a lease read, decide whether to stand for election now (DESIGN §2 and §3.3).
    fn decide(&mut self, now: Now) {
        if self.phase != Phase::Running || self.term.is_some() || self.releasing.is_some() {
            return;
        }
        // FAILED is a disabled node's idle state (it reports MASTER only under its lease), not
        // a fault that forbids taking.
        let failed = self.base == NodeState::Failed && self.mode != Mode::Disabled;
        if !self.may_take() || failed || self.lost.is_some() {
            return;
        }
        let Some(obs) = self.obs.clone() else { return };
        if self.tasks.iter().any(|t| {
            matches!(
                t,
                Task::Take { .. } | Task::CreateEpoch { .. } | Task::WriteLease { .. }
            )
        }) {
            // A take is already on its way.
            return;
        }
        let t = self.takeover_timeout(&obs, now.mono);
        let starting_master = self.master_start_until.is_some_and(|u| now.mono < u);
        // The cases in which a node may act without waiting T: a cold start of a store made
        // by `tenure init`, and a released lease. Both trust the store's memory, so both are
        // corroborated first (see `corroborate`).
        let at_once: Option<&str> = match (&obs.version, &obs.lease) {
            (None, _) => match self.epochs_nonempty {
                None => {
                    if !self.tasks.iter().any(|t| matches!(t, Task::ListEpochs)) {
                        self.tasks.push_front(Task::ListEpochs);
                    }
                    return;
                }
                // A standby waits for a master (Brooklyn): it is promoted when a master's lease
                // expires or is released, never by a cold start.
                Some(false)
                    if self.may_cold_start()
                        && matches!(self.mode, Mode::Standby | Mode::HotStandby) =>
                {
                    return;
                }
                Some(false) if self.may_cold_start() => Some("cold-start"),
                // Absence after presence (a lease or an epoch seen, anywhere), or a store that
                // `tenure init` did not mark fresh: a version like any other, the T rule.
                _ => None,
            },
            (Some(_), Some(l)) if l.released => {
                let mine =
                    l.instance_id == self.cfg.instance_id || self.yielded_epoch == Some(l.epoch);
                let successor_ok = l.successor.as_ref().is_none_or(|s| *s == self.cfg.name);
                let ok = !mine
                    && successor_ok
                    && (starting_master
                        || (self.last_unreleased_seen == Some(l.epoch)
                            && l.epoch >= self.max_epoch_seen));
                ok.then_some(if l.successor.is_some() {
                    "switchover"
                } else {
                    "released"
                })
            }
            _ => None,
        };
        let lease_epoch = obs.lease.as_ref().map_or(0, |l| l.epoch);
        let at_once = at_once.filter(|_| !obs.no_at_once);
        let (expiry, reason) = match at_once {
            Some(r) => match self.corroboration_for(&obs.version, now.mono) {
                None => return self.corroborate(obs.version.clone()),
                Some(ev) => match ev.allows(lease_epoch, lease_epoch) {
                    Ok(()) => (obs.first_returned, r),
                    Err(why) => {
                        let level = if obs.version.is_some() {
                            Level::Error
                        } else {
                            Level::Info
                        };
                        self.restart_watch(now, level, why);
                        if let Some(o) = self.obs.as_mut() {
                            o.no_at_once = true;
                        }
                        return;
                    }
                },
            },
            None => (obs.first_returned + t, "expired"),
        };
        // Rank among live eligible candidates; the best acts first, each next one p later.
        let rank = if starting_master || reason == "switchover" {
            0
        } else {
            self.rank(now.mono)
        };
        let at = expiry + self.cfg.poll_period * rank;
        // A lease that skipped three of this node's polls is not being renewed: say once what
        // this node waits for and until when (a renewed lease ends the wait, see observe_lease).
        if now.mono < at
            && reason == "expired"
            && now.mono >= obs.first_returned + self.cfg.poll_period * 3
        {
            if let Some(w) = self.waiting.as_mut() {
                // Already said; only the rank delay may have moved the end.
                if w.until != at {
                    w.until_wall_ms = wall_at(now, at);
                    w.until = at;
                    self.bump();
                }
            } else {
                let holder = match &obs.lease {
                    Some(l) => format!("the lease of {} epoch {}", l.holder, l.epoch),
                    None if obs.version.is_none() => "the absent lease".into(),
                    None => "an unreadable lease".into(),
                };
                let delay = if rank > 0 {
                    format!(" plus {rank} poll period(s) of rank delay")
                } else {
                    String::new()
                };
                self.wait_for(
                    now,
                    format!(
                        "{holder}, unchanged since this node read it, to stand still for T={}{delay} before taking it over",
                        humanize(t)
                    ),
                    at,
                );
            }
        }
        if now.mono < at {
            // Read again right when this node may act, not up to a poll period later.
            self.election_wake = Some(at);
            return;
        }
        if reason == "expired" {
            // The T rule trusts that the version seen again is the one seen at r: corroborate
            // that no term began meanwhile (a store that lost writes can show an old copy).
            match self.corroboration_for(&obs.version, now.mono) {
                None => return self.corroborate(obs.version.clone()),
                Some(ev) => {
                    if let Err(why) = ev.allows(lease_epoch, obs.floor) {
                        return self.restart_watch(now, Level::Warn, why);
                    }
                }
            }
        }
        if reason == "cold-start" {
            // Exactly one node clears `fresh`; it alone cold-starts (see on_claim_fresh).
            if !self.tasks.iter().any(|t| matches!(t, Task::ClaimFresh)) {
                self.log(
                    Level::Info,
                    "a new cluster (made by tenure init) with no term yet: claiming the first term"
                        .into(),
                );
                self.tasks.push_front(Task::ClaimFresh);
            }
            return;
        }
        let why = match reason {
            "expired" => format!(
                "the lease ({}) stood still for T={} since this node first read it",
                match (&obs.lease, &obs.version) {
                    (Some(l), _) => format!("holder {} epoch {}", l.holder, l.epoch),
                    (None, None) => "absent".into(),
                    (None, Some(_)) => "unreadable".into(),
                },
                humanize(t)
            ),
            "released" => format!(
                "the master {} released the lease",
                obs.lease.as_ref().map_or("?".into(), |l| l.holder.clone())
            ),
            _ => "planned switchover to this node".into(),
        };
        self.log(
            Level::Info,
            format!("standing for election (rank {rank}): {why}"),
        );
        // A `--mode master` start taking a released lease it never saw unreleased trusts the
        // store's memory more than a standby does: it answers MASTER a little later.
        self.cautious_take = (reason == "released"
            && obs
                .lease
                .as_ref()
                .is_some_and(|l| self.last_unreleased_seen != Some(l.epoch)))
            // An absent or unusable lease replaced after T: the store lost or garbled it, and
            // may have lost a term just begun with it.
            || obs.lease.is_none();
        self.tasks.push_front(Task::Take {
            reason: reason.to_string(),
        });
        // The corroboration just listed epochs/ and scanned every node's record, so the
        // epoch allocated next is above every epoch anywhere (epochs never go back, even when
        // the store has lost its epochs/).
    }

    /// Something newer than the lease exists: a term began while this node watched, or the
    /// lease is an old copy written back. Nobody takes it at once; the T rule starts over from
    /// now, with what is now known as the floor.
    fn restart_watch(&mut self, now: Now, level: Level, why: String) {
        if level != Level::Info {
            self.log(
                level,
                format!("not taking the lease now: {why}. The store may have lost writes (a rollback, a restored snapshot, a wipe) or an old lease was written back; the lease is watched for T again from now, like a dead one"),
            );
        }
        let floor = self.highest_epoch_known();
        if let Some(o) = self.obs.as_mut() {
            o.first_returned = now.mono;
            o.floor = floor;
            o.seqs = None;
        }
        self.corroboration = Corroboration::None;
        self.tasks.retain(|t| !matches!(t, Task::Take { .. }));
        self.stop_waiting();
    }

    /// Whether this node may hold the lease: the eligible modes, and a lone `--mode
    /// disabled` node (which takes the lease like `--mode master`, so that no other node can
    /// become master beside it).
    fn may_take(&self) -> bool {
        self.mode.eligible() || (self.mode == Mode::Disabled && self.cfg.mode == Mode::Disabled)
    }

    /// An absent lease is a cold start only on a store that `tenure init` made (and nobody
    /// has claimed since), and only for a node that has seen no sign of an earlier term: no
    /// lease ever, no epoch file, no record reporting an epoch.
    fn may_cold_start(&self) -> bool {
        !self.saw_lease
            && self.highest_epoch_known() == 0
            && self.epochs_nonempty == Some(false)
            && self.cluster.as_ref().is_some_and(|c| c.fresh)
    }

    /// How long a lease version must stand still before this node may take it: T, or the
    /// larger T of the holder (in the lease) or of any live node (in its record), so that a
    /// node started with another T than its peers never takes over early.
    fn takeover_timeout(&self, obs: &LeaseObs, now: Nanos) -> Duration {
        let ms = |v: Option<u64>| Duration::from_millis(v.unwrap_or(0));
        let mut t = self.cfg.heartbeat_timeout;
        if let Some(l) = &obs.lease {
            t = t.max(ms(l.heartbeat_timeout_ms));
        }
        for tr in self.nodes.values() {
            let theirs = ms(tr.record.heartbeat_timeout_ms);
            if now < tr.last_change + theirs.max(self.cfg.heartbeat_timeout) {
                t = t.max(theirs);
            }
        }
        t
    }

    /// The verdict of a finished corroboration of this lease version, if there is one.
    /// Evidence older than a poll period and a storage call (the node was paused, say) is
    /// gathered again: a take acts on what the store shows now.
    fn corroboration_for(&self, version: &Option<Version>, now: Nanos) -> Option<Evidence> {
        match &self.corroboration {
            Corroboration::Done(v, evidence, at)
                if v == version && now < *at + self.cfg.poll_period + self.cfg.storage_timeout =>
            {
                Some(evidence.clone())
            }
            _ => None,
        }
    }

    /// Before trusting the store's memory (an at-once take, a re-take of our own lease), list
    /// `epochs/` and scan `nodes/` again: a store that rolled back, was wiped, or had an old
    /// record written back shows a newer epoch there than in the lease (DESIGN §3.5).
    fn corroborate(&mut self, version: Option<Version>) {
        if self.corroboration == Corroboration::Pending(version.clone())
            && self
                .tasks
                .iter()
                .any(|t| matches!(t, Task::ListEpochs | Task::Scan))
        {
            return;
        }
        self.corroboration = Corroboration::Pending(version);
        self.corroboration_listed = false;
        self.tasks.push_front(Task::Scan);
        self.tasks.push_front(Task::ListEpochs);
    }

    /// Called when a scan finished: a pending corroboration whose listing is in gets its
    /// verdict.
    fn finish_corroboration(&mut self, now: Now) {
        let Corroboration::Pending(version) = self.corroboration.clone() else {
            return;
        };
        if !self.corroboration_listed {
            // The listing failed or came first from another task: ask again.
            self.corroboration = Corroboration::None;
            return;
        }
        let seqs = self
            .obs
            .as_ref()
            .filter(|o| o.version == version)
            .and_then(|o| o.seqs.clone())
            .unwrap_or_default();
        let live_master = self
            .nodes
            .values()
            .find(|tr| {
                tr.record.name != self.cfg.name
                    && tr.record.status == NodeState::Master
                    // Twice: a master that died may have written one more heartbeat after
                    // its last renewal (the same round), a live one writes one every round.
                    && seqs
                        .get(&tr.record.name)
                        .is_some_and(|&seq| tr.record.seq >= seq + 2)
            })
            .map(|tr| (tr.record.name.clone(), tr.record.epoch));
        // Epoch files this node allocated (or tried to) are no sign of another term.
        let own_file = Some(self.max_epoch_file) == self.allocated_epoch
            || Some(self.max_epoch_file) == self.tried_epoch;
        let files = if own_file { 0 } else { self.max_epoch_file };
        let evidence = Evidence {
            newest: self
                .max_epoch_seen
                .max(self.records_max_epoch)
                .max(self.foreign_max_epoch)
                .max(files),
            live_master,
        };
        self.corroboration = Corroboration::Done(version, evidence, now.mono);
        self.decide(now);
    }

    /// An epoch this instance allocated (its `epochs/<n>.json` names us) that no lease carries
    /// yet and that is still above every epoch seen: a failed take may retry with it. Epochs
    /// stay unique to one instance and lease epochs still only grow.
    fn reusable_epoch(&self) -> Option<u64> {
        let lease_epoch = self
            .obs
            .as_ref()
            .and_then(|o| o.lease.as_ref())
            .map_or(0, |l| l.epoch);
        self.allocated_epoch
            .filter(|&e| e > lease_epoch.max(self.max_epoch_seen))
    }

    fn fresh_lease(&self, epoch: u64, now: Now) -> LeaseRecord {
        LeaseRecord {
            format: FORMAT,
            cluster_id: self.cluster_id().to_string(),
            epoch,
            holder: self.cfg.name.clone(),
            instance_id: self.cfg.instance_id.clone(),
            renew_seq: 1,
            released: false,
            successor: None,
            holder_uri: self.cfg.uri.clone(),
            written_at_ms: now.wall_ms,
            heartbeat_timeout_ms: Some(self.cfg.heartbeat_timeout.as_millis() as u64),
        }
    }

    /// A stable offset in [0, p) derived from the instance id.
    fn phase_offset(&self) -> Duration {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.cfg.instance_id.hash(&mut h);
        let p = self.cfg.poll_period.as_nanos().max(1) as u64;
        Duration::from_nanos(h.finish() % p)
    }

    /// This node's rank among live, eligible candidates (DESIGN §2's order).
    fn rank(&self, now: Nanos) -> u32 {
        let me = Candidate {
            priority: self.priority,
            version: self.cfg.app_version.clone(),
            state: self.base,
            name: self.cfg.name.clone(),
        };
        // The holder of the lease being replaced (dead, or releasing it) is no candidate, even
        // while its last heartbeat still says MASTER.
        let holder = self
            .obs
            .as_ref()
            .and_then(|o| o.lease.as_ref())
            .map(|l| l.instance_id.as_str());
        let mut better = 0;
        for (name, tr) in &self.nodes {
            if *name == self.cfg.name
                || !self.heard_lately(tr, now)
                || Some(tr.record.instance_id.as_str()) == holder
            {
                continue;
            }
            let r = &tr.record;
            if !r.mode.eligible()
                || matches!(
                    r.status,
                    NodeState::Failed | NodeState::Terminated | NodeState::Initializing
                )
            {
                continue;
            }
            let c = Candidate {
                priority: r.priority,
                version: r.app_version.clone(),
                state: r.status,
                name: name.clone(),
            };
            // A live `--mode master` starter goes first: the operator asked for it.
            let master_start = r.mode == Mode::Master && self.mode != Mode::Master;
            if master_start || c.better_than(&me) {
                better += 1;
            }
        }
        better
    }

    /// Whether a node still counts as a live candidate. Every node writes its record each of
    /// its polls, so a record a scan found unchanged for three of the writer's poll periods
    /// (at most T/2) belongs to a node that is dead or cut off, though T has not passed yet.
    /// Without this, a node killed up to T ago (and seen late: scans run every few polls) kept
    /// its rank and made the next-best standby wait one rank delay at a handover. Ranks order
    /// candidates only; they never affect safety.
    fn heard_lately(&self, tr: &Tracked, now: Nanos) -> bool {
        let t = self.cfg.heartbeat_timeout;
        let silence = match tr.record.poll_period_ms {
            Some(ms) => (Duration::from_millis(ms).max(self.cfg.poll_period) * 3).min(t / 2),
            None => t / 2,
        };
        now < tr.last_change + t && self.last_scan.is_none_or(|s| s < tr.last_change + silence)
    }

    /// Holds the lease from now; answers MASTER from `from` (now, unless a cautious take).
    fn promote(&mut self, now: Now, epoch: u64, deadline: Nanos, reason: String, from: Nanos) {
        self.term = Some(Term {
            epoch,
            deadline,
            from,
            announced: false,
            check_records: from > now.mono,
            awaiting_scan: false,
        });
        self.master_start_until = None;
        self.switchover_request = None;
        self.waiting = None;
        self.base = self.mode.idle_state();
        self.bump();
        self.promote_reason = reason;
        if from > now.mono {
            self.log(
                Level::Info,
                format!(
                    "holds the lease at epoch {epoch} ({}); answers MASTER in {}, once any other master's next renewal has failed (a store that lost writes may still show an older term to it)",
                    self.promote_reason,
                    humanize(from.since(now.mono))
                ),
            );
        }
        self.announce(now.mono);
    }

    /// A held term becomes MASTER answers (and the promotion transition) at its `from`.
    fn announce(&mut self, now: Nanos) {
        let Some(t) = self.term.as_mut() else { return };
        if t.announced || now < t.from || now >= t.deadline {
            return;
        }
        if t.check_records {
            let epoch = t.epoch;
            if self.last_scan.is_none_or(|s| s < t.from) {
                // Once: if that scan fails, a round's own scan serves later.
                if !t.awaiting_scan {
                    t.awaiting_scan = true;
                    if !self.tasks.iter().any(|t| matches!(t, Task::Scan)) {
                        self.tasks.push_front(Task::Scan);
                    }
                }
                return;
            }
            // Another node that held this epoch or a later one, or saw a later one: seeing ours
            // (in our own lease) is no conflict.
            let conflict = self
                .nodes
                .values()
                .filter(|tr| tr.record.name != self.cfg.name)
                .find(|tr| {
                    tr.record.epoch.is_some_and(|e| e >= epoch)
                        || tr.record.max_epoch.is_some_and(|e| e > epoch)
                })
                .map(|tr| tr.record.name.clone());
            if let Some(other) = conflict.or_else(|| {
                (self.foreign_max_epoch > epoch).then(|| "a node of another cluster".to_string())
            }) {
                self.log(
                    Level::Error,
                    format!("{other} reports a term at or above this one's epoch {epoch}: the store lost the writes of a term; giving this one up unannounced, the lease is taken again after T with a higher epoch"),
                );
                self.term = None;
                self.own = None;
                self.bump();
                return;
            }
            if let Some(t) = self.term.as_mut() {
                t.check_records = false;
            }
        }
        let Some(t) = self.term.as_mut() else { return };
        t.announced = true;
        let (epoch, deadline) = (t.epoch, t.deadline);
        let from = self.base;
        let reason = std::mem::take(&mut self.promote_reason);
        self.bump();
        self.transition(
            from,
            NodeState::Master,
            Some(epoch),
            format!("promoted to MASTER at epoch {epoch} ({reason}); answers MASTER until {} from now unless renewed", humanize(deadline.since(now))),
        );
        // Tell the others at once: their /ha/states and X-HA-Epoch should not lag a poll.
        self.tasks.push_front(Task::Heartbeat);
    }

    /// How long a cautious take waits before it answers MASTER: the longest poll period of a
    /// live node plus a storage deadline and the answer margin. Any other node that still
    /// believes it is master (the store lost the writes that made it so) sends its next
    /// renewal within its poll period, which then fails on our write and demotes it.
    fn answer_delay(&self) -> Duration {
        let mut p = self.cfg.poll_period;
        for tr in self.nodes.values() {
            if let Some(ms) = tr.record.poll_period_ms {
                p = p.max(Duration::from_millis(ms).min(self.cfg.heartbeat_timeout));
            }
        }
        let storage = self
            .cfg
            .storage_timeout
            .max(Config::default_storage_timeout(p));
        // Measured on this node's clock while the other master's renewal runs on its own: the
        // two may differ in rate by 2ρ, which this wait covers rather than the margin.
        let rho = f64::from(self.cfg.clock_drift_ppm) / 1e6;
        (p + storage).mul_f64((1.0 + rho) / (1.0 - rho)) + crate::config::ANSWER_MARGIN
    }

    /// Stop answering MASTER (if still) and report the transition.
    /// (A node whose deadline already passed stopped answering at V; the transition is still
    /// reported.)
    fn demote(&mut self, reason: String) {
        let Some(term) = self.term.take() else { return };
        self.bump();
        if !term.announced {
            // Never answered MASTER: nothing to report as a transition.
            self.log(
                Level::Info,
                format!(
                    "gave up epoch {} before answering MASTER: {reason}",
                    term.epoch
                ),
            );
            return;
        }
        let to = self.base;
        self.transition(NodeState::Master, to, Some(term.epoch), reason);
        self.tasks.push_front(Task::Heartbeat);
    }

    fn check_deadline(&mut self, now: Nanos) {
        self.announce(now);
        if let Some(t) = &self.term
            && now >= t.deadline
            && t.deadline != Nanos::MAX
        {
            let over = now.since(t.deadline);
            self.demote(format!(
                    "self-fenced: no renewal confirmed before the lease deadline (epoch {}, {} ago); standing down before any other node can take over",
                    t.epoch,
                    humanize(over)
                ),
            );
        }
    }

    fn start_release(
        &mut self,
        now: Nanos,
        successor: Option<String>,
        then: AfterRelease,
        ticket: Option<u64>,
        why: &str,
    ) {
        let Some(term) = self.term.take() else { return };
        let to = match &then {
            AfterRelease::Idle(s) => *s,
            AfterRelease::Shutdown => NodeState::Terminated,
            AfterRelease::Disable => NodeState::Failed,
        };
        // First stop answering MASTER (V := now), then the hook, then the released write.
        let was = if term.announced {
            NodeState::Master
        } else {
            self.base
        };
        self.base = to;
        self.bump();
        let hook = self.transition(
            was,
            to,
            Some(term.epoch),
            format!(
                "{why}: stopped answering MASTER (epoch {}); releasing the lease{}",
                term.epoch,
                successor
                    .as_ref()
                    .map_or(String::new(), |s| format!(" to {s}"))
            ),
        );
        self.releasing = Some(Releasing {
            successor,
            started: now,
            hook: Some(hook),
            then,
            ticket,
            written: false,
        });
        self.tasks
            .retain(|t| matches!(t, Task::Delete(_) | Task::ClearStates));
    }

    fn finish_release(&mut self, outcome: &str) {
        let Some(r) = self.releasing.take() else {
            return;
        };
        self.log(Level::Info, format!("release finished: {outcome}"));
        // Ask the others to read the store now, so a standby takes over within one round trip.
        let uris: Vec<String> = self
            .nodes
            .values()
            .filter(|t| t.record.name != self.cfg.name && !t.record.uri.is_empty())
            .map(|t| t.record.uri.clone())
            .collect();
        if !uris.is_empty() {
            self.events.push_back(Event::Nudge(uris));
        }
        if let Some(ticket) = r.ticket {
            // Only a master releases: the state before the request was MASTER.
            self.reply(ticket, Ok(Reply::State(NodeState::Master)));
        }
        match r.then {
            AfterRelease::Idle(_) => {
                self.tasks.push_front(Task::Heartbeat);
            }
            AfterRelease::Shutdown => {
                self.base = NodeState::Terminated;
                self.tasks.clear();
                self.tasks.push_back(Task::Heartbeat);
                self.exit_after_tasks = true;
            }
            AfterRelease::Disable => {
                self.base = NodeState::Failed;
                self.tasks.clear();
                self.tasks.push_back(Task::Heartbeat);
                self.disable_after_tasks = true;
            }
        }
    }

    // ----- node records --------------------------------------------------------------------

    fn on_scan(&mut self, now: Now, result: OpResult) {
        let entries = match result {
            Ok(OpOutput::Scanned(e)) => e,
            Ok(other) => {
                return self.log(
                    Level::Error,
                    format!("internal error: unexpected {other:?} for a scan"),
                );
            }
            Err(e) => {
                if matches!(self.corroboration, Corroboration::Pending(_)) {
                    self.corroboration = Corroboration::None;
                    // No take on what could not be corroborated: the next round tries again.
                    self.tasks.retain(|t| !matches!(t, Task::Take { .. }));
                }
                return self.storage_failed("reading nodes/", &e);
            }
        };
        self.last_scan = Some(now.mono);
        self.rounds_since_scan = 0;
        let mut seen = std::collections::BTreeSet::new();
        let cluster_id = self.cluster_id().to_string();
        for (key, rr) in entries {
            let Some(name) = records::parse_node_key(&key).map(str::to_string) else {
                self.note_bad(&key, "not a node record name".into());
                continue;
            };
            let (version, record, modified) = match rr {
                ReadResult::Absent => continue,
                ReadResult::Unreadable { reason, .. } => {
                    self.note_bad(&key, reason);
                    continue;
                }
                ReadResult::Present(r) => {
                    match records::open::<HeartbeatRecord>(self.cfg.keys.as_deref(), &key, &r.bytes)
                    {
                        Ok(h) if h.name != name => {
                            self.note_bad(&key, format!("the record names node {:?}", h.name));
                            continue;
                        }
                        Ok(h) if h.cluster_id != cluster_id => {
                            // A wiped store's old nodes: not ours, but a new term is numbered
                            // above what they report, so the fencing token never goes back.
                            let theirs = h.max_epoch.max(h.epoch).unwrap_or(0);
                            if theirs <= records::MAX_EPOCH {
                                self.foreign_max_epoch = self.foreign_max_epoch.max(theirs);
                            }
                            self.note_bad(
                                &key,
                                format!("the record belongs to cluster {}", h.cluster_id),
                            );
                            continue;
                        }
                        Ok(h) => (r.version, h, r.modified),
                        Err(e) => {
                            if e.is_unauthentic() && !self.bad.contains_key(&key) {
                                self.alert(format!("{key} is forged ({e}); it is ignored: never a candidate, never a master"));
                            }
                            self.note_bad(&key, e.to_string());
                            continue;
                        }
                    }
                }
            };
            // A node's writes count up: an older record of the same instance is a replay.
            if let Some(newer) = self
                .nodes
                .get(&name)
                .filter(|t| t.record.instance_id == record.instance_id && record.seq < t.record.seq)
                .map(|t| t.record.seq)
            {
                let reason = format!("a replayed old record: seq {} after {newer}", record.seq);
                if !self.bad.contains_key(&key) {
                    self.alert(format!("{key} is {reason}; it is ignored"));
                }
                self.note_bad(&key, reason);
                seen.insert(name);
                continue;
            }
            if self.bad.remove(&key).is_some() {
                self.bump();
            }
            seen.insert(name.clone());
            let reported = record.max_epoch.max(record.epoch).unwrap_or(0);
            if name != self.cfg.name && reported <= records::MAX_EPOCH {
                self.records_max_epoch = self.records_max_epoch.max(reported);
            }
            if name == self.cfg.name && record.instance_id != self.cfg.instance_id {
                // Our own record is tracked (for /ha/states) only while it is ours.
                self.log(
                    Level::Error,
                    format!(
                        "another instance ({}) wrote this node's record: two processes run as {}",
                        record.instance_id, self.cfg.name
                    ),
                );
                continue;
            }
            match self.nodes.get_mut(&name) {
                Some(t) if t.version == version => {}
                Some(t) => {
                    t.version = version;
                    t.record = record;
                    t.last_change = now.mono;
                    t.modified = modified;
                    self.generation += 1;
                }
                None => {
                    self.nodes.insert(
                        name.clone(),
                        Tracked {
                            version,
                            record,
                            last_change: now.mono,
                            modified,
                        },
                    );
                    self.generation += 1;
                }
            }
        }
        let before = self.nodes.len();
        self.nodes.retain(|n, _| seen.contains(n));
        if self.nodes.len() != before {
            self.bump();
        }
        // A planned switchover: a live, eligible node asks for our epoch. (A lone `--mode
        // disabled` node never hands over.)
        if let Some(term) = &self.term
            && self.releasing.is_none()
            && self.mode != Mode::Disabled
        {
            let epoch = term.epoch;
            let t = self.cfg.heartbeat_timeout;
            let requester = self
                .nodes
                .values()
                .find(|tr| {
                    tr.record.switchover_request == Some(epoch)
                        && now.mono < tr.last_change + t
                        && tr.record.mode.eligible()
                })
                .map(|tr| tr.record.name.clone());
            if let Some(succ) = requester {
                self.log(
                    Level::Info,
                    format!("node {succ} asked for a planned switchover"),
                );
                self.start_release(
                    now.mono,
                    Some(succ),
                    AfterRelease::Idle(self.mode.idle_state()),
                    None,
                    "planned switchover",
                );
            }
        }
        // A cautious take waiting for this scan may announce now.
        self.announce(now.mono);
        // The first scan of a watch records where every node's record stood.
        if let Some(o) = self.obs.as_mut()
            && o.seqs.is_none()
        {
            o.seqs = Some(
                self.nodes
                    .iter()
                    .map(|(n, tr)| (n.clone(), tr.record.seq))
                    .collect(),
            );
        }
        self.finish_corroboration(now);
    }

    fn note_bad(&mut self, key: &str, reason: String) {
        if self.bad.get(key) != Some(&reason) {
            self.log(Level::Warn, format!("ignoring bad record {key}: {reason}"));
            self.bad.insert(key.to_string(), reason);
            self.bump();
        }
    }

    fn on_clear_list(&mut self, now: Now, result: OpResult) {
        let tickets = std::mem::take(&mut self.pending_clear);
        match result {
            Ok(OpOutput::Listed(keys)) => {
                let master = self.current_master_name(now.mono);
                let mut names = Vec::new();
                for key in keys {
                    if let Some(name) = records::parse_node_key(&key)
                        && Some(name) != master.as_deref()
                    {
                        names.push(name.to_string());
                    }
                }
                for n in &names {
                    self.tasks.push_front(Task::Delete(n.clone()));
                }
                for t in tickets {
                    self.reply(t, Ok(Reply::Cleared(names.clone())));
                }
            }
            Ok(_) | Err(_) => {
                for t in tickets {
                    self.reply(
                        t,
                        Err(CommandError::Conflict(
                            "listing nodes/ failed; try again".into(),
                        )),
                    );
                }
            }
        }
    }

    fn current_master_name(&self, now: Nanos) -> Option<String> {
        if self.state_at(now) == NodeState::Master {
            return Some(self.cfg.name.clone());
        }
        match &self.obs {
            Some(LeaseObs { lease: Some(l), .. }) if !l.released => Some(l.holder.clone()),
            _ => None,
        }
    }

    // ----- output helpers ------------------------------------------------------------------

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
        self.bump();
    }

    fn cluster_id(&self) -> &str {
        self.cluster.as_ref().map_or("", |c| c.cluster_id.as_str())
    }

    /// Begin waiting for `what` until `until` (logged once, shown in the snapshot).
    fn wait_for(&mut self, now: Now, what: String, until: Nanos) {
        let until_wall_ms = wall_at(now, until);
        self.log(
            Level::Info,
            format!(
                "waiting for {what}: until {} at the latest",
                chrono_ms(until_wall_ms)
            ),
        );
        self.waiting = Some(Waiting {
            what,
            until,
            until_wall_ms,
        });
        self.bump();
    }

    fn stop_waiting(&mut self) {
        if self.waiting.take().is_some() {
            self.bump();
        }
    }

    fn bump(&mut self) {
        self.generation += 1;
    }

    fn log(&mut self, level: Level, message: String) {
        self.events.push_back(Event::Log { level, message });
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
        self.term = None;
        self.tasks.clear();
        self.events.push_back(Event::Exit { code, message });
    }

    fn transition(
        &mut self,
        from: NodeState,
        to: NodeState,
        epoch: Option<u64>,
        reason: String,
    ) -> u64 {
        let hook = self.next_hook;
        self.next_hook += 1;
        let master = match to {
            NodeState::Master => Some(self.cfg.name.clone()),
            _ => None,
        };
        self.transitions.push_back(Transition {
            at_ms: 0,
            from,
            to,
            epoch,
            reason: reason.clone(),
        });
        if self.transitions.len() > MAX_TRANSITIONS {
            self.transitions.pop_front();
        }
        self.bump();
        self.events.push_back(Event::Transition {
            from,
            to,
            epoch,
            master,
            reason,
            hook,
        });
        hook
    }

    /// Stamp wall time on transitions recorded since the last call (the machine reads no clock).
    fn stamp_transitions(&mut self, wall_ms: i64) {
        for t in self.transitions.iter_mut().rev() {
            if t.at_ms != 0 {
                break;
            }
            t.at_ms = wall_ms;
        }
    }

    /// The view the HTTP layer serves.
    pub fn snapshot(&mut self, now: Now) -> Snapshot {
        self.stamp_transitions(now.wall_ms);
        let t = self.cfg.heartbeat_timeout;
        let lease = match (&self.term, &self.own) {
            (Some(term), Some(own)) => Some(LeaseView {
                holder: own.record.holder.clone(),
                instance_id: own.record.instance_id.clone(),
                epoch: term.epoch,
                released: false,
                holder_uri: self.cfg.uri.clone(),
                stale_at: term.deadline,
            }),
            _ => self.obs.as_ref().and_then(|o| {
                o.lease.as_ref().map(|l| LeaseView {
                    holder: l.holder.clone(),
                    instance_id: l.instance_id.clone(),
                    epoch: l.epoch,
                    released: l.released,
                    holder_uri: l.holder_uri.clone(),
                    stale_at: o.first_returned + t,
                })
            }),
        };
        let nodes = self
            .nodes
            .values()
            .map(|tr| NodeRow {
                name: tr.record.name.clone(),
                instance_id: tr.record.instance_id.clone(),
                uri: tr.record.uri.clone(),
                status: tr.record.status,
                mode: tr.record.mode,
                priority: tr.record.priority,
                app_version: tr.record.app_version.clone(),
                local_timestamp_ms: tr.record.local_timestamp_ms,
                remote_timestamp: tr.modified,
                last_change: tr.last_change,
                stale_at: tr.last_change + t,
                epoch: tr.record.epoch,
            })
            .collect();
        Snapshot {
            plane_id: self.cluster_id().to_string(),
            own_name: self.cfg.name.clone(),
            own_instance: self.cfg.instance_id.clone(),
            own_uri: self.cfg.uri.clone(),
            mode: self.mode,
            priority: self.priority,
            app_version: self.cfg.app_version.clone(),
            base_state: self.base,
            master_until: self
                .term
                .as_ref()
                .filter(|t| t.announced)
                .map(|t| t.deadline),
            own_epoch: self.term.as_ref().map(|t| t.epoch),
            lease,
            nodes,
            bad_records: self
                .bad
                .iter()
                .map(|(k, r)| BadRecord {
                    key: k.clone(),
                    reason: r.clone(),
                })
                .collect(),
            heartbeat_timeout_ms: t.as_millis() as u64,
            poll_period_ms: self.cfg.poll_period.as_millis() as u64,
            storage_errors: self.storage_errors,
            forged_records: self.forged_records,
            transitions: self.transitions.iter().cloned().collect(),
            waiting: self.waiting.clone(),
            generation: self.generation,
            // The machine reads no clock; the driver stamps this when it publishes.
            wall_offset_ns: None,
        }
    }

    /// Changes whenever the snapshot would (lets the driver publish only on change).
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// The wall-clock time (ms) of the election-clock instant `at`, as far as `now` tells.
fn wall_at(now: Now, at: Nanos) -> i64 {
    let ahead = i64::try_from(at.since(now.mono).as_millis()).unwrap_or(i64::MAX / 2);
    now.wall_ms.saturating_add(ahead)
}

fn chrono_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |d| d.to_rfc3339())
}

/// The election order of DESIGN §2.
struct Candidate {
    priority: i64,
    version: Option<String>,
    state: NodeState,
    name: String,
}

impl Candidate {
    fn key(&self) -> (i64, u8, VersionKey, u8) {
        let class = match &self.version {
            None => 0,
            Some(v) if v.to_ascii_uppercase().contains("SNAPSHOT") => 1,
            Some(_) => 2,
        };
        let state = match self.state {
            NodeState::Master => 2,
            NodeState::HotStandby => 1,
            _ => 0,
        };
        (
            self.priority,
            class,
            VersionKey::new(self.version.as_deref().unwrap_or("")),
            state,
        )
    }

    fn better_than(&self, other: &Candidate) -> bool {
        match self.key().cmp(&other.key()) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            // Lower name wins.
            std::cmp::Ordering::Equal => self.name < other.name,
        }
    }
}

/// Natural order of version strings: digit runs compare as numbers (v10 > v3.9).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct VersionKey(Vec<VersionPart>);

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum VersionPart {
    Text(String),
    Num(u128),
}

impl VersionKey {
    fn new(s: &str) -> VersionKey {
        let mut parts = Vec::new();
        let mut chars = s.chars().peekable();
        while let Some(&c) = chars.peek() {
            let digit = c.is_ascii_digit();
            let mut run = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_ascii_digit() != digit {
                    break;
                }
                run.push(c);
                chars.next();
            }
            parts.push(if digit {
                VersionPart::Num(run.parse().unwrap_or(u128::MAX))
            } else {
                VersionPart::Text(run)
            });
        }
        VersionKey(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_version_order() {
        assert!(VersionKey::new("v10") > VersionKey::new("v3.9"));
        assert!(VersionKey::new("1.10.0") > VersionKey::new("1.9.9"));
        assert!(VersionKey::new("2.0") == VersionKey::new("2.0"));
    }

    #[test]
    fn election_order() {
        let c = |p: i64, v: Option<&str>, s: NodeState, n: &str| Candidate {
            priority: p,
            version: v.map(String::from),
            state: s,
            name: n.into(),
        };
        // Priority first.
        assert!(c(2, None, NodeState::Standby, "z").better_than(&c(
            1,
            Some("9"),
            NodeState::Master,
            "a"
        )));
        // Release over snapshot over none.
        assert!(c(0, Some("1.0"), NodeState::Standby, "z").better_than(&c(
            0,
            Some("2.0-SNAPSHOT"),
            NodeState::Standby,
            "a"
        )));
        assert!(
            c(0, Some("1.0-SNAPSHOT"), NodeState::Standby, "z").better_than(&c(
                0,
                None,
                NodeState::Standby,
                "a"
            ))
        );
        // Higher version.
        assert!(c(0, Some("v10"), NodeState::Standby, "z").better_than(&c(
            0,
            Some("v3.9"),
            NodeState::Standby,
            "a"
        )));
        // HOT_STANDBY over STANDBY, then the lower name.
        assert!(c(0, None, NodeState::HotStandby, "z").better_than(&c(
            0,
            None,
            NodeState::Standby,
            "a"
        )));
        assert!(c(0, None, NodeState::Standby, "a").better_than(&c(
            0,
            None,
            NodeState::Standby,
            "b"
        )));
    }
}
