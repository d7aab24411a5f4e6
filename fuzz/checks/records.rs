// Shared by the fuzz target `records` and the corpus replay in
// crates/election/tests/records_corpus.rs (included with `include!`): must never panic,
// whatever the bytes.

/// The first byte picks the record type; the rest goes through `records::open` with and
/// without a cluster secret, and a record that parses through `seal` → `open` round trips.
pub fn check_records(data: &[u8]) {
    use tenure_election::records::{ClusterRecord, EpochRecord, HeartbeatRecord, LeaseRecord};
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => check_record::<LeaseRecord>("lease.json", bytes),
        1 => check_record::<HeartbeatRecord>("nodes/a.json", bytes),
        2 => check_record::<ClusterRecord>("cluster.json", bytes),
        _ => check_record::<EpochRecord>("epochs/1.json", bytes),
    }
}

fn check_record<T: serde::Serialize + serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) {
    use tenure_election::records;
    use tenure_election::secret::Keyring;
    let keys = Keyring::new(b"fuzzing-secret-0123456789", None).unwrap();
    let other = Keyring::new(b"another-secret-0123456789", None).unwrap();
    // Whatever the bytes: an answer, never a panic.
    let _ = records::open::<T>(Some(&keys), key, bytes);
    let Ok(rec) = records::open::<T>(None, key, bytes) else {
        return;
    };
    // A record sealed under one key opens under that key and secret, to the same record...
    let sealed = records::seal(Some(&keys), key, &rec);
    let opened = records::open::<T>(Some(&keys), key, &sealed)
        .unwrap_or_else(|e| panic!("a sealed record does not open: {e}"));
    assert_eq!(records::encode(&opened), records::encode(&rec));
    // ...and under no other key or secret.
    let moved = records::open::<T>(Some(&keys), "nodes/elsewhere.json", &sealed);
    assert!(moved.is_err_and(|e| e.is_unauthentic()));
    let forged = records::open::<T>(Some(&other), key, &sealed);
    assert!(forged.is_err_and(|e| e.is_unauthentic()));
    // Without a secret, a sealed record still parses.
    assert!(records::open::<T>(None, key, &sealed).is_ok());
}
