//! `GET …/ha/events`: Server-Sent Events of this node's view of the cluster, for the console
//! and for clients that would otherwise poll.
//!
//! The streams are driven by the snapshot watch channel (a change is sent as soon as the driver
//! publishes it) and by a one-second tick for the changes that only time makes (a MASTER
//! answer reaching its deadline, a heartbeat going stale): one task per node computes a digest
//! of the snapshot (own state, master and epoch, every node's status) at each of them and
//! wakes the streams only when it changed ([`Hub`]); each stream sends what differs from the
//! last digest it sent:
//!
//! - `hello` once, first: the whole digest (`node`, `state`, `master`, `epoch`, `nodes`);
//! - `state`: this node's state changed (`node`, `state`, `previous`, `epoch`);
//! - `master`: the master or its epoch changed (`master`, `previous`, `epoch`);
//! - `members`: a node appeared, vanished or changed status (`nodes`, `epoch`).
//!
//! Every event carries `at` (wall clock, ms) and an `id` counting from 1 per stream; a comment
//! line keeps idle connections open every [`KEEP_ALIVE`]. At most [`MAX_SUBSCRIBERS`] streams
//! are open at once (503 beyond). A stream gives its connection's slot among the server's
//! connections back (`server::ConnSlot`), so subscribers never keep pollers out, and its
//! connection closes when it ends; a client that stops reading is dropped by the server's
//! write timeout.

use crate::ApiState;
use crate::api::CanRead;
use crate::error::ApiError;
use crate::summary::{known_epoch, summarize};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tenure_election::{NodeState, Snapshot, clock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Most event streams open at once (beside the connections of [`crate::MAX_CONNECTIONS`]).
pub const MAX_SUBSCRIBERS: usize = 1024;
/// The path of the stream ends so (`/v1/server/ha/events`, `/ha/events`).
pub(crate) const PATH_SUFFIX: &str = "/ha/events";
/// Interval of the keep-alive comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often a stream looks again without a new snapshot (deadlines, stale heartbeats).
const TICK: Duration = Duration::from_secs(1);
/// What browsers wait before reconnecting a dropped stream (sent in the first event).
const RETRY: Duration = Duration::from_secs(1);

/// What the streams of one node share: their count, and one digest channel fed by one task
/// (started with the first stream) that computes the digest at each snapshot and each
/// [`TICK`] and publishes it only when it changed: idle streams are not woken at all.
pub(crate) struct Hub {
    permits: Arc<Semaphore>,
    digests: OnceLock<watch::Receiver<Arc<Digest>>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            permits: Arc::new(Semaphore::new(MAX_SUBSCRIBERS)),
            digests: OnceLock::new(),
        }
    }
}

impl Hub {
    /// The digest channel, its task started on the first call (from a handler: in the
    /// runtime). The task ends when the snapshot channel's sender does.
    fn digests(&self, snapshots: &watch::Receiver<Arc<Snapshot>>) -> watch::Receiver<Arc<Digest>> {
        self.digests
            .get_or_init(|| {
                let mut snaps = snapshots.clone();
                let first = digest(&snaps.borrow_and_update());
                let (tx, rx) = watch::channel(Arc::new(first));
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(TICK);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            changed = snaps.changed() => if changed.is_err() { break },
                            _ = tick.tick() => {}
                        }
                        let next = digest(&snaps.borrow_and_update());
                        tx.send_if_modified(|cur| {
                            let changed = **cur != next;
                            if changed {
                                *cur = Arc::new(next);
                            }
                            changed
                        });
                    }
                });
                rx
            })
            .clone()
    }
}

/// What a stream compares between wake-ups.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Digest {
    pub node: String,
    pub state: NodeState,
    pub master: Option<String>,
    pub epoch: Option<u64>,
    pub nodes: BTreeMap<String, NodeState>,
    /// The node is stopping: streams end once it says TERMINATED.
    #[serde(skip)]
    pub stopping: bool,
}

pub(crate) fn digest(snap: &Snapshot) -> Digest {
    let now = clock::now();
    let view = summarize(snap, now);
    Digest {
        node: snap.own_name.clone(),
        state: snap.state_at(now),
        master: view.master().map(str::to_string),
        epoch: known_epoch(snap, now),
        nodes: view
            .nodes
            .iter()
            .map(|(k, v)| (k.to_string(), v.status))
            .collect(),
        stopping: snap.shutting_down,
    }
}

/// The events that take `last` to `next` (`hello` when there is no `last`).
fn changes(last: Option<&Digest>, next: &Digest) -> Vec<(&'static str, serde_json::Value)> {
    let at = clock::wall_millis();
    let Some(last) = last else {
        let mut v = serde_json::to_value(next).unwrap_or_default();
        v["at"] = at.into();
        return vec![("hello", v)];
    };
    let mut out = Vec::new();
    if last.state != next.state {
        out.push((
            "state",
            serde_json::json!({"node": next.node, "state": next.state, "previous": last.state, "epoch": next.epoch, "at": at}),
        ));
    }
    if last.master != next.master || last.epoch != next.epoch {
        out.push((
            "master",
            serde_json::json!({"master": next.master, "previous": last.master, "epoch": next.epoch, "at": at}),
        ));
    }
    if last.nodes != next.nodes {
        out.push((
            "members",
            serde_json::json!({"nodes": next.nodes, "epoch": next.epoch, "at": at}),
        ));
    }
    out
}

struct Stream {
    rx: watch::Receiver<Arc<Digest>>,
    last: Option<Arc<Digest>>,
    queue: VecDeque<Event>,
    id: u64,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

impl Stream {
    /// Queues what changed since the last digest sent; `done` once the node has stopped.
    fn look(&mut self) {
        let next = self.rx.borrow_and_update().clone();
        for (name, data) in changes(self.last.as_deref(), &next) {
            self.id += 1;
            let mut ev = Event::default()
                .event(name)
                .id(self.id.to_string())
                .data(data.to_string());
            if self.id == 1 {
                ev = ev.retry(RETRY);
            }
            self.queue.push_back(ev);
        }
        // A stopping node says so (TERMINATED comes with the release), then ends the stream
        // so that its graceful shutdown does not wait for it.
        self.done = next.stopping && next.state == NodeState::Terminated;
        self.last = Some(next);
    }

    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Some((Ok(ev), self));
            }
            if self.done {
                return None;
            }
            if self.last.is_some() && self.rx.changed().await.is_err() {
                return None;
            }
            self.look();
        }
    }
}

pub(crate) async fn events(
    _: CanRead,
    State(state): State<ApiState>,
    req: axum::extract::Request,
) -> Response {
    let Ok(permit) = state.inner.events.permits.clone().try_acquire_owned() else {
        let mut resp = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("this node already serves {MAX_SUBSCRIBERS} event streams: try again later or poll …/ha/states"),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
        return resp;
    };
    // Counted among the streams now, not among the connections.
    if let Some(slot) = req.extensions().get::<crate::server::ConnSlot>() {
        slot.release();
    }
    let stream = Stream {
        rx: state.inner.events.digests(&state.inner.snapshot),
        last: None,
        queue: VecDeque::new(),
        id: 0,
        done: false,
        _permit: permit,
    };
    let body = futures_util::stream::unfold(stream, Stream::next);
    let mut resp = Sse::new(body)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    // The connection holds no slot any more: it serves nothing after the stream.
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(state: NodeState, master: Option<&str>, epoch: Option<u64>) -> Digest {
        Digest {
            node: "a".into(),
            state,
            master: master.map(str::to_string),
            epoch,
            nodes: BTreeMap::from([("a".to_string(), state)]),
            stopping: false,
        }
    }

    #[test]
    fn only_what_changed_is_sent() {
        let a = d(NodeState::Standby, Some("b"), Some(3));
        let first = changes(None, &a);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0, "hello");
        assert_eq!(first[0].1["master"], "b");
        assert!(changes(Some(&a), &a).is_empty());
        let b = d(NodeState::Master, Some("a"), Some(4));
        let names: Vec<&str> = changes(Some(&a), &b).iter().map(|c| c.0).collect();
        assert_eq!(names, ["state", "master", "members"]);
        let ev = &changes(Some(&a), &b)[1].1;
        assert_eq!(ev["previous"], "b");
        assert_eq!(ev["epoch"], 4);
    }
}
