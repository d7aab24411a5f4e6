//! `tenure`: the daemon (`run`) and the operator commands.

mod args;
mod hooks;
mod query;
mod run;

use args::{Cli, Cmd};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let argv = match args::expand_config(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tenure: {e}");
            return ExitCode::from(2);
        }
    };
    // clap exits 2 on usage errors and 0 for --help/--version.
    let cli = Cli::parse_from(argv);
    let code = match cli.command {
        Cmd::Run(a) => run::main(*a),
        Cmd::State(q) => query::state(q),
        Cmd::States(q) => query::states(q),
        Cmd::Promote(q) => query::set_mode(q, tenure_election::Mode::Master),
        Cmd::Demote(q) => query::set_mode(q, tenure_election::Mode::Standby),
        Cmd::HashPassword => query::hash_password(),
    };
    ExitCode::from(code)
}
