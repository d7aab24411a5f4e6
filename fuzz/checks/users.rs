// Shared by the fuzz target `users` and the corpus replay in crates/http/tests/fuzz_corpus.rs
// (included with `include!`): must never panic, whatever the bytes.

/// The `--users` file through `Users::parse`, and the bytes as an `Authorization` header.
pub fn check_users(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(users) = tenure_http::Users::parse(text)
    {
        assert!(!format!("{users:?}").is_empty());
    }
    if let Some((name, _password)) = tenure_http::auth::parse_basic(data) {
        assert!(!name.contains(':'));
    }
}
