//! A floating IP that follows the master: `deploy/vip/tenure-vip hold` as each node's `--exec`
//! child, on a real (virtual) link. The test builds its own network in namespaces named after
//! its pid: a bridge namespace (`…-br`), two node namespaces (`…-a`, `…-b`) each with a tiny
//! HTTP application answering its node name, and a client namespace (`…-c`), all on one
//! bridge, with TEST-NET addresses only (192.0.2.0/24, 2001:db8::/64). The tenure nodes run in
//! the root namespace on 127.0.0.1 as usual; their holders act in the node namespaces
//! (`TENURE_VIP_NETNS`). A sampler reads both node namespaces' addresses about every ms
//! throughout and the test fails if the address may ever have been on both at once.
//!
//! Needs root (network namespaces), `ip`, iputils' `arping`, `curl` and `python3`; it fails,
//! naming the package, when one is missing (scripts/install-test-deps.sh installs them).

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tenure_tests::expect::{settle_timeout, wait_log_contains};
use tenure_tests::spawn::die_with_spawner;
use tenure_tests::{Cluster, NodeSpec, serial, tenure_bin, wait_for, wait_until, workspace_root};

const DEV: &str = "eth0";
const VIP4: &str = "192.0.2.100";
const VIP6: &str = "2001:db8::100";
const APP_PORT: u16 = 8080;
const TWO: [&str; 2] = ["node-a", "node-b"];

/// The holder script under test.
fn script() -> PathBuf {
    workspace_root().join("deploy/vip/tenure-vip")
}

/// Runs a command to completion: (success, stdout, stderr).
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ip(args: &[&str]) -> (bool, String, String) {
    run(Command::new("ip").args(args))
}

/// `ip ARGS`, which must succeed.
fn ip_ok(args: &[&str]) -> String {
    let (ok, out, err) = ip(args);
    assert!(ok, "ip {} failed: {err}", args.join(" "));
    out
}

/// Fails (never skips: CI installs it) when `tool` is missing.
fn require_tool(tool: &str, package: &str) {
    let (found, _, _) = run(Command::new("sh").args(["-c", &format!("command -v {tool}")]));
    assert!(
        found,
        "{tool} not found: apt-get install {package} (scripts/install-test-deps.sh installs it)"
    );
}

/// Fails (never skips: CI runs as root and installs everything) when the test cannot run here.
fn require(tools: &[(&str, &str)]) {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "the floating-IP tests create network namespaces and need root (CI runs as root)"
    );
    for (tool, package) in tools {
        require_tool(tool, package);
    }
    let (_, out, err) = run(Command::new("arping").arg("-V"));
    assert!(
        format!("{out}{err}").contains("iputils"),
        "arping is not iputils' arping: apt-get install iputils-arping"
    );
}

/// A numbered test network; every namespace name starts with `tvip<pid>-<n>`.
static NETS: AtomicUsize = AtomicUsize::new(0);

/// The namespaces (bridge, node a, node b, client) and the processes started in them. Drop
/// kills the processes (their whole process groups) and deletes the namespaces, also when the
/// test panics.
struct Net {
    prefix: String,
    dir: tempfile::TempDir,
    procs: Vec<Child>,
}

impl Net {
    /// Builds the network: the bridge in `…-br`, and in each of `…-a` (192.0.2.11,
    /// 2001:db8::11), `…-b` (.12, ::12) and `…-c` (the client, .20, ::20) an `eth0` whose
    /// veth peer is a port of the bridge.
    fn new() -> Net {
        let prefix = format!(
            "tvip{}-{}",
            std::process::id(),
            NETS.fetch_add(1, Ordering::Relaxed)
        );
        let net = Net {
            prefix,
            dir: tempfile::Builder::new()
                .prefix("tenure-vip-")
                .tempdir()
                .expect("temp dir"),
            procs: Vec::new(),
        };
        // Constructed first, so a failed step below still deletes what was made.
        for n in ["br", "a", "b", "c"] {
            let ns = net.ns(n);
            let _ = ip(&["netns", "del", &ns]);
            ip_ok(&["netns", "add", &ns]);
            ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        let br = net.ns("br");
        ip_ok(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip_ok(&["-n", &br, "link", "set", "br0", "up"]);
        for (n, host) in [("a", 11), ("b", 12), ("c", 20)] {
            let ns = net.ns(n);
            let port = format!("v{n}");
            ip_ok(&[
                "link", "add", DEV, "netns", &ns, "type", "veth", "peer", "name", &port, "netns",
                &br,
            ]);
            ip_ok(&["-n", &br, "link", "set", &port, "master", "br0"]);
            ip_ok(&["-n", &br, "link", "set", &port, "up"]);
            ip_ok(&["-n", &ns, "link", "set", DEV, "up"]);
            ip_ok(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("192.0.2.{host}/24"),
                "dev",
                DEV,
            ]);
            // nodad: the nodes' own addresses are usable at once (the VIP gets DAD).
            ip_ok(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("2001:db8::{host}/64"),
                "dev",
                DEV,
                "nodad",
            ]);
        }
        net
    }

    fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    /// Starts `cmd` (in a process group of its own, killed if the test thread dies) and keeps
    /// it for Drop; returns its index.
    fn start(&mut self, mut cmd: Command) -> usize {
        cmd.stdin(Stdio::null()).process_group(0);
        die_with_spawner(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        self.procs.push(child);
        self.procs.len() - 1
    }

    /// The application of node namespace `n`: an HTTP server on port 8080 (both families)
    /// whose index page is `name`.
    fn serve(&mut self, n: &str, name: &str) {
        let dir = self.dir.path().join(n);
        std::fs::create_dir_all(&dir).expect("app dir");
        std::fs::write(dir.join("index.html"), format!("{name}\n")).expect("index.html");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(n), "python3", "-m", "http.server"])
            .args(["--bind", "::", &APP_PORT.to_string(), "--directory"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.start(cmd);
    }

    /// `tenure-vip SUB` with `vip` in node namespace `n`, its standard error to `log`.
    fn holder_cmd(&self, n: &str, vip: &str, sub: &str, log: &Path) -> Command {
        let mut cmd = Command::new(script());
        cmd.arg(sub)
            .env("TENURE_VIP", vip)
            .env("TENURE_VIP_DEV", DEV)
            .env("TENURE_VIP_NETNS", self.ns(n))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("holder log"));
        cmd
    }

    fn signal(&self, i: usize, sig: libc::c_int) {
        // SAFETY: kill(2) on a child of ours that has not been reaped.
        unsafe { libc::kill(self.procs[i].id() as i32, sig) };
    }

    /// Waits up to `timeout` for process `i` to exit.
    fn wait_exit(&mut self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.procs[i].try_wait().expect("try_wait");
            status.is_some()
        });
        status
    }

    /// The body of `GET url` from the client namespace (curl, 1 s at most), or `None`.
    fn fetch(&self, url: &str) -> Option<String> {
        let (ok, out, _) = run(Command::new("ip").args([
            "netns",
            "exec",
            &self.ns("c"),
            "curl",
            "-s",
            "--max-time",
            "1",
            url,
        ]));
        ok.then(|| out.trim().to_string())
    }

    /// The MAC address of `eth0` in namespace `n`.
    fn mac(&self, n: &str) -> String {
        let out = ip_ok(&["-n", &self.ns(n), "-o", "link", "show", "dev", DEV]);
        field_after(&out, "link/ether").unwrap_or_else(|| panic!("no MAC in {out:?}"))
    }

    /// The client's neighbour entry for `addr`: (MAC, state), if it has one with a MAC.
    fn client_neigh(&self, addr: &str) -> Option<(String, String)> {
        let out = ip_ok(&["-n", &self.ns("c"), "neigh", "show", addr, "dev", DEV]);
        let mac = field_after(&out, "lladdr")?;
        let state = out.split_whitespace().last().unwrap_or("").to_string();
        Some((mac, state))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.procs {
            if matches!(c.try_wait(), Ok(None)) {
                // SAFETY: SIGKILL to the process group of a child of ours (its own group, made
                // at spawn) that has not been reaped, so the group id cannot have been reused.
                unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
                let _ = c.wait();
            }
        }
        for n in ["a", "b", "c", "br"] {
            let _ = ip(&["netns", "del", &self.ns(n)]);
        }
    }
}

/// The word after `key` in `text`.
fn field_after(text: &str, key: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == key)?;
    words.next().map(String::from)
}

/// The line of `addr` (`ip -o addr` format) on `eth0` in namespace `ns`, if it is there.
fn addr_line(ns: &str, addr: &str) -> Option<String> {
    let (ok, out, _) = ip(&["-n", ns, "-o", "addr", "show", "dev", DEV]);
    let needle = if addr.contains(':') {
        format!(" inet6 {addr}/")
    } else {
        format!(" inet {addr}/")
    };
    ok.then(|| out.lines().find(|l| l.contains(&needle)).map(String::from))
        .flatten()
}

/// `addr` is on `eth0` in `ns` and usable (not tentative, DAD not failed).
fn holds(ns: &str, addr: &str) -> bool {
    addr_line(ns, addr).is_some_and(|l| !l.contains("tentative") && !l.contains("dadfailed"))
}

/// `addr` is not on `eth0` in `ns` at all.
fn lacks(ns: &str, addr: &str) -> bool {
    addr_line(ns, addr).is_none()
}

/// One read of a namespace's addresses, between `start` and `end`; `present` is `None` when
/// the read failed (which neither opens nor closes a span).
struct Probe {
    start: Instant,
    end: Instant,
    present: Option<bool>,
}

/// Moves the calling thread (only) into the named network namespace.
fn enter_netns(ns: &str) -> std::io::Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{ns}"))?;
    // SAFETY: setns(2) with a valid descriptor; CLONE_NEWNET changes this thread's network
    // namespace only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether any interface of this thread's network namespace has `addr` (getifaddrs(3): one
/// netlink dump), or `None` if the read failed.
fn has_ipv4_here(addr: Ipv4Addr) -> Option<bool> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, which is freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = false;
    let mut p = list;
    while !p.is_null() {
        // SAFETY: `p` is an element of the list getifaddrs returned, not yet freed; an
        // AF_INET address is a sockaddr_in.
        unsafe {
            let a = (*p).ifa_addr;
            if !a.is_null() && i32::from((*a).sa_family) == libc::AF_INET {
                let sin = &*a.cast::<libc::sockaddr_in>();
                found |= Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)) == addr;
            }
            p = (*p).ifa_next;
        }
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(list) };
    Some(found)
}

/// One thread per node namespace, moved into it, reading its addresses (getifaddrs) about
/// every millisecond, each for at most `cap`. (Spawning `ip -n NS addr show` for each read
/// left gaps of 30 ms and more on 2 busy cores, as long as the handover it has to resolve.)
struct Sampler {
    stop: Arc<AtomicBool>,
    threads: Vec<(String, JoinHandle<Vec<Probe>>)>,
    origin: Instant,
}

impl Sampler {
    fn start(namespaces: &[&str], addr: Ipv4Addr, cap: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let origin = Instant::now();
        let threads = namespaces
            .iter()
            .map(|ns| {
                let (name, stop) = (ns.to_string(), stop.clone());
                let ns = name.clone();
                let h = std::thread::spawn(move || {
                    enter_netns(&ns).unwrap_or_else(|e| panic!("setns into {ns}: {e}"));
                    // Real-time priority (root may), so busy nodes do not delay the reads; a
                    // read and a 1 ms sleep leave the CPU to the others.
                    let param = libc::sched_param { sched_priority: 1 };
                    // SAFETY: sets this thread's own scheduling policy; failure is harmless.
                    unsafe {
                        libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param)
                    };
                    let until = Instant::now() + cap;
                    let mut probes = Vec::new();
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        let start = Instant::now();
                        let present = has_ipv4_here(addr);
                        probes.push(Probe {
                            start,
                            end: Instant::now(),
                            present,
                        });
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    probes
                });
                (name, h)
            })
            .collect();
        Sampler {
            stop,
            threads,
            origin,
        }
    }

    /// Stops the threads; their probes per namespace.
    fn finish(mut self) -> Vec<(String, Vec<Probe>)> {
        self.stop.store(true, Ordering::Relaxed);
        std::mem::take(&mut self.threads)
            .into_iter()
            .map(|(ns, h)| (ns, h.join().expect("sampler thread")))
            .collect()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The spans in which the address may have been present, from one namespace's probes: each
/// run of probes that saw it widens to (start of the last probe before that did not, end of
/// the first probe after that did not), `None` for an open end. The true presence lies inside.
fn possible_spans(probes: &[Probe]) -> Vec<(Option<Instant>, Option<Instant>)> {
    let mut spans = Vec::new();
    let mut last_absent: Option<Instant> = None;
    let mut open: Option<Option<Instant>> = None;
    for p in probes {
        match p.present {
            Some(true) if open.is_none() => open = Some(last_absent),
            Some(false) => {
                if let Some(from) = open.take() {
                    spans.push((from, Some(p.end)));
                }
                last_absent = Some(p.start);
            }
            _ => {}
        }
    }
    if let Some(from) = open {
        spans.push((from, None));
    }
    spans
}

/// Do two spans (open ends as infinities) overlap?
fn overlap(a: (Option<Instant>, Option<Instant>), b: (Option<Instant>, Option<Instant>)) -> bool {
    let before = |end: Option<Instant>, start: Option<Instant>| match (end, start) {
        (Some(e), Some(s)) => e <= s,
        _ => false,
    };
    !(before(a.1, b.0) || before(b.1, a.0))
}

/// The blind spans of one namespace's sampling (from the start of one probe to the end of the
/// next): the largest and the 99th percentile.
fn gaps(probes: &[Probe]) -> (Duration, Duration) {
    let mut g: Vec<Duration> = probes.windows(2).map(|w| w[1].end - w[0].start).collect();
    g.sort();
    let at = |q: f64| g.get(((g.len() as f64 - 1.0) * q) as usize).copied();
    (at(1.0).unwrap_or_default(), at(0.99).unwrap_or_default())
}

fn ms(origin: Instant, t: Option<Instant>) -> String {
    t.map_or("open".into(), |t| {
        format!("{} ms", (t - origin).as_millis())
    })
}

/// The holder as every node's `--exec`, acting in its own namespace.
fn vip_node(name: &str, ns: &str) -> NodeSpec {
    let hold = format!("exec '{}' hold", script().display());
    NodeSpec::new(name)
        .args(&["--exec", &hold])
        .env("TENURE_VIP", &format!("{VIP4}/24"))
        .env("TENURE_VIP_DEV", DEV)
        .env("TENURE_VIP_NETNS", ns)
}

/// Namespaces of this process's test networks still listed by `ip netns`.
fn leftover_namespaces(prefix: &str) -> Vec<String> {
    ip_ok(&["netns", "list"])
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(String::from)
        .collect()
}

/// Live processes whose command line or environment names one of `needles` (a namespace
/// prefix, an app directory): holders, guards, app servers a test left behind.
fn leftover_processes(needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit_once(')')
            .is_none_or(|(_, r)| r.trim_start().starts_with('Z'))
        {
            continue;
        }
        let read = |f: &str| {
            std::fs::read(format!("/proc/{pid}/{f}"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default()
        };
        let (cmdline, environ) = (read("cmdline"), read("environ"));
        if needles
            .iter()
            .any(|n| cmdline.contains(n) || environ.contains(n))
        {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// The address follows the master — kill -9 of the master, then a graceful stop of the new
/// one — the client reaches the master's application through it each time (the gratuitous
/// ARP moved the client's cached MAC), and it is never on both nodes at once.
#[test]
fn the_floating_ip_follows_the_master_and_is_never_on_two_nodes() {
    let _serial = serial();
    require(&[
        ("ip", "iproute2"),
        ("arping", "iputils-arping"),
        ("curl", "curl"),
        ("python3", "python3"),
    ]);
    let mut net = Net::new();
    let prefix = net.prefix.clone();
    let (ns_a, ns_b) = (net.ns("a"), net.ns("b"));
    net.serve("a", "node-a");
    net.serve("b", "node-b");
    for (host, name) in [(11, "node-a"), (12, "node-b")] {
        let url = format!("http://192.0.2.{host}:{APP_PORT}/");
        wait_for(Duration::from_secs(10), &format!("{name}'s app"), || {
            (net.fetch(&url)? == name).then_some(())
        });
    }
    let (mac_a, mac_b) = (net.mac("a"), net.mac("b"));
    let vip_url = format!("http://{VIP4}:{APP_PORT}/");
    let vip = format!("{VIP4}/24");

    // The control: moved by hand without an announcement, the address is not followed — the
    // client keeps a's MAC and cannot reach b. So reaching the new master later is the
    // holder's gratuitous ARP at work, not the client re-resolving by itself.
    ip_ok(&["-n", &ns_a, "addr", "add", &vip, "dev", DEV]);
    wait_for(
        Duration::from_secs(2),
        "the client reaching a by hand",
        || (net.fetch(&vip_url)? == "node-a").then_some(()),
    );
    ip_ok(&["-n", &ns_a, "addr", "del", &vip, "dev", DEV]);
    ip_ok(&["-n", &ns_b, "addr", "add", &vip, "dev", DEV]);
    let reached = net.fetch(&vip_url);
    let neigh = net.client_neigh(VIP4);
    ip_ok(&["-n", &ns_b, "addr", "del", &vip, "dev", DEV]);
    assert_eq!(
        reached, None,
        "the control failed: the client reached the address moved without an announcement"
    );
    assert_eq!(
        neigh.as_ref().map(|n| n.0.as_str()),
        Some(mac_a.as_str()),
        "the control failed: the client's cache does not hold a's MAC: {neigh:?}"
    );

    let sampler = Sampler::start(
        &[&ns_a, &ns_b],
        VIP4.parse().expect("an IPv4 address"),
        Duration::from_secs(120),
    );
    let mut c = Cluster::standard();
    let tm = c.timing;
    let (d, g) = (tm.t * 2 / 3, tm.t / 6);

    // node-a is master: the address is on a, and the client reaches a's app.
    c.start(vip_node("node-a", &ns_a));
    c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    assert!(
        wait_until(2 * tm.p + tm.margin, || holds(&ns_a, VIP4)),
        "the VIP is not on the master's namespace"
    );
    c.start(vip_node("node-b", &ns_b));
    let (master, _) = c.wait_stable_master(&TWO, settle_timeout(&tm));
    assert_eq!(master, "node-a");
    assert!(lacks(&ns_b, VIP4), "the VIP is on the standby");
    wait_for(
        Duration::from_secs(2) + tm.margin,
        "the client reaching node-a",
        || (net.fetch(&vip_url)? == "node-a").then_some(()),
    );
    assert_eq!(net.client_neigh(VIP4).map(|n| n.0), Some(mac_a.clone()));

    // kill -9 of the master: no hook runs; a's guard stops its holder at the lease deadline
    // (at most D after the kill), which removes the address before b can take the lease (T
    // after the last renewal); b's holder then adds and announces it.
    let killed = c.node_mut("node-a").kill9();
    let bound = d + g / 2 + tm.margin;
    assert!(
        wait_until(bound, || lacks(&ns_a, VIP4)),
        "the VIP is still on a {bound:?} after tenure there was killed"
    );
    let gone_a = killed.elapsed();
    // Its guard stopped it (tenure was dead), and the holder removed the address.
    wait_log_contains(&c, "node-a", "the lease deadline passed", tm.margin);
    wait_log_contains(
        &c,
        "node-a",
        &format!("tenure-vip: removed {vip} from {DEV} in netns {ns_a}"),
        tm.margin,
    );
    let bound = tm.max_takeover() + tm.margin;
    assert!(
        wait_until(bound, || holds(&ns_b, VIP4)),
        "the VIP is not on b {bound:?} after a was killed"
    );
    let moved = killed.elapsed();
    wait_for(
        Duration::from_secs(2) + tm.margin,
        "the client reaching node-b",
        || (net.fetch(&vip_url)? == "node-b").then_some(()),
    );
    let reached_b = killed.elapsed();
    let neigh = net.client_neigh(VIP4);
    assert_eq!(
        neigh.as_ref().map(|n| n.0.as_str()),
        Some(mac_b.as_str()),
        "the client reached b but its cache does not hold b's MAC: {neigh:?}"
    );
    eprintln!(
        "kill -9 of node-a (T = {:?}, D = {d:?}): VIP gone from a after {gone_a:?}, on b after {moved:?} (T {:+} ms), the client reached node-b after {reached_b:?}",
        tm.t,
        moved.as_millis() as i128 - tm.t.as_millis() as i128
    );

    // node-a back as a standby: the address stays on b alone.
    c.node_mut("node-a").restart();
    let (master, _) = c.wait_stable_master(&TWO, settle_timeout(&tm));
    assert_eq!(master, "node-b");
    assert!(
        holds(&ns_b, VIP4) && lacks(&ns_a, VIP4),
        "the VIP moved when a came back as a standby"
    );

    // SIGTERM of the master: tenure stops its holder (the address goes) before it releases
    // the lease; a takes over at once and adds it.
    let stopped = c.node("node-b").sigterm();
    let bound = g / 2 + tm.margin;
    assert!(
        wait_until(bound, || lacks(&ns_b, VIP4)),
        "the VIP is still on b {bound:?} after SIGTERM"
    );
    let gone_b = stopped.elapsed();
    let bound = g / 2 + 2 * tm.p + tm.margin;
    assert!(
        wait_until(bound, || holds(&ns_a, VIP4)),
        "the VIP is not on a {bound:?} after SIGTERM of b"
    );
    let moved_back = stopped.elapsed();
    assert_eq!(c.node_mut("node-b").wait_exit(tm.t), Some(0));
    wait_for(
        Duration::from_secs(2) + tm.margin,
        "the client reaching node-a",
        || (net.fetch(&vip_url)? == "node-a").then_some(()),
    );
    let reached_a = stopped.elapsed();
    assert_eq!(net.client_neigh(VIP4).map(|n| n.0), Some(mac_a.clone()));
    eprintln!(
        "SIGTERM of node-b: VIP gone from b after {gone_b:?}, on a after {moved_back:?}, the client reached node-a after {reached_a:?}"
    );

    // A graceful stop of the last node leaves the address nowhere.
    c.node("node-a").sigterm();
    assert_eq!(c.node_mut("node-a").wait_exit(tm.t), Some(0));
    assert!(
        lacks(&ns_a, VIP4) && lacks(&ns_b, VIP4),
        "the VIP is left after the cluster stopped"
    );
    c.assert_safe();

    let origin = sampler.origin;
    let runs = sampler.finish();
    let mut report = String::new();
    let mut all = Vec::new();
    for (ns, probes) in &runs {
        let spans = possible_spans(probes);
        let failed = probes.iter().filter(|p| p.present.is_none()).count();
        report += &format!(
            "{ns}: {} reads, {failed} failed, gap between reads max {:?} (99th percentile {:?}), spans {}\n",
            probes.len(),
            gaps(probes).0,
            gaps(probes).1,
            spans
                .iter()
                .map(|s| format!("[{}, {}]", ms(origin, s.0), ms(origin, s.1)))
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(
            probes.len() > 100 && failed == 0,
            "the sampler did not sample {ns}:\n{report}"
        );
        all.extend(spans.into_iter().map(|s| (ns.clone(), s)));
    }
    eprint!("sampler (from its start):\n{report}");
    // Three holds: a, b, a again; in order of their (possible) start, each must have ended,
    // as sampled, before the next began.
    all.sort_by_key(|(_, s)| s.0);
    assert_eq!(all.len(), 3, "expected three holds:\n{report}");
    let mut closest = Duration::MAX;
    for w in all.windows(2) {
        let ((ns1, s1), (ns2, s2)) = (&w[0], &w[1]);
        assert!(
            !overlap(*s1, *s2),
            "the VIP may have been on {ns1} and {ns2} at once:\n{report}"
        );
        if let (Some(end), Some(start)) = (s1.1, s2.0) {
            closest = closest.min(start - end);
        }
    }
    eprintln!(
        "never on both: at the closest, {closest:?} passed between the last read that may have seen one holder's address and the first that may have seen the next's"
    );

    let app_dir = net.dir.path().display().to_string();
    drop(c);
    drop(net);
    let left = leftover_namespaces(&prefix);
    assert!(left.is_empty(), "namespaces left: {left:?}");
    let mut procs = Vec::new();
    assert!(
        wait_until(tm.margin, || {
            procs = leftover_processes(&[&prefix, &app_dir]);
            procs.is_empty()
        }),
        "processes left: {procs:#?}"
    );
}

/// IPv6: `hold` adds the address with duplicate address detection, which refuses it while
/// another host still has it, and the kernel's unsolicited neighbour advertisement
/// (`ndisc_notify`) moves the client's cache to the new holder.
#[test]
fn ipv6_hold_announces_after_dad_and_refuses_a_duplicate() {
    let _serial = serial();
    require(&[
        ("ip", "iproute2"),
        ("arping", "iputils-arping"),
        ("curl", "curl"),
        ("python3", "python3"),
    ]);
    let mut net = Net::new();
    let prefix = net.prefix.clone();
    let (ns_a, ns_b) = (net.ns("a"), net.ns("b"));
    net.serve("a", "node-a");
    net.serve("b", "node-b");
    for (host, name) in [(11, "node-a"), (12, "node-b")] {
        let url = format!("http://[2001:db8::{host}]:{APP_PORT}/");
        wait_for(Duration::from_secs(10), &format!("{name}'s app"), || {
            (net.fetch(&url)? == name).then_some(())
        });
    }
    let (mac_a, mac_b) = (net.mac("a"), net.mac("b"));
    let vip = format!("{VIP6}/64");
    let url = format!("http://[{VIP6}]:{APP_PORT}/");
    // The link-local delay before DAD (up to 1 s), DAD itself (1 s), and slack.
    let dad = Duration::from_secs(4);

    // The control: moved by hand (nodad, no announcement), the address is not followed.
    ip_ok(&["-n", &ns_a, "addr", "add", &vip, "dev", DEV, "nodad"]);
    wait_for(
        Duration::from_secs(2),
        "the client reaching a by hand",
        || (net.fetch(&url)? == "node-a").then_some(()),
    );
    ip_ok(&["-n", &ns_a, "addr", "del", &vip, "dev", DEV]);
    ip_ok(&["-n", &ns_b, "addr", "add", &vip, "dev", DEV, "nodad"]);
    let reached = net.fetch(&url);
    let neigh = net.client_neigh(VIP6);
    ip_ok(&["-n", &ns_b, "addr", "del", &vip, "dev", DEV]);
    assert_eq!(reached, None, "the control failed: the client followed");
    assert_eq!(
        neigh.map(|n| n.0),
        Some(mac_a.clone()),
        "the control failed"
    );

    // a holds it; the client reaches a.
    let log_a = net.dir.path().join("hold-a.log");
    let hold_a = net.start(net.holder_cmd("a", &vip, "hold", &log_a));
    assert!(
        wait_until(dad, || holds(&ns_a, VIP6)),
        "a's holder did not get the address: {}",
        std::fs::read_to_string(&log_a).unwrap_or_default()
    );
    wait_for(Duration::from_secs(2), "the client reaching node-a", || {
        (net.fetch(&url)? == "node-a").then_some(())
    });

    // b's holder while a still has it: DAD fails, b's holder removes it and exits 1.
    let log_b = net.dir.path().join("hold-b-dup.log");
    let dup = net.start(net.holder_cmd("b", &vip, "hold", &log_b));
    let status = net.wait_exit(dup, dad);
    let err = std::fs::read_to_string(&log_b).unwrap_or_default();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "b's holder did not refuse the duplicate: {err}"
    );
    assert!(
        err.contains("duplicate address detection failed"),
        "b's holder did not say why: {err}"
    );
    assert!(lacks(&ns_b, VIP6), "b kept the duplicate address");
    assert!(holds(&ns_a, VIP6), "a lost the address to b's attempt");

    // SIGTERM of a's holder removes it; b's holder then gets it, and the client follows.
    net.signal(hold_a, libc::SIGTERM);
    let status = net.wait_exit(hold_a, Duration::from_secs(1));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "a's holder on SIGTERM"
    );
    assert!(lacks(&ns_a, VIP6), "a's holder left the address");
    assert_eq!(net.client_neigh(VIP6).map(|n| n.0), Some(mac_a.clone()));
    let log_b = net.dir.path().join("hold-b.log");
    let started = Instant::now();
    let hold_b = net.start(net.holder_cmd("b", &vip, "hold", &log_b));
    assert!(
        wait_until(dad, || holds(&ns_b, VIP6)),
        "b's holder did not get the address: {}",
        std::fs::read_to_string(&log_b).unwrap_or_default()
    );
    let usable = started.elapsed();
    assert!(
        wait_until(Duration::from_millis(500), || net
            .client_neigh(VIP6)
            .is_some_and(|n| n.0 == mac_b)),
        "the client's cache did not move to b: {:?}",
        net.client_neigh(VIP6)
    );
    wait_for(Duration::from_secs(2), "the client reaching node-b", || {
        (net.fetch(&url)? == "node-b").then_some(())
    });
    eprintln!("IPv6: b's holder had the address usable (DAD done) {usable:?} after it started");
    let (_, notify, _) = run(Command::new("ip").args([
        "netns",
        "exec",
        &ns_b,
        "cat",
        &format!("/proc/sys/net/ipv6/conf/{DEV}/ndisc_notify"),
    ]));
    assert_eq!(notify.trim(), "1", "ndisc_notify is not on for {DEV} in b");

    net.signal(hold_b, libc::SIGTERM);
    let status = net.wait_exit(hold_b, Duration::from_secs(1));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "b's holder on SIGTERM"
    );
    assert!(lacks(&ns_b, VIP6), "b's holder left the address");

    drop(net);
    let left = leftover_namespaces(&prefix);
    assert!(left.is_empty(), "namespaces left: {left:?}");
}

/// `add`, `del` and `status` (for hooks and checks) are idempotent, and errors name the fix.
#[test]
fn add_del_status_and_errors() {
    let _serial = serial();
    require(&[("ip", "iproute2"), ("arping", "iputils-arping")]);
    let mut net = Net::new();
    let prefix = net.prefix.clone();
    let ns_a = net.ns("a");
    let vip = format!("{VIP4}/24");
    let log = net.dir.path().join("cmd.log");
    let sub = |sub: &str| -> (Option<i32>, String) {
        let status = net.holder_cmd("a", &vip, sub, &log).status();
        let code = status.expect("run tenure-vip").code();
        (code, std::fs::read_to_string(&log).unwrap_or_default())
    };

    assert_eq!(sub("status").0, Some(1), "status without the address");
    for _ in 0..2 {
        assert_eq!(
            sub("add"),
            (
                Some(0),
                format!("tenure-vip: added {vip} to {DEV} in netns {ns_a}\n")
            )
        );
        assert!(holds(&ns_a, VIP4));
    }
    let (_, out, _) = ip(&["-n", &ns_a, "-o", "addr", "show", "dev", DEV]);
    assert_eq!(out.matches(&format!(" {vip} ")).count(), 1, "{out}");
    assert_eq!(sub("status").0, Some(0), "status with the address");
    assert_eq!(sub("del").0, Some(0));
    assert!(lacks(&ns_a, VIP4));
    assert_eq!(sub("del"), (Some(0), String::new()), "a second del");
    assert_eq!(sub("status").0, Some(1));

    // Configuration errors: exit 2, naming the variable.
    let err = |change: &dyn Fn(&mut Command)| -> (Option<i32>, String) {
        let mut cmd = net.holder_cmd("a", &vip, "hold", &log);
        change(&mut cmd);
        let code = cmd.status().expect("run tenure-vip").code();
        (code, std::fs::read_to_string(&log).unwrap_or_default())
    };
    let (code, msg) = err(&|c| {
        c.env_remove("TENURE_VIP");
    });
    assert_eq!(code, Some(2), "{msg}");
    assert!(msg.contains("TENURE_VIP is not set"), "{msg}");
    let (code, msg) = err(&|c| {
        c.env("TENURE_VIP_DEV", "nosuch0");
    });
    assert_eq!(code, Some(2), "{msg}");
    assert!(msg.contains("no interface nosuch0"), "{msg}");
    let (code, msg) = err(&|c| {
        c.env("TENURE_VIP_NETNS", format!("{prefix}-nosuch"));
    });
    assert_eq!(code, Some(2), "{msg}");
    assert!(msg.contains("ip netns list"), "{msg}");

    // No arping: `hold` refuses before adding the address, naming the package.
    let bin = net.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let (_, path, _) = run(Command::new("sh").args(["-c", "command -v ip"]));
    std::os::unix::fs::symlink(path.trim(), bin.join("ip")).unwrap();
    let (code, msg) = err(&|c| {
        c.env("PATH", &bin);
    });
    assert_eq!(code, Some(1), "{msg}");
    assert!(msg.contains("apt-get install iputils-arping"), "{msg}");
    assert!(lacks(&ns_a, VIP4), "hold added the address without arping");

    // `hold` puts the address back when something else removed it (TENURE_VIP_RECHECK), and
    // removes it on SIGTERM.
    let hold_log = net.dir.path().join("hold.log");
    let mut cmd = net.holder_cmd("a", &vip, "hold", &hold_log);
    cmd.env("TENURE_VIP_RECHECK", "1");
    let hold = net.start(cmd);
    assert!(wait_until(Duration::from_secs(1), || holds(&ns_a, VIP4)));
    ip_ok(&["-n", &ns_a, "addr", "del", &vip, "dev", DEV]);
    assert!(
        wait_until(Duration::from_secs(2), || holds(&ns_a, VIP4)),
        "hold did not put the address back: {}",
        std::fs::read_to_string(&hold_log).unwrap_or_default()
    );
    net.signal(hold, libc::SIGTERM);
    let status = net.wait_exit(hold, Duration::from_secs(1));
    let msg = std::fs::read_to_string(&hold_log).unwrap_or_default();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{msg}");
    assert!(lacks(&ns_a, VIP4), "hold left the address: {msg}");
    assert!(msg.contains("adding it again"), "{msg}");

    drop(net);
    let left = leftover_namespaces(&prefix);
    assert!(left.is_empty(), "namespaces left: {left:?}");
}

/// The systemd drop-in (deploy/vip/tenure-vip.conf) verifies with the unit, without warnings
/// (systemd itself cannot run here; `systemd-analyze verify` reads drop-ins beside the unit).
#[test]
fn systemd_drop_in_verifies_with_the_unit() {
    require_tool("systemd-analyze", "systemd");
    let root = workspace_root();
    let unit = std::fs::read_to_string(root.join("deploy/systemd/tenure.service"))
        .unwrap()
        .replace(
            "/usr/local/bin/tenure",
            tenure_bin().to_str().expect("a UTF-8 path"),
        );
    let drop_in = std::fs::read_to_string(root.join("deploy/vip/tenure-vip.conf")).unwrap();
    assert!(
        drop_in.contains("ExecStopPost=-/usr/local/bin/tenure-vip del"),
        "the drop-in does not remove the address after a stop"
    );
    let drop_in = drop_in.replace(
        "/usr/local/bin/tenure-vip",
        script().to_str().expect("a UTF-8 path"),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tenure.service"), unit).unwrap();
    std::fs::create_dir_all(dir.path().join("tenure.service.d")).unwrap();
    std::fs::write(dir.path().join("tenure.service.d/vip.conf"), drop_in).unwrap();
    let (ok, _, err) = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("tenure.service")));
    assert!(ok, "systemd-analyze verify failed: {err}");
    assert!(
        err.trim().is_empty(),
        "systemd-analyze verify warned: {err}"
    );
}
