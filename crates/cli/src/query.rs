//! Operator commands that talk to a running node.

use crate::args::QueryArgs;
use std::io::{BufRead, IsTerminal};
use tenure_election::Mode;
use tenure_http::Client;

pub(crate) fn client(q: &QueryArgs) -> Result<Client, String> {
    let auth = match &q.user {
        None => None,
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => Some((user.to_string(), pass.to_string())),
            None => return Err("-u takes user:password".into()),
        },
    };
    let tls = tenure_http::Tls {
        insecure: q.insecure,
        ca: q.tls_ca.clone(),
    };
    Client::with_tls(q.timeout, auth, &tls)
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

/// Prints the state; exit 0 when the node answered, 1 when it could not be asked.
pub fn state(q: QueryArgs) -> u8 {
    let c = match client(&q) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    match block_on(c.state(&q.url)) {
        Ok((s, _epoch)) => {
            println!("{s}");
            0
        }
        Err(e) => fail(e),
    }
}

pub fn states(q: QueryArgs) -> u8 {
    let c = match client(&q) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    match block_on(c.states(&q.url)) {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            0
        }
        Err(e) => fail(e),
    }
}

pub fn set_mode(q: QueryArgs, mode: Mode) -> u8 {
    let c = match client(&q) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    match block_on(c.set_mode(&q.url, mode)) {
        Ok(prev) => {
            println!("{prev}");
            0
        }
        Err(e) => fail(e),
    }
}

pub fn hash_password() -> u8 {
    if std::io::stdin().is_terminal() {
        eprintln!("password (input is shown; pipe it in to avoid that):");
    }
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return usage("cannot read a password on standard input".into());
    }
    let pw = line.trim_end_matches(['\r', '\n']);
    if pw.is_empty() {
        return usage("the password is empty: give one line on standard input".into());
    }
    println!("{}", tenure_http::hash_password(pw));
    0
}

fn usage(e: String) -> u8 {
    eprintln!("tenure: {e}");
    2
}

fn fail(e: impl std::fmt::Display) -> u8 {
    eprintln!("tenure: {e}");
    1
}
