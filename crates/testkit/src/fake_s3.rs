//! Test support: tiny fake S3 servers on 127.0.0.1, for the behaviour no real server shows on
//! demand (a server ignoring conditional headers, one that never answers, 503 SlowDown, 409
//! ConditionalRequestConflict, lost replies). Everything else is tested against a real S3
//! server (moto, [`crate::moto`]). Not used by `tenure` itself.

use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;

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

/// A response body: the bytes, then the end; or, when `stall`, the bytes and then nothing ever
/// (the declared Content-Length is never reached).
struct Payload {
    data: Option<Bytes>,
    stall: bool,
}

impl Body for Payload {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.data.take() {
            Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
            // Never woken: the client waits for the rest until it gives up.
            None if self.stall => Poll::Pending,
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && !self.stall
    }

    fn size_hint(&self) -> SizeHint {
        match &self.data {
            // Unknown, so hyper frames the body by the declared Content-Length header.
            _ if self.stall => SizeHint::new(),
            Some(b) => SizeHint::with_exact(b.len() as u64),
            None => SizeHint::with_exact(0),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Read one request in full, count it, and answer it with `handler`.
async fn answer(
    req: hyper::Request<Incoming>,
    handler: Arc<Handler>,
    count: Arc<AtomicUsize>,
) -> Result<hyper::Response<Payload>, BoxError> {
    let (parts, body) = req.into_parts();
    // A body cut short is an error: hyper drops the connection.
    let body = body.collect().await?.to_bytes().to_vec();
    let mut headers = HashMap::new();
    for (k, v) in &parts.headers {
        // HeaderName is lower case already; a repeated header keeps its last value.
        headers.insert(
            k.as_str().to_string(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        );
    }
    let req = Request {
        method: parts.method.as_str().to_string(),
        // The request target as sent: path and query string.
        path: parts.uri.to_string(),
        headers,
        body,
    };
    count.fetch_add(1, Ordering::SeqCst);
    // Handlers are sync code and may block: off the runtime thread, so one slow handler does not
    // hold up other connections. A handler that panics drops its connection.
    let Some(resp) = tokio::task::spawn_blocking(move || handler(&req)).await? else {
        // Stall: keep the connection open and never answer.
        return std::future::pending().await;
    };

    let mut data = resp.body;
    if let Some(n) = resp.declared_len {
        // Never more than declared, or the extra bytes would corrupt the next response.
        data.truncate(n);
    }
    let mut out = hyper::Response::new(Payload {
        data: (!data.is_empty()).then(|| Bytes::from(data)),
        stall: resp.declared_len.is_some(),
    });
    // A status outside 100..=999 cannot go on the wire.
    *out.status_mut() =
        StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in &resp.headers {
        // Skip what HTTP cannot carry rather than fail the response.
        let (Ok(k), Ok(v)) = (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) else {
            continue;
        };
        // The fake owns the framing (`declare_len` for a false length).
        if k != header::CONTENT_LENGTH && k != header::TRANSFER_ENCODING {
            out.headers_mut().append(k, v);
        }
    }
    if let Some(n) = resp.declared_len {
        out.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    // Otherwise hyper sets Content-Length from the body; HEAD gets the length the GET would have,
    // and no body.
    Ok(out)
}

/// Accept connections until the process ends, each served as HTTP/1.1 with keep-alive.
async fn accept(listener: TcpListener, handler: Arc<Handler>, count: Arc<AtomicUsize>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors and the like: wait a little rather than spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // No Nagle: a small body written after the head must not wait for a delayed ACK.
        let _ = stream.set_nodelay(true);
        let (handler, count) = (handler.clone(), count.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, handler.clone(), count.clone()));
            // No timer, hence no header read timeout: an idle keep-alive connection stays open
            // until the client closes it. An error only ends this connection.
            let _ = http1::Builder::new()
                // A real S3 sends Date, but no client here needs it.
                .auto_date_header(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Serve `handler` on 127.0.0.1 (a free port) until the process ends, on a thread of its own
/// with its own tokio runtime (callers are sync tests, or run inside runtimes of their own).
pub fn serve(handler: Arc<Handler>) -> Fake {
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    let (ready, bound) = mpsc::channel();
    std::thread::Builder::new()
        .name("fake-s3".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match TcpListener::bind("127.0.0.1:0").await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(listener.local_addr());
                accept(listener, handler, count).await;
            });
        })
        .expect("fake S3: spawn the server thread");
    let addr = bound
        .recv()
        .expect("fake S3: the server thread ended before binding")
        .expect("fake S3: bind 127.0.0.1:0");
    Fake {
        endpoint: format!("http://{addr}"),
        requests,
    }
}

pub const DATE: &str = "Sun, 22 Nov 2026 02:36:31 GMT";

/// An object server with real `If-None-Match: *` / `If-Match` handling (or none, when
/// `careless`), ETags from a counter, and `conflicts_left` PUTs that answer
/// `409 ConditionalRequestConflict` first.
pub struct Objects {
    map: Mutex<HashMap<String, (Vec<u8>, String)>>,
    next: AtomicUsize,
    careless: bool,
    /// Non-zero: a conditional PUT checks its condition, waits this long, then writes, not as
    /// one step (SeaweedFS 4.16's race, its issue #8800): one request at a time sees every
    /// condition enforced, concurrent ones can all win.
    racy: Duration,
    /// Conditional PUTs still to answer with 409 before taking any.
    pub conflicts_left: AtomicUsize,
}

impl Objects {
    pub fn new(careless: bool, conflicts: usize) -> Arc<Objects> {
        Arc::new(Objects {
            map: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(1),
            careless,
            racy: Duration::ZERO,
            conflicts_left: AtomicUsize::new(conflicts),
        })
    }

    /// Conditions checked, then `window` later the write: racy under concurrency only.
    pub fn racy(window: Duration) -> Arc<Objects> {
        Arc::new(Objects {
            map: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(1),
            careless: false,
            racy: window,
            conflicts_left: AtomicUsize::new(0),
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
        let mut v: Vec<String> = self
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    pub fn handle(&self, req: &Request) -> Response {
        // Each change is one insert or remove, so the map is whole even after a panicking
        // handler poisoned the lock.
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
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
                if conditional && !self.racy.is_zero() {
                    drop(map);
                    std::thread::sleep(self.racy);
                    map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
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
