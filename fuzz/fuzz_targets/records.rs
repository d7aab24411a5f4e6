//! Record parsing and MAC checking (`records::open`, `records::seal`); the first byte picks
//! the record type.
#![no_main]
include!("../checks/records.rs");
libfuzzer_sys::fuzz_target!(|data: &[u8]| check_records(data));
