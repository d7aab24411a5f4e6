//! `tenure check`: a Nagios/Icinga plugin (monitoring-plugins guidelines). It asks one node for
//! `/ha/states` and prints one line `TENURE <STATUS> - text | perfdata`, exiting 0/1/2/3.
//!
//! CRITICAL: the node is unreachable, no node is MASTER, or two are. WARNING: no live standby
//! (no redundancy), a missing expected member (the node's `missing` list: `run --expect-nodes`
//! or `--cluster-file`), a stale node (FAILED), or the master's heartbeat age above `-w`. The node's
//! latest storage call (from `/ha/metrics`) is judged against `--storage-warning/-critical`.
//! UNKNOWN: bad arguments, a refused login, an answer that is not tenure's.

use crate::args::CheckArgs;
use serde_json::Value;
use std::fmt::Write as _;
use std::time::Duration;
use tenure_election::NodeState;
use tenure_http::ClientError;
use tenure_http::wire::States;

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }
}

/// Thresholds on the master's heartbeat age.
#[derive(Copy, Clone, Debug)]
pub struct Thresholds {
    pub warning: Duration,
    pub critical: Duration,
}

/// The verdict: a status, the reasons (worst first) and the performance data.
#[derive(Debug)]
pub struct Outcome {
    pub status: Status,
    pub text: String,
    pub perf: String,
}

impl Outcome {
    /// The plugin's single output line.
    pub fn line(&self) -> String {
        let mut s = format!("TENURE {} - {}", self.status.word(), self.text);
        if !self.perf.is_empty() {
            s.push_str(" | ");
            s.push_str(&self.perf);
        }
        s
    }

    fn only(status: Status, text: String) -> Outcome {
        Outcome {
            status,
            text: one_line(&text),
            perf: String::new(),
        }
    }
}

/// `|` would start perfdata and a newline would start long output: neither may appear in text.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ").replace('|', "/")
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// Judges a node's `/ha/states` answer.
pub fn evaluate(states: &States, th: &Thresholds) -> Outcome {
    let nodes = &states.nodes;
    let masters: Vec<&str> = nodes
        .iter()
        .filter(|(_, v)| v.status == NodeState::Master)
        .map(|(k, _)| k.as_ref())
        .collect();
    let live = nodes
        .values()
        .filter(|v| !matches!(v.status, NodeState::Failed | NodeState::Terminated))
        .count();
    let standbys = nodes
        .values()
        .filter(|v| matches!(v.status, NodeState::Standby | NodeState::HotStandby))
        .count();
    // Expected members that are absent, silent or stopped, as the node computed them (sorted).
    let missing: Vec<&str> = states.missing().iter().map(|m| m.as_ref()).collect();
    // Sorted already: the nodes are a BTreeMap. A missing member is named once, as missing.
    let stale: Vec<&str> = nodes
        .iter()
        .filter(|(k, v)| v.status == NodeState::Failed && !missing.contains(&k.as_ref()))
        .map(|(k, _)| k.as_ref())
        .collect();
    let epoch = states.epoch;
    let master_age = masters
        .first()
        .and_then(|m| nodes[*m].heartbeat_age_ms)
        .map(Duration::from_millis);

    let mut status = Status::Ok;
    let mut problems: Vec<String> = Vec::new();
    let mut raise = |s: Status, why: String| {
        status = status.max(s);
        problems.push(why);
    };
    match masters.len() {
        0 => raise(Status::Critical, "no master in the cluster".into()),
        1 => {}
        _ => raise(
            Status::Critical,
            format!(
                "{} nodes answer MASTER: {}",
                masters.len(),
                masters.join(", ")
            ),
        ),
    }
    if let Some(age) = master_age {
        if age >= th.critical {
            raise(
                Status::Critical,
                format!(
                    "master heartbeat age {}s >= {}s",
                    secs(age),
                    secs(th.critical)
                ),
            );
        } else if age >= th.warning {
            raise(
                Status::Warning,
                format!(
                    "master heartbeat age {}s >= {}s",
                    secs(age),
                    secs(th.warning)
                ),
            );
        }
    }
    if standbys == 0 {
        raise(
            Status::Warning,
            "no live standby (no redundancy)".to_string(),
        );
    }
    if !missing.is_empty() {
        raise(
            Status::Warning,
            format!(
                "missing expected node{}: {}",
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", ")
            ),
        );
    }
    if !stale.is_empty() {
        raise(
            Status::Warning,
            format!(
                "stale node{}: {}",
                if stale.len() > 1 { "s" } else { "" },
                stale.join(", ")
            ),
        );
    }

    let mut text = problems.join("; ");
    let summary = match (masters.as_slice(), epoch) {
        ([m], Some(e)) => format!("master {m} (epoch {e})"),
        ([m], None) => format!("master {m}"),
        _ => String::new(),
    };
    let counts = format!("{live}/{} nodes live, {standbys} standby", nodes.len());
    for part in [summary, counts] {
        if part.is_empty() {
            continue;
        }
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str(&part);
    }

    let mut perf = format!("nodes={};;;0 live={live};;;0", nodes.len());
    if let Some(age) = master_age {
        let _ = write!(
            perf,
            " master_heartbeat_age={}s;{};{};0",
            secs(age),
            secs(th.warning),
            secs(th.critical)
        );
    }
    if let Some(e) = epoch {
        let _ = write!(perf, " epoch={e};;;0");
    }
    if let Some(expected) = &states.expected {
        let _ = write!(
            perf,
            " expected={};;;0 missing={};;;0",
            expected.len(),
            missing.len()
        );
    }
    Outcome {
        status,
        text: one_line(&text),
        perf,
    }
}

/// What a failed request means for the plugin: unreachable is CRITICAL, the rest UNKNOWN.
pub fn request_failed(e: &ClientError) -> Outcome {
    let status = match e {
        ClientError::Connect { .. } | ClientError::Timeout { .. } | ClientError::Request { .. } => {
            Status::Critical
        }
        ClientError::Status { status, .. } if *status >= 500 => Status::Critical,
        _ => Status::Unknown,
    };
    Outcome::only(status, format!("node unreachable or unusable: {e}"))
}

pub fn main(a: CheckArgs) -> u8 {
    let outcome = run(&a);
    println!("{}", outcome.line());
    outcome.status as u8
}

fn run(a: &CheckArgs) -> Outcome {
    if a.warning > a.critical {
        return Outcome::only(
            Status::Unknown,
            format!(
                "-w {}s is above -c {}s: the warning threshold must not exceed the critical one",
                secs(a.warning),
                secs(a.critical)
            ),
        );
    }
    if a.storage_warning > a.storage_critical {
        return Outcome::only(
            Status::Unknown,
            format!(
                "--storage-warning {}s is above --storage-critical {}s",
                secs(a.storage_warning),
                secs(a.storage_critical)
            ),
        );
    }
    let client = match crate::query::client(&a.query) {
        Ok(c) => c,
        Err(e) => return Outcome::only(Status::Unknown, e),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Outcome::only(Status::Unknown, format!("no tokio runtime: {e}")),
    };
    let th = Thresholds {
        warning: a.warning,
        critical: a.critical,
    };
    let mut outcome = match rt.block_on(client.cluster(&a.query.url)) {
        Ok(v) => evaluate(&v, &th),
        Err(e) => return request_failed(&e),
    };
    // The same node answered /ha/states: its metrics carry the storage latency.
    if let Ok(m) = rt.block_on(client.metrics(&a.query.url)) {
        let latency = m
            .get("storageLatencyMs")
            .and_then(Value::as_f64)
            .map(|ms| Duration::from_secs_f64(ms / 1e3));
        let th = Thresholds {
            warning: a.storage_warning,
            critical: a.storage_critical,
        };
        judge_storage_latency(&mut outcome, latency, &th);
    }
    outcome
}

/// Raise the outcome for a slow store and add the latency to the perfdata.
pub fn judge_storage_latency(o: &mut Outcome, latency: Option<Duration>, th: &Thresholds) {
    let Some(l) = latency else { return };
    let level = if l >= th.critical {
        Some((Status::Critical, th.critical))
    } else if l >= th.warning {
        Some((Status::Warning, th.warning))
    } else {
        None
    };
    if let Some((status, limit)) = level {
        let reason = format!("storage latency {}s reached {}s", secs(l), secs(limit));
        // Worst reasons first, as evaluate() orders them.
        o.text = if status > o.status || o.text.is_empty() {
            format!("{reason}; {}", o.text)
        } else {
            format!("{}; {reason}", o.text)
        };
        o.status = o.status.max(status);
    }
    let _ = write!(
        o.perf,
        "{}storage_latency={}s;{};{};0",
        if o.perf.is_empty() { "" } else { " " },
        secs(l),
        secs(th.warning),
        secs(th.critical)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TH: Thresholds = Thresholds {
        warning: Duration::from_secs(10),
        critical: Duration::from_secs(20),
    };

    fn node(status: &str, age_ms: u64) -> Value {
        json!({"nodeId": "x", "status": status, "heartbeatAgeMs": age_ms, "instanceId": "i"})
    }

    fn cluster(nodes: &[(&str, &str, u64)], epoch: Option<u64>) -> States<'static> {
        let mut m = serde_json::Map::new();
        for (name, status, age) in nodes {
            m.insert(name.to_string(), node(status, *age));
        }
        serde_json::from_value(
            json!({"planeId": "p", "ownId": nodes[0].0, "masterId": null, "nodes": m, "epoch": epoch}),
        )
        .expect("a tenure /ha/states answer")
    }

    #[test]
    fn healthy_cluster_is_ok_with_perfdata() {
        let v = cluster(
            &[
                ("a", "MASTER", 120),
                ("b", "STANDBY", 90),
                ("c", "HOT_STANDBY", 50),
            ],
            Some(4),
        );
        let o = evaluate(&v, &TH);
        assert_eq!(o.status, Status::Ok);
        assert_eq!(
            o.line(),
            "TENURE OK - master a (epoch 4); 3/3 nodes live, 2 standby \
             | nodes=3;;;0 live=3;;;0 master_heartbeat_age=0.120s;10.000;20.000;0 epoch=4;;;0"
        );
    }

    #[test]
    fn no_master_or_two_masters_is_critical() {
        let o = evaluate(
            &cluster(&[("a", "STANDBY", 1), ("b", "STANDBY", 1)], Some(3)),
            &TH,
        );
        assert_eq!(o.status, Status::Critical);
        assert!(
            o.line()
                .starts_with("TENURE CRITICAL - no master in the cluster"),
            "{}",
            o.line()
        );
        assert!(!o.perf.contains("master_heartbeat_age"));

        let o = evaluate(
            &cluster(&[("a", "MASTER", 1), ("b", "MASTER", 1)], Some(3)),
            &TH,
        );
        assert_eq!(o.status, Status::Critical);
        assert!(
            o.text.starts_with("2 nodes answer MASTER: a, b"),
            "{}",
            o.text
        );
    }

    #[test]
    fn no_standby_or_a_stale_node_is_a_warning() {
        let o = evaluate(&cluster(&[("a", "MASTER", 100)], Some(1)), &TH);
        assert_eq!(o.status, Status::Warning);
        assert!(
            o.text.starts_with("no live standby (no redundancy)"),
            "{}",
            o.text
        );

        // A hot backup is never promoted: it is no redundancy either.
        let o = evaluate(
            &cluster(&[("a", "MASTER", 100), ("b", "HOT_BACKUP", 1)], Some(1)),
            &TH,
        );
        assert_eq!(o.status, Status::Warning);

        let o = evaluate(
            &cluster(
                &[
                    ("a", "MASTER", 100),
                    ("b", "STANDBY", 1),
                    ("c", "FAILED", 40_000),
                ],
                Some(1),
            ),
            &TH,
        );
        assert_eq!(o.status, Status::Warning);
        assert!(o.text.starts_with("stale node: c"), "{}", o.text);
        assert!(o.perf.starts_with("nodes=3;;;0 live=2;;;0"), "{}", o.perf);
    }

    #[test]
    fn a_missing_expected_member_is_a_warning_naming_it() {
        let with = |missing: &[&str]| {
            let mut v = cluster(
                &[
                    ("a", "MASTER", 100),
                    ("b", "STANDBY", 1),
                    ("c", "FAILED", 40_000),
                ],
                Some(2),
            );
            v.expected = Some(["a", "b", "c", "d"].map(Into::into).to_vec());
            v.missing = Some(missing.iter().map(|m| (*m).into()).collect());
            evaluate(&v, &TH)
        };
        let o = with(&["c", "d"]);
        assert_eq!(o.status, Status::Warning);
        // c is named once, as missing, not again as stale.
        assert!(
            o.text.starts_with("missing expected nodes: c, d; master a"),
            "{}",
            o.text
        );
        assert!(
            o.perf.ends_with(" expected=4;;;0 missing=2;;;0"),
            "{}",
            o.perf
        );
        let o = with(&["d"]);
        assert!(
            o.text
                .starts_with("missing expected node: d; stale node: c; master a"),
            "{}",
            o.text
        );
        // No master and a member missing: CRITICAL, both said.
        let mut v = cluster(&[("b", "STANDBY", 1)], Some(2));
        v.expected = Some(["a", "b"].map(Into::into).to_vec());
        v.missing = Some(vec!["a".into()]);
        let o = evaluate(&v, &TH);
        assert_eq!(o.status, Status::Critical);
        assert!(
            o.text
                .starts_with("no master in the cluster; missing expected node: a"),
            "{}",
            o.text
        );
        // Without an expected list: no such perfdata.
        let o = evaluate(
            &cluster(&[("a", "MASTER", 1), ("b", "STANDBY", 1)], Some(2)),
            &TH,
        );
        assert_eq!(o.status, Status::Ok);
        assert!(!o.perf.contains("missing="), "{}", o.perf);
    }

    #[test]
    fn heartbeat_age_thresholds() {
        let at = |ms| {
            evaluate(
                &cluster(&[("a", "MASTER", ms), ("b", "STANDBY", 1)], Some(2)),
                &TH,
            )
        };
        assert_eq!(at(9_999).status, Status::Ok);
        assert_eq!(at(10_000).status, Status::Warning);
        assert!(
            at(10_000)
                .text
                .starts_with("master heartbeat age 10.000s >= 10.000s")
        );
        assert_eq!(at(19_999).status, Status::Warning);
        assert_eq!(at(20_000).status, Status::Critical);
        assert!(at(25_000).text.contains(">= 20.000s"));
    }

    #[test]
    fn the_worst_reason_decides_and_all_are_listed() {
        let o = evaluate(
            &cluster(&[("a", "HOT_BACKUP", 1), ("b", "FAILED", 1)], None),
            &TH,
        );
        assert_eq!(o.status, Status::Critical);
        assert_eq!(
            o.text,
            "no master in the cluster; no live standby (no redundancy); stale node: b; 1/2 nodes live, 0 standby"
        );
    }

    #[test]
    fn storage_latency_thresholds() {
        let th = Thresholds {
            warning: Duration::from_secs(1),
            critical: Duration::from_secs(5),
        };
        let ok = || Outcome {
            status: Status::Ok,
            text: "master a (epoch 3)".into(),
            perf: "nodes=2;;;0".into(),
        };
        let mut o = ok();
        judge_storage_latency(&mut o, Some(Duration::from_millis(20)), &th);
        assert_eq!(o.status, Status::Ok);
        assert!(
            o.perf.ends_with("storage_latency=0.020s;1.000;5.000;0"),
            "{}",
            o.perf
        );
        let mut o = ok();
        judge_storage_latency(&mut o, Some(Duration::from_millis(1500)), &th);
        assert_eq!(o.status, Status::Warning);
        assert!(
            o.line()
                .starts_with("TENURE WARNING - storage latency 1.500s reached 1.000s; master a"),
            "{}",
            o.line()
        );
        let mut o = ok();
        judge_storage_latency(&mut o, Some(Duration::from_secs(6)), &th);
        assert_eq!(o.status, Status::Critical);
        // No latency yet (no storage call): nothing changes.
        let mut o = ok();
        judge_storage_latency(&mut o, None, &th);
        assert_eq!((o.status, o.perf.as_str()), (Status::Ok, "nodes=2;;;0"));
    }

    #[test]
    fn output_is_one_line_and_non_tenure_answers_are_unknown() {
        let e = ClientError::Protocol {
            url: "http://127.0.0.1:1/ha/states".into(),
            detail: "missing field `nodes`".into(),
        };
        let o = request_failed(&e);
        assert_eq!(o.status, Status::Unknown);
        assert!(o.line().starts_with("TENURE UNKNOWN - "));
        let o = Outcome::only(Status::Critical, "a\nb | c".into());
        assert_eq!(o.line(), "TENURE CRITICAL - a b / c");
    }

    #[test]
    fn unreachable_is_critical_and_a_refused_login_unknown() {
        let e = ClientError::Connect {
            url: "http://127.0.0.1:1".into(),
            detail: "Connection refused".into(),
        };
        assert_eq!(request_failed(&e).status, Status::Critical);
        let e = ClientError::LoginRequired {
            url: "http://127.0.0.1:1".into(),
        };
        assert_eq!(request_failed(&e).status, Status::Unknown);
    }
}
