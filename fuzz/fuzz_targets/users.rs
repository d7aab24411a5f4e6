//! The `--users` file and the `Authorization: Basic` header.
#![no_main]
include!("../checks/users.rs");
libfuzzer_sys::fuzz_target!(|data: &[u8]| check_users(data));
