//! The cluster's expected members: `tenure run --expect-nodes a,b,c` or `--cluster-file PATH`,
//! OpenSpecimen's cluster JSON:
//!
//! ```json
//! {"nodes": [{"name": "a", "url": "http://host-a:8080/openspecimen"}, …],
//!  "secret": "…", "notifErrorRcpts": ["ops@example.com"], "notifTimeout": 30}
//! ```
//!
//! `nodes` is required (each with a `name`, checked like `--node-name`; `url` optional); the
//! other keys are optional and unknown keys are ignored. `secret` is the cluster secret (as
//! `--secret-file` would give it; a file holding one must be private, mode 0600);
//! `notifErrorRcpts` (a list of addresses, or one comma-separated string) and `notifTimeout`
//! (the notification timeout, in seconds) are kept for the notifications.
//!
//! A node whose `--node-name` is not a member refuses to start; `/ha/states` lists the members
//! that are absent or silent as `missing` (`tenure_election::Snapshot::missing_at`).

use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use tenure_election::types::validate_node_name;

/// The largest cluster file read.
const MAX_LEN: u64 = 1 << 20;

/// One entry of `nodes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    pub name: String,
    /// The application's URL on that node (OpenSpecimen's), if given.
    pub url: Option<String>,
}

/// A parsed cluster file.
#[derive(Clone, PartialEq)]
pub struct ClusterFile {
    /// In the file's order.
    pub nodes: Vec<ClusterNode>,
    /// `secret`, trimmed: the cluster secret unless `--secret-file`/`TENURE_SECRET` is given
    /// (both is a usage error).
    pub secret: Option<Vec<u8>>,
    /// `notifErrorRcpts`: who is told about errors.
    pub notify_recipients: Vec<String>,
    /// `notifTimeout`, read as the notification timeout in seconds.
    pub notify_timeout: Option<Duration>,
}

/// Never prints the secret.
impl std::fmt::Debug for ClusterFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterFile")
            .field("nodes", &self.nodes)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("notify_recipients", &self.notify_recipients)
            .field("notify_timeout", &self.notify_timeout)
            .finish()
    }
}

impl ClusterFile {
    /// Reads and parses `path`; refuses a file holding a secret that group or others may read,
    /// as `--secret-file` does (the mode of the file opened, after any symlink).
    pub fn load(path: &Path) -> Result<ClusterFile, String> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let shown = path.display();
        let file = std::fs::File::open(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot stat {shown}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{shown} is not a regular file"));
        }
        let mut text = String::new();
        file.take(MAX_LEN + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read {shown}: {e}"))?;
        if text.len() as u64 > MAX_LEN {
            return Err(format!("{shown} is larger than {MAX_LEN} bytes"));
        }
        let parsed = ClusterFile::parse(&text).map_err(|e| format!("{shown}: {e}"))?;
        let mode = meta.mode() & 0o777;
        if parsed.secret.is_some() && mode & 0o077 != 0 {
            return Err(format!(
                "{shown} holds the cluster secret and has mode {mode:04o}: a secret must be readable by its owner only; run `chmod 600 {shown}`"
            ));
        }
        Ok(parsed)
    }

    /// Parses the JSON text of a cluster file (messages name the key at fault).
    pub fn parse(text: &str) -> Result<ClusterFile, String> {
        let map: serde_json::Map<String, Value> = serde_json::from_str(text).map_err(|e| {
            format!("not a JSON object like {{\"nodes\": [{{\"name\": \"node-a\"}}, …]}}: {e}")
        })?;
        let Some(list) = map.get("nodes") else {
            return Err(
                "no \"nodes\": list the cluster's nodes, e.g. \"nodes\": [{\"name\": \"node-a\"}, {\"name\": \"node-b\"}]"
                    .into(),
            );
        };
        let Some(list) = list.as_array() else {
            return Err(format!(
                "\"nodes\" must be a list of {{\"name\": …}} objects, not {list}"
            ));
        };
        let mut nodes = Vec::with_capacity(list.len());
        for (i, entry) in list.iter().enumerate() {
            let name = entry
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("nodes[{i}] has no \"name\" string: {entry}"))?;
            let url = match entry.get("url") {
                None | Some(Value::Null) => None,
                Some(Value::String(u)) => Some(u.clone()),
                Some(other) => return Err(format!("nodes[{i}].url must be a string, not {other}")),
            };
            nodes.push(ClusterNode {
                name: name.to_string(),
                url,
            });
        }
        check_names(nodes.iter().map(|n| n.name.as_str()), "\"nodes\"")?;
        let secret = match map.get("secret") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.trim().as_bytes().to_vec()),
            Some(_) => return Err("\"secret\" must be a string".into()),
        };
        let notify_recipients = match map.get("notifErrorRcpts") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => split_list(s),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str().map(str::trim).map(String::from).ok_or_else(|| {
                        format!("\"notifErrorRcpts\" must list addresses as strings, not {v}")
                    })
                })
                .filter(|r| r.as_ref().map_or(true, |s| !s.is_empty()))
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(format!(
                    "\"notifErrorRcpts\" must be a list of addresses, not {other}"
                ));
            }
        };
        let notify_timeout = match map.get("notifTimeout") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let secs = match v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok(),
                    _ => None,
                };
                match secs {
                    Some(s) if s.is_finite() && (0.0..=1e9).contains(&s) => {
                        Some(Duration::from_secs_f64(s))
                    }
                    _ => {
                        return Err(format!(
                            "\"notifTimeout\" is the notification timeout in seconds, e.g. 30; not {v}"
                        ));
                    }
                }
            }
        };
        Ok(ClusterFile {
            nodes,
            secret,
            notify_recipients,
            notify_timeout,
        })
    }

    /// The member names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        names.sort_unstable();
        names
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// At least one name, each a valid node name, none twice. `what` names the list in messages.
fn check_names<'a>(names: impl Iterator<Item = &'a str>, what: &str) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        validate_node_name(name).map_err(|e| format!("{what}: {e}"))?;
        if !seen.insert(name) {
            return Err(format!("{what}: the node name {name:?} is listed twice"));
        }
    }
    if seen.is_empty() {
        return Err(format!("{what} lists no node"));
    }
    Ok(())
}

/// The expected members of the cluster and where they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Members {
    /// Sorted.
    pub names: Vec<String>,
    /// For messages: `--expect-nodes` or `--cluster-file PATH`.
    pub source: String,
    /// The whole cluster file, when they came from one.
    pub file: Option<ClusterFile>,
}

impl Members {
    /// From `--expect-nodes` (names, each trimmed) or `--cluster-file`, not both; `None` when
    /// neither is given.
    pub fn from_args(
        expect_nodes: &[String],
        cluster_file: Option<&Path>,
    ) -> Result<Option<Members>, String> {
        match (expect_nodes.is_empty(), cluster_file) {
            (false, Some(_)) => Err(
                "both --expect-nodes and --cluster-file are given (or TENURE_EXPECT_NODES and TENURE_CLUSTER_FILE): give the expected members one way only"
                    .into(),
            ),
            (true, None) => Ok(None),
            (false, None) => {
                let mut names: Vec<String> =
                    expect_nodes.iter().map(|n| n.trim().to_string()).collect();
                check_names(names.iter().map(String::as_str), "--expect-nodes")?;
                names.sort_unstable();
                Ok(Some(Members {
                    names,
                    source: "--expect-nodes".into(),
                    file: None,
                }))
            }
            (true, Some(path)) => {
                let file = ClusterFile::load(path).map_err(|e| format!("--cluster-file: {e}"))?;
                Ok(Some(Members {
                    names: file.names(),
                    source: format!("--cluster-file {}", path.display()),
                    file: Some(file),
                }))
            }
        }
    }

    /// Whether this node (`--node-name`) is a member; the refusal names the list and its source.
    pub fn admit(&self, name: &str) -> Result<(), String> {
        if self.names.iter().any(|n| n == name) {
            return Ok(());
        }
        Err(format!(
            "this node's --node-name {name:?} is not one of the cluster's expected members {} (from {}): add it there, or fix --node-name",
            self.names.join(","),
            self.source
        ))
    }

    /// The cluster file's secret, if it holds one.
    pub fn secret(&self) -> Option<&[u8]> {
        self.file.as_ref().and_then(|f| f.secret.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    const OPENSPECIMEN: &str = r#"{
        "nodes": [
            {"name": "os-b", "url": "http://host-b:8080/openspecimen"},
            {"name": "os-a", "url": "http://host-a:8080/openspecimen", "role": "primary"}
        ],
        "secret": "  a-cluster-secret-of-enough-bytes\n",
        "notifErrorRcpts": ["ops@example.com", "dba@example.com"],
        "notifTimeout": 30,
        "somethingElse": {"ignored": true}
    }"#;

    #[test]
    fn openspecimens_cluster_json_is_read() {
        let f = ClusterFile::parse(OPENSPECIMEN).unwrap();
        assert_eq!(f.names(), ["os-a", "os-b"]);
        assert_eq!(
            f.nodes[0],
            ClusterNode {
                name: "os-b".into(),
                url: Some("http://host-b:8080/openspecimen".into())
            }
        );
        assert_eq!(
            f.secret.as_deref(),
            Some(&b"a-cluster-secret-of-enough-bytes"[..])
        );
        assert_eq!(f.notify_recipients, ["ops@example.com", "dba@example.com"]);
        assert_eq!(f.notify_timeout, Some(Duration::from_secs(30)));
        assert!(!format!("{f:?}").contains("a-cluster-secret"), "{f:?}");

        // Only nodes is required; a comma-separated recipient string and a fractional or quoted
        // timeout are accepted too.
        let f = ClusterFile::parse(r#"{"nodes": [{"name": "a"}]}"#).unwrap();
        assert_eq!(
            (f.names(), f.secret, f.notify_recipients, f.notify_timeout),
            (vec!["a".to_string()], None, vec![], None)
        );
        let f = ClusterFile::parse(
            r#"{"nodes": [{"name": "a"}], "notifErrorRcpts": "x@e.org, y@e.org", "notifTimeout": "2.5"}"#,
        )
        .unwrap();
        assert_eq!(f.notify_recipients, ["x@e.org", "y@e.org"]);
        assert_eq!(f.notify_timeout, Some(Duration::from_millis(2500)));
    }

    #[test]
    fn bad_cluster_files_are_refused_naming_the_key() {
        for (text, needle) in [
            ("[]", "not a JSON object"),
            (r#"{"secret": "x"}"#, "no \"nodes\""),
            (r#"{"nodes": {"a": 1}}"#, "must be a list"),
            (r#"{"nodes": []}"#, "lists no node"),
            (
                r#"{"nodes": [{"url": "http://x"}]}"#,
                "nodes[0] has no \"name\"",
            ),
            (r#"{"nodes": [{"name": "a b"}]}"#, "whitespace"),
            (r#"{"nodes": [{"name": "a/b"}]}"#, "not allowed"),
            (
                r#"{"nodes": [{"name": "a"}, {"name": "a"}]}"#,
                "listed twice",
            ),
            (
                r#"{"nodes": [{"name": "a", "url": 3}]}"#,
                "url must be a string",
            ),
            (
                r#"{"nodes": [{"name": "a"}], "secret": 5}"#,
                "\"secret\" must be",
            ),
            (
                r#"{"nodes": [{"name": "a"}], "notifErrorRcpts": [1]}"#,
                "notifErrorRcpts",
            ),
            (
                r#"{"nodes": [{"name": "a"}], "notifTimeout": -1}"#,
                "in seconds",
            ),
            (
                r#"{"nodes": [{"name": "a"}], "notifTimeout": "soon"}"#,
                "in seconds",
            ),
        ] {
            let e = ClusterFile::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    /// Removes the directory when the test ends, passed or failed (no tempfile here).
    struct RemoveOnDrop(PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_file_holding_a_secret_must_be_private() {
        let dir = std::env::temp_dir().join(format!("tenure-cluster-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _remove = RemoveOnDrop(dir.clone());
        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let private = write("private.json", OPENSPECIMEN, 0o600);
        assert_eq!(
            ClusterFile::load(&private).unwrap().names(),
            ["os-a", "os-b"]
        );
        let public = write("public.json", OPENSPECIMEN, 0o644);
        let e = ClusterFile::load(&public).unwrap_err();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
        // Without a secret, any mode will do.
        let open = write("open.json", r#"{"nodes": [{"name": "a"}]}"#, 0o644);
        assert!(ClusterFile::load(&open).is_ok());
        let e = ClusterFile::load(&dir.join("absent.json")).unwrap_err();
        assert!(e.contains("cannot open"), "{e}");
        let e = ClusterFile::load(&dir).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");

        let m = Members::from_args(&[], Some(&private)).unwrap().unwrap();
        assert_eq!(m.secret(), Some(&b"a-cluster-secret-of-enough-bytes"[..]));
        assert!(m.admit("os-a").is_ok());
        let e = m.admit("os-c").unwrap_err();
        assert!(
            e.contains("os-a,os-b") && e.contains(&format!("--cluster-file {}", private.display())),
            "{e}"
        );
    }

    #[test]
    fn expected_members_come_one_way() {
        let list = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(Members::from_args(&[], None).unwrap(), None);
        let m = Members::from_args(&list(&["c", " a", "b "]), None)
            .unwrap()
            .unwrap();
        assert_eq!(m.names, ["a", "b", "c"]);
        assert_eq!(m.secret(), None);
        assert!(m.admit("b").is_ok());
        let e = m.admit("d").unwrap_err();
        assert!(
            e.contains("\"d\"") && e.contains("a,b,c") && e.contains("from --expect-nodes"),
            "{e}"
        );
        for (bad, needle) in [
            (list(&["a", "a"]), "listed twice"),
            (list(&["a", ""]), "empty"),
            (list(&["a", "b/c"]), "not allowed"),
        ] {
            let e = Members::from_args(&bad, None).unwrap_err();
            assert!(e.contains(needle) && e.contains("--expect-nodes"), "{e}");
        }
        let e = Members::from_args(&list(&["a"]), Some(Path::new("/x.json"))).unwrap_err();
        assert!(e.contains("one way only"), "{e}");
    }
}
