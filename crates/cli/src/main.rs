//! The `tenure` binary: everything is in the library (`lib.rs`).

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(tenure::main(std::env::args().collect()))
}
