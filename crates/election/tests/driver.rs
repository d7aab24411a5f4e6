//! The driver on real time and a real (in-memory) store, several nodes in one process. Each
//! node's store handle can be made to hang on its own, like one node's dead NFS mount.
//! Timing assertions are stated against the configured T and p with margins.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tenure_election::config::Config;
use tenure_election::driver::{Driver, Exit, HookEvent, Hooks, Peers};
use tenure_election::machine::{Machine, Now};
use tenure_election::records::LeaseRecord;
use tenure_election::{Command, NodeState, Snapshot, clock};
use tenure_store::{LEASE_KEY, ReadResult, Store, StoreError, Version};
use tenure_testkit::MemoryStore;
use tokio::sync::{mpsc, watch};

const T: Duration = Duration::from_millis(1000);
const P: Duration = Duration::from_millis(100);
/// Scheduling slack for a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(250);

/// One node's view of the shared store; `hang` blocks every call until cleared.
struct NodeStore {
    inner: MemoryStore,
    hang: Arc<AtomicBool>,
}

impl NodeStore {
    fn wait(&self) {
        while self.hang.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Store for NodeStore {
    fn read(&self, key: &str) -> Result<ReadResult, StoreError> {
        self.wait();
        self.inner.read(key)
    }
    fn create(&self, key: &str, bytes: &[u8]) -> Result<Version, StoreError> {
        self.wait();
        self.inner.create(key, bytes)
    }
    fn replace(&self, key: &str, bytes: &[u8], expected: &Version) -> Result<Version, StoreError> {
        self.wait();
        self.inner.replace(key, bytes, expected)
    }
    fn put(&self, key: &str, bytes: &[u8]) -> Result<Version, StoreError> {
        self.wait();
        self.inner.put(key, bytes)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.wait();
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.wait();
        self.inner.delete(key)
    }
    fn describe(&self) -> String {
        "test".into()
    }
}

/// Nudges delivered in-process to the target node's command channel.
#[derive(Default, Clone)]
struct Bus(Arc<Mutex<HashMap<String, mpsc::Sender<Command>>>>);

impl Peers for Bus {
    fn nudge(&self, uris: Vec<String>) {
        for u in uris {
            if let Some(tx) = self.0.lock().unwrap().get(&u) {
                let _ = tx.try_send(Command::Nudge);
            }
        }
    }
}

/// (from, to, whether the lease was already released when the hook ran)
type HookLog = Arc<Mutex<Vec<(NodeState, NodeState, Option<bool>)>>>;

/// Records the lease as the demote hook sees it, to prove the release is written afterwards.
struct CheckingHooks {
    store: MemoryStore,
    seen: HookLog,
}

impl Hooks for CheckingHooks {
    fn run(&self, ev: HookEvent) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        let released = match self.store.read(LEASE_KEY) {
            Ok(ReadResult::Present(r)) => serde_json::from_slice::<LeaseRecord>(&r.bytes)
                .ok()
                .map(|l| l.released),
            _ => None,
        };
        self.seen
            .lock()
            .unwrap()
            .push((ev.previous, ev.state, released));
        Box::pin(async {
            // A hook that takes a while: the release must wait for it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(())
        })
    }
}

struct Node {
    snap: watch::Receiver<Arc<Snapshot>>,
    cmd: mpsc::Sender<Command>,
    hang: Arc<AtomicBool>,
    done: tokio::task::JoinHandle<Exit>,
}

impl Node {
    fn state(&self) -> NodeState {
        self.snap.borrow().state_at(clock::now())
    }
}

fn start(name: &str, store: &MemoryStore, bus: &Bus, hooks: Arc<dyn Hooks>) -> Node {
    let cfg = Config::with_defaults(
        name,
        format!("{name}-{}", clock::now().0),
        format!("mem://{name}"),
        T,
        P,
    );
    cfg.validate_timings().unwrap();
    let hang = Arc::new(AtomicBool::new(false));
    let node_store: Arc<dyn Store> = Arc::new(NodeStore {
        inner: store.clone(),
        hang: hang.clone(),
    });
    let snap0 = Snapshot::initializing(&cfg.name, &cfg.instance_id, &cfg.uri, cfg.mode);
    let (stx, srx) = watch::channel(Arc::new(snap0));
    let (ctx, crx) = mpsc::channel(16);
    bus.0.lock().unwrap().insert(cfg.uri.clone(), ctx.clone());
    let now = Now {
        mono: clock::now(),
        wall_ms: clock::wall_millis(),
    };
    let driver = Driver::new(
        Machine::new(cfg, now),
        node_store,
        stx,
        crx,
        Arc::new(bus.clone()),
        hooks,
    );
    Node {
        snap: srx,
        cmd: ctx,
        hang,
        done: tokio::spawn(driver.run()),
    }
}

/// Sample both nodes every 2 ms until `until` holds or `limit` passes; fail on two masters.
async fn watch_pair(
    a: &Node,
    b: &Node,
    limit: Duration,
    until: impl Fn(NodeState, NodeState) -> bool,
) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        let (sa, sb) = (a.state(), b.state());
        let distinct = !std::ptr::eq(a, b);
        assert!(
            !(distinct && sa == NodeState::Master && sb == NodeState::Master),
            "two masters at once"
        );
        if until(sa, sb) {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// A store as `tenure init` leaves it: `cluster.json` with T, no term yet.
fn initialized_store() -> MemoryStore {
    let store = MemoryStore::new();
    let bytes = tenure_election::records::init_cluster_bytes(None, "c", T, 10_000);
    store
        .create(tenure_election::records::CLUSTER_KEY, &bytes)
        .unwrap();
    store
}

fn no_hooks() -> Arc<dyn Hooks> {
    Arc::new(tenure_election::driver::NoHooks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_whose_storage_hangs_fences_itself_and_a_standby_takes_over() {
    let store = initialized_store();
    let bus = Bus::default();
    let a = start("a", &store, &bus, no_hooks());
    let t = watch_pair(&a, &a, T * 3, |s, _| s == NodeState::Master).await;
    assert!(t.is_some(), "a lone node becomes MASTER");
    let b = start("b", &store, &bus, no_hooks());
    assert!(
        watch_pair(&a, &b, T * 2, |_, sb| sb == NodeState::Standby)
            .await
            .is_some()
    );

    // A's storage hangs: its calls block inside the store, like a dead NFS server.
    let deadline_before = a.snap.borrow().master_until.expect("a is master");
    let hung_at = clock::now();
    a.hang.store(true, Ordering::SeqCst);
    let fenced = watch_pair(&a, &b, T * 2, |sa, _| sa != NodeState::Master)
        .await
        .expect("a stops answering MASTER");
    // It stopped no later than its deadline could have been pushed: the last renewal started
    // before the hang, so V ≤ hang + D.
    let d = Config::default_renew_deadline(T);
    assert!(
        fenced <= d + MARGIN,
        "a fenced itself {fenced:?} after the hang; D = {d:?}"
    );
    assert!(deadline_before <= hung_at + d);
    let took = watch_pair(&a, &b, T * 3, |_, sb| sb == NodeState::Master)
        .await
        .expect("b takes over");
    // B waits for the lease to stand still for T from its last read (≤ p before the hang).
    let since_hang = fenced + took;
    assert!(
        since_hang + P >= T,
        "b took over {since_hang:?} after the hang, before T − p"
    );
    assert!(
        since_hang <= T + P * 3 + MARGIN,
        "b took over {since_hang:?} after the hang; T = {T:?}, p = {P:?}"
    );

    // The hung node recovers and stays a standby: its lease was replaced.
    a.hang.store(false, Ordering::SeqCst);
    let ok = watch_pair(&a, &b, T, |sa, sb| {
        sa == NodeState::Standby && sb == NodeState::Master
    })
    .await;
    assert!(ok.is_some());
    for n in [&a, &b] {
        n.cmd.send(Command::Shutdown).await.unwrap();
    }
    assert_eq!(a.done.await.unwrap().code, 0);
    assert_eq!(b.done.await.unwrap().code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_hands_over_within_a_poll_period_after_the_demote_hook() {
    let store = initialized_store();
    let bus = Bus::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hooks: Arc<dyn Hooks> = Arc::new(CheckingHooks {
        store: store.clone(),
        seen: seen.clone(),
    });
    let a = start("a", &store, &bus, hooks);
    assert!(
        watch_pair(&a, &a, T * 3, |s, _| s == NodeState::Master)
            .await
            .is_some()
    );
    let b = start("b", &store, &bus, no_hooks());
    assert!(
        watch_pair(&a, &b, T * 2, |_, sb| sb == NodeState::Standby)
            .await
            .is_some()
    );
    // Let b read a's lease unreleased at least once (the rule for taking a release at once).
    tokio::time::sleep(P * 3).await;

    a.cmd.send(Command::Shutdown).await.unwrap();
    let stopped = watch_pair(&a, &b, P, |sa, _| sa != NodeState::Master)
        .await
        .expect("a stops answering MASTER at once");
    let took = watch_pair(&a, &b, T * 2, |_, sb| sb == NodeState::Master)
        .await
        .expect("b takes over");
    // The hook runs 50 ms before the release is written; then the nudge makes b read at once.
    assert!(
        stopped + took <= P + Duration::from_millis(50) + MARGIN,
        "handover took {:?}",
        stopped + took
    );
    let exit = a.done.await.unwrap();
    assert_eq!(exit.code, 0);
    let seen = seen.lock().unwrap().clone();
    let demote = seen
        .iter()
        .find(|(from, _, _)| *from == NodeState::Master)
        .expect("the demote hook ran");
    assert_eq!(demote.1, NodeState::Terminated);
    assert_eq!(
        demote.2,
        Some(false),
        "the demote hook ran before the lease was released"
    );
    b.cmd.send(Command::Shutdown).await.unwrap();
    assert_eq!(b.done.await.unwrap().code, 0);
}
