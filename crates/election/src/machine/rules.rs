//! The election's pure rules: who ranks first for a released lease (priority, then release
//! over snapshot, then version, then state, then name), and when fresh evidence (a listing of
//! `epochs/`, a scan of `nodes/`) forbids acting on a lease. No `Machine` state: values in,
//! verdicts out, with table-driven tests (docs/DESIGN.md §3.4, §3.6).

use super::*;

/// Why a node takes the lease. The words of [`TakeReason::as_str`] are part of the contract:
/// they are written into `epochs/<n>.json` and the promotion's transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TakeReason {
    /// The first term of a store made by `tenure init` (this node claimed its `fresh` flag).
    ColdStart,
    /// The lease stood still for T: its holder stopped renewing.
    Expired,
    /// The holder released it (a graceful shutdown or demotion) and named no successor.
    Released,
    /// The holder released it naming this node: a planned switchover.
    Switchover,
    /// The lease names this node's previous instance on this host, which is dead (its
    /// state file's lock was free): a restart in place takes it back without waiting T.
    Restart,
}

impl TakeReason {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            TakeReason::ColdStart => "cold-start",
            TakeReason::Expired => "expired",
            TakeReason::Released => "released",
            TakeReason::Switchover => "switchover",
            TakeReason::Restart => "restart",
        }
    }
}

/// Why this node began the term it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Promotion {
    Take(TakeReason),
    /// Its own lease, still current, written again after it demoted itself (at its deadline,
    /// or after a clock jump).
    Retake,
}

impl std::fmt::Display for Promotion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Promotion::Take(r) => f.write_str(r.as_str()),
            Promotion::Retake => f.write_str("re-took its own current lease after a self-demotion"),
        }
    }
}

/// What this node knows of a released lease when it considers taking it at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Released<'a> {
    /// This instance released it, or yielded that epoch (it must not take back what it gave).
    pub(super) mine: bool,
    /// The successor the releasing master named, if any.
    pub(super) successor: Option<&'a str>,
    /// This node saw the same epoch unreleased, and no higher epoch in any lease: the release
    /// is the next write after the term it watched, not an old released lease written back.
    pub(super) follows_watched_term: bool,
}

/// Whether a released lease may be taken at once, and why (DESIGN §3.5): never by the node
/// that released it; only by the named successor if there is one; and only by a node that saw
/// that term live, unless it is a `--mode master` start (which waits longer before it
/// answers, see [`cautious_wait`]). `None`: only the T rule applies.
pub(super) fn take_released_at_once(
    l: Released<'_>,
    own_name: &str,
    starting_master: bool,
) -> Option<TakeReason> {
    let successor_ok = l.successor.is_none_or(|s| s == own_name);
    let ok = !l.mine && successor_ok && (starting_master || l.follows_watched_term);
    ok.then_some(if l.successor.is_some() {
        TakeReason::Switchover
    } else {
        TakeReason::Released
    })
}

/// How long a lease version must stand still before it may be taken: this node's T, or a
/// larger T that the lease's holder or any live node runs with, so that a node started with
/// another T than its peers never takes over early.
pub(super) fn takeover_wait(
    own: Duration,
    holder: Option<Duration>,
    live_peers: impl IntoIterator<Item = Duration>,
) -> Duration {
    live_peers
        .into_iter()
        .chain(holder)
        .fold(own, Duration::max)
}

/// How long a cautious take waits before it answers MASTER: any other node that still believes
/// it is master (the store lost the writes that made it so) sends its next renewal within its
/// poll period `p` and one storage call, and that renewal then fails on our write and demotes
/// it. Measured on this node's clock while the other runs on its own, so the two may differ in
/// rate by 2ρ; the answer margin comes on top (DESIGN §3.10).
pub(super) fn cautious_wait(longest_poll: Duration, storage: Duration, drift_ppm: u32) -> Duration {
    let rho = f64::from(drift_ppm) / 1e6;
    (longest_poll + storage).mul_f64((1.0 + rho) / (1.0 - rho)) + crate::config::ANSWER_MARGIN
}

/// How long a node's record may stand still before it no longer counts as a live candidate
/// for rank: three of its writer's heartbeat intervals (never less than three of our re-read
/// intervals: a change is seen up to one of each late), at most T. Ranks order candidates
/// only; they never affect safety.
pub(super) fn rank_silence(writer: Option<Duration>, own: Duration, t: Duration) -> Duration {
    match writer {
        Some(h) => (h.max(own) * 3).min(t),
        None => t,
    }
}

/// This node's rank: how many live, eligible others go before it. A live `--mode master`
/// starter goes before every node that is not one itself (the operator asked for it).
pub(super) fn rank_of(me: &Candidate, me_master_start: bool, others: &[(Candidate, bool)]) -> u32 {
    others
        .iter()
        .filter(|(c, master_start)| (*master_start && !me_master_start) || c.better_than(me))
        .count() as u32
}

/// What a fresh listing of `epochs/` and scan of `nodes/` showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Evidence {
    /// The highest epoch anywhere (files, records, leases seen).
    pub(super) newest: u64,
    /// Another node whose record changed since this lease version was first read and says
    /// MASTER: it believes it holds a term the store does not show.
    pub(super) live_master: Option<(String, Option<u64>)>,
}

impl Evidence {
    /// Whether acting on a lease of `epoch` contradicts nothing: no newer epoch than `floor`
    /// anywhere and no live master elsewhere. `Err` says what contradicts it.
    pub(super) fn allows(&self, epoch: u64, floor: u64) -> Result<(), String> {
        if let Some((name, e)) = &self.live_master {
            return Err(format!(
                "node {name} reports MASTER{} in a record written since",
                e.map_or(String::new(), |e| format!(" at epoch {e}"))
            ));
        }
        if self.newest > epoch.max(floor) {
            return Err(format!(
                "epoch {} exists in epochs/ or a node's record, above the lease's epoch {epoch}",
                self.newest
            ));
        }
        Ok(())
    }
}

/// The election order of DESIGN §2.
pub(super) struct Candidate {
    pub(super) priority: i64,
    pub(super) version: Option<String>,
    pub(super) state: NodeState,
    pub(super) name: String,
}

impl Candidate {
    pub(super) fn key(&self) -> (i64, u8, VersionKey, u8) {
        let class = match &self.version {
            None => 0,
            Some(v) if v.to_ascii_uppercase().contains("SNAPSHOT") => 1,
            Some(_) => 2,
        };
        let state = match self.state {
            NodeState::Master => 2,
            NodeState::HotStandby => 1,
            _ => 0,
        };
        (
            self.priority,
            class,
            VersionKey::new(self.version.as_deref().unwrap_or("")),
            state,
        )
    }

    pub(super) fn better_than(&self, other: &Candidate) -> bool {
        match self.key().cmp(&other.key()) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            // Lower name wins.
            std::cmp::Ordering::Equal => self.name < other.name,
        }
    }
}

/// Natural order of version strings: digit runs compare as numbers (v10 > v3.9).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct VersionKey(Vec<VersionPart>);

#[derive(PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum VersionPart {
    Text(String),
    Num(u128),
}

impl VersionKey {
    pub(super) fn new(s: &str) -> VersionKey {
        let mut parts = Vec::new();
        let mut chars = s.chars().peekable();
        while let Some(&c) = chars.peek() {
            let digit = c.is_ascii_digit();
            let mut run = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_ascii_digit() != digit {
                    break;
                }
                run.push(c);
                chars.next();
            }
            parts.push(if digit {
                VersionPart::Num(run.parse().unwrap_or(u128::MAX))
            } else {
                VersionPart::Text(run)
            });
        }
        VersionKey(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn who_takes_a_released_lease_at_once() {
        let released = |mine, successor, follows_watched_term| Released {
            mine,
            successor,
            follows_watched_term,
        };
        use TakeReason::{Released as R, Switchover as S};
        // (lease, own name, --mode master start, verdict)
        let table = [
            (released(false, None, true), "b", false, Some(R)),
            (released(false, Some("b"), true), "b", false, Some(S)),
            // Another node is the named successor.
            (released(false, Some("c"), true), "b", false, None),
            (released(false, Some("c"), true), "b", true, None),
            // Never take back what this node gave up.
            (released(true, None, true), "b", false, None),
            (released(true, None, true), "b", true, None),
            // A release this node did not see follow a live term (an old released lease
            // written back, say): only a --mode master start takes it, cautiously.
            (released(false, None, false), "b", false, None),
            (released(false, None, false), "b", true, Some(R)),
            (released(false, Some("b"), false), "b", true, Some(S)),
        ];
        for (i, (l, name, starting_master, want)) in table.into_iter().enumerate() {
            assert_eq!(
                take_released_at_once(l, name, starting_master),
                want,
                "row {i}: {l:?}"
            );
        }
    }

    #[test]
    fn the_largest_live_t_is_waited_for() {
        let s = Duration::from_secs;
        // (own T, holder's T, live peers' T, wait)
        let table: [(Duration, Option<Duration>, &[Duration], Duration); 5] = [
            (s(30), None, &[], s(30)),
            (s(30), Some(s(10)), &[s(5)], s(30)),
            (s(10), Some(s(30)), &[], s(30)),
            (s(10), None, &[s(20), s(60)], s(60)),
            // Records from before the heartbeat carried T say 0: no effect.
            (s(10), Some(Duration::ZERO), &[Duration::ZERO], s(10)),
        ];
        for (own, holder, peers, want) in table {
            assert_eq!(
                takeover_wait(own, holder, peers.iter().copied()),
                want,
                "own {own:?} holder {holder:?} peers {peers:?}"
            );
        }
    }

    #[test]
    fn a_cautious_take_outwaits_another_masters_renewal() {
        let margin = crate::config::ANSWER_MARGIN;
        // No drift: p + storage timeout + margin.
        assert_eq!(cautious_wait(100 * MS, 50 * MS, 0), 150 * MS + margin);
        // 1 % drift either way: (p + st)(1 + ρ)/(1 − ρ), a little over 2 %.
        let w = cautious_wait(Duration::from_secs(1), 500 * MS, 10_000) - margin;
        let expect = 1.5 * 1.01 / 0.99;
        assert!((w.as_secs_f64() - expect).abs() < 1e-6, "{w:?}");
        assert!(w > Duration::from_millis(1_530));
    }

    #[test]
    fn rank_silence_is_three_writer_intervals_at_most_t() {
        let s = Duration::from_secs;
        // (writer's H, own H, T, silence)
        let table = [
            (Some(s(1)), s(1), s(30), s(3)),
            // A slower writer gets its own three intervals ...
            (Some(s(4)), s(1), s(30), s(12)),
            // ... a faster one never less than three of ours ...
            (Some(100 * MS), s(1), s(30), s(3)),
            // ... the defaults (H = T/3) T ...
            (Some(s(10)), s(10), s(30), s(30)),
            // ... and nobody more than T.
            (Some(s(15)), s(1), s(30), s(30)),
            // An old record without its interval: T.
            (None, s(1), s(30), s(30)),
        ];
        for (writer, own, t, want) in table {
            assert_eq!(
                rank_silence(writer, own, t),
                want,
                "{writer:?} {own:?} {t:?}"
            );
        }
    }

    #[test]
    fn rank_counts_the_candidates_that_go_first() {
        let c = |priority: i64, name: &str| Candidate {
            priority,
            version: None,
            state: NodeState::Standby,
            name: name.into(),
        };
        let me = c(5, "m");
        // (others as (priority, name, --mode master), me a --mode master start, rank)
        type Others<'a> = &'a [(i64, &'a str, bool)];
        let table: [(Others, bool, u32); 6] = [
            (&[], false, 0),
            (&[(1, "a", false), (2, "b", false)], false, 0),
            (&[(9, "a", false), (2, "b", false)], false, 1),
            // Equal priority: the lower name first.
            (&[(5, "a", false), (5, "z", false)], false, 1),
            // A --mode master starter goes first, whatever its priority ...
            (&[(0, "z", true)], false, 1),
            // ... unless this node is one too: then the usual order.
            (&[(0, "z", true)], true, 0),
        ];
        for (others, me_master, want) in table {
            let others: Vec<(Candidate, bool)> =
                others.iter().map(|&(p, n, m)| (c(p, n), m)).collect();
            assert_eq!(
                rank_of(&me, me_master, &others),
                want,
                "{:?}",
                table_row(&others)
            );
        }
    }

    fn table_row(others: &[(Candidate, bool)]) -> Vec<(i64, String, bool)> {
        others
            .iter()
            .map(|(c, m)| (c.priority, c.name.clone(), *m))
            .collect()
    }

    #[test]
    fn evidence_forbids_acting_on_an_older_lease() {
        let ev = |newest, live_master: Option<(&str, Option<u64>)>| Evidence {
            newest,
            live_master: live_master.map(|(n, e)| (n.to_string(), e)),
        };
        // (evidence, lease epoch, floor, allowed)
        let table = [
            (ev(3, None), 3, 3, true),
            (ev(3, None), 3, 0, true),
            // A newer epoch file or record: a term began that the lease does not show.
            (ev(4, None), 3, 3, false),
            // ... unless it was known before the watch began (the floor).
            (ev(4, None), 3, 4, true),
            // Another node says MASTER in a record written since.
            (ev(3, Some(("c", Some(3)))), 3, 3, false),
            (ev(0, Some(("c", None))), 0, 0, false),
        ];
        for (i, (e, epoch, floor, ok)) in table.into_iter().enumerate() {
            assert_eq!(e.allows(epoch, floor).is_ok(), ok, "row {i}: {e:?}");
        }
        let why = ev(3, Some(("c", Some(3)))).allows(3, 3).unwrap_err();
        assert!(why.contains("node c reports MASTER at epoch 3"), "{why}");
    }

    #[test]
    fn natural_version_order() {
        assert!(VersionKey::new("v10") > VersionKey::new("v3.9"));
        assert!(VersionKey::new("1.10.0") > VersionKey::new("1.9.9"));
        assert!(VersionKey::new("2.0") == VersionKey::new("2.0"));
    }

    #[test]
    fn election_order() {
        let c = |p: i64, v: Option<&str>, s: NodeState, n: &str| Candidate {
            priority: p,
            version: v.map(String::from),
            state: s,
            name: n.into(),
        };
        // Priority first.
        assert!(c(2, None, NodeState::Standby, "z").better_than(&c(
            1,
            Some("9"),
            NodeState::Master,
            "a"
        )));
        // Release over snapshot over none.
        assert!(c(0, Some("1.0"), NodeState::Standby, "z").better_than(&c(
            0,
            Some("2.0-SNAPSHOT"),
            NodeState::Standby,
            "a"
        )));
        assert!(
            c(0, Some("1.0-SNAPSHOT"), NodeState::Standby, "z").better_than(&c(
                0,
                None,
                NodeState::Standby,
                "a"
            ))
        );
        // Higher version.
        assert!(c(0, Some("v10"), NodeState::Standby, "z").better_than(&c(
            0,
            Some("v3.9"),
            NodeState::Standby,
            "a"
        )));
        // HOT_STANDBY over STANDBY, then the lower name.
        assert!(c(0, None, NodeState::HotStandby, "z").better_than(&c(
            0,
            None,
            NodeState::Standby,
            "a"
        )));
        assert!(c(0, None, NodeState::Standby, "a").better_than(&c(
            0,
            None,
            NodeState::Standby,
            "b"
        )));
    }
}
