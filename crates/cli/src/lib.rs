//! `tenure`: the daemon (`run`) and the operator commands. The binary (`main.rs`) only calls
//! [`main`]; the library exists so that the fuzz targets (`fuzz/`) can use [`args`] as a
//! dependency instead of including its source.

mod alerts;
pub mod args;
mod check;
pub mod cluster_file;
mod doctor;
mod exec;
mod guard;
mod hooks;
mod init;
mod logging;
mod master;
mod notify;
mod pidfile;
mod query;
mod run;
mod statefile;

use args::{Cli, Cmd};
use clap::Parser;

/// Runs `tenure` with these arguments (`argv[0]` first); returns the exit status.
pub fn main(argv: Vec<String>) -> u8 {
    // Internal: the guard of an --exec child (not a clap subcommand: not in --help).
    if argv.get(1).map(String::as_str) == Some(guard::SUBCOMMAND) {
        return guard::main(&argv[2..]);
    }
    let argv = match args::expand_config(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tenure: {e}");
            return 2;
        }
    };
    // clap exits 2 on usage errors and 0 for --help/--version; a Nagios plugin must say
    // UNKNOWN (3) instead.
    if argv.get(1).map(String::as_str) == Some("check") {
        use clap::error::ErrorKind;
        if let Err(e) = Cli::try_parse_from(&argv)
            && !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        {
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("bad arguments");
            println!("TENURE UNKNOWN - {}", first.trim_start_matches("error: "));
            return 3;
        }
    }
    let cli = Cli::parse_from(argv);
    match cli.command {
        Cmd::Init(a) => init::main(a),
        Cmd::Run(a) => run::main(*a),
        Cmd::State(q) => query::state(q),
        Cmd::States(q) => query::states(q),
        Cmd::Promote(q) => query::set_mode(q, tenure_election::Mode::Master),
        Cmd::Demote(q) => query::set_mode(q, tenure_election::Mode::Standby),
        Cmd::HashPassword => query::hash_password(),
        Cmd::Master(a) => master::main(a),
        Cmd::Check(a) => check::main(a),
        Cmd::Doctor(a) => doctor::main(a),
    }
}
