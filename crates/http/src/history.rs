//! `GET …/ha/history`: the cluster's terms, one per `epochs/<n>.json` (written once, by
//! create-if-absent, by the node that allocated the epoch), newest first, bounded.
//!
//! The records are read here, by the HTTP layer, never by the election driver: the driver's
//! loop and its store calls are untouched, so a history request cannot delay a poll or a
//! renewal. The read runs on the blocking pool with a deadline of two storage timeouts (one
//! listing, one batch read), one at a time per node (a hung store ties up at most one thread;
//! requests meanwhile get the last view, marked `stale`), and at most once per
//! [`REFRESH_GAP`]. Term records never change once created, so a refresh lists `epochs/` and
//! reads only the records it has not read yet; the view is refreshed when the snapshot shows an
//! epoch it does not hold, and otherwise at most every [`MAX_AGE`].

use crate::ApiState;
use crate::api::{CanRead, json_response};
use crate::error::ApiError;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tenure_election::records::{self, EPOCHS_PREFIX, EpochRecord};
use tenure_election::secret::Keyring;
use tenure_election::{Nanos, Snapshot, clock};
use tenure_store::{ReadResult, Store, StoreError};
use tokio::sync::Semaphore;

/// Terms answered without `?limit=`.
pub const DEFAULT_LIMIT: usize = 50;
/// Most terms answered (and kept): `?limit=` above it is refused.
pub const MAX_LIMIT: usize = 200;
/// Least time between two reads of the store.
pub const REFRESH_GAP: Duration = Duration::from_secs(1);
/// A view this old is refreshed at the next request even if no new epoch is known.
pub const MAX_AGE: Duration = Duration::from_secs(10);

/// One term, as answered.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Term {
    pub epoch: u64,
    pub holder: String,
    /// The instance (one run of `tenure run`) that held it.
    pub instance: String,
    /// When it began, on the taker's wall clock (ms since the Unix epoch).
    pub started: i64,
    /// When the next known term began (`null` for the newest).
    pub ended: Option<i64>,
    /// `cold-start`, `expired`, `released` or `switchover`.
    pub reason: String,
    /// The epoch of the lease it replaced, and its holder.
    pub previous: Option<u64>,
    pub previous_holder: Option<String>,
}

/// A record of `epochs/` that could not be used (malformed, or not signed with the secret).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BadTerm {
    pub key: String,
    pub reason: String,
}

/// One record of `epochs/` as read: the term, or why it is not one.
type TermRead = (u64, Result<Term, String>);

/// What a refresh keeps: every record read among the newest [`MAX_LIMIT`] epochs.
#[derive(Default)]
struct View {
    read: BTreeMap<u64, Result<Term, String>>,
    /// Epoch files listed.
    total: usize,
    at: Option<Nanos>,
    /// When the last read began, successful or not.
    tried: Option<Nanos>,
    /// The highest epoch listed.
    highest: u64,
    /// The last refresh's failure, while the view is older than it.
    error: Option<String>,
}

/// The per-node state of the history endpoint.
pub(crate) struct History {
    view: Mutex<View>,
    reading: Arc<Semaphore>,
}

impl Default for History {
    fn default() -> Self {
        History {
            view: Mutex::new(View::default()),
            reading: Arc::new(Semaphore::new(1)),
        }
    }
}

/// The highest epoch the snapshot knows of (the lease's, or this node's own).
fn snapshot_epoch(snap: &Snapshot) -> u64 {
    snap.lease
        .as_ref()
        .map_or(0, |l| l.epoch)
        .max(snap.own_epoch.unwrap_or(0))
}

/// Lists `epochs/` and reads the records among the newest [`MAX_LIMIT`] that `known` lacks.
/// Blocking: run it off the async workers.
fn refresh(
    store: &dyn Store,
    keys: Option<&Keyring>,
    known: &[u64],
) -> Result<(usize, Vec<TermRead>), StoreError> {
    let mut epochs: Vec<u64> = store
        .list(EPOCHS_PREFIX)?
        .iter()
        .filter_map(|k| records::parse_epoch_key(k))
        .collect();
    let total = epochs.len();
    epochs.sort_unstable_by(|a, b| b.cmp(a));
    epochs.truncate(MAX_LIMIT);
    let wanted: Vec<u64> = epochs
        .into_iter()
        .filter(|e| known.binary_search(e).is_err())
        .collect();
    let names: Vec<String> = wanted.iter().map(|&e| records::epoch_key(e)).collect();
    let results = store.read_many(&names);
    let mut out = Vec::with_capacity(wanted.len());
    for ((epoch, key), result) in wanted.into_iter().zip(&names).zip(results) {
        let term = match result {
            Ok(ReadResult::Present(rec)) => records::open::<EpochRecord>(keys, key, &rec.bytes)
                .map_err(|e| e.to_string())
                .and_then(|r| {
                    if r.epoch == epoch {
                        Ok(Term {
                            epoch,
                            holder: r.holder,
                            instance: r.instance_id,
                            started: r.started_at_ms,
                            ended: None,
                            reason: r.reason,
                            previous: r.previous,
                            previous_holder: r.previous_holder,
                        })
                    } else {
                        Err(format!("the record names epoch {}", r.epoch))
                    }
                }),
            // Listed, then gone (a wiped store): nothing to show, try again next time.
            Ok(ReadResult::Absent) => continue,
            Ok(ReadResult::Unreadable { reason, .. }) | Err(StoreError::Corrupt { reason, .. }) => {
                Err(reason)
            }
            Err(e) => return Err(e),
        };
        out.push((epoch, term));
    }
    Ok((total, out))
}

/// The `?limit=` of a request: 1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`].
fn limit(query: Option<&str>) -> Result<usize, ApiError> {
    let Some(q) = query else {
        return Ok(DEFAULT_LIMIT);
    };
    match form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "limit") {
        None => Ok(DEFAULT_LIMIT),
        Some((_, v)) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit must be an integer from 1 to {MAX_LIMIT}"
            ))),
        },
    }
}

/// The view at `now`, refreshed first when it is due (see the module's comment). `Err` only
/// when there is no view at all and the store cannot be read.
pub(crate) async fn terms(
    state: &ApiState,
    limit: usize,
) -> Result<(Vec<Term>, Vec<BadTerm>, usize, bool), ApiError> {
    let history = &state.inner.history;
    let Some(store) = state.inner.store.clone() else {
        return Err(ApiError::unavailable(
            "this node reads no store for the history",
        ));
    };
    let wanted = snapshot_epoch(&state.snapshot());
    let due = |v: &View, now: Nanos| {
        v.tried.is_none_or(|t| now >= t + REFRESH_GAP)
            && v.at
                .is_none_or(|at| v.highest < wanted || now >= at + MAX_AGE)
    };
    let now = clock::now();
    let is_due = due(&history.view.lock().unwrap_or_else(|e| e.into_inner()), now);
    if is_due && let Ok(permit) = history.reading.clone().try_acquire_owned() {
        // Re-checked under the permit: another request may just have refreshed it.
        let known: Option<Vec<u64>> = {
            let mut v = history.view.lock().unwrap_or_else(|e| e.into_inner());
            let now = clock::now();
            due(&v, now).then(|| {
                v.tried = Some(now);
                v.read.keys().copied().collect()
            })
        };
        if let Some(known) = known {
            let keys = state.inner.nudge_keys.clone();
            let work = tokio::task::spawn_blocking(move || {
                // Held by the thread: a hung store blocks no second read.
                let _permit = permit;
                refresh(store.as_ref(), keys.as_deref(), &known)
            });
            let deadline = 2 * state.storage_timeout();
            let outcome = match tokio::time::timeout(deadline, work).await {
                Ok(Ok(r)) => r.map_err(|e| e.to_string()),
                Ok(Err(_)) => Err("the read of epochs/ failed".to_string()),
                Err(_) => Err(format!(
                    "the store did not answer within {}",
                    humantime::format_duration(deadline)
                )),
            };
            let mut v = history.view.lock().unwrap_or_else(|e| e.into_inner());
            match outcome {
                Ok((total, fresh)) => {
                    v.total = total;
                    v.read.extend(fresh);
                    while v.read.len() > MAX_LIMIT {
                        v.read.pop_first();
                    }
                    v.highest = v.read.keys().next_back().copied().unwrap_or(0);
                    v.at = Some(clock::now());
                    v.error = None;
                }
                // Keep the old view; the next read is tried after the gap.
                Err(e) => v.error = Some(e),
            }
        }
    }
    let v = history.view.lock().unwrap_or_else(|e| e.into_inner());
    if v.at.is_none() {
        return Err(ApiError::unavailable(format!(
            "the history could not be read: {}",
            v.error
                .as_deref()
                .unwrap_or("a read of epochs/ is already running")
        )));
    }
    let stale = v.error.is_some() || v.highest < wanted;
    let mut terms: Vec<Term> = Vec::new();
    let mut bad = Vec::new();
    let mut next_start: Option<i64> = None;
    for (&epoch, t) in v.read.iter().rev() {
        match t {
            Ok(t) => {
                if terms.len() < limit {
                    let mut t = t.clone();
                    t.ended = next_start;
                    terms.push(t);
                }
                next_start = Some(t.started);
            }
            Err(reason) => bad.push(BadTerm {
                key: records::epoch_key(epoch),
                reason: reason.clone(),
            }),
        }
    }
    Ok((terms, bad, v.total, stale))
}

/// `GET /v1/server/ha/history` (and `/ha/history`): `{"terms": [...], "total", "bad", "stale"}`.
pub(crate) async fn history(
    _: CanRead,
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> Response {
    let limit = match limit(query.as_deref()) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    match terms(&state, limit).await {
        Ok((terms, bad, total, stale)) => json_response(&serde_json::json!({
            "terms": terms,
            "total": total,
            "bad": bad,
            "stale": stale,
        })),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_bounded() {
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(Some("x=1")).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(Some("limit=3")).unwrap(), 3);
        assert_eq!(limit(Some("limit=200")).unwrap(), 200);
        for bad in ["limit=0", "limit=201", "limit=-1", "limit=a"] {
            assert!(limit(Some(bad)).is_err(), "{bad}");
        }
    }
}
