//! The JSON records tenure keeps in the store (DESIGN §4). Every record carries a format
//! number and the cluster id; every write of the lease and of a heartbeat carries a counter
//! and the instance id, so no two writes are byte-identical (an S3 ETag is the MD5 of the body).

use crate::secret::{Keyring, Verified};
use crate::types::{Mode, NodeState};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const FORMAT: u32 = 1;
pub const CLUSTER_KEY: &str = "cluster.json";
pub const EPOCHS_PREFIX: &str = "epochs/";
pub const NODES_PREFIX: &str = "nodes/";
/// Highest epoch tenure uses (2^53 − 1, exact in every JSON reader). A larger one in the store
/// (garbage, or a writer trying to exhaust the epoch space) is never obeyed.
pub const MAX_EPOCH: u64 = (1 << 53) - 1;

pub fn node_key(name: &str) -> String {
    format!("{NODES_PREFIX}{name}.json")
}
pub fn epoch_key(epoch: u64) -> String {
    format!("{EPOCHS_PREFIX}{epoch}.json")
}
/// The epoch number of an `epochs/<n>.json` key, if it is one.
pub fn parse_epoch_key(key: &str) -> Option<u64> {
    key.strip_prefix(EPOCHS_PREFIX)?
        .strip_suffix(".json")?
        .parse()
        .ok()
}
/// The node name of a `nodes/<name>.json` key, if it is one.
pub fn parse_node_key(key: &str) -> Option<&str> {
    key.strip_prefix(NODES_PREFIX)?.strip_suffix(".json")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRecord {
    pub format: u32,
    /// Brooklyn's `planeId`.
    pub cluster_id: String,
    pub heartbeat_timeout_ms: u64,
    /// Clock-rate bound ρ in parts per million (10000 = 1%).
    pub clock_drift_ppm: u32,
    pub created_at: String,
    pub created_by: String,
    /// Written by `tenure init`: no term has begun yet, so the first node may cold-start at
    /// once. The first taker clears it (a conditional replace) before its term, so a store
    /// that later loses its lease and `epochs/` never looks brand new again (DESIGN §3.3).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh: bool,
}

/// The bytes `tenure init` writes to `cluster.json` for a new cluster (signed when `keys`).
pub fn init_cluster_bytes(
    keys: Option<&Keyring>,
    cluster_id: &str,
    heartbeat_timeout: std::time::Duration,
    clock_drift_ppm: u32,
) -> Vec<u8> {
    let rec = ClusterRecord::new_fresh(
        cluster_id.to_string(),
        heartbeat_timeout,
        clock_drift_ppm,
        "tenure init".into(),
        0,
    );
    seal(keys, CLUSTER_KEY, &rec)
}

impl ClusterRecord {
    /// The record `tenure init` writes: a new cluster id, T and ρ, and `fresh`.
    pub fn new_fresh(
        cluster_id: String,
        heartbeat_timeout: std::time::Duration,
        clock_drift_ppm: u32,
        created_by: String,
        now_ms: i64,
    ) -> ClusterRecord {
        ClusterRecord {
            format: FORMAT,
            cluster_id,
            heartbeat_timeout_ms: heartbeat_timeout.as_millis() as u64,
            clock_drift_ppm,
            created_at: chrono::DateTime::from_timestamp_millis(now_ms)
                .map_or_else(|| now_ms.to_string(), |d| d.to_rfc3339()),
            created_by,
            fresh: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    pub format: u32,
    pub cluster_id: String,
    pub epoch: u64,
    pub holder: String,
    pub instance_id: String,
    /// Incremented at every write by the holder.
    pub renew_seq: u64,
    #[serde(default)]
    pub released: bool,
    /// For a planned switchover: the node that may take the released lease at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<String>,
    #[serde(default)]
    pub holder_uri: String,
    /// Holder's wall clock, ms since the Unix epoch (informational).
    pub written_at_ms: i64,
    /// The holder's T. A taker waits for the larger of its own T and this, so a node started
    /// with another T (cluster.json edited under a running cluster) never takes over early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpochRecord {
    pub format: u32,
    pub cluster_id: String,
    pub epoch: u64,
    pub holder: String,
    pub instance_id: String,
    pub started_at_ms: i64,
    /// Epoch of the lease the taker replaced, if any.
    pub previous: Option<u64>,
    pub previous_holder: Option<String>,
    /// Why the term began: "cold-start", "expired", "released", "switchover".
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatRecord {
    pub format: u32,
    pub cluster_id: String,
    pub name: String,
    pub instance_id: String,
    /// Incremented at every write; liveness is judged by it changing.
    pub seq: u64,
    pub status: NodeState,
    pub mode: Mode,
    pub priority: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    pub uri: String,
    /// Writer's wall clock, ms since the Unix epoch (Brooklyn's `localTimestamp`).
    pub local_timestamp_ms: i64,
    /// The epoch this node holds, when it is master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// A planned switchover: this node asks the holder of this epoch to hand over to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover_request: Option<u64>,
    /// The writer's poll period (it writes this record that often), so others can tell a
    /// silent node from a slow one. Absent in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_period_ms: Option<u64>,
    /// The highest term this node has seen in a lease or in another node's record (not the
    /// `epochs/` listing, which every taker reads itself):
    /// a new term is numbered above every epoch a live node reports, so epochs never go back,
    /// even after the store lost its `epochs/` (wiped, rolled back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_epoch: Option<u64>,
    /// The writer's T: a node never takes over before the largest T of the live nodes has
    /// passed (see `LeaseRecord::heartbeat_timeout_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout_ms: Option<u64>,
    /// The writer's renew interval R: while master it writes a heartbeat every round but
    /// renews only every R, so a dead master's record may have moved on by up to R/p
    /// heartbeats past its last renewal (see the corroboration's live-master evidence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_interval_ms: Option<u64>,
    /// How often the writer refreshes this record (issue 18): T/3 for a node that is not
    /// master; a master's record changes only with its state (its heartbeat rides in the
    /// lease), and carries R here. Absent in older records: every poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
}

/// Why [`parse`] refused a record.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or not this kind of record.
    #[error("not a tenure record: {0}")]
    Json(#[from] serde_json::Error),
}

/// Parse a record (no secret configured: any MAC field is ignored).
pub fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ParseError> {
    serde_json::from_slice::<T>(bytes).map_err(ParseError::Json)
}

pub fn encode<T: Serialize>(rec: &T) -> Vec<u8> {
    serde_json::to_vec(rec).expect("records always serialize")
}

/// The field that carries a record's MAC.
pub const MAC_FIELD: &str = "mac";

/// Why [`open`] refused a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Not JSON, or not this kind of record.
    Malformed(String),
    /// Well-formed, but without a valid MAC under this node's secret: forged, altered, or
    /// written by a node with another secret.
    Unauthentic(String),
}

impl OpenError {
    pub fn is_unauthentic(&self) -> bool {
        matches!(self, OpenError::Unauthentic(_))
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Malformed(m) => f.write_str(m),
            OpenError::Unauthentic(m) => write!(f, "not authentic: {m}"),
        }
    }
}

/// Encode a record for `key`; with a secret, add a MAC over the key and the record's
/// canonical JSON (which includes its cluster id), so a record is valid only under its key.
pub fn seal<T: Serialize>(keys: Option<&Keyring>, key: &str, rec: &T) -> Vec<u8> {
    let Some(keys) = keys else {
        return encode(rec);
    };
    let mut value = serde_json::to_value(rec).expect("records always serialize");
    let canon = canonical(&value);
    let tag = keys.sign("record", &[key.as_bytes(), &canon]);
    if let Value::Object(map) = &mut value {
        map.insert(MAC_FIELD.into(), Value::String(tag));
    }
    serde_json::to_vec(&value).expect("records always serialize")
}

/// Parse a record read from `key`. With a secret, a record without a valid MAC is refused
/// (it must never be obeyed); without one, any MAC is ignored.
pub fn open<T: DeserializeOwned>(
    keys: Option<&Keyring>,
    key: &str,
    bytes: &[u8],
) -> Result<T, OpenError> {
    open_verified(keys, key, bytes).map(|(rec, _)| rec)
}

/// [`open`], also saying which key the MAC verified with (`None` without a secret).
pub fn open_verified<T: DeserializeOwned>(
    keys: Option<&Keyring>,
    key: &str,
    bytes: &[u8],
) -> Result<(T, Option<Verified>), OpenError> {
    let Some(keys) = keys else {
        return parse(bytes)
            .map(|rec| (rec, None))
            .map_err(|e| OpenError::Malformed(e.to_string()));
    };
    let mut value: Value = serde_json::from_slice(bytes)
        .map_err(|e| OpenError::Malformed(format!("not a tenure record: {e}")))?;
    let Value::Object(map) = &mut value else {
        return Err(OpenError::Malformed(
            "not a tenure record: not a JSON object".into(),
        ));
    };
    let tag = match map.remove(MAC_FIELD) {
        Some(Value::String(t)) => t,
        Some(_) => return Err(OpenError::Unauthentic("the MAC is not a string".into())),
        None => {
            return Err(OpenError::Unauthentic(
                "the record has no MAC, but this node has a cluster secret".into(),
            ));
        }
    };
    let canon = canonical(&value);
    let verified = keys
        .verify("record", &[key.as_bytes(), &canon], &tag)
        .map_err(|e| OpenError::Unauthentic(e.to_string()))?;
    T::deserialize(value)
        .map(|rec| (rec, Some(verified)))
        .map_err(|e| OpenError::Malformed(format!("not a tenure record: {e}")))
}

/// JSON with object keys sorted at every level and no whitespace: the same bytes for the same
/// value whatever order a writer put the fields in.
pub fn canonical(v: &Value) -> Vec<u8> {
    fn write(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push(b'{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, k).expect("strings serialize");
                    out.push(b':');
                    write(&m[k], out);
                }
                out.push(b'}');
            }
            Value::Array(a) => {
                out.push(b'[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(x, out);
                }
                out.push(b']');
            }
            scalar => serde_json::to_writer(&mut *out, scalar).expect("scalars serialize"),
        }
    }
    let mut out = Vec::new();
    write(v, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &[u8]) -> Keyring {
        Keyring::new(s, None).unwrap()
    }

    fn lease(epoch: u64) -> LeaseRecord {
        LeaseRecord {
            format: FORMAT,
            cluster_id: "c1".into(),
            epoch,
            holder: "a".into(),
            instance_id: "i".into(),
            renew_seq: 3,
            released: false,
            successor: None,
            holder_uri: "http://127.0.0.1:1".into(),
            written_at_ms: 5,
            heartbeat_timeout_ms: None,
        }
    }

    #[test]
    fn sealed_records_open_only_with_the_secret_and_under_their_key() {
        let k = keys(b"0123456789abcdef0123");
        let bytes = seal(Some(&k), "lease", &lease(7));
        assert_eq!(open::<LeaseRecord>(Some(&k), "lease", &bytes), Ok(lease(7)));
        // Without a secret the MAC is ignored.
        assert_eq!(open::<LeaseRecord>(None, "lease", &bytes), Ok(lease(7)));
        // Another key, another record key, an unsigned record, an altered field: refused.
        let other = keys(b"another-secret-0123456789");
        assert!(
            open::<LeaseRecord>(Some(&other), "lease", &bytes)
                .unwrap_err()
                .is_unauthentic()
        );
        assert!(
            open::<LeaseRecord>(Some(&k), "epochs/7.json", &bytes)
                .unwrap_err()
                .is_unauthentic()
        );
        let unsigned = encode(&lease(7));
        assert!(
            open::<LeaseRecord>(Some(&k), "lease", &unsigned)
                .unwrap_err()
                .is_unauthentic()
        );
        let altered = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("\"epoch\":7", "\"epoch\":8");
        assert_ne!(altered.as_bytes(), &bytes[..]);
        assert!(
            open::<LeaseRecord>(Some(&k), "lease", altered.as_bytes())
                .unwrap_err()
                .is_unauthentic()
        );
        // Garbage is malformed, not unauthentic.
        assert!(matches!(
            open::<LeaseRecord>(Some(&k), "lease", b"\x00junk"),
            Err(OpenError::Malformed(_))
        ));
    }

    #[test]
    fn open_verified_names_the_key() {
        let old = keys(b"0123456789abcdef-old");
        let rotating =
            Keyring::new(b"0123456789abcdef-new", Some(b"0123456789abcdef-old")).unwrap();
        let by_old = seal(Some(&old), "lease", &lease(1));
        let by_new = seal(Some(&rotating), "lease", &lease(1));
        let which = |b: &[u8]| {
            open_verified::<LeaseRecord>(Some(&rotating), "lease", b)
                .unwrap()
                .1
        };
        assert_eq!(which(&by_old), Some(Verified::Accepted));
        assert_eq!(which(&by_new), Some(Verified::Current));
        assert_eq!(
            open_verified::<LeaseRecord>(None, "lease", &by_new)
                .unwrap()
                .1,
            None
        );
    }

    #[test]
    fn field_order_and_whitespace_do_not_matter() {
        let k = keys(b"0123456789abcdef0123");
        let bytes = seal(Some(&k), "lease", &lease(2));
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        // Re-serialise pretty and with the fields reversed: the same record.
        let Value::Object(m) = v else { panic!() };
        let mut rev = String::from("{\n");
        let n = m.len();
        for (i, (key, val)) in m.iter().rev().enumerate() {
            rev.push_str(&format!(
                "  {}: {}{}\n",
                Value::String(key.clone()),
                val,
                if i + 1 < n { "," } else { "" }
            ));
        }
        rev.push('}');
        assert_eq!(
            open::<LeaseRecord>(Some(&k), "lease", rev.as_bytes()),
            Ok(lease(2))
        );
    }

    #[test]
    fn unknown_fields_are_covered_by_the_mac() {
        // A newer writer's extra field is signed too: dropping or changing it is detected.
        let k = keys(b"0123456789abcdef0123");
        let mut v = serde_json::to_value(lease(1)).unwrap();
        v["future"] = Value::from(1);
        let bytes = seal(Some(&k), "lease", &v);
        assert!(open::<LeaseRecord>(Some(&k), "lease", &bytes).is_ok());
        let changed = String::from_utf8(bytes)
            .unwrap()
            .replace("\"future\":1", "\"future\":2");
        assert!(open::<LeaseRecord>(Some(&k), "lease", changed.as_bytes()).is_err());
    }
}
