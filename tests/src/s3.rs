//! Clusters on a local S3 server: moto on 127.0.0.1 (see `tenure_testkit::moto`: started by
//! `scripts/test.sh`, or by the first test that needs it). Each cluster gets its own bucket.

use crate::{Cluster, Timing};
use tenure_testkit::moto;

/// A cluster whose nodes use `s3://<fresh bucket>/tenure` on moto, configured the way an
/// operator configures MinIO: `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, `AWS_REGION` and keys.
/// `None` only when S3 tests are skipped on purpose (`TENURE_SKIP_S3=1`, never under CI).
pub fn s3_cluster(timing: Timing, tag: &str) -> Option<Cluster> {
    let endpoint = moto::require()?;
    let bucket = moto::unique_bucket(tag);
    moto::create_bucket(&endpoint, &bucket).unwrap_or_else(|e| panic!("{e}"));
    Some(Cluster::with_store_url(
        timing,
        &format!("s3://{bucket}/tenure"),
        moto::env(&endpoint),
    ))
}

/// A cluster on `az://<fresh container>/tenure` on Azurite (the Azure Storage emulator), or
/// `None` when the caller asked to skip Azure (`TENURE_SKIP_AZURE=1`, outside CI).
pub fn azure_cluster(timing: Timing, tag: &str) -> Option<Cluster> {
    use tenure_testkit::azurite;
    let endpoint = azurite::require()?;
    let container = azurite::unique_container(tag);
    azurite::create_container(&endpoint, &container).unwrap_or_else(|e| panic!("{e}"));
    Some(Cluster::with_store_url(
        timing,
        &format!("az://{container}/tenure"),
        azurite::env(&endpoint),
    ))
}

/// One request as moto's recorder saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// The path after the bucket (`tenure/lease.json`), empty for a bucket-level request.
    pub key: String,
    pub query: String,
    pub bucket: String,
    /// From the SigV4 `Authorization` header: give each node its own `AWS_ACCESS_KEY_ID`
    /// (moto accepts any) to tell whose request it was.
    pub access_key: String,
    /// The body as the recorder keeps it (base64 for bytes): equal bodies, equal strings.
    pub body: String,
}

impl Recorded {
    /// What the request does for tenure, relative to the store prefix `prefix` (`tenure`):
    /// `lease GET`, `lease PUT`, `heartbeat PUT`, `nodes LIST`, `node GET`, or `other …`.
    pub fn kind(&self, prefix: &str) -> String {
        let rel = self
            .key
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(&self.key);
        let m = self.method.as_str();
        if self.key.is_empty() && m == "GET" && self.query.contains("list-type=2") {
            let nodes = self.query.contains(&format!("prefix={prefix}%2Fnodes%2F"))
                || self.query.contains(&format!("prefix={prefix}/nodes/"));
            return if nodes { "nodes LIST" } else { "other LIST" }.to_string();
        }
        match (m, rel) {
            ("GET", "lease.json") => "lease GET".into(),
            ("GET", "cluster.json") => "cluster GET".into(),
            ("PUT", "lease.json") => "lease PUT".into(),
            ("PUT", r) if r.starts_with("nodes/") => "heartbeat PUT".into(),
            ("GET", r) if r.starts_with("nodes/") => "node GET".into(),
            _ => format!("other {m} {rel}"),
        }
    }
}

/// moto's request recorder (`/moto-api/recorder/*`): one recording at a time per server.
pub struct Recorder {
    endpoint: String,
    agent: ureq::Agent,
}

impl Recorder {
    /// Erase the previous recording and start a new one.
    pub fn start(endpoint: &str) -> Recorder {
        let r = Recorder {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(std::time::Duration::from_secs(30)))
                .build()
                .into(),
        };
        r.post("reset-recording");
        r.post("start-recording");
        r
    }

    fn post(&self, what: &str) {
        self.agent
            .post(&format!("{}/moto-api/recorder/{what}", self.endpoint))
            .send_empty()
            .unwrap_or_else(|e| panic!("moto recorder {what}: {e}"));
    }

    /// Stop recording; the requests to `bucket` since [`Recorder::start`], in order.
    pub fn stop(self, bucket: &str) -> Vec<Recorded> {
        self.post("stop-recording");
        self.peek(bucket)
    }

    /// The requests to `bucket` recorded so far, in order, while the recording goes on (a line
    /// moto is still writing is skipped).
    pub fn peek(&self, bucket: &str) -> Vec<Recorded> {
        let text = self
            .agent
            .get(&format!(
                "{}/moto-api/recorder/download-recording",
                self.endpoint
            ))
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .unwrap_or_else(|e| panic!("moto recorder download: {e}"));
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| parse_recorded(&v))
            .filter(|r| r.bucket == bucket)
            .collect()
    }
}

fn parse_recorded(v: &serde_json::Value) -> Option<Recorded> {
    let method = v.get("method")?.as_str()?.to_string();
    let url = v.get("url")?.as_str()?;
    let after_host = url.split_once("://").map_or(url, |(_, r)| r);
    let path_query = after_host.split_once('/').map_or("", |(_, p)| p);
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    let auth = v
        .get("headers")
        .and_then(|h| h.get("Authorization").or_else(|| h.get("authorization")))
        .and_then(|a| a.as_str())
        .unwrap_or("");
    let access_key = auth
        .split_once("Credential=")
        .and_then(|(_, c)| c.split('/').next())
        .unwrap_or("")
        .to_string();
    let body = v
        .get("body")
        .and_then(|b| b.as_str())
        .unwrap_or("")
        .to_string();
    Some(Recorded {
        method,
        key: key.to_string(),
        query: query.to_string(),
        bucket: bucket.to_string(),
        access_key,
        body,
    })
}

/// The bucket of an `s3://bucket/prefix` cluster.
pub fn bucket_of(c: &Cluster) -> String {
    c.store_arg()
        .trim_start_matches("s3://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Requests per access key (node) and per [`Recorded::kind`].
pub fn tally(
    recorded: &[Recorded],
    prefix: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, usize>> {
    let mut out: std::collections::BTreeMap<String, std::collections::BTreeMap<String, usize>> =
        Default::default();
    for r in recorded {
        *out.entry(r.access_key.clone())
            .or_default()
            .entry(r.kind(prefix))
            .or_default() += 1;
    }
    out
}
