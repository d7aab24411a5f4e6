//! Test support: tiny fake S3 servers on 127.0.0.1, for the behaviour no real server shows on
//! demand (a server ignoring conditional headers, one that never answers, 503 SlowDown, 409
//! ConditionalRequestConflict, lost replies). Everything else is tested against a real S3
//! server (moto, [`crate::moto`]). Not used by `tenure` itself.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One HTTP request as the fake read it (header names in lower case).
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// The fake's answer.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// A Content-Length other than the body's (a body that never comes).
    pub declared_len: Option<usize>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            declared_len: None,
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn declare_len(mut self, n: usize) -> Self {
        self.declared_len = Some(n);
        self
    }
    pub fn body(mut self, b: &[u8]) -> Self {
        self.body = b.to_vec();
        self
    }
    pub fn error(status: u16, code: &str) -> Self {
        Response::new(status)
            .header("Content-Type", "application/xml")
            .body(format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>fake</Message></Error>").as_bytes())
    }
}

/// What the fake does with a request; `None` = never answer (the connection stays open).
pub type Handler = dyn Fn(&Request) -> Option<Response> + Send + Sync;

/// A running fake server: its endpoint and how many requests it has read.
pub struct Fake {
    pub endpoint: String,
    pub requests: Arc<AtomicUsize>,
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// Serve `handler` on 127.0.0.1 (a free port), one thread per connection, until the process
/// ends.
pub fn serve(handler: Arc<Handler>) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (handler, count) = (handler.clone(), count.clone());
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                while let Some(req) = read_request(&mut r) {
                    count.fetch_add(1, Ordering::SeqCst);
                    let Some(resp) = handler(&req) else {
                        // Stall: keep the connection open and never answer.
                        std::thread::sleep(Duration::from_secs(3600));
                        return;
                    };
                    let mut out = format!("HTTP/1.1 {} X\r\n", resp.status);
                    for (k, v) in &resp.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    // HEAD gets the length the GET would have, and no body.
                    let len = resp.declared_len.unwrap_or(resp.body.len());
                    out.push_str(&format!("Content-Length: {len}\r\n\r\n"));
                    // One write: a separate small body write would wait for a delayed ACK.
                    let mut bytes = out.into_bytes();
                    if req.method != "HEAD" {
                        bytes.extend_from_slice(&resp.body);
                    }
                    if w.write_all(&bytes).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Fake { endpoint, requests }
}

pub const DATE: &str = "Sun, 22 Nov 2026 02:36:31 GMT";

/// An object server with real `If-None-Match: *` / `If-Match` handling (or none, when
/// `careless`), ETags from a counter, and `conflicts_left` PUTs that answer
/// `409 ConditionalRequestConflict` first.
pub struct Objects {
    map: Mutex<HashMap<String, (Vec<u8>, String)>>,
    next: AtomicUsize,
    careless: bool,
    /// Conditional PUTs still to answer with 409 before taking any.
    pub conflicts_left: AtomicUsize,
}

impl Objects {
    pub fn new(careless: bool, conflicts: usize) -> Arc<Objects> {
        Arc::new(Objects {
            map: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(1),
            careless,
            conflicts_left: AtomicUsize::new(conflicts),
        })
    }

    /// ListObjectsV2 of `/<bucket>?list-type=2&prefix=…&delimiter=/`: the objects directly
    /// under the prefix (no pagination, no common prefixes: enough for tenure's listings).
    fn list(&self, map: &HashMap<String, (Vec<u8>, String)>, path: &str) -> Response {
        let (bucket, query) = path.split_once('?').unwrap_or((path, ""));
        let prefix = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("prefix="))
            .unwrap_or("")
            .replace("%2F", "/");
        let base = format!("{bucket}/{prefix}");
        let mut keys: Vec<_> = map
            .iter()
            .filter(|(k, _)| {
                k.strip_prefix(&base)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
            })
            .collect();
        keys.sort();
        let mut xml = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><IsTruncated>false</IsTruncated>",
        );
        for (k, (body, etag)) in keys {
            let key = k.trim_start_matches(&format!("{bucket}/"));
            xml.push_str(&format!(
                "<Contents><Key>{key}</Key><LastModified>2026-11-22T02:36:31.000Z</LastModified><ETag>{}</ETag><Size>{}</Size></Contents>",
                etag.replace('"', "&quot;"),
                body.len()
            ));
        }
        xml.push_str("</ListBucketResult>");
        Response::new(200)
            .header("Content-Type", "application/xml")
            .body(xml.as_bytes())
    }

    /// The paths of the objects it holds, sorted.
    pub fn paths(&self) -> Vec<String> {
        let mut v: Vec<String> = self.map.lock().unwrap().keys().cloned().collect();
        v.sort();
        v
    }

    pub fn handle(&self, req: &Request) -> Response {
        let mut map = self.map.lock().unwrap();
        let current = map.get(&req.path).cloned();
        match req.method.as_str() {
            "PUT" => {
                let conditional = req.headers.contains_key("if-match")
                    || req.headers.contains_key("if-none-match");
                if conditional
                    && self
                        .conflicts_left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                {
                    return Response::error(409, "ConditionalRequestConflict");
                }
                if !self.careless {
                    if req.headers.get("if-none-match").is_some_and(|v| v == "*")
                        && current.is_some()
                    {
                        return Response::error(412, "PreconditionFailed");
                    }
                    if let Some(want) = req.headers.get("if-match") {
                        match &current {
                            None => return Response::error(404, "NoSuchKey"),
                            Some((_, etag)) if etag != want => {
                                return Response::error(412, "PreconditionFailed");
                            }
                            _ => {}
                        }
                    }
                }
                let etag = format!("\"{}\"", self.next.fetch_add(1, Ordering::SeqCst));
                map.insert(req.path.clone(), (req.body.clone(), etag.clone()));
                Response::new(200).header("ETag", &etag)
            }
            "GET" if req.path.contains("list-type=2") => self.list(&map, &req.path),
            "GET" | "HEAD" => match current {
                None => Response::error(404, "NoSuchKey"),
                Some((body, etag)) => Response::new(200)
                    .header("ETag", &etag)
                    .header("Last-Modified", DATE)
                    .body(&body),
            },
            "DELETE" => {
                map.remove(&req.path);
                Response::new(204)
            }
            _ => Response::error(400, "NotImplemented"),
        }
    }
}

/// A fake object server over `objects`.
pub fn object_server(objects: Arc<Objects>) -> Fake {
    serve(Arc::new(move |req: &Request| Some(objects.handle(req))))
}
