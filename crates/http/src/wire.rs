//! The JSON bodies of the API as types both ends share: the server serializes them (borrowing
//! from a snapshot), `tenure check` and `tenure master` deserialize them (owned `Cow`s).
//!
//! Two families:
//! - Apache Brooklyn's classes under `/v1/server/…` ([`HaSummary`], [`HaNodeSummary`],
//!   [`VersionSummary`], [`ErrorBody`]), with exactly Brooklyn's fields: Brooklyn's own Java
//!   client reads them with Jackson, which fails on a field it does not know.
//! - tenure's richer view of the cluster at `/ha/states` ([`States`], [`NodeView`]): epochs,
//!   instances, versions, heartbeat ages, lease deadlines, bad records.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use tenure_election::{Mode, NodeState};

/// Brooklyn's `HighAvailabilitySummary` (`GET /v1/server/ha/states`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HaSummary<'a> {
    pub plane_id: Cow<'a, str>,
    pub own_id: Cow<'a, str>,
    /// `null` when no live master is known.
    pub master_id: Option<Cow<'a, str>>,
    pub nodes: BTreeMap<Cow<'a, str>, HaNodeSummary<'a>>,
    /// Always empty, as in Brooklyn.
    pub links: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
}

/// Brooklyn's `HighAvailabilitySummary.HaNodeSummary`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HaNodeSummary<'a> {
    pub node_id: Cow<'a, str>,
    pub node_uri: Option<Cow<'a, str>>,
    pub status: NodeState,
    pub local_timestamp: Option<i64>,
    pub remote_timestamp: Option<i64>,
    pub priority: Option<i64>,
}

/// tenure's view of the cluster (`GET /ha/states`): Brooklyn's summary and more per node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct States<'a> {
    pub plane_id: Cow<'a, str>,
    pub own_id: Cow<'a, str>,
    /// `null` when no live master is known (older nodes answer `""`: read both as none).
    pub master_id: Option<Cow<'a, str>>,
    pub nodes: BTreeMap<Cow<'a, str>, NodeView<'a>>,
    #[serde(default)]
    pub links: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    /// The live master's epoch, else the last lease epoch seen.
    pub epoch: Option<u64>,
    #[serde(default)]
    pub bad_records: Vec<BadRecordView<'a>>,
    /// The cluster's expected members (`--expect-nodes`, `--cluster-file`), sorted; absent
    /// when the node was given none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Vec<Cow<'a, str>>>,
    /// The expected members that are absent (no heartbeat record), silent (a record unchanged
    /// for T: the row says FAILED) or stopped (TERMINATED), sorted; present (maybe empty)
    /// exactly when `expected` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<Vec<Cow<'a, str>>>,
}

impl States<'_> {
    /// The master named by the lease, if any (`""` from older nodes counts as none).
    pub fn master(&self) -> Option<&str> {
        self.master_id.as_deref().filter(|m| !m.is_empty())
    }

    /// The missing expected members (empty without an expected list).
    pub fn missing(&self) -> &[Cow<'_, str>] {
        self.missing.as_deref().unwrap_or_default()
    }

    /// Brooklyn's shape of the same answer (which has no `expected` or `missing`: Brooklyn's
    /// Java client refuses unknown fields).
    pub fn brooklyn(&self) -> HaSummary<'_> {
        HaSummary {
            plane_id: Cow::Borrowed(&self.plane_id),
            own_id: Cow::Borrowed(&self.own_id),
            master_id: self.master().map(Cow::Borrowed),
            nodes: self
                .nodes
                .iter()
                .map(|(k, v)| (Cow::Borrowed(k.as_ref()), v.brooklyn()))
                .collect(),
            links: BTreeMap::new(),
        }
    }
}

/// One node in [`States`]. Brooklyn's six fields are repeated here rather than a
/// `#[serde(flatten)]`ed [`HaNodeSummary`]: flatten encodes through a map, slower on the
/// polled `/ha/states`, and a flattened struct cannot refuse unknown fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView<'a> {
    pub node_id: Cow<'a, str>,
    pub node_uri: Option<Cow<'a, str>>,
    pub status: NodeState,
    pub local_timestamp: Option<i64>,
    pub remote_timestamp: Option<i64>,
    pub priority: Option<i64>,
    pub epoch: Option<u64>,
    pub instance_id: Cow<'a, str>,
    pub app_version: Option<Cow<'a, str>>,
    pub mode: Option<Mode>,
    pub heartbeat_age_ms: Option<u64>,
    /// Only on a master's own row: time left before it stops answering MASTER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_deadline_ms: Option<u64>,
    /// Only on this node's own row, while it waits (see `tenure_election::Waiting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<WaitingView<'a>>,
}

impl NodeView<'_> {
    pub fn brooklyn(&self) -> HaNodeSummary<'_> {
        HaNodeSummary {
            node_id: Cow::Borrowed(&self.node_id),
            node_uri: self.node_uri.as_deref().map(Cow::Borrowed),
            status: self.status,
            local_timestamp: self.local_timestamp,
            remote_timestamp: self.remote_timestamp,
            priority: self.priority,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitingView<'a> {
    #[serde(rename = "for")]
    pub what: Cow<'a, str>,
    /// Wall clock, ms since the Unix epoch, like `localTimestamp`.
    pub until_timestamp: i64,
    pub remaining_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BadRecordView<'a> {
    pub key: Cow<'a, str>,
    pub reason: Cow<'a, str>,
}

/// Brooklyn's `ApiError`: every error answer, `{"message", "details"?, "data"?, "error"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody<'a> {
    pub message: Cow<'a, str>,
    /// What to do about it, when there is more to say than the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Cow<'a, str>>,
    /// tenure's short code for scripts (`{"code": "conflict"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<ErrorData<'a>>,
    /// The HTTP status.
    pub error: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorData<'a> {
    pub code: Cow<'a, str>,
}

/// Brooklyn's `VersionSummary` (`GET /v1/server/version`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionSummary<'a> {
    pub version: Cow<'a, str>,
    pub build_sha1: Option<Cow<'a, str>>,
    pub build_branch: Option<Cow<'a, str>>,
    /// Brooklyn lists its OSGi features; tenure has none.
    pub features: Vec<serde_json::Value>,
}

/// One entry of `highAvailability.history` in `/ha/metrics`, newest first (Brooklyn's shape).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub state: NodeState,
    /// Wall clock, ms since the Unix epoch.
    pub timestamp: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_nodes_empty_master_id_reads_as_no_master() {
        let s: States = serde_json::from_str(
            r#"{"planeId":"p","ownId":"a","masterId":"","nodes":{},"epoch":null}"#,
        )
        .unwrap();
        assert_eq!(s.master(), None);
        assert_eq!(s.brooklyn().master_id, None);
    }
}
