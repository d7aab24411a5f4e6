//! The async driver: runs the [`Machine`] against a real store on tokio.
//!
//! It owns the only path to storage (an [`IoThread`]: one dedicated thread, one call in
//! flight, a deadline on every call), turns the machine's timers into sleeps on
//! CLOCK_BOOTTIME, runs hooks, forwards nudges and command replies, and publishes a
//! [`Snapshot`] for the HTTP layer. It never holds the MASTER answer itself: the snapshot
//! carries the deadline and the HTTP layer compares it with the clock per request.

use crate::clock;
use crate::command::{Command, CommandError};
use crate::machine::{Event, Level, Machine, Now, Op, OpOutput, OpResult, Reply, Request};
use crate::snapshot::{CLOCK_JUMP_LIMIT_NS, Snapshot};
use crate::stats::Stats;
use crate::types::NodeState;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tenure_store::{IoThread, LEASE_KEY, ReadResult, Store, StoreError};
use tokio::sync::{mpsc, oneshot, watch};

/// Talks to other nodes. Implemented by the HTTP crate.
pub trait Peers: Send + Sync + 'static {
    /// Ask the nodes at these base URIs (e.g. `http://127.0.0.1:8082`) to read the store now.
    /// Best effort, fire and forget; must not block.
    fn nudge(&self, uris: Vec<String>);
}

/// Details of a state change, handed to hooks.
#[derive(Clone, Debug)]
pub struct HookEvent {
    pub node: String,
    pub state: NodeState,
    pub previous: NodeState,
    pub epoch: Option<u64>,
    pub master: Option<String>,
}

/// Runs the operator's hooks. Implemented by the CLI crate. The returned future completes when
/// the hook has finished or was stopped at its time limit; `Err` is a failed or overrun hook.
pub trait Hooks: Send + Sync + 'static {
    fn run(&self, event: HookEvent) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
}

/// No hooks configured.
pub struct NoHooks;
impl Hooks for NoHooks {
    fn run(&self, _: HookEvent) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        Box::pin(async { Ok(()) })
    }
}

/// No peers to nudge (tests, single node).
pub struct NoPeers;
impl Peers for NoPeers {
    fn nudge(&self, _: Vec<String>) {}
}

/// How the driver ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

enum Pending {
    State(oneshot::Sender<Result<NodeState, CommandError>>),
    Priority(oneshot::Sender<Result<i64, CommandError>>),
    Cleared(oneshot::Sender<Result<Vec<String>, CommandError>>),
    Done(oneshot::Sender<Result<(), CommandError>>),
    Nothing,
}

/// The loop wakes at least this often to check the clocks even when nothing is due. Every
/// timer of the machine (the lease deadline V among them) is its own wake-up; this bounds only
/// how late the loop notices a clock that jumped while the host was suspended (MASTER answers
/// check that at the instant they are given). At the default p = 1 s a shorter bound would
/// wake an idle node several times per poll for nothing (24 system calls per poll at 250 ms).
pub const MAX_SLEEP: Duration = Duration::from_secs(1);

pub struct Driver {
    machine: Machine,
    io: IoThread,
    storage_timeout: Duration,
    snapshot: watch::Sender<Arc<Snapshot>>,
    commands: mpsc::Receiver<Command>,
    peers: Arc<dyn Peers>,
    hooks: Arc<dyn Hooks>,
    stats: Arc<Stats>,
}

impl Driver {
    pub fn new(
        machine: Machine,
        store: Arc<dyn Store>,
        snapshot: watch::Sender<Arc<Snapshot>>,
        commands: mpsc::Receiver<Command>,
        peers: Arc<dyn Peers>,
        hooks: Arc<dyn Hooks>,
    ) -> Driver {
        let storage_timeout = machine.config().storage_timeout;
        Driver {
            machine,
            io: IoThread::spawn(store),
            storage_timeout,
            snapshot,
            commands,
            peers,
            hooks,
            stats: Arc::new(Stats::default()),
        }
    }

    /// Record latencies, loop turns and transitions into `stats` (read by metrics and the
    /// systemd watchdog).
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Driver {
        self.stats = stats;
        self
    }

    /// Run until the machine exits (shutdown, or a refusal at start-up).
    pub async fn run(mut self) -> Exit {
        let mut pending: HashMap<u64, Pending> = HashMap::new();
        let mut next_ticket: u64 = 1;
        let (hook_tx, mut hook_rx) = mpsc::unbounded_channel::<(u64, bool)>();
        let mut op: Option<Pin<Box<dyn Future<Output = OpResult> + Send>>> = None;
        let mut wall_offset = clock::wall_minus_boot();
        let mut commands_open = true;
        loop {
            self.stats.loop_iterations.fetch_add(1, Ordering::Relaxed);
            let now = now();
            let offset = clock::wall_minus_boot();
            if (offset - wall_offset).abs() > CLOCK_JUMP_LIMIT_NS {
                let jump_ms = ((offset - wall_offset) / 1_000_000) as i64;
                tracing::warn!(jump_ms, "wall clock jumped against the boot clock");
                self.machine.handle_clock_jump(now, jump_ms);
            }
            wall_offset = offset;
            self.machine.handle_timeout(now);
            if op.is_none()
                && let Some(o) = self.machine.poll_op(now)
            {
                tracing::trace!("storage call {}", o.describe());
                let lease_write = matches!(&o, Op::Replace(k, ..) if k == LEASE_KEY);
                let (io, timeout, stats) =
                    (self.io.clone(), self.storage_timeout, self.stats.clone());
                op = Some(Box::pin(async move {
                    let started = std::time::Instant::now();
                    let res = perform(io, o, timeout).await;
                    let took = started.elapsed();
                    stats.storage_latency.observe(took);
                    // As the machine counts storage errors: a lost conditional write is an answer.
                    stats.storage_outcome(
                        !matches!(&res, Err(e) if !matches!(e, StoreError::Conflict(_))),
                        clock::now(),
                    );
                    if lease_write {
                        stats.renew_latency.observe(took);
                    }
                    res
                }));
            }
            while let Some(ev) = self.machine.poll_event() {
                match ev {
                    Event::Transition {
                        from,
                        to,
                        epoch,
                        master,
                        reason,
                        hook,
                    } => {
                        tracing::info!(from = %from, to = %to, epoch, "state change: {from} -> {to}: {reason}");
                        self.stats.transitions.fetch_add(1, Ordering::Relaxed);
                        let fut = self.hooks.run(HookEvent {
                            node: self.machine.config().name.clone(),
                            state: to,
                            previous: from,
                            epoch,
                            master,
                        });
                        let tx = hook_tx.clone();
                        tokio::spawn(async move {
                            let ok = match fut.await {
                                Ok(()) => true,
                                Err(e) => {
                                    tracing::warn!("hook for {from} -> {to} failed: {e}");
                                    false
                                }
                            };
                            let _ = tx.send((hook, ok));
                        });
                    }
                    Event::Nudge(uris) => self.peers.nudge(uris),
                    Event::Reply { ticket, result } => {
                        if let Some(p) = pending.remove(&ticket) {
                            deliver(p, result);
                        }
                    }
                    Event::Log {
                        level,
                        message,
                        fields: f,
                    } => {
                        let holder = f.lease_holder.as_deref();
                        // `tracing` takes its level as a constant: one arm per level, one call.
                        macro_rules! emit {
                            ($level:expr) => {
                                tracing::event!(
                                    $level,
                                    lease_epoch = f.lease_epoch,
                                    lease_holder = holder,
                                    epoch = f.epoch,
                                    reason = f.reason,
                                    "{message}"
                                )
                            };
                        }
                        match level {
                            Level::Debug => emit!(tracing::Level::DEBUG),
                            Level::Info => emit!(tracing::Level::INFO),
                            Level::Warn => emit!(tracing::Level::WARN),
                            Level::Error => emit!(tracing::Level::ERROR),
                        }
                    }
                    Event::Exit { code, message } => {
                        let snap = self.machine.snapshot(now);
                        let _ = self.snapshot.send(Arc::new(snap));
                        for (_, p) in pending.drain() {
                            deliver(p, Err(CommandError::ShuttingDown));
                        }
                        return Exit { code, message };
                    }
                }
            }
            // The snapshot is a function of the machine's state alone: publish it when it
            // differs from the one published last (the clock offset stamped here aside).
            let mut snap = self.machine.snapshot(now);
            let last = self.snapshot.borrow().clone();
            snap.wall_offset_ns = last.wall_offset_ns;
            if *last != snap {
                snap.wall_offset_ns = Some(wall_offset);
                let _ = self.snapshot.send(Arc::new(snap));
            }
            let sleep_for = self
                .machine
                .poll_timeout()
                .map_or(MAX_SLEEP, |t| t.since(clock::now()).min(MAX_SLEEP));
            tokio::select! {
                biased;
                res = async { op.as_mut().expect("guarded").await }, if op.is_some() => {
                    op = None;
                    self.machine.handle_op_result(self::now(), res);
                }
                Some((hook, ok)) = hook_rx.recv() => self.machine.handle_hook_done(self::now(), hook, ok),
                cmd = self.commands.recv(), if commands_open => match cmd {
                    Some(cmd) => {
                        let ticket = next_ticket;
                        next_ticket += 1;
                        let (req, p) = split(cmd);
                        tracing::debug!("request {req:?}");
                        pending.insert(ticket, p);
                        self.machine.handle_request(self::now(), ticket, req);
                    }
                    None => commands_open = false,
                },
                _ = tokio::time::sleep(sleep_for) => {}
            }
        }
    }
}

fn now() -> Now {
    Now {
        mono: clock::now(),
        wall_ms: clock::wall_millis(),
    }
}

fn split(cmd: Command) -> (Request, Pending) {
    match cmd {
        Command::SetMode { mode, reply } => (Request::SetMode(mode), Pending::State(reply)),
        Command::SetPriority { priority, reply } => {
            (Request::SetPriority(priority), Pending::Priority(reply))
        }
        Command::ClearStates { reply } => (Request::ClearStates, Pending::Cleared(reply)),
        Command::ClearNode { name, reply } => (Request::ClearNode(name), Pending::Done(reply)),
        Command::Nudge => (Request::Nudge, Pending::Nothing),
        Command::Shutdown => (Request::Shutdown, Pending::Nothing),
    }
}

fn deliver(p: Pending, result: Result<Reply, CommandError>) {
    let mismatch = || CommandError::Conflict("internal error: unexpected reply".into());
    match p {
        Pending::State(tx) => {
            let _ = tx.send(result.and_then(|r| match r {
                Reply::State(s) => Ok(s),
                _ => Err(mismatch()),
            }));
        }
        Pending::Priority(tx) => {
            let _ = tx.send(result.and_then(|r| match r {
                Reply::Priority(p) => Ok(p),
                _ => Err(mismatch()),
            }));
        }
        Pending::Cleared(tx) => {
            let _ = tx.send(result.and_then(|r| match r {
                Reply::Cleared(n) => Ok(n),
                _ => Err(mismatch()),
            }));
        }
        Pending::Done(tx) => {
            let _ = tx.send(result.map(|_| ()));
        }
        Pending::Nothing => {}
    }
}

/// Perform one storage operation on the I/O thread, with the storage deadline.
pub async fn perform(io: IoThread, op: Op, timeout: Duration) -> OpResult {
    io.call(timeout, move |store: &dyn Store| execute(store, op))
        .await
}

/// Execute an operation synchronously (on the I/O thread, or in tests).
pub fn execute(store: &dyn Store, op: Op) -> OpResult {
    Ok(match op {
        Op::Read(k) => OpOutput::Read(store.read(&k)?),
        Op::Create(k, b) => OpOutput::Written(store.create(&k, &b)?),
        Op::Replace(k, b, v) => OpOutput::Written(store.replace(&k, &b, &v)?),
        Op::Put(k, b) => OpOutput::Written(store.put(&k, &b)?),
        Op::List(p) => OpOutput::Listed(store.list(&p)?),
        Op::Delete(k) => {
            store.delete(&k)?;
            OpOutput::Deleted
        }
        Op::ScanNodes => {
            let keys = store.list(crate::records::NODES_PREFIX)?;
            read_all(store, keys)?
        }
        Op::ReadMany(keys) => read_all(store, keys)?,
    })
}

/// Read these records concurrently (where the store can); absent ones are left out.
fn read_all(store: &dyn Store, keys: Vec<String>) -> Result<OpOutput, StoreError> {
    let reads = store.read_many(&keys);
    let mut out = Vec::with_capacity(keys.len());
    for (k, r) in keys.into_iter().zip(reads) {
        let r = match r {
            Ok(r) => r,
            // One unreadable file must not hide the others.
            Err(StoreError::InvalidKey(_)) => continue,
            Err(e) => return Err(e),
        };
        if !matches!(r, ReadResult::Absent) {
            out.push((k, r));
        }
    }
    Ok(OpOutput::Scanned(out))
}
