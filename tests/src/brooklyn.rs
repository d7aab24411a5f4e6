//! Strict mirrors of Apache Brooklyn's REST classes, for checking that what tenure serves under
//! `/v1/server/…` is what Brooklyn's own Java client accepts.
//!
//! Brooklyn's client reads these answers with Jackson and `FAIL_ON_UNKNOWN_PROPERTIES`: a field
//! its class does not declare fails the whole answer. Brooklyn's server writes them with
//! Jackson's default inclusion (every declared key, `null` included) except where a field says
//! otherwise (`ApiError`'s `@JsonInclude`). Each mirror therefore:
//! - refuses any key its Java class does not declare (`#[serde(deny_unknown_fields)]`; the two
//!   classes that take other keys collect them with `#[serde(flatten)]` instead);
//! - requires every key Brooklyn always writes: a plain `T` may be neither missing nor `null`,
//!   and a value Brooklyn may write as `null` is an `Option` read through [`nullable`], so its
//!   key must still be there;
//! - lets a key be absent (or `null`) only where Brooklyn omits it (`@JsonInclude(NON_NULL /
//!   NON_EMPTY)`): `#[serde(default)] Option<T>`.
//!
//! The mirrors follow the Java source (apache/brooklyn-server, the paths in each doc comment),
//! not tenure's own types (`tenure_http::wire`), so a drift on tenure's side shows up here.
//! Where serde's derive differs from Jackson: it refuses a repeated key (Jackson keeps the last
//! one) and would bind a JSON array positionally to a class (Jackson refuses it); tenure's
//! answers have neither.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer};
use serde_json::Value;
use std::collections::BTreeMap;

/// Brooklyn's `ManagementNodeState` names
/// (`api/src/main/java/org/apache/brooklyn/api/mgmt/ha/ManagementNodeState.java`), which Jackson
/// writes as plain strings.
pub const MANAGEMENT_NODE_STATES: [&str; 7] = [
    "INITIALIZING",
    "STANDBY",
    "HOT_STANDBY",
    "HOT_BACKUP",
    "MASTER",
    "FAILED",
    "TERMINATED",
];

/// Is `s` one of Brooklyn's [`MANAGEMENT_NODE_STATES`]?
pub fn is_management_node_state(s: &str) -> bool {
    MANAGEMENT_NODE_STATES.contains(&s)
}

/// Decodes `body` strictly as `T`, as Brooklyn's client would; panics with serde's error and
/// the whole body when Brooklyn's client would refuse it.
pub fn parse_strict<T: DeserializeOwned>(body: &str) -> T {
    serde_json::from_str(body).unwrap_or_else(|e| {
        panic!(
            "Brooklyn's client would refuse this answer as {}: {e}\nbody: {body}",
            std::any::type_name::<T>()
        )
    })
}

/// `deserialize_with` for a key Brooklyn always writes, whose value may be `null`: with it and
/// no `default`, serde refuses a missing key (a bare `Option<T>` field would read it as `None`).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Option::deserialize(d)
}

/// Java `java.net.URI`, as Jackson binds it (`URI.create`): a string without the characters
/// a URI may not contain (whitespace, controls, `"<>\^`{|}`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Uri(pub String);

impl TryFrom<String> for Uri {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || "\"<>\\^`{|}".contains(*c))
        {
            Some(c) => Err(format!(
                "invalid URI {s:?}: contains {c:?} (java.net.URI.create refuses it)"
            )),
            None => Ok(Uri(s)),
        }
    }
}

/// `org.apache.brooklyn.rest.domain.HighAvailabilitySummary`
/// (`rest/rest-api/src/main/java/org/apache/brooklyn/rest/domain/HighAvailabilitySummary.java`),
/// the answer of `GET /v1/server/ha/states`, as `HighAvailabilityTransformer` fills it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HighAvailabilitySummary {
    /// The plane's (cluster's) id: `null` in a plane record that has none.
    #[serde(deserialize_with = "nullable")]
    pub plane_id: Option<String>,
    /// The answering node's id (`mgmt.getManagementNodeId()`, never null).
    pub own_id: String,
    /// `memento.getMasterNodeId()`: `null` when no master is known.
    #[serde(deserialize_with = "nullable")]
    pub master_id: Option<String>,
    /// Node id → summary (the constructor turns null into an empty map: never null).
    pub nodes: BTreeMap<String, HaNodeSummary>,
    /// `Map<String, URI>`; Brooklyn fills none (never null).
    pub links: BTreeMap<String, Uri>,
}

/// `HighAvailabilitySummary.HaNodeSummary` (same file), from a `ManagementNodeSyncRecord`.
/// Every field is a boxed Java type that the transformer may fill with `null`; the keys are
/// always written.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HaNodeSummary {
    /// The record's node id (never null).
    pub node_id: String,
    /// `java.net.URI`: `null` for a node that did not say how to reach it.
    #[serde(deserialize_with = "nullable")]
    pub node_uri: Option<Uri>,
    /// A `ManagementNodeState` name, or `null` (the transformer checks for a null status).
    #[serde(deserialize_with = "nullable")]
    pub status: Option<String>,
    /// `Long`: the writer's wall clock, ms since the Unix epoch.
    #[serde(deserialize_with = "nullable")]
    pub local_timestamp: Option<i64>,
    /// `Long`: the store's time of the record, when known.
    #[serde(deserialize_with = "nullable")]
    pub remote_timestamp: Option<i64>,
    /// `Long`.
    #[serde(deserialize_with = "nullable")]
    pub priority: Option<i64>,
}

/// `org.apache.brooklyn.rest.domain.ApiError`
/// (`rest/rest-api/src/main/java/org/apache/brooklyn/rest/domain/ApiError.java`): the body of
/// every error answer.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiError {
    /// `checkNotNull(message)`: always there.
    pub message: String,
    /// `@JsonInclude(NON_EMPTY)`: left out when empty.
    #[serde(default)]
    pub details: Option<String>,
    /// `Object`, `@JsonInclude(NON_NULL)`: left out when null.
    #[serde(default)]
    pub data: Option<Value>,
    /// `Integer` (so `i32`), `@JsonInclude(NON_NULL)`: the HTTP status (`asResponse` sets it),
    /// left out when null.
    #[serde(default)]
    pub error: Option<i32>,
}

/// `org.apache.brooklyn.rest.domain.VersionSummary`
/// (`rest/rest-api/src/main/java/org/apache/brooklyn/rest/domain/VersionSummary.java`), the
/// answer of `GET /v1/server/version`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VersionSummary {
    /// `checkNotNull(version)`.
    pub version: String,
    /// `@Nullable`.
    #[serde(deserialize_with = "nullable")]
    pub build_sha1: Option<String>,
    /// `@Nullable`.
    #[serde(deserialize_with = "nullable")]
    pub build_branch: Option<String>,
    /// `checkNotNull(features)`.
    pub features: Vec<BrooklynFeatureSummary>,
}

/// `org.apache.brooklyn.rest.domain.BrooklynFeatureSummary`
/// (`rest/rest-api/src/main/java/org/apache/brooklyn/rest/domain/BrooklynFeatureSummary.java`).
/// Its `@JsonAnySetter set(String, String)` takes any other key with a string value (so this
/// one class accepts keys it does not name).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrooklynFeatureSummary {
    #[serde(deserialize_with = "nullable")]
    pub name: Option<String>,
    /// `checkNotNull(symbolicName)`.
    pub symbolic_name: String,
    #[serde(deserialize_with = "nullable")]
    pub version: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub last_modified: Option<String>,
    /// The any-setter's keys (e.g. `Brooklyn-Feature-Build-Id`).
    #[serde(flatten)]
    pub additional_data: BTreeMap<String, String>,
}

/// The map `ServerResource.getUpExtended()` builds
/// (`rest/rest-resources/src/main/java/org/apache/brooklyn/rest/resources/ServerResource.java`),
/// the answer of `GET /v1/server/up/extended`: `up`, `shuttingDown`, `healthy` and `ha` (a
/// [`HighAvailabilitySummary`], `null` when the node has no plane record yet). Brooklyn ≥ 1.1
/// adds `osgiUp` and `brooklyn.security.sensitive.fields`; the Java return type is
/// `Map<String, Object>`, so its clients cannot require them: they may be absent here, and any
/// other key is refused.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpExtended {
    pub up: bool,
    pub shutting_down: bool,
    pub healthy: bool,
    #[serde(deserialize_with = "nullable")]
    pub ha: Option<HighAvailabilitySummary>,
    #[serde(default)]
    pub osgi_up: Option<bool>,
    #[serde(default, rename = "brooklyn.security.sensitive.fields")]
    pub sensitive_fields: Option<SensitiveFields>,
}

/// `brooklyn.security.sensitive.fields` of [`UpExtended`]: `{tokens, plaintext.blocked}`
/// (`Sanitizer.getSensitiveFieldsTokens()`, `Sanitizer.isSensitiveFieldsPlaintextBlocked()`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensitiveFields {
    pub tokens: Vec<String>,
    #[serde(rename = "plaintext.blocked")]
    pub plaintext_blocked: bool,
}

/// The map `HighAvailabilityManagerImpl.getMetrics()` builds
/// (`core/src/main/java/org/apache/brooklyn/core/mgmt/ha/HighAvailabilityManagerImpl.java`),
/// the answer of `GET /v1/server/ha/metrics`: `state`, `uptime`, `currentTimeUtc`,
/// `startTimeUtc` and `highAvailability` always; Brooklyn adds its rebind metrics beside them
/// (the Java type is `Map<String, Object>`), so other keys are kept in `other`, not refused.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HaMetrics {
    /// A `ManagementNodeState` name.
    pub state: String,
    /// `Time.makeTimeStringRounded(…)`, e.g. `"1m 2s"`.
    pub uptime: String,
    pub current_time_utc: i64,
    pub start_time_utc: i64,
    pub high_availability: HaMetricsHighAvailability,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `highAvailability` of [`HaMetrics`]: exactly the four keys `getMetrics()` puts in it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HaMetricsHighAvailability {
    pub priority: i64,
    /// ms.
    pub poll_period: i64,
    /// ms.
    pub heartbeat_timeout: i64,
    /// `nodeStateHistory`: newest first (`add(0, …)`).
    pub history: Vec<HaStateChange>,
}

/// One `nodeStateHistory` entry: `MutableMap.of("state", newState, "timestamp", now)`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaStateChange {
    /// A `ManagementNodeState` name.
    pub state: String,
    /// ms since the Unix epoch.
    pub timestamp: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A summary as tenure is meant to send it (and as Brooklyn writes it).
    const SUMMARY: &str = r#"{
        "planeId": "plane-1",
        "ownId": "node-a",
        "masterId": "node-a",
        "nodes": {
            "node-a": {"nodeId": "node-a", "nodeUri": "http://127.0.0.1:8081/", "status": "MASTER",
                       "localTimestamp": 1700000000000, "remoteTimestamp": 1700000000001, "priority": 0},
            "node-b": {"nodeId": "node-b", "nodeUri": null, "status": "STANDBY",
                       "localTimestamp": 1700000000000, "remoteTimestamp": null, "priority": null}
        },
        "links": {}
    }"#;

    /// `SUMMARY` with `edit` applied (written compactly: `"key":value`).
    fn summary_with(edit: impl FnOnce(&mut Value)) -> String {
        let mut v: Value = serde_json::from_str(SUMMARY).unwrap();
        edit(&mut v);
        v.to_string()
    }

    /// Why `body` is refused as `T`: serde's error, and `body` up to where serde stopped (which
    /// ends at the faulty key or value).
    fn refused<T: DeserializeOwned + std::fmt::Debug>(body: &str) -> (String, String) {
        match serde_json::from_str::<T>(body) {
            Ok(t) => panic!("accepted {body} as {t:?}"),
            Err(e) => {
                let line_start: usize = body
                    .split_inclusive('\n')
                    .take(e.line().saturating_sub(1))
                    .map(str::len)
                    .sum();
                let stop = (line_start + e.column()).min(body.len());
                (e.to_string(), body[..stop].to_string())
            }
        }
    }

    #[test]
    fn a_well_formed_summary_is_accepted() {
        let s: HighAvailabilitySummary = parse_strict(SUMMARY);
        assert_eq!(s.own_id, "node-a");
        assert_eq!(s.master_id.as_deref(), Some("node-a"));
        assert_eq!(s.nodes.len(), 2);
        assert_eq!(s.nodes["node-b"].node_uri, None);
        assert_eq!(s.nodes["node-a"].status.as_deref(), Some("MASTER"));
        let s: HighAvailabilitySummary =
            parse_strict(&summary_with(|v| v["masterId"] = Value::Null));
        assert_eq!(s.master_id, None);
    }

    #[test]
    fn an_extra_field_is_refused() {
        // tenure's own view (/ha/states) has an epoch: Brooklyn's class does not.
        let (e, _) = refused::<HighAvailabilitySummary>(&summary_with(|v| v["epoch"] = 7.into()));
        assert!(e.contains("unknown field `epoch`"), "{e}");
        let (e, at) = refused::<HighAvailabilitySummary>(&summary_with(|v| {
            v["nodes"]["node-b"]["epoch"] = 7.into()
        }));
        assert!(e.contains("unknown field `epoch`"), "{e}");
        // Refused by HaNodeSummary, inside node-b's entry.
        assert!(e.contains("expected one of `nodeId`"), "{e}");
        let (_, inside) = at.rsplit_once(r#""node-b":{"#).expect(&at);
        assert!(!inside.contains('}'), "{e} at {at}");
        assert!(at.ends_with(r#""epoch""#), "{e} at {at}");
        let (e, _) = refused::<ApiError>(r#"{"message": "m", "error": 404, "code": "not-found"}"#);
        assert!(e.contains("unknown field `code`"), "{e}");
        let (e, _) = refused::<VersionSummary>(
            r#"{"version": "1", "buildSha1": null, "buildBranch": null, "features": [], "epoch": 1}"#,
        );
        assert!(e.contains("unknown field `epoch`"), "{e}");
        let (e, _) = refused::<UpExtended>(&format!(
            r#"{{"up": true, "shuttingDown": false, "healthy": true, "ha": {SUMMARY}, "epoch": 1}}"#
        ));
        assert!(e.contains("unknown field `epoch`"), "{e}");
        let (e, _) = refused::<HaMetrics>(
            r#"{"state": "MASTER", "uptime": "1s", "currentTimeUtc": 2, "startTimeUtc": 1,
                "highAvailability": {"priority": 0, "pollPeriod": 200, "heartbeatTimeout": 2000,
                                     "history": [], "epoch": 3}}"#,
        );
        assert!(e.contains("unknown field `epoch`"), "{e}");
    }

    #[test]
    fn a_missing_field_is_refused() {
        for key in ["planeId", "ownId", "masterId", "nodes", "links"] {
            let (e, _) = refused::<HighAvailabilitySummary>(&summary_with(|v| {
                v.as_object_mut().unwrap().remove(key);
            }));
            assert!(e.contains(&format!("missing field `{key}`")), "{e}");
        }
        for key in [
            "nodeId",
            "nodeUri",
            "status",
            "localTimestamp",
            "remoteTimestamp",
            "priority",
        ] {
            let (e, _) = refused::<HighAvailabilitySummary>(&summary_with(|v| {
                v["nodes"]["node-a"].as_object_mut().unwrap().remove(key);
            }));
            assert!(e.contains(&format!("missing field `{key}`")), "{e}");
        }
        let (e, _) = refused::<ApiError>(r#"{"error": 500}"#);
        assert!(e.contains("missing field `message`"), "{e}");
        let (e, _) =
            refused::<VersionSummary>(r#"{"version": "1", "buildSha1": null, "features": []}"#);
        assert!(e.contains("missing field `buildBranch`"), "{e}");
        let (e, _) = refused::<UpExtended>(r#"{"up": true, "shuttingDown": false, "ha": null}"#);
        assert!(e.contains("missing field `healthy`"), "{e}");
    }

    #[test]
    fn null_and_wrong_types_are_refused_where_brooklyn_does_not_allow_them() {
        // ownId is never null; masterId may be, but "" is not null (a type check cannot see
        // that: the e2e tests assert the raw value).
        let (e, at) =
            refused::<HighAvailabilitySummary>(&summary_with(|v| v["ownId"] = Value::Null));
        assert!(e.contains("invalid type: null"), "{e}");
        assert!(at.ends_with(r#""ownId":null"#), "{e} at {at}");
        let (e, _) = refused::<HighAvailabilitySummary>(&summary_with(|v| {
            v["nodes"]["node-a"]["priority"] = "high".into()
        }));
        assert!(e.contains("expected i64"), "{e}");
        let (e, _) = refused::<HighAvailabilitySummary>(&summary_with(|v| {
            v["nodes"]["node-a"]["nodeUri"] = "http://a b/".into()
        }));
        assert!(e.contains("invalid URI"), "{e}");
        let (e, _) = refused::<ApiError>(r#"{"message": "m", "error": "404"}"#);
        assert!(e.contains("invalid type: string"), "{e}");
        assert!(e.contains("expected i32"), "{e}");
        // Java Integer: 32 bits.
        let (e, _) = refused::<ApiError>(r#"{"message": "m", "error": 4294967296}"#);
        assert!(e.contains("expected i32"), "{e}");
        let (e, at) = refused::<VersionSummary>(
            r#"{"version": null, "buildSha1": null, "buildBranch": null, "features": []}"#,
        );
        assert!(e.contains("invalid type: null"), "{e}");
        assert!(at.ends_with(r#""version": null"#), "{e} at {at}");
    }

    #[test]
    fn brooklyns_own_fixtures_are_accepted() {
        // rest/rest-api/src/test/resources/fixtures/{api-error-basic,api-error-no-details,
        // server-version}.json in apache/brooklyn-server.
        let e: ApiError = parse_strict(
            r#"{"message": "explanatory message", "details": "accompanying details"}"#,
        );
        assert_eq!(e.details.as_deref(), Some("accompanying details"));
        assert_eq!(e.error, None);
        let e: ApiError = parse_strict(r#"{"message": "explanatory message"}"#);
        assert_eq!((e.details, e.data, e.error), (None, None, None));
        let v: VersionSummary = parse_strict(
            r#"{
                "version": "0.7.0-SNAPSHOT",
                "buildSha1": "cb4f0a3af2f5042222dd176edc102bfa64e7e0b5",
                "buildBranch": "versions",
                "features": [{
                    "name": "Sample Brooklyn Project com.acme.sample:brooklyn-sample v0.1.0-SNAPSHOT",
                    "symbolicName": "com.acme.sample.brooklyn-sample",
                    "version": "0.1.0.SNAPSHOT",
                    "lastModified": "523305000",
                    "Brooklyn-Feature-Build-Id": "e0fee1adf795c84eec4735f039503eb18d9c35cc"
                }]
            }"#,
        );
        assert_eq!(
            v.features[0].additional_data["Brooklyn-Feature-Build-Id"],
            "e0fee1adf795c84eec4735f039503eb18d9c35cc"
        );
        // A feature needs its symbolicName; its any-setter takes strings only.
        let (e, _) = refused::<BrooklynFeatureSummary>(
            r#"{"name": null, "version": null, "lastModified": null}"#,
        );
        assert!(e.contains("missing field `symbolicName`"), "{e}");
        let (e, _) = refused::<BrooklynFeatureSummary>(
            r#"{"name": null, "symbolicName": "s", "version": null, "lastModified": null, "x": {}}"#,
        );
        assert!(e.contains("expected a string"), "{e}");
        // Brooklyn's full up/extended map.
        let u: UpExtended = parse_strict(&format!(
            r#"{{"up": true, "shuttingDown": false, "healthy": true, "ha": {SUMMARY}, "osgiUp": true,
                "brooklyn.security.sensitive.fields": {{"tokens": ["password"], "plaintext.blocked": false}}}}"#
        ));
        assert_eq!(u.osgi_up, Some(true));
        // ha/metrics keeps Brooklyn's other metrics beside highAvailability.
        let m: HaMetrics = parse_strict(
            r#"{"state": "MASTER", "uptime": "1s", "currentTimeUtc": 2, "startTimeUtc": 1,
                "highAvailability": {"priority": 0, "pollPeriod": 200, "heartbeatTimeout": 2000,
                                     "history": [{"state": "MASTER", "timestamp": 1}]},
                "rebind": {"count": 0}}"#,
        );
        assert_eq!(m.other["rebind"]["count"], 0);
        assert_eq!(m.high_availability.history[0].state, "MASTER");
    }

    #[test]
    #[should_panic(expected = "unknown field `epoch`")]
    fn parse_strict_panics_with_the_error() {
        let _: HighAvailabilitySummary = parse_strict(&summary_with(|v| v["epoch"] = 1.into()));
    }

    #[test]
    #[should_panic(expected = "body: {")]
    fn parse_strict_panics_with_the_body() {
        let _: ApiError = parse_strict(r#"{"error": 500}"#);
    }
}
