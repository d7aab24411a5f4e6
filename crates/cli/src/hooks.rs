//! The operator's hooks: shell commands run on state changes, with the details in the
//! environment. A hook that fails or overruns its limit is logged (and killed at the limit);
//! it never blocks the election beyond the demote grace, which the safety inequality covers.

use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenure_election::NodeState;
use tenure_election::driver::{HookEvent, Hooks};

use crate::exec::Exec;

pub struct ShellHooks {
    pub on_promote: Option<String>,
    pub on_demote: Option<String>,
    pub on_change: Option<String>,
    /// Time limit of all the hooks of one transition together: the demote grace G.
    pub limit: Duration,
    /// `--exec`: runs while this node is master; stopped within the same limit.
    pub exec: Option<Arc<Exec>>,
}

impl Hooks for ShellHooks {
    fn run(&self, ev: HookEvent) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        let mut cmds = Vec::new();
        if ev.state == NodeState::Master
            && let Some(c) = &self.on_promote
        {
            cmds.push(("on-promote", c.clone()));
        }
        if ev.previous == NodeState::Master
            && let Some(c) = &self.on_demote
        {
            cmds.push(("on-demote", c.clone()));
        }
        if let Some(c) = &self.on_change {
            cmds.push(("on-change", c.clone()));
        }
        let limit = self.limit;
        let start = Instant::now();
        // Start or stop --exec now, in transition order; the stop completes within G/2 (then
        // SIGKILL), beside the hooks, and the release waits for both.
        let stop_exec = self.exec.as_ref().and_then(|x| {
            if ev.previous == NodeState::Master && ev.state != NodeState::Master {
                Some(x.stop(start + limit / 2))
            } else {
                if ev.state == NodeState::Master {
                    x.start(ev.epoch);
                }
                None
            }
        });
        Box::pin(async move {
            // A transition's hooks run side by side, so together they still end within G
            // (the release waits for all of them) and one hanging hook cannot starve another.
            let ev = &ev;
            let hooks = async {
                let mut set = cmds.into_iter().map(|(which, cmd)| async move {
                    run_one(which, &cmd, ev, limit.saturating_sub(start.elapsed())).await
                });
                let (a, b, c) = tokio::join!(opt(set.next()), opt(set.next()), opt(set.next()));
                a.and(b).and(c)
            };
            let (result, ()) = tokio::join!(hooks, async {
                if let Some(s) = stop_exec {
                    s.await
                }
            });
            result
        })
    }
}

async fn opt<F: Future<Output = Result<(), String>>>(f: Option<F>) -> Result<(), String> {
    match f {
        Some(f) => f.await,
        None => Ok(()),
    }
}

async fn run_one(which: &str, cmd: &str, ev: &HookEvent, limit: Duration) -> Result<(), String> {
    let mut c = tokio::process::Command::new("/bin/sh");
    c.arg("-c")
        .arg(cmd)
        .env("TENURE_STATE", ev.state.as_str())
        .env("TENURE_PREVIOUS_STATE", ev.previous.as_str())
        .env("TENURE_NODE", &ev.node)
        .env(
            "TENURE_EPOCH",
            ev.epoch.map(|e| e.to_string()).unwrap_or_default(),
        )
        .env("TENURE_MASTER", ev.master.clone().unwrap_or_default())
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = c
        .spawn()
        .map_err(|e| format!("{which} hook {cmd:?} could not start: {e}"))?;
    let pid = child.id();
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            tracing::info!("{which} hook finished ({} -> {})", ev.previous, ev.state);
            Ok(())
        }
        Ok(Ok(status)) => Err(format!("{which} hook {cmd:?} failed: {status}")),
        Ok(Err(e)) => Err(format!("{which} hook {cmd:?}: {e}")),
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: signalling the hook's own process group, which we created.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
            let _ = child.wait().await;
            Err(format!(
                "{which} hook {cmd:?} overran its limit of {}; killed",
                humantime::format_duration(limit)
            ))
        }
    }
}
