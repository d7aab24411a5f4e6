//! `/metrics`: a prometheus-client collector that reads the snapshot at scrape time, so no
//! value (least of all "is master") is ever older than the scrape.

use crate::summary::{known_epoch, summarize};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use prometheus_client::registry::Unit;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tenure_election::stats::{Channel, Latency};
use tenure_election::{NodeState, Snapshot, Stats, clock};
use tokio::sync::watch;

pub(crate) struct SnapshotCollector {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// The driver's counters, when it shares them (latency histograms, transitions since start).
    pub stats: Option<Arc<Stats>>,
}

/// A histogram read from [`tenure_election::stats::Latency`] at scrape time, encoded as
/// prometheus-client encodes its own histograms.
struct LatencyMetric<'a>(&'a Latency);

impl EncodeMetric for LatencyMetric<'_> {
    fn encode(&self, mut enc: MetricEncoder) -> std::fmt::Result {
        let (sum, count, buckets) = self.0.read();
        enc.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn histogram(enc: &mut DescriptorEncoder, name: &str, help: &str, l: &Latency) -> std::fmt::Result {
    let m = LatencyMetric(l);
    m.encode(enc.encode_descriptor(name, help, Some(&Unit::Seconds), m.metric_type())?)
}

impl std::fmt::Debug for SnapshotCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotCollector")
    }
}

fn gauge<N>(enc: &mut DescriptorEncoder, name: &str, help: &str, v: N) -> std::fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.snapshot.borrow().clone();
        let now = clock::now();
        let state = snap.state_at(now);

        {
            let proto = ConstGauge::new(0i64);
            let mut family = enc.encode_descriptor(
                "tenure_state",
                "This node's state (1 for the current one)",
                None,
                proto.metric_type(),
            )?;
            for s in NodeState::ALL {
                let labels = [("state", s.as_str())];
                ConstGauge::new(i64::from(s == state)).encode(family.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut enc,
            "tenure_is_master",
            "1 while this node answers MASTER",
            i64::from(state == NodeState::Master),
        )?;
        gauge(
            &mut enc,
            "tenure_epoch",
            "The current master's epoch (fencing token), else the last one seen; 0 if none",
            known_epoch(&snap, now).unwrap_or(0),
        )?;
        counter(
            &mut enc,
            "tenure_storage_errors",
            "Failed storage operations",
            snap.storage_errors,
        )?;
        counter(
            &mut enc,
            "tenure_forged_records",
            "Forged, replayed or wrongly signed records seen in the store (each logged as an ALERT)",
            snap.forged_records,
        )?;
        counter(
            &mut enc,
            "tenure_transitions",
            "State transitions of this node since it started",
            self.stats
                .as_ref()
                .map_or(snap.transitions.len() as u64, |s| s.transitions()),
        )?;
        if let Some(stats) = &self.stats {
            histogram(
                &mut enc,
                "tenure_renew_latency",
                "Conditional lease writes (renewals, retakes, releases), from issue to result",
                &stats.renew_latency,
            )?;
            histogram(
                &mut enc,
                "tenure_storage_latency",
                "Every storage call, from issue to result",
                &stats.storage_latency,
            )?;
            for (name, help, sent) in [
                (
                    "tenure_notifications_sent",
                    "Notifications (--notify-email, --notify-webhook) delivered, per channel",
                    true,
                ),
                (
                    "tenure_notifications_failed",
                    "Notifications that could not be delivered (each logged as a WARN), per channel",
                    false,
                ),
            ] {
                let proto = ConstCounter::new(0u64);
                let mut family = enc.encode_descriptor(name, help, None, proto.metric_type())?;
                for ch in Channel::ALL {
                    let n = stats.notifications(ch);
                    let v = if sent { &n.sent } else { &n.failed };
                    ConstCounter::new(v.load(Ordering::Relaxed))
                        .encode(family.encode_family(&[("channel", ch.as_str())])?)?;
                }
            }
        }
        {
            let proto = ConstGauge::new(0f64);
            let mut family = enc.encode_descriptor(
                "tenure_node_heartbeat_age_seconds",
                "Time since each node's heartbeat record last changed, on this node's clock",
                None,
                proto.metric_type(),
            )?;
            for r in &snap.nodes {
                let labels = [("node", r.name.as_str())];
                ConstGauge::new(now.since(r.last_change).as_secs_f64())
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let summary = summarize(&snap, now);
        let live = summary
            .nodes
            .values()
            .filter(|n| !matches!(n.status, NodeState::Failed | NodeState::Terminated))
            .count();
        gauge(
            &mut enc,
            "tenure_nodes",
            "Nodes known (heartbeat records, this node and the lease holder)",
            summary.nodes.len() as u64,
        )?;
        gauge(
            &mut enc,
            "tenure_live_nodes",
            "Known nodes neither FAILED nor TERMINATED",
            live as u64,
        )?;
        Ok(())
    }
}

pub(crate) fn registry(
    snapshot: watch::Receiver<Arc<Snapshot>>,
    stats: Option<Arc<Stats>>,
) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(SnapshotCollector { snapshot, stats }));
    r
}

pub(crate) fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(2048);
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_counters_per_channel() {
        let snap =
            Snapshot::initializing("a", "i", "http://127.0.0.1:1/", tenure_election::Mode::Auto);
        let (_tx, rx) = watch::channel(Arc::new(snap));
        let stats = Arc::new(Stats::default());
        stats
            .notifications(Channel::Email)
            .sent
            .fetch_add(2, Ordering::Relaxed);
        stats
            .notifications(Channel::Webhook)
            .failed
            .fetch_add(1, Ordering::Relaxed);
        let text = encode(&registry(rx, Some(stats))).unwrap();
        for line in [
            "# TYPE tenure_notifications_sent counter",
            "tenure_notifications_sent_total{channel=\"email\"} 2",
            "tenure_notifications_sent_total{channel=\"webhook\"} 0",
            "tenure_notifications_failed_total{channel=\"email\"} 0",
            "tenure_notifications_failed_total{channel=\"webhook\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}
