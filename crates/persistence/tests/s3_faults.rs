//! How the S3 backend maps server misbehaviour that moto cannot be made to show: a server that
//! ignores conditional headers, one that never answers, 503 SlowDown, 500 on a conditional
//! write, and 409 ConditionalRequestConflict. Each is a tiny fake HTTP server on 127.0.0.1
//! (mocks are used here only because no real server behaves this way on demand); everything
//! else is tested against moto in `conformance_s3.rs`.
//!
//! Each case must come out as "lost the race" (`Conflict`) or "storage unavailable"
//! (`Unavailable` / `Timeout`), within the call's deadline, never as a panic or a hang.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tenure_persistence::{
    ObjOptions, ObjStore, RaceError, probe_concurrent_writes, probe_conditional_writes,
    probe_create_race, probe_replace_race,
};
use tenure_store::{LEASE_KEY, ReadResult, Store, StoreError, Version};
use tenure_testkit::fake_s3::{DATE, Fake, Objects, Request, Response, object_server, serve};

/// A named store call, for tables of cases.
type Op = (
    &'static str,
    Box<dyn Fn(&ObjStore) -> Result<(), StoreError>>,
);

fn open(fake: &Fake, timeout: Duration) -> ObjStore {
    ObjStore::open(
        "s3://fake-bucket/p",
        ObjOptions {
            timeout,
            use_env: false,
            config: vec![
                ("aws_endpoint".into(), fake.endpoint.clone()),
                ("aws_allow_http".into(), "true".into()),
                ("aws_access_key_id".into(), "k".into()),
                ("aws_secret_access_key".into(), "s".into()),
                ("aws_region".into(), "us-east-1".into()),
            ],
        },
    )
    .unwrap()
}

#[test]
fn a_server_ignoring_conditional_headers_is_refused_by_the_probe() {
    let fake = object_server(Objects::new(true, 0));
    let s = open(&fake, Duration::from_secs(5));
    let e = probe_conditional_writes(&s).unwrap_err().to_string();
    assert!(
        e.contains("If-None-Match ignored") && e.contains("does not enforce conditional writes"),
        "{e}"
    );
    let handles: Vec<Arc<dyn Store>> = (0..16)
        .map(|_| Arc::new(open(&fake, Duration::from_secs(5))) as Arc<dyn Store>)
        .collect();
    let e = probe_create_race(&handles).unwrap_err().to_string();
    assert!(e.contains("16 won"), "{e}");

    // The same fake with preconditions honoured passes: the probe tests the server, not the fake.
    let honest = object_server(Objects::new(false, 0));
    probe_conditional_writes(&open(&honest, Duration::from_secs(5))).unwrap();
}

/// Check-then-write (SeaweedFS 4.16's race): every condition holds one request at a time, so
/// the sequential probe passes; concurrent creates and concurrent replaces on one version all
/// win, and that is a verdict. With the check and the write in one step, both races pass.
#[test]
fn a_server_whose_conditions_race_passes_the_probe_but_not_the_races() {
    let handles = |fake: &Fake| -> Vec<Arc<dyn Store>> {
        (0..4)
            .map(|_| Arc::new(open(fake, Duration::from_secs(5))) as Arc<dyn Store>)
            .collect()
    };
    let racy = object_server(Objects::racy(Duration::from_millis(50)));
    probe_conditional_writes(&open(&racy, Duration::from_secs(5))).unwrap();
    for (race, op) in [
        (
            probe_create_race as fn(&[Arc<dyn Store>]) -> _,
            "creates-if-absent",
        ),
        (probe_replace_race, "replaces-if-version"),
    ] {
        match race(&handles(&racy)) {
            Err(e @ RaceError::NotExactlyOne { wins, .. }) => {
                assert!(wins > 1, "{e}");
                assert!(e.is_verdict());
                assert!(e.to_string().contains(&format!("4 concurrent {op}")), "{e}");
            }
            other => panic!("{op}: {other:?}"),
        }
    }
    let honest = object_server(Objects::new(false, 0));
    assert_eq!(probe_concurrent_writes(&handles(&honest)), Ok(4));
}

/// A race whose writes time out proves nothing: inconclusive, every timeout counted, and the
/// message says to raise the storage timeout.
#[test]
fn a_race_that_times_out_is_inconclusive_not_a_verdict() {
    let fake = serve(Arc::new(|_: &Request| None));
    let handles: Vec<Arc<dyn Store>> = (0..3)
        .map(|_| Arc::new(open(&fake, Duration::from_millis(200))) as Arc<dyn Store>)
        .collect();
    for result in [probe_create_race(&handles), probe_replace_race(&handles)] {
        let e = result.unwrap_err();
        assert!(!e.is_verdict(), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("inconclusive") && text.contains("raise --storage-timeout"),
            "{text}"
        );
    }
    match probe_create_race(&handles) {
        Err(RaceError::Inconclusive {
            wins: 0,
            conflicts: 0,
            timed_out: 3,
            failed: 0,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_stalled_server_times_out_within_the_deadline() {
    let fake = serve(Arc::new(|_: &Request| None));
    let deadline = Duration::from_millis(300);
    let s = open(&fake, deadline);
    let ops: Vec<Op> = vec![
        ("read", Box::new(|s| s.read(LEASE_KEY).map(|_| ()))),
        (
            "create",
            Box::new(|s| s.create("epochs/1.json", b"x").map(|_| ())),
        ),
        (
            "replace",
            Box::new(|s| {
                s.replace(LEASE_KEY, b"x", &Version("\"1\"".into()))
                    .map(|_| ())
            }),
        ),
        ("put", Box::new(|s| s.put("nodes/a.json", b"x").map(|_| ()))),
        ("list", Box::new(|s| s.list("nodes/").map(|_| ()))),
        ("delete", Box::new(|s| s.delete("nodes/a.json"))),
    ];
    for (what, op) in ops {
        let t = Instant::now();
        let r = op(&s);
        let took = t.elapsed();
        assert_eq!(r, Err(StoreError::Timeout(deadline)), "{what}");
        assert!(
            took >= deadline.saturating_sub(Duration::from_millis(20))
                && took < deadline + Duration::from_millis(700),
            "{what} returned after {took:?} with a deadline of {deadline:?}"
        );
    }
}

#[test]
fn slow_down_is_unavailable_at_once_and_not_retried() {
    let fake = serve(Arc::new(|_: &Request| {
        Some(Response::error(503, "SlowDown"))
    }));
    let s = open(&fake, Duration::from_secs(5));
    let ops: Vec<Op> = vec![
        ("read", Box::new(|s| s.read(LEASE_KEY).map(|_| ()))),
        (
            "create",
            Box::new(|s| s.create("epochs/1.json", b"x").map(|_| ())),
        ),
        (
            "replace",
            Box::new(|s| {
                s.replace(LEASE_KEY, b"x", &Version("\"1\"".into()))
                    .map(|_| ())
            }),
        ),
        ("put", Box::new(|s| s.put("nodes/a.json", b"x").map(|_| ()))),
        ("list", Box::new(|s| s.list("nodes/").map(|_| ()))),
    ];
    for (what, op) in ops {
        let before = fake.requests.load(Ordering::SeqCst);
        let t = Instant::now();
        match op(&s) {
            Err(StoreError::Unavailable(m)) => {
                assert!(m.contains("503") && m.contains("SlowDown"), "{what}: {m}")
            }
            other => panic!("{what}: expected Unavailable, got {other:?}"),
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{what} took {:?}",
            t.elapsed()
        );
        // No retries inside the client: the election decides when to try again.
        assert_eq!(fake.requests.load(Ordering::SeqCst) - before, 1, "{what}");
    }
}

#[test]
fn a_500_on_a_conditional_write_is_an_unknown_outcome_not_a_lost_race() {
    // A conditional PUT that may have landed must not be retried (the retry would see 412 and
    // report a win as a loss): it is Unavailable, which the election settles by reading.
    let objects = Objects::new(false, 0);
    let puts = Arc::new(AtomicUsize::new(0));
    let (o, p) = (objects.clone(), puts.clone());
    let fake = serve(Arc::new(move |req: &Request| {
        if req.method == "PUT" && req.headers.contains_key("if-match") {
            p.fetch_add(1, Ordering::SeqCst);
            // Apply, then fail: the reply is lost.
            let _ = o.handle(req);
            return Some(Response::error(500, "InternalError"));
        }
        Some(o.handle(req))
    }));
    let s = open(&fake, Duration::from_secs(5));
    let v = s.create(LEASE_KEY, b"{\"renewSeq\":1}").unwrap();
    let r = s.replace(LEASE_KEY, b"{\"renewSeq\":2}", &v);
    assert!(
        matches!(&r, Err(e) if e.outcome_unknown()),
        "expected an unknown outcome, got {r:?}"
    );
    assert_eq!(
        puts.load(Ordering::SeqCst),
        1,
        "the conditional PUT was retried"
    );
    match s.read(LEASE_KEY).unwrap() {
        ReadResult::Present(rec) => assert_eq!(rec.bytes, b"{\"renewSeq\":2}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn conditional_request_conflict_is_re_read_and_retried() {
    // Two 409s, then the server takes the write.
    let objects = Objects::new(false, 0);
    let fake = object_server(objects.clone());
    let s = open(&fake, Duration::from_secs(5));
    let v1 = s.create(LEASE_KEY, b"one").unwrap();
    objects.conflicts_left.store(2, Ordering::SeqCst);
    let v2 = s.replace(LEASE_KEY, b"two", &v1).unwrap();
    assert_ne!(v1, v2);
    match s.read(LEASE_KEY).unwrap() {
        ReadResult::Present(r) => assert_eq!((r.bytes, r.version), (b"two".to_vec(), v2.clone())),
        other => panic!("{other:?}"),
    }
    // A create that meets 409s on an absent key retries too.
    objects.conflicts_left.store(2, Ordering::SeqCst);
    s.create("epochs/1.json", b"e1").unwrap();
    // ... and one whose key exists by then is a conflict.
    objects.conflicts_left.store(1, Ordering::SeqCst);
    assert!(matches!(
        s.create("epochs/1.json", b"e2"),
        Err(StoreError::Conflict(_))
    ));
    // A 409 after which the version has moved on is a lost race.
    objects.conflicts_left.store(1, Ordering::SeqCst);
    s.put("nodes/x.json", b"moved").unwrap();
    assert!(matches!(
        s.replace("nodes/x.json", b"y", &v1),
        Err(StoreError::Conflict(_))
    ));
}

#[test]
fn endless_conditional_request_conflicts_end_as_a_conflict_within_the_deadline() {
    let objects = Objects::new(false, 0);
    let fake = object_server(objects.clone());
    let deadline = Duration::from_millis(400);
    let s = open(&fake, deadline);
    let v1 = s.create(LEASE_KEY, b"one").unwrap();
    objects.conflicts_left.store(usize::MAX, Ordering::SeqCst);
    let t = Instant::now();
    match s.replace(LEASE_KEY, b"two", &v1) {
        Err(StoreError::Conflict(m)) => assert!(m.contains("409"), "{m}"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(
        t.elapsed() <= deadline + Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    assert!(
        fake.requests.load(Ordering::SeqCst) > 3,
        "it gave up without retrying"
    );
}

#[test]
fn oversized_objects_are_unreadable_without_downloading_them() {
    // The fake announces 100 MB and sends nothing: a read that tried to download it would
    // hang until the deadline.
    let fake = serve(Arc::new(|_: &Request| {
        Some(
            Response::new(200)
                .header("ETag", "\"big\"")
                .header("Last-Modified", DATE)
                .declare_len(100_000_000),
        )
    }));
    let s = open(&fake, Duration::from_secs(5));
    let t = Instant::now();
    match s.read("nodes/huge.json").unwrap() {
        ReadResult::Unreadable { version, reason } => {
            assert_eq!(version, Version("\"big\"".into()));
            assert!(reason.contains("100000000 bytes"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}
