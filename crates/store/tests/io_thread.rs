//! IoThread: one operation in flight, deadlines, Busy while a call hangs, cancel safety.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tenure_store::{IoThread, ReadResult, Store, StoreError};
use tenure_testkit::MemoryStore;

fn setup() -> (MemoryStore, IoThread) {
    let mem = MemoryStore::new();
    let io = IoThread::spawn(Arc::new(mem.clone()));
    (mem, io)
}

/// Wait (bounded) until the job in flight has returned.
async fn wait_idle(io: &IoThread, limit: Duration) {
    let start = Instant::now();
    while io.in_flight().is_some() {
        assert!(
            start.elapsed() < limit,
            "the I/O thread stayed busy for {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn io_thread_is_send_sync_and_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<IoThread>();
}

#[tokio::test]
async fn runs_calls_on_the_named_thread() {
    let (_mem, io) = setup();
    assert_eq!(io.describe(), "memory");
    let name = io
        .call(Duration::from_secs(5), |_s: &dyn Store| {
            Ok(std::thread::current().name().map(String::from))
        })
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("tenure-io"));
    let v = io
        .call(Duration::from_secs(5), |s: &dyn Store| {
            s.put("nodes/a.json", b"a")
        })
        .await
        .unwrap();
    let r = io
        .call(Duration::from_secs(5), |s: &dyn Store| {
            s.read("nodes/a.json")
        })
        .await
        .unwrap();
    match r {
        ReadResult::Present(r) => assert_eq!(r.version, v),
        other => panic!("{other:?}"),
    }
    // Store errors come back as they are.
    let e = io
        .call(Duration::from_secs(5), |s: &dyn Store| {
            s.create("nodes/a.json", b"b")
        })
        .await;
    assert!(matches!(e, Err(StoreError::Conflict(_))));
}

#[tokio::test]
async fn back_to_back_calls_are_never_busy() {
    // The in-flight mark is cleared before the result is delivered.
    let (_mem, io) = setup();
    for i in 0..500 {
        let r = io
            .call(Duration::from_secs(5), move |s: &dyn Store| {
                s.put("nodes/a.json", &[i as u8])
            })
            .await;
        assert!(r.is_ok(), "call {i}: {r:?}");
    }
}

#[tokio::test]
async fn a_hung_call_times_out_then_busy_then_recovers() {
    let (mem, io) = setup();
    let delay = Duration::from_secs(2);
    mem.set_delay(delay);
    let started = Instant::now();
    let r = io
        .call(Duration::from_millis(100), |s: &dyn Store| {
            s.read("nodes/a.json")
        })
        .await;
    assert_eq!(r, Err(StoreError::Timeout(Duration::from_millis(100))));
    // The hung job is still running: the next call is refused at once, not queued.
    let t = Instant::now();
    match io
        .call(Duration::from_secs(30), |s: &dyn Store| {
            s.read("nodes/a.json")
        })
        .await
    {
        Err(StoreError::Busy(d)) => assert!(d < delay, "busy for {d:?}"),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(t.elapsed() < delay, "Busy must be immediate");
    assert!(io.in_flight().is_some());
    // When the delayed job ends, the thread is free again; it ran its full delay.
    wait_idle(&io, Duration::from_secs(20)).await;
    assert!(
        started.elapsed() >= delay,
        "the job ended after {:?}",
        started.elapsed()
    );
    mem.set_delay(Duration::ZERO);
    let r = io
        .call(Duration::from_secs(5), |s: &dyn Store| {
            s.put("nodes/a.json", b"a")
        })
        .await;
    assert!(r.is_ok(), "{r:?}");
}

#[tokio::test]
async fn releasing_a_hang_frees_the_thread() {
    let (mem, io) = setup();
    mem.set_delay(Duration::from_secs(3600));
    let r = io
        .call(Duration::from_millis(50), |s: &dyn Store| s.list("nodes/"))
        .await;
    assert_eq!(r, Err(StoreError::Timeout(Duration::from_millis(50))));
    assert!(matches!(
        io.call(Duration::from_secs(1), |s: &dyn Store| s.list(""))
            .await,
        Err(StoreError::Busy(_))
    ));
    mem.set_delay(Duration::ZERO);
    wait_idle(&io, Duration::from_secs(20)).await;
    assert!(
        io.call(Duration::from_secs(5), |s: &dyn Store| s.list(""))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn dropping_the_future_does_not_wedge_the_thread() {
    let (mem, io) = setup();
    mem.set_delay(Duration::from_secs(3600));
    // The outer timeout drops the call's future while the job is running.
    let dropped = tokio::time::timeout(
        Duration::from_millis(50),
        io.call(Duration::from_secs(3600), |s: &dyn Store| {
            s.read("nodes/a.json")
        }),
    )
    .await;
    assert!(dropped.is_err());
    assert!(matches!(
        io.call(Duration::from_secs(1), |s: &dyn Store| s.list(""))
            .await,
        Err(StoreError::Busy(_))
    ));
    mem.set_delay(Duration::ZERO);
    wait_idle(&io, Duration::from_secs(20)).await;
    assert!(
        io.call(Duration::from_secs(5), |s: &dyn Store| s.list(""))
            .await
            .is_ok()
    );
    // A future dropped before its first poll does nothing at all.
    drop(io.call(Duration::from_secs(5), |s: &dyn Store| {
        s.put("nodes/x.json", b"x")
    }));
    assert!(io.in_flight().is_none());
    assert_eq!(
        io.call(Duration::from_secs(5), |s: &dyn Store| s.list("nodes/"))
            .await,
        Ok(vec![])
    );
}

#[tokio::test]
async fn a_panicking_job_is_an_error_not_a_dead_thread() {
    let (_mem, io) = setup();
    // A generous deadline: the panic's backtrace (RUST_BACKTRACE=1 in scripts/test.sh) is
    // symbolized from a debug build's DWARF, which took over 5 s on a busy machine.
    let r: Result<(), _> = io
        .call(Duration::from_secs(60), |_s: &dyn Store| panic!("boom"))
        .await;
    match r {
        Err(StoreError::Unavailable(m)) => {
            assert!(m.contains("panicked") && m.contains("boom"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        io.call(Duration::from_secs(5), |s: &dyn Store| s.list(""))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn clones_share_the_one_thread() {
    let (mem, io) = setup();
    let io2 = io.clone();
    mem.set_delay(Duration::from_secs(3600));
    let _ = io
        .call(Duration::from_millis(20), |s: &dyn Store| s.list(""))
        .await;
    assert!(matches!(
        io2.call(Duration::from_secs(1), |s: &dyn Store| s.list(""))
            .await,
        Err(StoreError::Busy(_))
    ));
    mem.set_delay(Duration::ZERO);
    wait_idle(&io2, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn unavailable_store_errors_pass_through() {
    let (mem, io) = setup();
    mem.set_unavailable(Some("EIO".into()));
    let r = io
        .call(Duration::from_secs(5), |s: &dyn Store| {
            s.read("nodes/a.json")
        })
        .await;
    assert_eq!(r, Err(StoreError::Unavailable("EIO".into())));
    mem.set_unavailable(None);
    assert!(
        io.call(Duration::from_secs(5), |s: &dyn Store| s
            .read("nodes/a.json"))
            .await
            .is_ok()
    );
}
