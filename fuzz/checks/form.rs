// Shared by the fuzz target `form` and the corpus replay in crates/http/tests/fuzz_corpus.rs
// (included with `include!`): must never panic, whatever the bytes.

/// `<content type>\n<query string>\n<body>` (a missing line is absent) through
/// `tenure_http::parse_form`, and the values through what the handlers parse next.
pub fn check_form(data: &[u8]) {
    use tenure_http::{FormError, parse_form};
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let content_type = parts
        .next()
        .filter(|c| !c.is_empty())
        .map(|c| std::str::from_utf8(c).unwrap_or("(not text)"));
    let query = parts.next().and_then(|q| std::str::from_utf8(q).ok());
    let body = parts.next().unwrap_or(&[]);
    match parse_form(content_type, query, body) {
        Ok(form) => {
            for name in ["mode", "priority", "nodeId", ""] {
                if let Some(v) = form.get(name) {
                    let _ = v.parse::<tenure_election::Mode>();
                    let _ = v.trim().parse::<i64>();
                    let _ = tenure_election::types::validate_node_name(v);
                }
            }
        }
        Err(FormError::UnsupportedMediaType(m)) | Err(FormError::Malformed(m)) => {
            assert!(!m.is_empty());
            // Messages echo at most a short piece of the input.
            assert!(m.len() < 512, "error message of {} bytes: {m}", m.len());
        }
    }
    // A form body is always accepted.
    assert!(parse_form(Some("application/x-www-form-urlencoded"), query, body).is_ok());
}
