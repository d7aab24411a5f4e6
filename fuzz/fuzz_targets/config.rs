//! The `--config` JSON file: its expansion into flags and their parsing by clap.
#![no_main]

use tenure::args::{Cli, config_args};

include!("../checks/config.rs");
libfuzzer_sys::fuzz_target!(|data: &[u8]| check_config(data));
