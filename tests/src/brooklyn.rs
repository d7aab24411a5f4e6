//! Strict mirrors of Apache Brooklyn's REST classes, for checking that what tenure serves under
//! `/v1/server/…` is what Brooklyn's own Java client accepts.
//!
//! Brooklyn's client reads these answers with Jackson and `FAIL_ON_UNKNOWN_PROPERTIES`: a field
//! its class does not declare fails the whole answer. Brooklyn's server writes them with
//! Jackson's default inclusion (every declared key, `null` included) except where a field says
//! otherwise (`ApiError`'s `@JsonInclude`). Each mirror therefore:
//! - refuses any key its Java class does not declare (serde's `deny_unknown_fields`);
//! - requires every key Brooklyn always writes; a value Brooklyn may write as `null` is an
//!   `Option` whose key must still be there (serde's `Option<T>` *without* `#[serde(default)]`);
//! - lets a key be absent only where Brooklyn omits it (`@JsonInclude(NON_NULL / NON_EMPTY)`).
//!
//! The mirrors follow the Java source (apache/brooklyn-server, the paths in each doc comment),
//! not tenure's own types (`tenure_http::wire`), so a drift on tenure's side shows up here.
//!
//! Why not `#[derive(Deserialize)]`: this package depends on `serde_json` but not on `serde`
//! (whose derive the attributes need), so each mirror decodes itself from a
//! [`serde_json::Value`] through [`Fields`], which applies exactly those three rules.

use serde_json::{Map, Value};
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

/// A type decoded strictly from JSON, as Jackson would bind the Brooklyn class it mirrors.
pub trait Strict: Sized {
    /// Decodes `v`, found at `at` (a JSONPath-like location for messages, `$` at the root).
    fn from_json(v: &Value, at: &str) -> Result<Self, String>;
}

/// Decodes `body` strictly as `T`: the error says what and where.
pub fn from_str_strict<T: Strict>(body: &str) -> Result<T, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    T::from_json(&v, "$")
}

/// Decodes `body` strictly as `T`, as Brooklyn's client would; panics with the serde-style
/// error and the whole body when Brooklyn's client would refuse it.
pub fn parse_strict<T: Strict>(body: &str) -> T {
    from_str_strict(body).unwrap_or_else(|e| {
        panic!(
            "Brooklyn's client would refuse this answer as {}: {e}\nbody: {body}",
            std::any::type_name::<T>()
        )
    })
}

fn invalid(at: &str, expected: &str, got: &Value) -> String {
    let mut shown = got.to_string();
    if shown.len() > 80 {
        shown.truncate(80);
        shown.push('…');
    }
    format!("invalid type at {at}: expected {expected}, found {shown}")
}

impl Strict for String {
    fn from_json(v: &Value, at: &str) -> Result<Self, String> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| invalid(at, "a string", v))
    }
}

impl Strict for bool {
    fn from_json(v: &Value, at: &str) -> Result<Self, String> {
        v.as_bool().ok_or_else(|| invalid(at, "a boolean", v))
    }
}

/// Java `long` / `Long`: an integer within 64 bits (no fraction).
impl Strict for i64 {
    fn from_json(v: &Value, at: &str) -> Result<Self, String> {
        v.as_i64()
            .ok_or_else(|| invalid(at, "an integer (Java long)", v))
    }
}

/// Java `Integer`: an integer within 32 bits.
impl Strict for i32 {
    fn from_json(v: &Value, at: &str) -> Result<Self, String> {
        v.as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| invalid(at, "an integer (Java Integer)", v))
    }
}

/// Java `Object`: any JSON.
impl Strict for Value {
    fn from_json(v: &Value, _at: &str) -> Result<Self, String> {
        Ok(v.clone())
    }
}

/// Java `List<T>`: a JSON array of `T` (an element may not be null).
impl<T: Strict> Strict for Vec<T> {
    fn from_json(v: &Value, at: &str) -> Result<Self, String> {
        let items = v.as_array().ok_or_else(|| invalid(at, "an array", v))?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| T::from_json(item, &format!("{at}[{i}]")))
            .collect()
    }
}

/// Java `Map<String, T>`: a JSON object of `T` (a value may not be null).
impl<T: Strict> Strict for BTreeMap<String, T> {
    fn from_json(v: &Value, at: &str) -> Result<Self, String> {
        let map = v.as_object().ok_or_else(|| invalid(at, "an object", v))?;
        map.iter()
            .map(|(k, item)| Ok((k.clone(), T::from_json(item, &format!("{at}.{k}"))?)))
            .collect()
    }
}

/// Java `java.net.URI`, as Jackson binds it (`URI.create`): a string without the characters
/// a URI may not contain (whitespace, controls, `"<>\^`{|}`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Uri(pub String);

impl Strict for Uri {
    fn from_json(v: &Value, at: &str) -> Result<Self, String> {
        let s = String::from_json(v, at)?;
        if let Some(c) = s
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || "\"<>\\^`{|}".contains(*c))
        {
            return Err(format!(
                "invalid URI at {at}: {s:?} contains {c:?} (java.net.URI.create refuses it)"
            ));
        }
        Ok(Uri(s))
    }
}

/// The keys of one JSON object being bound to one Java class: every accessor names a key the
/// class declares; [`Fields::finish`] refuses any other (`FAIL_ON_UNKNOWN_PROPERTIES`).
pub struct Fields<'a> {
    class: &'static str,
    at: String,
    map: &'a Map<String, Value>,
    declared: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    /// `v` must be a JSON object (a `null` is refused: Brooklyn never sends one where these
    /// classes are bound, except where the caller uses [`Fields::nullable`]).
    pub fn new(class: &'static str, v: &'a Value, at: &str) -> Result<Self, String> {
        let map = v
            .as_object()
            .ok_or_else(|| invalid(at, &format!("an object ({class})"), v))?;
        Ok(Fields {
            class,
            at: at.to_string(),
            map,
            declared: Vec::new(),
        })
    }

    fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.at)
    }

    fn missing(&self, key: &str) -> String {
        format!("{}: missing field `{key}` at {}", self.class, self.at)
    }

    /// A key Brooklyn always writes with a value: present and not null.
    pub fn required<T: Strict>(&mut self, key: &'static str) -> Result<T, String> {
        self.declared.push(key);
        match self.map.get(key) {
            None => Err(self.missing(key)),
            Some(Value::Null) => Err(format!(
                "{}: field `{key}` is null at {} (Brooklyn's class does not allow null here)",
                self.class, self.at
            )),
            Some(v) => T::from_json(v, &self.path(key)),
        }
    }

    /// A key Brooklyn always writes, whose value may be `null` (serde: `Option<T>` without
    /// `#[serde(default)]`).
    pub fn nullable<T: Strict>(&mut self, key: &'static str) -> Result<Option<T>, String> {
        self.declared.push(key);
        match self.map.get(key) {
            None => Err(self.missing(key)),
            Some(Value::Null) => Ok(None),
            Some(v) => T::from_json(v, &self.path(key)).map(Some),
        }
    }

    /// A key Brooklyn leaves out when it has no value (`@JsonInclude(NON_NULL)` or
    /// `NON_EMPTY`): absent or `null` is `None` (serde: `#[serde(default)] Option<T>`).
    pub fn omissible<T: Strict>(&mut self, key: &'static str) -> Result<Option<T>, String> {
        self.declared.push(key);
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => T::from_json(v, &self.path(key)).map(Some),
        }
    }

    /// The keys not declared so far (for a class with `@JsonAnySetter`).
    pub fn undeclared(&self) -> impl Iterator<Item = (&'a String, &'a Value)> + '_ {
        self.map
            .iter()
            .filter(|(k, _)| !self.declared.contains(&k.as_str()))
    }

    /// Refuses the object if it has a key the class does not declare.
    pub fn finish(self) -> Result<(), String> {
        match self.undeclared().next() {
            None => Ok(()),
            Some((k, _)) => Err(format!(
                "{}: unknown field `{k}` at {}, expected one of {}",
                self.class,
                self.at,
                self.declared
                    .iter()
                    .map(|d| format!("`{d}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// `org.apache.brooklyn.rest.domain.HighAvailabilitySummary`
/// (`rest/rest-api/src/main/java/org/apache/brooklyn/rest/domain/HighAvailabilitySummary.java`),
/// the answer of `GET /v1/server/ha/states`, as `HighAvailabilityTransformer` fills it.
#[derive(Clone, Debug, PartialEq)]
pub struct HighAvailabilitySummary {
    /// The plane's (cluster's) id: `null` in a plane record that has none.
    pub plane_id: Option<String>,
    /// The answering node's id (`mgmt.getManagementNodeId()`, never null).
    pub own_id: String,
    /// `memento.getMasterNodeId()`: `null` when no master is known.
    pub master_id: Option<String>,
    /// Node id → summary (the constructor turns null into an empty map: never null).
    pub nodes: BTreeMap<String, HaNodeSummary>,
    /// `Map<String, URI>`; Brooklyn fills none (never null).
    pub links: BTreeMap<String, Uri>,
}

impl Strict for HighAvailabilitySummary {
    fn from_json(v: &Value, at: &str) -> Result<Self, String> {
        let mut f = Fields::new("HighAvailabilitySummary", v, at)?;
        let s = HighAvailabilitySummary {
            plane_id: f.nullable("planeId")?,
            own_id: f.required("ownId")?,
            master_id: f.nullable("masterId")?,
            nodes: f.required("nodes")?,
            links: f.required("links")?,
        };
        f.finish()?;
        Ok(s)
    }
}

/// `HighAvailabilitySummary.HaNodeSummary` (same file), from a `ManagementNodeSyncRecord`.
/// Every field is a boxed Java type that the transformer may fill with `null`; the keys are
/// always written.
#[derive(Clone, Debug, PartialEq)]
pub struct HaNodeSummary {
    /// The record's node id (never null).
    pub node_id: String,
    /// `java.net.URI`: `null` for a node that did not say how to reach it.
    pub node_uri: Option<Uri>,
    /// A `ManagementNodeState` name, or `null` (the transformer checks for a null status).
    pub status: Option<String>,
    /// `Long`: the writer's wall clock, ms since the Unix epoch.
    pub local_timestamp: Option<i64>,
    /// `Long`: the store's time of the record, when known.
    pub remote_timestamp: Option<i64>,
    /// `Long`.
    pub priority: Option<i64>,
}

impl Strict for HaNodeSummary {
    fn from_json(v: &Value, at: &str) -> Result<Self, String> {
        let mut f = Fields::new("HaNodeSummary", v, at)?;
        let s = HaNodeSummary {
            node_id: f.required("nodeId")?,
            node_uri: f.nullable("nodeUri")?,
            status: f.nullable("status")?,
            local_timestamp: f.nullable("localTimestamp")?,
            remote_timestamp: f.nullable("remoteTimestamp")?,
            priority: f.nullable("priority")?,
        };
        f.finish()?;
        Ok(s)
    }
}

/// `org.apache.brooklyn.rest.domain.ApiError`
/// (`rest/rest-api/src/main/java/org/apache/brooklyn/rest/domain/ApiError.java`): the body of
/// every error answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// `checkNotNull(message)`: always there.
    pub message: String,
    /// `@JsonInclude(NON_EMPTY)`: left out when empty.
    pub details: Option<String>,
    /// `Object`, `@JsonInclude(NON_NULL)`: left out when null.
    pub data: Option<Value>,
    /// `Integer`, `@JsonInclude(NON_NULL)`: the HTTP status (`asResponse` sets it), left out
    /// when null.
    pub error: Option<i32>,
}

impl Strict for ApiError {
    fn from_json(v: &Value, at: &str) -> Result<Self, String> {
        let mut f = Fields::new("ApiError", v, at)?;
        let s = ApiError {
            message: f.required("message")?,
            details: f.omissible("details")?,
            data: f.omissible("data")?,
            error: f.omissible("error")?,
        };
        f.finish()?;
        Ok(s)
    }
}

/// `org.apache.brooklyn.rest.domain.VersionSummary`
/// (`rest/rest-api/src/main/java/org/apache/brooklyn/rest/domain/VersionSummary.java`), the
/// answer of `GET /v1/server/version`.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionSummary {
    /// `checkNotNull(version)`.
    pub version: String,
    /// `@Nullable`.
    pub build_sha1: Option<String>,
    /// `@Nullable`.
    pub build_branch: Option<String>,
    /// `checkNotNull(features)`.
    pub features: Vec<BrooklynFeatureSummary>,
}

impl Strict for VersionSummary {
    fn from_json(v: &Value, at: &str) -> Result<Self, String> {
        let mut f = Fields::new("VersionSummary", v, at)?;
        let s = VersionSummary {
            version: f.required("version")?,
            build_sha1: f.nullable("buildSha1")?,
            build_branch: f.nullable("buildBranch")?,
            features: f.required("features")?,
        };
        f.finish()?;
        Ok(s)
    }
}

/// `org.apache.brooklyn.rest.domain.BrooklynFeatureSummary`
/// (`rest/rest-api/src/main/java/org/apache/brooklyn/rest/domain/BrooklynFeatureSummary.java`).
/// Its `@JsonAnySetter set(String, String)` takes any other key with a string value (so this
/// one class accepts keys it does not name).
#[derive(Clone, Debug, PartialEq)]
pub struct BrooklynFeatureSummary {
    pub name: Option<String>,
    /// `checkNotNull(symbolicName)`.
    pub symbolic_name: String,
    pub version: Option<String>,
    pub last_modified: Option<String>,
    /// The any-setter's keys (e.g. `Brooklyn-Feature-Build-Id`).
    pub additional_data: BTreeMap<String, String>,
}

impl Strict for BrooklynFeatureSummary {
    fn from_json(v: &Value, at: &str) -> Result<Self, String> {
        let mut f = Fields::new("BrooklynFeatureSummary", v, at)?;
        let name = f.nullable("name")?;
        let symbolic_name = f.required("symbolicName")?;
        let version = f.nullable("version")?;
        let last_modified = f.nullable("lastModified")?;
        let additional_data = f
            .undeclared()
            .map(|(k, v)| Ok((k.clone(), String::from_json(v, &format!("{at}.{k}"))?)))
            .collect::<Result<_, String>>()?;
        Ok(BrooklynFeatureSummary {
            name,
            symbolic_name,
            version,
            last_modified,
            additional_data,
        })
    }
}

/// The map `ServerResource.getUpExtended()` builds
/// (`rest/rest-resources/src/main/java/org/apache/brooklyn/rest/resources/ServerResource.java`),
/// the answer of `GET /v1/server/up/extended`: `up`, `shuttingDown`, `healthy` and `ha` (a
/// [`HighAvailabilitySummary`], `null` when the node has no plane record yet). Brooklyn ≥ 1.1
/// adds `osgiUp` and `brooklyn.security.sensitive.fields`; the Java return type is
/// `Map<String, Object>`, so its clients cannot require them: they may be absent here, and any
/// other key is refused.
#[derive(Clone, Debug, PartialEq)]
pub struct UpExtended {
    pub up: bool,
    pub shutting_down: bool,
    pub healthy: bool,
    pub ha: Option<HighAvailabilitySummary>,
    pub osgi_up: Option<bool>,
    pub sensitive_fields: Option<SensitiveFields>,
}

impl Strict for UpExtended {
    fn from_json(v: &Value, at: &str) -> Result<Self, String> {
        let mut f = Fields::new("up/extended", v, at)?;
        let s = UpExtended {
            up: f.required("up")?,
            shutting_down: f.required("shuttingDown")?,
            healthy: f.required("healthy")?,
            ha: f.nullable("ha")?,
            osgi_up: f.omissible("osgiUp")?,
            sensitive_fields: f.omissible("brooklyn.security.sensitive.fields")?,
        };
        f.finish()?;
        Ok(s)
    }
}

/// `brooklyn.security.sensitive.fields` of [`UpExtended`]: `{tokens, plaintext.blocked}`
/// (`Sanitizer.getSensitiveFieldsTokens()`, `Sanitizer.isSensitiveFieldsPlaintextBlocked()`).
#[derive(Clone, Debug, PartialEq)]
pub struct SensitiveFields {
    pub tokens: Vec<String>,
    pub plaintext_blocked: bool,
}

impl Strict for SensitiveFields {
    fn from_json(v: &Value, at: &str) -> Result<Self, String> {
        let mut f = Fields::new("brooklyn.security.sensitive.fields", v, at)?;
        let s = SensitiveFields {
            tokens: f.required("tokens")?,
            plaintext_blocked: f.required("plaintext.blocked")?,
        };
        f.finish()?;
        Ok(s)
    }
}

/// The map `HighAvailabilityManagerImpl.getMetrics()` builds
/// (`core/src/main/java/org/apache/brooklyn/core/mgmt/ha/HighAvailabilityManagerImpl.java`),
/// the answer of `GET /v1/server/ha/metrics`: `state`, `uptime`, `currentTimeUtc`,
/// `startTimeUtc` and `highAvailability` always; Brooklyn adds its rebind metrics beside them
/// (the Java type is `Map<String, Object>`), so other keys are kept in `other`, not refused.
#[derive(Clone, Debug, PartialEq)]
pub struct HaMetrics {
    /// A `ManagementNodeState` name.
    pub state: String,
    /// `Time.makeTimeStringRounded(…)`, e.g. `"1m 2s"`.
    pub uptime: String,
    pub current_time_utc: i64,
    pub start_time_utc: i64,
    pub high_availability: HaMetricsHighAvailability,
    pub other: BTreeMap<String, Value>,
}

impl Strict for HaMetrics {
    fn from_json(v: &Value, at: &str) -> Result<Self, String> {
        let mut f = Fields::new("ha/metrics", v, at)?;
        let state = f.required("state")?;
        let uptime = f.required("uptime")?;
        let current_time_utc = f.required("currentTimeUtc")?;
        let start_time_utc = f.required("startTimeUtc")?;
        let high_availability = f.required("highAvailability")?;
        let other = f
            .undeclared()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(HaMetrics {
            state,
            uptime,
            current_time_utc,
            start_time_utc,
            high_availability,
            other,
        })
    }
}

/// `highAvailability` of [`HaMetrics`]: exactly the four keys `getMetrics()` puts in it.
#[derive(Clone, Debug, PartialEq)]
pub struct HaMetricsHighAvailability {
    pub priority: i64,
    /// ms.
    pub poll_period: i64,
    /// ms.
    pub heartbeat_timeout: i64,
    /// `nodeStateHistory`: newest first (`add(0, …)`).
    pub history: Vec<HaStateChange>,
}

impl Strict for HaMetricsHighAvailability {
    fn from_json(v: &Value, at: &str) -> Result<Self, String> {
        let mut f = Fields::new("highAvailability", v, at)?;
        let s = HaMetricsHighAvailability {
            priority: f.required("priority")?,
            poll_period: f.required("pollPeriod")?,
            heartbeat_timeout: f.required("heartbeatTimeout")?,
            history: f.required("history")?,
        };
        f.finish()?;
        Ok(s)
    }
}

/// One `nodeStateHistory` entry: `MutableMap.of("state", newState, "timestamp", now)`.
#[derive(Clone, Debug, PartialEq)]
pub struct HaStateChange {
    /// A `ManagementNodeState` name.
    pub state: String,
    /// ms since the Unix epoch.
    pub timestamp: i64,
}

impl Strict for HaStateChange {
    fn from_json(v: &Value, at: &str) -> Result<Self, String> {
        let mut f = Fields::new("highAvailability.history[]", v, at)?;
        let s = HaStateChange {
            state: f.required("state")?,
            timestamp: f.required("timestamp")?,
        };
        f.finish()?;
        Ok(s)
    }
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

    /// `SUMMARY` with `edit` applied.
    fn summary_with(edit: impl FnOnce(&mut Value)) -> String {
        let mut v: Value = serde_json::from_str(SUMMARY).unwrap();
        edit(&mut v);
        v.to_string()
    }

    fn refused<T: Strict + std::fmt::Debug>(body: &str) -> String {
        match from_str_strict::<T>(body) {
            Ok(t) => panic!("accepted {body} as {t:?}"),
            Err(e) => e,
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
        let e = refused::<HighAvailabilitySummary>(&summary_with(|v| v["epoch"] = 7.into()));
        assert!(e.contains("unknown field `epoch`"), "{e}");
        let e = refused::<HighAvailabilitySummary>(&summary_with(|v| {
            v["nodes"]["node-b"]["epoch"] = 7.into()
        }));
        assert!(e.contains("unknown field `epoch`"), "{e}");
        assert!(e.contains("$.nodes.node-b"), "{e}");
        let e = refused::<ApiError>(r#"{"message": "m", "error": 404, "code": "not-found"}"#);
        assert!(e.contains("unknown field `code`"), "{e}");
        let e = refused::<VersionSummary>(
            r#"{"version": "1", "buildSha1": null, "buildBranch": null, "features": [], "epoch": 1}"#,
        );
        assert!(e.contains("unknown field `epoch`"), "{e}");
        let e = refused::<UpExtended>(&format!(
            r#"{{"up": true, "shuttingDown": false, "healthy": true, "ha": {SUMMARY}, "epoch": 1}}"#
        ));
        assert!(e.contains("unknown field `epoch`"), "{e}");
        let e = refused::<HaMetrics>(
            r#"{"state": "MASTER", "uptime": "1s", "currentTimeUtc": 2, "startTimeUtc": 1,
                "highAvailability": {"priority": 0, "pollPeriod": 200, "heartbeatTimeout": 2000,
                                     "history": [], "epoch": 3}}"#,
        );
        assert!(e.contains("unknown field `epoch`"), "{e}");
    }

    #[test]
    fn a_missing_field_is_refused() {
        for key in ["planeId", "ownId", "masterId", "nodes", "links"] {
            let e = refused::<HighAvailabilitySummary>(&summary_with(|v| {
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
            let e = refused::<HighAvailabilitySummary>(&summary_with(|v| {
                v["nodes"]["node-a"].as_object_mut().unwrap().remove(key);
            }));
            assert!(e.contains(&format!("missing field `{key}`")), "{e}");
        }
        let e = refused::<ApiError>(r#"{"error": 500}"#);
        assert!(e.contains("missing field `message`"), "{e}");
        let e = refused::<VersionSummary>(r#"{"version": "1", "buildSha1": null, "features": []}"#);
        assert!(e.contains("missing field `buildBranch`"), "{e}");
        let e = refused::<UpExtended>(r#"{"up": true, "shuttingDown": false, "ha": null}"#);
        assert!(e.contains("missing field `healthy`"), "{e}");
    }

    #[test]
    fn null_and_wrong_types_are_refused_where_brooklyn_does_not_allow_them() {
        // ownId is never null; masterId may be, but "" is not null (a type check cannot see
        // that: the e2e tests assert the raw value).
        let e = refused::<HighAvailabilitySummary>(&summary_with(|v| v["ownId"] = Value::Null));
        assert!(e.contains("`ownId` is null"), "{e}");
        let e = refused::<HighAvailabilitySummary>(&summary_with(|v| {
            v["nodes"]["node-a"]["priority"] = "high".into()
        }));
        assert!(e.contains("expected an integer"), "{e}");
        let e = refused::<HighAvailabilitySummary>(&summary_with(|v| {
            v["nodes"]["node-a"]["nodeUri"] = "http://a b/".into()
        }));
        assert!(e.contains("invalid URI"), "{e}");
        let e = refused::<ApiError>(r#"{"message": "m", "error": "404"}"#);
        assert!(e.contains("expected an integer"), "{e}");
        let e = refused::<ApiError>(r#"{"message": "m", "error": 4294967296}"#);
        assert!(e.contains("Java Integer"), "{e}");
        let e = refused::<VersionSummary>(
            r#"{"version": null, "buildSha1": null, "buildBranch": null, "features": []}"#,
        );
        assert!(e.contains("`version` is null"), "{e}");
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
        let e = refused::<BrooklynFeatureSummary>(
            r#"{"name": null, "version": null, "lastModified": null}"#,
        );
        assert!(e.contains("missing field `symbolicName`"), "{e}");
        let e = refused::<BrooklynFeatureSummary>(
            r#"{"name": null, "symbolicName": "s", "version": null, "lastModified": null, "x": {}}"#,
        );
        assert!(e.contains("expected a string"), "{e}");
        // Brooklyn's full up/extended map.
        let u: UpExtended = parse_strict(&format!(
            r#"{{"up": true, "shuttingDown": false, "healthy": true, "ha": {SUMMARY}, "osgiUp": true,
                "brooklyn.security.sensitive.fields": {{"tokens": ["password"], "plaintext.blocked": false}}}}"#
        ));
        assert_eq!(u.osgi_up, Some(true));
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
