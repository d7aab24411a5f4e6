//! `tenure run`: validate the configuration, open the store, serve HTTP and drive the election.

use crate::args::RunArgs;
use crate::hooks::ShellHooks;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tenure_election::config::Config;
use tenure_election::driver::Driver;
use tenure_election::machine::{Machine, Now};
use tenure_election::{Command, Snapshot, clock, types};
use tenure_persistence::{DirOptions, DirStore, StoreLocation};
use tenure_store::Store;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

/// Exit codes: 0 clean shutdown, 1 refused to run or failed, 2 usage/configuration error.
const USAGE: u8 = 2;
const REFUSED: u8 = 1;

fn usage(msg: impl std::fmt::Display) -> u8 {
    eprintln!("tenure run: {msg}");
    USAGE
}

pub fn main(a: RunArgs) -> u8 {
    // Read the secrets from the environment and drop them from it before anything else runs,
    // so that hooks and --exec children never inherit them.
    let env_secret = take_env_secret("TENURE_SECRET");
    let env_accept = take_env_secret("TENURE_ACCEPT_SECRET");
    // `{node}` in --log-file needs the name; without one the run stops below anyway.
    let log_file = match (&a.log_file, &a.node_name) {
        (Some(template), Some(name)) => {
            let path = crate::logging::log_file_path(template, name);
            match crate::logging::LogFile::open(&path) {
                Ok(f) => Some(Arc::new(f)),
                Err(e) => {
                    eprintln!(
                        "tenure run: --log-file {}: {e}: create its directory or fix its permissions",
                        path.display()
                    );
                    return REFUSED;
                }
            }
        }
        _ => None,
    };
    crate::logging::init_with_file(a.log_format, log_file.clone());
    // The expected members (--expect-nodes or --cluster-file); a cluster file may hold the
    // secret too.
    let members =
        match crate::cluster_file::Members::from_args(&a.expect_nodes, a.cluster_file.as_deref()) {
            Ok(m) => m,
            Err(e) => return usage(e),
        };
    let keys = match load_keys(&a, env_secret, env_accept, members.as_ref()) {
        Ok(k) => k.map(Arc::new),
        Err(e) => return usage(e),
    };
    let Some(name) = a.node_name.clone() else {
        return usage(
            "--node-name is required: every node needs a unique name, e.g. --node-name node-a",
        );
    };
    if let Err(e) = types::validate_node_name(&name) {
        return usage(e);
    }
    if let Some(m) = &members {
        if let Err(e) = m.admit(&name) {
            return usage(e);
        }
        tracing::info!(
            "expected members {} (from {}): /ha/states lists the absent or silent ones as missing",
            m.names.join(","),
            m.source
        );
    }
    let Some(store_arg) = a.store.clone() else {
        return usage(
            "--store is required: the store every node shares, e.g. --store /srv/tenure or --store s3://bucket/tenure",
        );
    };
    let bind: SocketAddr = match a.bind.parse() {
        Ok(b) => b,
        Err(_) => {
            return usage(format!(
                "--bind {:?} is not an address: give host:port such as 127.0.0.1:8081",
                a.bind
            ));
        }
    };
    let t = a.heartbeat_timeout;
    let p = a.poll_period;
    let mut cfg = Config {
        name: name.clone(),
        instance_id: uuid::Uuid::new_v4().to_string(),
        previous_instance: None,
        uri: a.node_uri.clone().unwrap_or_else(|| {
            let uri = default_uri(bind);
            if a.tls_cert.is_some() {
                uri.replacen("http://", "https://", 1)
            } else {
                uri
            }
        }),
        mode: a.mode,
        heartbeat_timeout: t,
        poll_period: p,
        renew_deadline: a
            .renew_deadline
            .unwrap_or_else(|| Config::default_renew_deadline(t)),
        // Set below, from the D and storage timeout in force.
        renew_interval: p,
        heartbeat_interval: a
            .heartbeat_interval
            .unwrap_or_else(|| Config::default_heartbeat_interval(t, p)),
        demote_grace: a
            .demote_grace
            .unwrap_or_else(|| Config::default_demote_grace(t)),
        storage_timeout: a
            .storage_timeout
            .unwrap_or_else(|| Config::default_storage_timeout(p)),
        clock_drift_ppm: a.clock_drift,
        priority: a.priority,
        app_version: a.app_version.clone(),
        allow_no_master: a.allow_no_master,
        keys: keys.clone(),
        // `members.file` also holds the cluster file's notification settings.
        expected_nodes: members
            .as_ref()
            .map(|m| m.names.clone())
            .unwrap_or_default(),
    };
    cfg.renew_interval = a.renew_interval.unwrap_or_else(|| {
        Config::default_renew_interval(cfg.renew_deadline, p, cfg.storage_timeout)
    });
    if let Err(e) = cfg.validate_timings() {
        return usage(e);
    }
    let users = match &a.users {
        None => None,
        Some(path) => match tenure_http::Users::load(path) {
            Ok(u) => Some(u),
            Err(e) => return usage(format!("--users {}: {e}", path.display())),
        },
    };
    // Before the store is opened: a second tenure given this node's pid file stops here.
    let pid_file = match &a.pid_file {
        Some(path) => match crate::pidfile::PidFile::acquire(path) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("tenure run: {e}");
                return REFUSED;
            }
        },
        None => None,
    };
    // Before the store is opened too: a second tenure of this name on this host stops here,
    // and the previous instance's --exec child is gone before this one can be master.
    let state_file = match take_state_file(
        &a,
        &store_arg,
        &name,
        &cfg.instance_id,
        cfg.demote_grace / 2,
    ) {
        Ok(Some((state, previous))) => {
            cfg.previous_instance = previous;
            Some(Arc::new(state))
        }
        Ok(None) => None,
        Err(e) => {
            eprintln!("tenure run: {e}");
            return REFUSED;
        }
    };
    let store: Arc<dyn Store> = match open_store(
        &store_arg,
        a.allow_nlm,
        a.allow_shared_permissions,
        cfg.storage_timeout,
        a.poll_period,
    ) {
        Ok(s) => s,
        Err((code, msg)) => {
            eprintln!("tenure run: {msg}");
            return code;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tenure")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tenure run: cannot start the runtime: {e}");
            return REFUSED;
        }
    };
    let files = Files {
        pid_file,
        state_file,
        log_file,
        cluster_file: members.and_then(|m| m.file),
    };
    runtime.block_on(serve(cfg, store, bind, users, a, files))
}

/// The node's local files: `--pid-file` (removed when dropped) and `--log-file`.
struct Files {
    pid_file: Option<crate::pidfile::PidFile>,
    /// `--state-dir`: held (locked) for the life of the process.
    state_file: Option<Arc<crate::statefile::StateFile>>,
    log_file: Option<Arc<crate::logging::LogFile>>,
    /// `--cluster-file`, for its notification settings.
    cluster_file: Option<crate::cluster_file::ClusterFile>,
}

/// `--state-dir` (restart in place): takes this node's state file, stops the previous
/// instance's `--exec` child if it still runs, and names this instance in the file. Returns
/// the file and the previous instance when it is known dead and this boot's; `None` when
/// restart in place is off.
fn take_state_file(
    a: &RunArgs,
    store_arg: &str,
    name: &str,
    instance_id: &str,
    kill_after: Duration,
) -> Result<Option<(crate::statefile::StateFile, Option<String>)>, String> {
    use crate::statefile::{StateFile, resolve, stop_previous_exec};
    let Some(dir) = resolve(a.state_dir.as_deref()) else {
        tracing::info!(
            "restart in place is off (no --state-dir, and {} does not exist): a restarted node waits T for its previous record",
            crate::statefile::DEFAULT_DIR
        );
        return Ok(None);
    };
    // The store as one string, however it was spelled: a directory's canonical path.
    let (key, root) = match StoreLocation::parse(store_arg) {
        Ok(StoreLocation::Directory(p)) => {
            let c = p.canonicalize().unwrap_or(p);
            (c.display().to_string(), Some(c))
        }
        _ => (store_arg.trim_end_matches('/').to_string(), None),
    };
    let (mut state, previous) = StateFile::acquire(&dir, name, &key, root.as_deref())?;
    if let Some(x) = previous.exec
        && let Some(what) = stop_previous_exec(x, kill_after)
    {
        tracing::warn!(
            "the previous instance's {what} still ran: stopped before this node may be master (one --exec child at a time)"
        );
    }
    state.begin(instance_id)?;
    match (&previous.instance_id, &previous.not_usable) {
        (Some(id), _) => tracing::info!(
            "state file {}: the previous instance {id} of {name} on this host is dead (its lock was free): its record, and its lease if it was master, are taken back at once",
            state.path().display()
        ),
        (None, Some(why)) => tracing::info!(
            "state file {}: {why}: a previous record of {name} waits T as usual",
            state.path().display()
        ),
        (None, None) => tracing::info!("state file {}", state.path().display()),
    }
    Ok(Some((state, previous.instance_id)))
}

pub(crate) fn take_env_secret(var: &str) -> Option<Vec<u8>> {
    let v = std::env::var_os(var)?;
    // SAFETY: called first thing in `tenure run`, before any other thread exists.
    unsafe { std::env::remove_var(var) };
    Some(
        std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str())
            .trim_ascii()
            .to_vec(),
    )
}

/// The cluster secret from --secret-file, TENURE_SECRET or the --cluster-file (one of them),
/// and the extra secret accepted during a rotation.
fn load_keys(
    a: &RunArgs,
    env_secret: Option<Vec<u8>>,
    env_accept: Option<Vec<u8>>,
    members: Option<&crate::cluster_file::Members>,
) -> Result<Option<tenure_election::secret::Keyring>, String> {
    let Some(file_secret) = members.and_then(|m| m.secret()) else {
        return keyring(
            &a.secret_file,
            &a.accept_secret_file,
            env_secret,
            env_accept,
        );
    };
    let source = members.map_or("", |m| m.source.as_str());
    let other = match (&a.secret_file, &env_secret) {
        (Some(_), _) => Some("--secret-file"),
        (None, Some(_)) => Some("TENURE_SECRET"),
        (None, None) => None,
    };
    if let Some(other) = other {
        return Err(format!(
            "{source} holds a \"secret\" and {other} is given too: give the cluster secret one way only"
        ));
    }
    // The file's secret stands where TENURE_SECRET would.
    keyring(
        &None,
        &a.accept_secret_file,
        Some(file_secret.to_vec()),
        env_accept,
    )
    .map_err(|e| format!("{source}: {e}"))
}

/// The cluster secret (and one accepted during a rotation), from files or the environment.
pub(crate) fn keyring(
    secret_file: &Option<PathBuf>,
    accept_secret_file: &Option<PathBuf>,
    env_secret: Option<Vec<u8>>,
    env_accept: Option<Vec<u8>>,
) -> Result<Option<tenure_election::secret::Keyring>, String> {
    use tenure_election::secret::{Keyring, read_secret_file};
    let one =
        |file: &Option<PathBuf>, env: Option<Vec<u8>>, flag: &str, var: &str| match (file, env) {
            (Some(_), Some(_)) => Err(format!(
                "both {flag} and {var} are set: give the secret one way only"
            )),
            (Some(p), None) => read_secret_file(p)
                .map(Some)
                .map_err(|e| format!("{flag}: {e}")),
            (None, Some(v)) => Ok(Some(v)),
            (None, None) => Ok(None),
        };
    let current = one(secret_file, env_secret, "--secret-file", "TENURE_SECRET")?;
    let accepted = one(
        accept_secret_file,
        env_accept,
        "--accept-secret-file",
        "TENURE_ACCEPT_SECRET",
    )?;
    match (current, accepted) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(
            "--accept-secret-file needs --secret-file (the secret records are signed with)".into(),
        ),
        (Some(c), acc) => Keyring::new(&c, acc.as_deref())
            .map(Some)
            .map_err(|e| format!("cluster secret: {e}")),
    }
}

async fn serve(
    mut cfg: Config,
    store: Arc<dyn Store>,
    bind: SocketAddr,
    users: Option<tenure_http::Users>,
    a: RunArgs,
    mut files: Files,
) -> u8 {
    let listener = match tokio::net::TcpListener::bind(bind).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "tenure run: cannot listen on {bind}: {e}; choose another --bind or stop what holds the port"
            );
            return REFUSED;
        }
    };
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => match tenure_http::TlsConfig::load(cert, key).await {
            Ok(t) => Some(t),
            Err(e) => return usage(e),
        },
        _ => None,
    };
    // Notifications (--notify-email, --notify-webhook): checked before the election starts.
    // A cluster file's `notifErrorRcpts` and `notifTimeout` stand in for --notify-email and
    // --notify-timeout when those are not given (OpenSpecimen's cluster file); its recipients
    // are mailed only when --smtp-url says how.
    let mut notify = a.notify.clone();
    if let Some(file) = &files.cluster_file {
        if notify.notify_email.is_empty() && !file.notify_recipients.is_empty() {
            if notify.smtp_url.is_some() {
                notify.notify_email = file.notify_recipients.clone();
            } else {
                tracing::info!(
                    "the cluster file names notification recipients ({}), but without --smtp-url no e-mail is sent",
                    file.notify_recipients.join(", ")
                );
            }
        }
        if notify.notify_timeout.is_none() {
            notify.notify_timeout = file.notify_timeout;
        }
    }
    let alert_channels = match crate::alerts::Channels::from_args(&notify) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let name = cfg.name.clone();
    let span = tracing::info_span!("tenure", node = %name);
    let scheme = if tls.is_some() { "https" } else { "http" };
    // `--bind …:0` picks a free port: log it, and advertise it in the default node URI.
    let bind = listener.local_addr().unwrap_or(bind);
    if a.node_uri.is_none() {
        cfg.uri = default_uri(bind).replacen("http://", &format!("{scheme}://"), 1);
    }
    tracing::info!(parent: &span, "serving the HA API on {scheme}://{bind} (node URI {}), store {}", cfg.uri, store.describe());
    if let Some(p) = files.pid_file.as_mut() {
        match p.write_pid() {
            Ok(()) => {
                tracing::info!(parent: &span, "wrote pid {} to {}", std::process::id(), p.path().display())
            }
            Err(e) => {
                eprintln!("tenure run: {e}");
                return REFUSED;
            }
        }
    }
    if let Some(f) = &files.log_file {
        tracing::info!(parent: &span, "logging to {} too (reopened on SIGHUP)", f.path().display());
    }

    let initial = Snapshot::initializing(&cfg.name, &cfg.instance_id, &cfg.uri, cfg.mode);
    let (snap_tx, snap_rx) = watch::channel(Arc::new(initial));
    let (cmd_tx, cmd_rx) = mpsc::channel::<Command>(64);
    // Peers sharing this node's certificate trust it without --tls-ca.
    let nudger = tenure_http::NudgeClient::with_tls(&tenure_http::Tls {
        insecure: false,
        ca: a.tls_ca.clone().or_else(|| a.tls_cert.clone()),
    });
    let nudger = nudger.map(|n| n.with_keys(cfg.keys.clone()));
    let peers: Arc<dyn tenure_election::driver::Peers> = match &nudger {
        Ok(c) => Arc::new(c.clone()),
        Err(e) => {
            tracing::warn!(parent: &span, "nudges disabled: {e}");
            Arc::new(tenure_election::driver::NoPeers)
        }
    };
    let exec = a.exec.clone().map(|cmd| {
        Arc::new(
            crate::exec::Exec::new(
                cmd,
                cfg.name.clone(),
                cfg.demote_grace,
                a.log_format,
                snap_rx.clone(),
            )
            .with_state_file(files.state_file.clone()),
        )
    });
    let hooks = Arc::new(ShellHooks {
        on_promote: a.on_promote.clone(),
        on_demote: a.on_demote.clone(),
        on_change: a.on_change.clone(),
        limit: cfg.demote_grace,
        exec: exec.clone(),
    });
    let cfg_grace = cfg.demote_grace / 2;
    let renew_deadline = cfg.renew_deadline;
    let now = Now {
        mono: clock::now(),
        wall_ms: clock::wall_millis(),
    };
    let nudge_keys = cfg.keys.clone();
    let storage_timeout = cfg.storage_timeout;
    match &cfg.keys {
        Some(k) => {
            tracing::info!(parent: &span, "cluster secret: records and nudges are signed with key {}{}", k.current_id(), k.accepted_id().map_or(String::new(), |a| format!("; key {a} is accepted too (rotation)")))
        }
        None => {
            tracing::info!(parent: &span, "no cluster secret (--secret-file): records are unsigned, so anyone who can write the store is trusted")
        }
    }
    let machine = Machine::new(cfg, now);
    let stats = Arc::new(tenure_election::Stats::default());
    let driver = Driver::new(machine, store.clone(), snap_tx, cmd_rx, peers, hooks)
        .with_stats(stats.clone());

    let notifier = tokio::spawn(crate::notify::run(stats.clone(), snap_rx.clone()));
    // Its own tasks, fed from the watch channel: the driver never waits for a notification.
    let alerts = alert_channels.map(|c| {
        tracing::info!(parent: &span, "notifications: {}", c.describe());
        span.in_scope(|| crate::alerts::spawn(c, stats.clone(), snap_rx.clone(), renew_deadline))
    });
    let api = tenure_http::ApiState::new(snap_rx, cmd_tx.clone(), users, a.public_state)
        .with_stats(stats)
        .with_nudge_keys(nudge_keys)
        .with_storage_timeout(storage_timeout)
        .with_store(store);
    let (stop_http_tx, mut stop_http_rx) = watch::channel(false);
    let http = tokio::spawn(
        async move {
            let shutdown = async move {
                let _ = stop_http_rx.wait_for(|s| *s).await;
            };
            let served = match tls {
                Some(tls) => tenure_http::serve_tls(listener, api, tls, shutdown).await,
                None => tenure_http::serve(listener, api, shutdown).await,
            };
            if let Err(e) = served {
                tracing::error!("HTTP server failed: {e}");
            }
        }
        .instrument(span.clone()),
    );
    tokio::spawn(signals(cmd_tx, files.log_file.clone()).instrument(span.clone()));

    let exit = driver.run().instrument(span.clone()).await;
    crate::notify::stopping();
    notifier.abort();
    if let Some(x) = &exec {
        // Normally stopped by the MASTER -> X hook already; this covers any other way out.
        x.stop(std::time::Instant::now() + cfg_grace).await;
    }
    if let Ok(n) = &nudger {
        // The release nudges the standbys; let those requests leave before the runtime ends.
        n.drain(Duration::from_millis(500)).await;
    }
    if let Some(n) = alerts {
        // The last ones (a release, a duplicate name), for at most min(--notify-timeout, 5 s).
        n.finish(&exit.message).instrument(span.clone()).await;
    }
    let _ = stop_http_tx.send(true);
    // Let in-flight answers finish, but never hang the exit on a slow client.
    let _ = tokio::time::timeout(Duration::from_secs(2), http).await;
    if exit.code == 0 {
        tracing::info!(parent: &span, "{}", exit.message);
    } else {
        tracing::error!(parent: &span, "{}", exit.message);
        eprintln!("tenure run: {}", exit.message);
    }
    exit.code.clamp(0, 255) as u8
}

/// SIGTERM/SIGINT ask for a graceful release; a second signal exits at once. SIGHUP reopens
/// --log-file (logrotate) and never stops the node.
async fn signals(cmd_tx: mpsc::Sender<Command>, log_file: Option<Arc<crate::logging::LogFile>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    let mut count = 0;
    loop {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => {
                match &log_file {
                    Some(f) => match f.reopen() {
                        Ok(()) => tracing::info!("SIGHUP: reopened the log file {}", f.path().display()),
                        Err(e) => tracing::warn!("SIGHUP: cannot reopen the log file {}: {e}; still logging to the old one", f.path().display()),
                    },
                    None => tracing::info!("SIGHUP: no --log-file to reopen; nothing to do"),
                }
                continue;
            }
        };
        count += 1;
        if count == 1 {
            tracing::info!("{which}: releasing the lease if held, then exiting");
            let _ = cmd_tx.send(Command::Shutdown).await;
        } else {
            tracing::warn!("{which} again: exiting at once");
            std::process::exit(130);
        }
    }
}

/// Opens `--store` as `run` and `init` use it (the error carries the exit code).
pub(crate) fn open_store(
    arg: &str,
    allow_nlm: bool,
    allow_shared_permissions: bool,
    lock_wait: Duration,
    poll: Duration,
) -> Result<Arc<dyn Store>, (u8, String)> {
    let path = match StoreLocation::parse(arg).map_err(|e| (USAGE, e.to_string()))? {
        StoreLocation::Object(url) => return open_object_store(&url, lock_wait, poll),
        StoreLocation::Directory(path) => path,
    };
    // A lock held longer than one storage call is a stopped or hung peer: give up within the
    // call's own deadline rather than keep the I/O thread busy.
    let opts = DirOptions {
        allow_nlm,
        allow_shared_permissions,
        lock_wait,
        ..DirOptions::default()
    };
    let store = DirStore::open(&path, opts).map_err(|e| (REFUSED, e.to_string()))?;
    // Say which mount the lease's safety rests on; a caveat (NFSv3 locks through NLM, accepted
    // with --allow-nlm) is a warning an operator should see in the journal.
    if let Some(m) = store.mount_info() {
        tracing::info!(
            "store {} is on a {} mount at {} ({}), options {}",
            store.root().display(),
            m.fstype,
            m.mount_point.display(),
            m.source,
            m.options.join(",")
        );
        if let Some(note) = &m.note {
            tracing::warn!("store mount: {note}");
        }
    }
    Ok(Arc::new(store) as Arc<dyn Store>)
}

/// `s3://`, `gs://`, `az://`: the storage deadline is also the HTTP client's timeout, so no
/// request outlives its call. A server that ignores conditional writes would let two nodes
/// take the lease: it is refused at start-up (a probe under `probe/`, DESIGN §3).
fn open_object_store(
    url: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<Arc<dyn Store>, (u8, String)> {
    let opts = tenure_persistence::ObjOptions {
        timeout,
        ..Default::default()
    };
    let open = |opts: tenure_persistence::ObjOptions| {
        tenure_persistence::ObjStore::open(url, opts).map_err(|e| (REFUSED, e.to_string()))
    };
    let store = open(opts.clone())?;
    // An unreachable store may be a blip at boot; a broken one answers the same every time.
    const ATTEMPTS: u32 = 3;
    let mut attempt = 1;
    loop {
        match tenure_persistence::probe_conditional_writes_detailed(&store) {
            Ok(()) => break,
            Err(tenure_persistence::ProbeError::Unusable(m)) if attempt < ATTEMPTS => {
                tracing::warn!("store probe {attempt}/{ATTEMPTS} failed, retrying: {m}");
                attempt += 1;
                std::thread::sleep(poll.max(Duration::from_millis(200)));
            }
            Err(tenure_persistence::ProbeError::Unusable(m)) => {
                return Err((REFUSED, format!("the store is not usable: {m}")));
            }
            Err(tenure_persistence::ProbeError::Broken(m)) => {
                return Err((REFUSED, format!("refusing the store: {m}")));
            }
        }
    }
    let store: Arc<dyn Store> = Arc::new(store);
    // One request at a time cannot tell a store that checks a condition and then writes from
    // one that does both in one step; a few writers racing on their own connections can.
    // The racers get a deadline of their own: a correct server may make the losers of a race
    // wait (SeaweedFS answers their 412 after about a second), and a start-up check is not
    // bound by the election's per-call deadline.
    let started = std::time::Instant::now();
    let racing = tenure_persistence::ObjOptions {
        timeout: timeout.max(RACE_TIMEOUT),
        ..opts
    };
    let handles = (0..RACERS)
        .map(|_| open(racing.clone()).map(|s| Arc::new(s) as Arc<dyn Store>))
        .collect::<Result<Vec<_>, _>>()?;
    let mut attempt = 1;
    loop {
        match tenure_persistence::probe_concurrent_writes(&handles) {
            Ok(n) => {
                tracing::info!(
                    "store probe: {n} concurrent creates and {n} concurrent replaces, exactly one of each won ({} ms)",
                    started.elapsed().as_millis()
                );
                return Ok(store);
            }
            Err(e) if e.is_verdict() => {
                return Err((
                    REFUSED,
                    format!(
                        "refusing the store: {e}. `tenure doctor --store {url}` runs the full check"
                    ),
                ));
            }
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!("store race probe {attempt}/{ATTEMPTS} inconclusive, retrying: {e}");
                attempt += 1;
                std::thread::sleep(poll.max(Duration::from_millis(200)));
            }
            // Failed or timed-out writes, like the sequential probe's `Unusable`: said the same way.
            Err(e) => {
                return Err((
                    REFUSED,
                    format!(
                        "the store is not usable: {e}. `tenure doctor --store {url}` runs the full check"
                    ),
                ));
            }
        }
    }
}

/// Writers in `tenure run`'s start-up race (each on a handle of its own).
const RACERS: usize = 4;
/// The least deadline of one write in that race.
const RACE_TIMEOUT: Duration = Duration::from_secs(5);

fn default_uri(bind: SocketAddr) -> String {
    if bind.ip().is_unspecified() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        format!("http://{host}:{}/", bind.port())
    } else {
        // With Brooklyn's trailing slash: its clients resolve paths against the node's URI.
        format!("http://{bind}/")
    }
}
