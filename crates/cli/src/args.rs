//! Command-line flags. Every flag of `run` can also come from `TENURE_<FLAG>` and from a JSON
//! `--config` file; precedence is flag, then environment, then file, then default.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;
use tenure_election::Mode;

#[derive(Parser, Debug)]
#[command(
    name = "tenure",
    version,
    about = "Keeps exactly one node of a cluster MASTER, using only a shared directory or object store",
    long_about = "tenure keeps exactly one node of a cluster in the MASTER role, using nothing but a shared \
storage location to coordinate: a directory on local disk or NFS, or an object-store prefix \
(Amazon S3 and S3-compatible servers, Google Cloud Storage, Azure Blob Storage). Run `tenure run` \
beside the application on every node; ask any node `GET /v1/server/ha/state`.",
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a new cluster in a store, once, before its first `tenure run` (writes
    /// cluster.json with T and ρ); `--reconfigure` changes T or ρ of a stopped cluster.
    Init(InitArgs),
    /// Run the coordinator (the daemon) on this node.
    Run(Box<RunArgs>),
    /// Print a node's state (MASTER, STANDBY, ...).
    State(QueryArgs),
    /// Print the whole cluster as a node sees it (JSON).
    States(QueryArgs),
    /// Ask a node to become master: a planned switchover from the current master.
    Promote(QueryArgs),
    /// Ask the master to hand the lease over and become a standby.
    Demote(QueryArgs),
    /// Read a password on standard input and print its hash for a --users file.
    HashPassword,
    /// Find the master: ask the given nodes in order and print the master's node URI
    /// (exit 1 if no node names a live master).
    Master(MasterArgs),
    /// Nagios/Icinga plugin: one line `TENURE OK|WARNING|CRITICAL|UNKNOWN - text | perfdata`,
    /// exit 0/1/2/3.
    Check(CheckArgs),
    /// Check a store before using it: lock exclusion or conditional-write enforcement,
    /// read-after-write, mount options, latency. Prints a checklist; exit 0 if all pass, 1 if not.
    Doctor(DoctorArgs),
}

#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    /// The store to check, as given to `tenure run --store`.
    #[arg(long, env = "TENURE_STORE")]
    pub store: String,
    /// Deadline of one storage call, as `tenure run --storage-timeout`.
    #[arg(long, env = "TENURE_STORAGE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub storage_timeout: Duration,
    /// Accept an NFS mount older than v4 (locks through NLM), as `tenure run --allow-nlm`.
    #[arg(long, env = "TENURE_ALLOW_NLM")]
    pub allow_nlm: bool,
    /// Accept a store directory writable by group or others, as `tenure run
    /// --allow-shared-permissions`.
    #[arg(long, env = "TENURE_ALLOW_SHARED_PERMISSIONS")]
    pub allow_shared_permissions: bool,
}

#[derive(Args, Debug, Clone)]
pub struct InitArgs {
    /// The store of the new cluster, as every node's `tenure run --store` will give it. A
    /// directory is created (mode 0700) if its parent exists.
    #[arg(long, env = "TENURE_STORE")]
    pub store: String,
    /// T, cluster-wide: every node must run with the same --heartbeat-timeout.
    #[arg(long, env = "TENURE_HEARTBEAT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,
    /// ρ, cluster-wide: the bound on clock-rate differences, e.g. 1% or 0.01.
    #[arg(long, env = "TENURE_CLOCK_DRIFT", default_value = "1%", value_parser = parse_drift)]
    pub clock_drift: u32,
    /// The cluster secret file, as `tenure run --secret-file` (cluster.json is signed with it).
    /// Or TENURE_SECRET.
    #[arg(long, env = "TENURE_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Change T or ρ of an existing cluster, keeping its id: refused while any node's record
    /// keeps changing (stop every node first; this watches the records for the old T).
    #[arg(long)]
    pub reconfigure: bool,
    /// Deadline of one storage call.
    #[arg(long, env = "TENURE_STORAGE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub storage_timeout: Duration,
    /// Accept an NFS mount older than v4 (locks through NLM), as `tenure run --allow-nlm`.
    #[arg(long, env = "TENURE_ALLOW_NLM")]
    pub allow_nlm: bool,
    /// Accept a store directory writable by group or others, as `tenure run
    /// --allow-shared-permissions`.
    #[arg(long, env = "TENURE_ALLOW_SHARED_PERMISSIONS")]
    pub allow_shared_permissions: bool,
}

#[derive(Args, Debug, Clone)]
pub struct QueryArgs {
    /// The node's HTTP address.
    #[arg(long, env = "TENURE_URL", default_value = "http://127.0.0.1:8081")]
    pub url: String,
    /// Credentials for a node started with --users, as user:password.
    #[arg(short = 'u', long = "user", env = "TENURE_USER")]
    pub user: Option<String>,
    /// How long to wait for the node.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Skip verification of the node's TLS certificate (applies to https:// URLs).
    #[arg(short = 'k', long, env = "TENURE_INSECURE")]
    pub insecure: bool,
    /// Trust this PEM certificate (or CA) for https:// URLs, besides the system's roots.
    #[arg(long, env = "TENURE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct MasterArgs {
    /// The nodes to ask, in order, comma-separated (e.g. http://a:8081,http://b:8081).
    #[arg(long, env = "TENURE_NODES", value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Credentials, as user:password.
    #[arg(short = 'u', long = "user", env = "TENURE_USER")]
    pub user: Option<String>,
    /// How long to wait for each node.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Skip verification of TLS certificates.
    #[arg(short = 'k', long, env = "TENURE_INSECURE")]
    pub insecure: bool,
    /// Trust this PEM certificate (or CA) for https:// URLs, besides the system's roots.
    #[arg(long, env = "TENURE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub query: QueryArgs,
    /// WARNING when the master's heartbeat age reaches this (set about T/3).
    #[arg(short = 'w', long, default_value = "10s", value_parser = parse_duration)]
    pub warning: Duration,
    /// CRITICAL when the master's heartbeat age reaches this (set about 2T/3).
    #[arg(short = 'c', long, default_value = "20s", value_parser = parse_duration)]
    pub critical: Duration,
    /// WARNING when the node's latest storage call took this long.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub storage_warning: Duration,
    /// CRITICAL when the node's latest storage call took this long.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub storage_critical: Duration,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// This node's name: unique in the cluster, letters, digits, '.', '_' and '-' only.
    #[arg(long, env = "TENURE_NODE_NAME")]
    pub node_name: Option<String>,

    /// What this node may be: auto, master, standby, hot-standby, hot-backup or disabled
    /// (Brooklyn spellings such as HOT_STANDBY are accepted).
    #[arg(long, env = "TENURE_MODE", default_value = "auto", value_parser = parse_mode)]
    pub mode: Mode,

    /// The shared store, the same on every node: a directory path (or file:///path), or
    /// s3://bucket/prefix, gs://bucket/prefix, az://container/prefix (endpoint, region and
    /// credentials from the usual AWS_*, GOOGLE_*, AZURE_* variables).
    #[arg(long, env = "TENURE_STORE")]
    pub store: Option<String>,

    /// Address for the HTTP API.
    #[arg(long, env = "TENURE_BIND", default_value = "127.0.0.1:8081")]
    pub bind: String,

    /// How other nodes reach this one (default: http://<bind>, the host name if bound to all
    /// addresses).
    #[arg(long, env = "TENURE_NODE_URI")]
    pub node_uri: Option<String>,

    /// T: a master whose lease stands still this long is presumed dead. Cluster-wide.
    #[arg(long, env = "TENURE_HEARTBEAT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,

    /// p: how often each node reads and writes the store.
    #[arg(long, env = "TENURE_POLL_PERIOD", default_value = "1s", value_parser = parse_duration)]
    pub poll_period: Duration,

    /// D: a renewal confirmed in time keeps the master for this long [default: 2/3 of T].
    #[arg(long, env = "TENURE_RENEW_DEADLINE", value_parser = parse_duration)]
    pub renew_deadline: Option<Duration>,

    /// R: how often the master renews the lease (in the rounds between it only reads it)
    /// [default: D/4, at least p]. D must be at least 2R + the storage timeout.
    #[arg(long, env = "TENURE_RENEW_INTERVAL", value_parser = parse_duration)]
    pub renew_interval: Option<Duration>,

    /// H: how often a standby rewrites its heartbeat record [default: T/3, at least p]. A
    /// master's heartbeat rides in its lease renewals. Between p and T/3.
    #[arg(long, env = "TENURE_HEARTBEAT_INTERVAL", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,

    /// G: the longest a demote hook may run [default: T/6].
    #[arg(long, env = "TENURE_DEMOTE_GRACE", value_parser = parse_duration)]
    pub demote_grace: Option<Duration>,

    /// Deadline of one storage call [default: p, between 100ms and 5s].
    #[arg(long, env = "TENURE_STORAGE_TIMEOUT", value_parser = parse_duration)]
    pub storage_timeout: Option<Duration>,

    /// ρ: the bound on clock-rate differences, e.g. 1% or 0.01. Cluster-wide.
    #[arg(long, env = "TENURE_CLOCK_DRIFT", default_value = "1%", value_parser = parse_drift)]
    pub clock_drift: u32,

    /// Election priority: higher wins an election (it never pre-empts a live master).
    #[arg(
        long,
        env = "TENURE_PRIORITY",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub priority: i64,

    /// This node's application version: newer releases win elections.
    #[arg(long, env = "TENURE_APP_VERSION")]
    pub app_version: Option<String>,

    /// JSON users file for basic auth (see `tenure hash-password`). Without it, reads are open
    /// and every change is refused.
    #[arg(long, env = "TENURE_USERS")]
    pub users: Option<PathBuf>,

    /// File holding the cluster secret, the same on every node (mode 0600, one line of at
    /// least 16 bytes, e.g. `openssl rand -base64 32`). Every record is signed with it and a
    /// record without a valid MAC is never obeyed; nudges between nodes are signed too.
    /// Alternatively set TENURE_SECRET to the secret itself (never give a secret as a flag
    /// value: other users see flags in `ps`).
    #[arg(long, env = "TENURE_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,

    /// During a secret rotation: a second secret file whose signatures are accepted too
    /// (records are signed with --secret-file). Or TENURE_ACCEPT_SECRET.
    #[arg(long, env = "TENURE_ACCEPT_SECRET_FILE")]
    pub accept_secret_file: Option<PathBuf>,

    /// The cluster's expected members, comma-separated (e.g. node-a,node-b,node-c): a node
    /// not listed refuses to start, and /ha/states lists the absent or silent ones as
    /// `missing` (`tenure check` warns). Not with --cluster-file.
    #[arg(long, env = "TENURE_EXPECT_NODES", value_delimiter = ',')]
    pub expect_nodes: Vec<String>,

    /// OpenSpecimen's cluster JSON ({"nodes": [{"name": …, "url": …}, …], "secret": …,
    /// "notifErrorRcpts": […], "notifTimeout": seconds}): the expected members as
    /// --expect-nodes, and its secret as the cluster secret (the file must then be mode 0600;
    /// not with --secret-file or TENURE_SECRET).
    #[arg(long, env = "TENURE_CLUSTER_FILE")]
    pub cluster_file: Option<PathBuf>,

    /// Leave GET …/ha/state and …/ha/master open without credentials (for health checkers
    /// that cannot send any).
    #[arg(long, env = "TENURE_PUBLIC_STATE")]
    pub public_state: bool,

    /// Let a standby or hot-standby start while no master holds the lease.
    #[arg(long, env = "TENURE_ALLOW_NO_MASTER")]
    pub allow_no_master: bool,

    /// Accept an NFS mount older than v4 (locking through NLM).
    #[arg(long, env = "TENURE_ALLOW_NLM")]
    pub allow_nlm: bool,

    /// Accept a store directory that group or others may write to (refused by default: they
    /// could replace the lease or the records).
    #[arg(long, env = "TENURE_ALLOW_SHARED_PERMISSIONS")]
    pub allow_shared_permissions: bool,

    /// Command run (with sh -c) when this node becomes MASTER.
    #[arg(long, env = "TENURE_ON_PROMOTE")]
    pub on_promote: Option<String>,

    /// Command run when this node stops being MASTER; it must finish within the demote grace.
    #[arg(long, env = "TENURE_ON_DEMOTE")]
    pub on_demote: Option<String>,

    /// Command run on every state change.
    #[arg(long, env = "TENURE_ON_CHANGE")]
    pub on_change: Option<String>,

    /// Command (run with sh -c) kept running only while this node is MASTER: started at
    /// promotion, restarted with backoff if it exits, stopped (SIGTERM, SIGKILL at G/2) before
    /// the lease is released.
    #[arg(long, env = "TENURE_EXEC")]
    pub exec: Option<String>,

    /// Notifications by e-mail and webhook (`--notify-*`, `--smtp-*`).
    #[command(flatten)]
    pub notify: NotifyArgs,

    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "TENURE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key for --tls-cert.
    #[arg(long, env = "TENURE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Trust this PEM certificate (or CA) when nudging https:// peers [default: --tls-cert,
    /// so nodes sharing one certificate trust each other].
    #[arg(long, env = "TENURE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// A JSON file with any of these settings, keyed by flag name (e.g. "node-name").
    #[arg(long, env = "TENURE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log format on standard error.
    #[arg(long, env = "TENURE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Also log to this file (`{node}` is replaced by the node name, e.g.
    /// /var/log/tenure/tenure.{node}.log), in --log-format; reopened on SIGHUP, as logrotate
    /// expects.
    #[arg(long, env = "TENURE_LOG_FILE")]
    pub log_file: Option<PathBuf>,

    /// Write this process's PID here once serving (atomically; removed at exit). Refused while
    /// a running tenure holds it.
    #[arg(long, env = "TENURE_PID_FILE")]
    pub pid_file: Option<PathBuf>,

    /// A local directory for this node's state file (its instance id, held under a lock),
    /// so that a restarted node takes its name, and its lease if it was master, back at once
    /// instead of after --heartbeat-timeout. Must not be on the store or on a network
    /// filesystem [default: systemd's $STATE_DIRECTORY, else /var/lib/tenure if it exists,
    /// else off].
    #[arg(long, env = "TENURE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

// The value parsers here (parse_duration, parse_mode, parse_drift) keep `String` errors: clap
// prints a value parser's error through Display, and a String is all it needs.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e}: give a duration such as 500ms, 2s or 1m"))
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse::<Mode>().map_err(|e| e.to_string())
}

/// `1%`, `0.5%` or a fraction `0.01`, as parts per million.
fn parse_drift(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let frac = if let Some(p) = s.strip_suffix('%') {
        p.trim().parse::<f64>().map(|v| v / 100.0)
    } else {
        s.parse::<f64>()
    }
    .map_err(|_| {
        format!(
            "{s:?} is not a drift bound: give a percentage such as 1% or a fraction such as 0.01"
        )
    })?;
    if !(0.0..0.5).contains(&frac) {
        return Err(format!("clock drift {s} is out of range: give 0% to 10%"));
    }
    Ok((frac * 1e6).round() as u32)
}

/// `tenure run`'s notification flags (README "Notifications"; sent by `alerts.rs`).
#[derive(Args, Debug, Clone)]
pub struct NotifyArgs {
    /// E-mail these addresses (comma-separated) when this node becomes or stops being master,
    /// when storage fails for longer than D, on forged or replayed records and on a duplicate
    /// node name. Needs --smtp-url.
    #[arg(
        long,
        help_heading = "Notifications",
        env = "TENURE_NOTIFY_EMAIL",
        value_delimiter = ',',
        requires = "smtp_url"
    )]
    pub notify_email: Vec<String>,

    /// The SMTP server: smtp://host[:25] (plain), smtps://host[:465] (TLS) or
    /// smtp://host:587?tls=required (STARTTLS).
    #[arg(long, help_heading = "Notifications", env = "TENURE_SMTP_URL")]
    pub smtp_url: Option<String>,

    /// SMTP login: a file (mode 0600) holding `user:password`, or the user on the first line
    /// and the password on the second.
    #[arg(
        long,
        help_heading = "Notifications",
        env = "TENURE_SMTP_CREDENTIALS_FILE",
        requires = "smtp_url"
    )]
    pub smtp_credentials_file: Option<PathBuf>,

    /// The From: address [default: tenure@<hostname>].
    #[arg(long, help_heading = "Notifications", env = "TENURE_NOTIFY_FROM")]
    pub notify_from: Option<String>,

    /// POST each notification as JSON ({"text": …, "event": …, "node": …, "epoch": …,
    /// "cluster": …, "time": …}) to this URL, e.g. a Slack or Teams incoming webhook.
    #[arg(long, help_heading = "Notifications", env = "TENURE_NOTIFY_WEBHOOK")]
    pub notify_webhook: Option<String>,

    /// The longest one notification may take to send (per channel) [default: 10s, or a
    /// --cluster-file's notifTimeout].
    #[arg(long, help_heading = "Notifications", env = "TENURE_NOTIFY_TIMEOUT", value_parser = parse_duration)]
    pub notify_timeout: Option<Duration>,
}

/// Merge a JSON `--config` file into the arguments: each key becomes `--key value` placed
/// before the real arguments (so flags win, since later occurrences override), skipping keys
/// whose environment variable is set (so the environment wins over the file).
///
/// The error stays a `String`: it is only printed (`crate::main`), like clap's own argument errors,
/// and `config_args` is shared with the fuzz target.
pub fn expand_config(args: Vec<String>) -> Result<Vec<String>, String> {
    if args.get(1).map(String::as_str) != Some("run") {
        return Ok(args);
    }
    let mut path: Option<String> = std::env::var("TENURE_CONFIG").ok();
    let mut i = 2;
    while i < args.len() {
        if args[i] == "--config" {
            path = args.get(i + 1).cloned();
            i += 1;
        } else if let Some(p) = args[i].strip_prefix("--config=") {
            path = Some(p.to_string());
        }
        i += 1;
    }
    let Some(path) = path else { return Ok(args) };
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read --config {path}: {e}"))?;
    let injected = config_args(&path, &text, |env| std::env::var_os(env).is_some())?;
    let mut out = Vec::with_capacity(args.len() + injected.len());
    out.extend_from_slice(&args[..2]);
    out.extend(injected);
    out.extend_from_slice(&args[2..]);
    Ok(out)
}

/// The `--key value` arguments a `--config` file's `text` stands for, skipping keys whose
/// environment variable `env_set` says is set. `path` is only for messages. (Also the fuzz
/// target `config`, fuzz/.)
pub fn config_args(
    path: &str,
    text: &str,
    env_set: impl Fn(&str) -> bool,
) -> Result<Vec<String>, String> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| format!("--config {path} is not a JSON object of settings: {e}"))?;
    let run_flags = run_flags();
    let mut injected = Vec::new();
    for (key, value) in map {
        let flag = key.replace('_', "-");
        if flag == "config" {
            continue;
        }
        if !run_flags.contains(&flag) {
            return Err(format!(
                "--config {path}: unknown setting {key:?}; settings are the flags of `tenure run` without dashes, e.g. \"node-name\""
            ));
        }
        let env = format!("TENURE_{}", flag.replace('-', "_").to_uppercase());
        if env_set(&env) {
            continue;
        }
        match value {
            serde_json::Value::Bool(true) => injected.push(format!("--{flag}")),
            serde_json::Value::Bool(false) | serde_json::Value::Null => {}
            // `--flag=value`, never `--flag value`: a value starting with '-' (a command, a
            // negative number) must not be taken for a flag (found by the `config` fuzzer).
            serde_json::Value::String(s) => injected.push(format!("--{flag}={s}")),
            serde_json::Value::Number(n) => injected.push(format!("--{flag}={n}")),
            other => {
                return Err(format!(
                    "--config {path}: setting {key:?} must be a string, number or boolean, not {other}"
                ));
            }
        }
    }
    Ok(injected)
}

/// The long flags of `tenure run` (without dashes) that a `--config` file may set: every one
/// but `--config` and `--help`, read from the clap definition itself.
fn run_flags() -> Vec<String> {
    use clap::CommandFactory;
    Cli::command()
        .find_subcommand("run")
        .map(|run| {
            run.get_arguments()
                .filter_map(|a| a.get_long())
                .filter(|f| *f != "config" && *f != "help")
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_keys_are_the_run_flags() {
        let flags = run_flags();
        for flag in [
            "node-name",
            "store",
            "exec",
            "tls-ca",
            "log-format",
            "allow-nlm",
        ] {
            assert!(flags.iter().any(|f| f == flag), "{flag}");
        }
        // Not settings: the file itself, help, other subcommands' flags, unknown words.
        for flag in ["config", "help", "nodes", "warning", "node_name", ""] {
            assert!(!flags.iter().any(|f| f == flag), "{flag}");
        }
    }

    #[test]
    fn drift_parsing() {
        assert_eq!(parse_drift("1%").unwrap(), 10_000);
        assert_eq!(parse_drift("0.5%").unwrap(), 5_000);
        assert_eq!(parse_drift("0.02").unwrap(), 20_000);
        assert!(parse_drift("60%").is_err());
        assert!(parse_drift("lots").is_err());
    }

    include!("../../../fuzz/checks/config.rs");

    /// The fuzz target `config`'s corpus (fuzz/corpus/config/) through its check.
    #[test]
    fn config_fuzz_corpus_replays() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/config");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| check_config(&data));
            assert!(result.is_ok(), "{} fails the config check", path.display());
            n += 1;
        }
        assert!(n > 0);
    }

    #[test]
    fn config_file_sits_between_env_and_flags() {
        /// Removes the directory when the test ends, passed or failed (no tempfile here).
        struct RemoveOnDrop(PathBuf);
        impl Drop for RemoveOnDrop {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let dir = std::env::temp_dir().join(format!("tenure-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _remove = RemoveOnDrop(dir.clone());
        let path = dir.join("c.json");
        std::fs::write(&path, r#"{"node-name": "from-file", "poll_period": "2s", "public-state": true, "priority": 3}"#).unwrap();
        let args: Vec<String> = [
            "tenure",
            "run",
            "--config",
            path.to_str().unwrap(),
            "--priority",
            "5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = expand_config(args).unwrap();
        let cli = Cli::try_parse_from(&out).unwrap();
        let Cmd::Run(r) = cli.command else { panic!() };
        assert_eq!(r.node_name.as_deref(), Some("from-file"));
        assert_eq!(r.poll_period, Duration::from_secs(2));
        assert!(r.public_state);
        assert_eq!(
            r.priority, 5,
            "a flag on the command line wins over the file"
        );
        std::fs::write(&path, r#"{"no-such-flag": 1}"#).unwrap();
        let args: Vec<String> = ["tenure", "run", "--config", path.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(expand_config(args).unwrap_err().contains("unknown setting"));
    }

    /// Values starting with '-' are values, not flags (found by the `config` fuzzer:
    /// fuzz/corpus/config/regress-hyphen-value).
    #[test]
    fn config_values_may_start_with_a_hyphen() {
        let injected = config_args(
            "c.json",
            r#"{"on-promote": "--pubbic-state", "exec": "-x", "priority": -3, "mode": "--standby"}"#,
            |env| env == "TENURE_MODE",
        )
        .unwrap();
        let mut argv = vec!["tenure".to_string(), "run".to_string()];
        argv.extend(injected);
        let cli = Cli::try_parse_from(&argv).unwrap();
        let Cmd::Run(r) = cli.command else { panic!() };
        assert_eq!(r.on_promote.as_deref(), Some("--pubbic-state"));
        assert_eq!(r.exec.as_deref(), Some("-x"));
        assert_eq!(r.priority, -3);
        assert_eq!(r.mode, Mode::Auto, "the environment's key is skipped");
    }
}
