//! Change-request parsing (`POST …/ha/state` etc.): `<content type>\n<query>\n<body>`.
#![no_main]
include!("../checks/form.rs");
libfuzzer_sys::fuzz_target!(|data: &[u8]| check_form(data));
