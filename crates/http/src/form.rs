//! The fields of a change request (`POST …/ha/state`, `…/priority`, `…/states/clear/node`):
//! an `application/x-www-form-urlencoded` or `application/json` body, else the query string
//! (Brooklyn's clients send either). Any other content type is refused (415): a browser can
//! send `text/plain` and `multipart/form-data` across sites without asking first.

use std::borrow::Cow;

/// Why a change request's fields could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormError {
    /// 415: the body is neither a form nor JSON.
    UnsupportedMediaType(String),
    /// 400: the body does not parse.
    Malformed(String),
}

/// The fields of one change request: the body's first, then the query string's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    body: Vec<(String, String)>,
    query: Vec<(String, String)>,
}

impl Form {
    /// The first value of `name`: from the body if it has one, else from the query string.
    pub fn get(&self, name: &str) -> Option<&str> {
        fn find<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }
        find(&self.body, name).or_else(|| find(&self.query, name))
    }
}

/// The media type of a `Content-Type` value, lowercased, without parameters.
fn media_type(content_type: &str) -> Cow<'_, str> {
    let t = content_type.split(';').next().unwrap_or("").trim();
    if t.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(t.to_ascii_lowercase())
    } else {
        Cow::Borrowed(t)
    }
}

fn pairs(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Parses a change request: `content_type` is the `Content-Type` header (`None` when absent or
/// not text), `query` the raw query string, `body` the whole body.
///
/// A body needs a content type of `application/x-www-form-urlencoded` or `application/json`
/// (a JSON object of strings, numbers and booleans); an empty body may come with none (the
/// fields are then in the query string).
pub fn parse_form(
    content_type: Option<&str>,
    query: Option<&str>,
    body: &[u8],
) -> Result<Form, FormError> {
    let query = query.map(|q| pairs(q.as_bytes())).unwrap_or_default();
    let body = match content_type.map(media_type).as_deref() {
        None | Some("") if body.is_empty() => Vec::new(),
        None | Some("") => {
            return Err(FormError::UnsupportedMediaType(
                "the request has a body but no Content-Type: send application/x-www-form-urlencoded (e.g. mode=standby) or application/json".into(),
            ));
        }
        Some("application/x-www-form-urlencoded") => pairs(body),
        Some("application/json") => json_fields(body)?,
        Some(other) => {
            let shown: String = other.chars().take(64).collect();
            return Err(FormError::UnsupportedMediaType(format!(
                "Content-Type {shown:?} is not accepted: send application/x-www-form-urlencoded (e.g. mode=standby) or application/json"
            )));
        }
    };
    Ok(Form { body, query })
}

fn json_fields(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        FormError::Malformed(format!(
            "the JSON body does not parse ({e}): send an object such as {{\"mode\": \"standby\"}}"
        ))
    })?;
    let serde_json::Value::Object(map) = value else {
        return Err(FormError::Malformed(
            "the JSON body is not an object: send an object such as {\"mode\": \"standby\"}".into(),
        ));
    };
    let mut fields = Vec::with_capacity(map.len());
    for (k, v) in map {
        let v = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => {
                let shown: String = k.chars().take(64).collect();
                return Err(FormError::Malformed(format!(
                    "JSON field {shown:?} must be a string, a number or a boolean"
                )));
            }
        };
        fields.push((k, v));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    #[test]
    fn body_first_then_query() {
        let f = parse_form(FORM, Some("mode=master&x=1"), b"mode=standby").unwrap();
        assert_eq!(f.get("mode"), Some("standby"));
        assert_eq!(f.get("x"), Some("1"));
        assert_eq!(f.get("y"), None);
        let f = parse_form(None, Some("mode=hot_standby"), b"").unwrap();
        assert_eq!(f.get("mode"), Some("hot_standby"));
        // Percent and plus decoding; the first of repeated fields wins.
        let f = parse_form(
            Some("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
            None,
            b"nodeId=a%2Db+c&nodeId=z",
        )
        .unwrap();
        assert_eq!(f.get("nodeId"), Some("a-b c"));
    }

    #[test]
    fn json_bodies() {
        let j = Some("application/json");
        let f = parse_form(
            j,
            None,
            br#"{"mode": "standby", "priority": -3, "x": true}"#,
        )
        .unwrap();
        assert_eq!(f.get("mode"), Some("standby"));
        assert_eq!(f.get("priority"), Some("-3"));
        assert_eq!(f.get("x"), Some("true"));
        assert_eq!(
            parse_form(j, Some("mode=a"), b" ").unwrap().get("mode"),
            Some("a")
        );
        for bad in [
            &b"[1]"[..],
            b"{\"mode\": null}",
            b"{\"mode\": {}}",
            b"{",
            b"\"x\"",
        ] {
            assert!(
                matches!(parse_form(j, None, bad), Err(FormError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn other_content_types_are_refused() {
        for ct in [
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/xml",
            "application/x-www-form-urlencodedX",
        ] {
            assert!(
                matches!(
                    parse_form(Some(ct), None, b"mode=master"),
                    Err(FormError::UnsupportedMediaType(_))
                ),
                "{ct}"
            );
        }
        // Even with an empty body: a cross-site form always names one of these.
        assert!(matches!(
            parse_form(Some("text/plain"), Some("mode=master"), b""),
            Err(FormError::UnsupportedMediaType(_))
        ));
        // A body without a content type.
        assert!(matches!(
            parse_form(None, None, b"mode=master"),
            Err(FormError::UnsupportedMediaType(_))
        ));
    }
}
