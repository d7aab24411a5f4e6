// Shared by the fuzz target `config` (with crates/cli/src/args.rs included as a module) and
// the corpus replay in args.rs's tests (included with `include!`; `config_args` and `Cli` in
// scope): must never panic, whatever the bytes.

/// A `--config` file through `config_args`, and the flags it stands for through clap.
pub fn check_config(data: &[u8]) {
    use clap::Parser;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config_args("fuzz.json", text, |env| env == "TENURE_MODE") {
        Ok(injected) => {
            let mut argv = vec!["tenure".to_string(), "run".to_string()];
            argv.extend(injected);
            if let Err(e) = Cli::try_parse_from(&argv) {
                use clap::error::ErrorKind;
                // Every key of the file is a flag of `run`: clap may refuse a value, but never
                // see an unknown flag (a value taken for a flag).
                assert!(
                    !matches!(e.kind(), ErrorKind::UnknownArgument),
                    "{argv:?}: {e}"
                );
            }
        }
        Err(e) => assert!(e.contains("--config fuzz.json"), "{e}"),
    }
}
