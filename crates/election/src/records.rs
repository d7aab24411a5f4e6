//! The JSON records tenure keeps in the store (DESIGN §4). Every record carries a format
//! number and the cluster id; every write of the lease and of a heartbeat carries a counter
//! and the instance id, so no two writes are byte-identical (an S3 ETag is the MD5 of the body).

use crate::types::{Mode, NodeState};
use serde::{Deserialize, Serialize};

pub const FORMAT: u32 = 1;
pub const CLUSTER_KEY: &str = "cluster.json";
pub const EPOCHS_PREFIX: &str = "epochs/";
pub const NODES_PREFIX: &str = "nodes/";

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
}

/// Parse a record, refusing a different format or cluster.
pub fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice::<T>(bytes).map_err(|e| format!("not a tenure record: {e}"))
}

pub fn encode<T: Serialize>(rec: &T) -> Vec<u8> {
    serde_json::to_vec(rec).expect("records always serialize")
}
