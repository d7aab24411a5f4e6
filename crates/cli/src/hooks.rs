//! The operator's hooks: shell commands run on state changes, with the details in the
//! environment. A hook that fails or overruns its limit is logged (and killed at the limit);
//! it never blocks the election beyond the demote grace, which the safety inequality covers.

use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;
use tenure_election::NodeState;
use tenure_election::driver::{HookEvent, Hooks};

pub struct ShellHooks {
    pub on_promote: Option<String>,
    pub on_demote: Option<String>,
    pub on_change: Option<String>,
    /// Time limit of each hook run: the demote grace G.
    pub limit: Duration,
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
        Box::pin(async move {
            let mut result = Ok(());
            for (which, cmd) in cmds {
                if let Err(e) = run_one(which, &cmd, &ev, limit).await {
                    result = Err(e);
                }
            }
            result
        })
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
