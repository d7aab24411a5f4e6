//! `tenure master --nodes URL,URL…`: client-side discovery of the master.
//!
//! The nodes are asked in order, each with a short timeout. The first that names a live
//! master wins: its `/ha/states` has a `masterId` whose row says MASTER (or, when `/ha/states`
//! cannot be read, the node itself answers MASTER on `/ha/state`). That master is then asked
//! its own `/ha/state`: if it answers something else the search goes on with the next node;
//! if it cannot be reached from here it is still printed (the node that named it sees it
//! renewing), with a warning. Exit 0 with the master's `nodeUri` on standard output; 1 if no
//! node names a live master; 2 on usage errors.

use crate::args::MasterArgs;
use tenure_election::NodeState;
use tenure_http::{Client, Tls};

pub fn main(a: MasterArgs) -> u8 {
    let auth = match &a.user {
        None => None,
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => Some((user.to_string(), pass.to_string())),
            None => {
                eprintln!("tenure: -u takes user:password");
                return 2;
            }
        },
    };
    let tls = Tls {
        insecure: a.insecure,
        ca: a.tls_ca.clone(),
    };
    let client = match Client::with_tls(a.timeout, auth, &tls) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tenure: {e}");
            return 2;
        }
    };
    let nodes: Vec<String> = a
        .nodes
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    if nodes.is_empty() {
        eprintln!("tenure: --nodes is empty: give node URLs such as http://10.0.0.1:8081");
        return 2;
    }
    let found = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(find(&client, &nodes));
    match found {
        Some(uri) => {
            println!("{uri}");
            0
        }
        None => {
            eprintln!(
                "tenure: no node named a live master (asked {})",
                nodes.join(", ")
            );
            1
        }
    }
}

/// What one node says about the master: its URI, if it names a live one.
async fn named_master(client: &Client, node: &str) -> Option<String> {
    match client.cluster(node).await {
        Ok(v) => {
            let row = v.nodes.get(v.master()?)?;
            if row.status != NodeState::Master {
                return None;
            }
            // Printed for scripts that append a path: no trailing slash.
            row.node_uri
                .as_deref()
                .map(|u| u.trim_end_matches('/'))
                .filter(|u| !u.is_empty())
                .map(String::from)
        }
        Err(e) => {
            eprintln!("tenure: {e}");
            // A node that will not show /ha/states may still say whether it is the master.
            match client.state(node).await {
                Ok((NodeState::Master, _)) => Some(node.to_string()),
                _ => None,
            }
        }
    }
}

async fn find(client: &Client, nodes: &[String]) -> Option<String> {
    for node in nodes {
        let Some(uri) = named_master(client, node).await else {
            continue;
        };
        match client.state(&uri).await {
            Ok((NodeState::Master, _)) => return Some(uri),
            Ok((other, _)) => {
                eprintln!("tenure: {node} names {uri} as master, but it answers {other}");
            }
            Err(e) => {
                eprintln!("tenure: {node} names {uri} as master; cannot confirm: {e}");
                return Some(uri);
            }
        }
    }
    None
}
