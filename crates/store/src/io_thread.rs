//! Runs store calls on one dedicated OS thread with at most one operation in flight
//! (DESIGN §3.1). A hung filesystem call cannot be cancelled, so the caller gets `Timeout` at
//! its deadline and `Busy` for every call until the hung one returns; nothing queues up behind
//! it, and the async runtime never blocks on file I/O.

use crate::{Store, StoreError};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Runs on the I/O thread; returns the delivery of its result, called after the in-flight
/// mark is cleared (so a caller woken by the result never sees its own call as `Busy`).
type Job = Box<dyn FnOnce(&dyn Store) -> Box<dyn FnOnce() + Send> + Send>;

struct Inner {
    jobs: mpsc::Sender<Job>,
    /// When the job in flight was handed over; `None` when idle. Cleared by the I/O thread,
    /// never by the caller, so a caller that timed out or was dropped cannot wedge it.
    in_flight: Arc<Mutex<Option<Instant>>>,
    describe: String,
}

/// Cheap to clone; all clones share the one thread.
#[derive(Clone)]
pub struct IoThread {
    inner: Arc<Inner>,
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

impl IoThread {
    /// Start the `tenure-io` thread. It exits when every clone of the `IoThread` is dropped
    /// and the job in flight (if any) has returned.
    pub fn spawn(store: Arc<dyn Store>) -> IoThread {
        let (tx, rx) = mpsc::channel::<Job>();
        let in_flight = Arc::new(Mutex::new(None));
        let describe = store.describe();
        let mark = in_flight.clone();
        let spawned = std::thread::Builder::new()
            .name("tenure-io".to_string())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let deliver = job(&*store);
                    *relock(&mark) = None;
                    deliver();
                }
            });
        if let Err(e) = spawned {
            // The receiver is gone with the closure: every call reports Unavailable.
            tracing::error!("cannot start the tenure-io thread: {e}");
        }
        IoThread {
            inner: Arc::new(Inner {
                jobs: tx,
                in_flight,
                describe,
            }),
        }
    }

    /// Run `f` on the I/O thread and wait at most `timeout` for it.
    ///
    /// `Busy` at once if the previous job has not returned (even if its caller gave up);
    /// `Timeout` when the deadline passes (the job keeps running; its result is dropped).
    /// Dropping the returned future is safe at any point.
    pub async fn call<T, F>(&self, timeout: Duration, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Marking and handing over happen with no await in between, so cancellation can only
        // happen before (nothing done) or after (the thread owns the mark).
        {
            let mut mark = relock(&self.inner.in_flight);
            if let Some(start) = *mark {
                return Err(StoreError::Busy(start.elapsed()));
            }
            let job: Job = Box::new(move |store: &dyn Store| {
                let result = catch_unwind(AssertUnwindSafe(|| f(store))).unwrap_or_else(|p| {
                    Err(StoreError::Unavailable(format!(
                        "storage call panicked: {}",
                        panic_message(&*p)
                    )))
                });
                Box::new(move || {
                    // The caller may have timed out or gone: nobody to tell.
                    let _ = tx.send(result);
                })
            });
            if self.inner.jobs.send(job).is_err() {
                return Err(StoreError::Unavailable(format!(
                    "the storage thread for {} is not running",
                    self.inner.describe
                )));
            }
            // Set while still holding the lock: the thread clears it only after we release.
            *mark = Some(Instant::now());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Unavailable(format!(
                "the storage thread for {} stopped",
                self.inner.describe
            ))),
            Err(_) => Err(StoreError::Timeout(timeout)),
        }
    }

    /// How long the job in flight has been running, if there is one.
    pub fn in_flight(&self) -> Option<Duration> {
        relock(&self.inner.in_flight).map(|start| start.elapsed())
    }

    /// The store's description (`dir:/srv/ha`, `memory`).
    pub fn describe(&self) -> String {
        self.inner.describe.clone()
    }
}
