//! The object-store backend (DESIGN §3 and §4): S3 and S3-compatible servers (MinIO, moto,
//! R2…), Google Cloud Storage and Azure Blob Storage, through the `object_store` crate.
//!
//! Layout under `<prefix>/`: `cluster.json`, `lease.json` (the key [`LEASE_KEY`]),
//! `epochs/<n>.json`, `nodes/<name>.json`.
//!
//! - create-if-absent is `PutMode::Create` (`If-None-Match: *`; `ifGenerationMatch=0` on GCS);
//! - replace-if-unchanged is `PutMode::Update` (`If-Match: <ETag>` on S3 and Azure, the object
//!   generation on GCS);
//! - a [`Version`] is the ETag, plus the object version (generation, S3 version id) where the
//!   store reports one. An S3 ETag is the MD5 of the body, so rewriting identical bytes keeps
//!   the version: the election never writes a record twice with the same bytes (lease records
//!   carry `renewSeq` and the instance id, heartbeats `seq`).
//!
//! Every call runs on a small current-thread tokio runtime owned by the store (the [`Store`]
//! trait is synchronous and is called from the I/O thread) and is bounded by
//! [`ObjOptions::timeout`], which is also the HTTP client's timeout, so a hung server never
//! holds the I/O thread much longer than one storage deadline.
//!
//! `object_store`'s own retries are off: a conditional PUT retried after a 5xx whose first
//! attempt landed would come back as 412 and turn a win into "lost the race". Instead, an
//! error whose outcome is unknown (5xx, 503 SlowDown, reset, timeout) is `Unavailable` or
//! `Timeout`, which the election settles by reading; the one case retried here is S3's
//! `409 ConditionalRequestConflict` (another conditional write was in flight: nothing was
//! written), re-read and retried while the deadline allows.

use futures_util::StreamExt;
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, UpdateVersion,
};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenure_store::{
    LEASE_KEY, MAX_RECORD_BYTES, ReadResult, Record, Store, StoreError, Version, validate_key,
    validate_prefix,
};

/// The lease's object name under the prefix.
pub const LEASE_OBJECT: &str = "lease.json";

/// Separates the ETag from the object version inside a [`Version`] string. Neither an ETag
/// nor a version id contains it.
const VERSION_SEP: &str = " @";

/// Backoff between attempts after a `409 ConditionalRequestConflict`.
const CONFLICT_BACKOFF: Duration = Duration::from_millis(20);

/// How many records `read_many` fetches at once: a scan of a large cluster must not open a
/// connection per node.
const SCAN_CONCURRENCY: usize = 16;

mod open;
pub use open::{ObjOpenError, ObjOptions, is_object_url};

/// Which service's dialect the store speaks (versions and errors differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Provider {
    S3,
    Gcs,
    Azure,
}

pub struct ObjStore {
    store: Arc<dyn ObjectStore>,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    provider: Provider,
    /// The key prefix without leading or trailing `/`; empty for the bucket's root.
    prefix: String,
    url: String,
    timeout: Duration,
}

impl std::fmt::Debug for ObjStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjStore").field("url", &self.url).finish()
    }
}

impl Drop for ObjStore {
    fn drop(&mut self) {
        // Dropping a runtime inside another one panics; this never blocks.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl ObjStore {
    /// The deadline of one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Run `fut` to completion within the deadline.
    fn run<T>(&self, fut: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        let rt = self
            .runtime
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("the store is closing".into()))?;
        rt.block_on(async {
            tokio::time::timeout(self.timeout, fut)
                .await
                .unwrap_or(Err(StoreError::Timeout(self.timeout)))
        })
    }

    /// The object path of a key.
    fn path(&self, key: &str) -> Result<Path, StoreError> {
        validate_key(key)?;
        let name = if key == LEASE_KEY {
            LEASE_OBJECT
        } else if key == LEASE_OBJECT {
            // It would be the lease's object under another name.
            return Err(StoreError::InvalidKey(format!(
                "{key}: reserved for the lease in an object store"
            )));
        } else {
            key
        };
        let full = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        };
        Path::parse(&full).map_err(|_| StoreError::InvalidKey(key.to_string()))
    }

    /// The key of an object path under the prefix, if it is one tenure could have written.
    fn key_of(&self, path: &Path) -> Option<String> {
        let full = path.as_ref();
        let rel = if self.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?
        };
        let key = if rel == LEASE_OBJECT { LEASE_KEY } else { rel };
        validate_key(key).ok()?;
        Some(key.to_string())
    }

    fn version_of(
        &self,
        key: &str,
        e_tag: Option<String>,
        version: Option<String>,
    ) -> Result<Version, StoreError> {
        match (e_tag, version) {
            (Some(e), Some(v)) => Ok(Version(format!("{e}{VERSION_SEP}{v}"))),
            (Some(e), None) => Ok(Version(e)),
            // GCS always reports the generation; an ETag alone is enough elsewhere.
            (None, Some(v)) if self.provider == Provider::Gcs => {
                Ok(Version(format!("{VERSION_SEP}{v}")))
            }
            _ => Err(StoreError::Unavailable(format!(
                "{}: the server returned no ETag for {key}; conditional writes need one",
                self.url
            ))),
        }
    }

    /// The precondition for a replace on `expected`, or `None` when it cannot possibly match
    /// (it was not produced by this backend), which is a conflict without asking.
    fn update_version(&self, expected: &Version) -> Option<UpdateVersion> {
        let s = expected.0.as_str();
        // A header value cannot carry control characters.
        if s.is_empty() || s.chars().any(|c| c.is_control()) {
            return None;
        }
        let (e_tag, version) = match s.rsplit_once(VERSION_SEP) {
            Some((e, v)) => ((!e.is_empty()).then(|| e.to_string()), Some(v.to_string())),
            None => (Some(s.to_string()), None),
        };
        match self.provider {
            Provider::Gcs if version.is_none() => None,
            Provider::S3 | Provider::Azure if e_tag.is_none() => None,
            _ => Some(UpdateVersion { e_tag, version }),
        }
    }

    fn put_options(mode: PutMode) -> PutOptions {
        // Records are JSON; some S3-compatible servers misbehave without a Content-Type.
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, "application/json".into());
        PutOptions {
            mode,
            attributes,
            ..PutOptions::default()
        }
    }

    /// The current version of `path` (a HEAD), `None` when absent.
    async fn head_version(&self, key: &str, path: &Path) -> Result<Option<Version>, StoreError> {
        match self.store.head(path).await {
            Ok(meta) => self.version_of(key, meta.e_tag, meta.version).map(Some),
            Err(object_store::Error::NotFound { source, .. })
                if !mentions_no_such_bucket(&*source) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.map_err("read", key, e)),
        }
    }

    /// Is there time for another attempt after a 409 before the deadline?
    fn time_left(&self, started: Instant) -> bool {
        // One more attempt needs a backoff and two requests; leave it for the next call if
        // that would overrun.
        started.elapsed() + 3 * CONFLICT_BACKOFF < self.timeout
    }

    fn map_err(&self, op: &str, key: &str, e: object_store::Error) -> StoreError {
        use object_store::Error as E;
        let url = &self.url;
        // A listing of the store's root has an empty prefix: name it rather than print "list :".
        let key = if key.is_empty() {
            "(the store's root)"
        } else {
            key
        };
        // The server's answer is part of the message (an S3 error is an XML document, often
        // over several lines): one log line per failure, whatever the server sent.
        let e_text = one_line(&e.to_string());
        match &e {
            E::NotFound { source, .. } if mentions_no_such_bucket(&**source) => {
                StoreError::Unavailable(format!(
                    "{url}: {op} {key}: the bucket does not exist: create it (or fix --store): {e_text}"
                ))
            }
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                StoreError::Unavailable(format!(
                    "{url}: {op} {key}: access denied: check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, GOOGLE_*, AZURE_*) and their rights on the bucket, and check that the bucket exists (some servers, SeaweedFS among them, deny a write to a missing bucket): {e_text}"
                ))
            }
            _ if is_timeout(&e) => StoreError::Timeout(self.timeout),
            _ => StoreError::Unavailable(format!("{url}: {op} {key}: {e_text}")),
        }
    }
}

/// `s` with every run of whitespace that holds a line break (or a control character) turned
/// into one space, so that a multi-line server answer stays on one log line.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_break = false;
    for c in s.chars() {
        if c == '\n' || c == '\r' || (c.is_control() && c != '\t') {
            pending_break = true;
            continue;
        }
        if pending_break {
            // Trailing blanks before the break and leading ones after it go too.
            while out.ends_with([' ', '\t']) {
                out.pop();
            }
            if !out.is_empty() {
                out.push(' ');
            }
            pending_break = false;
            if c == ' ' || c == '\t' {
                pending_break = true;
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Does an error chain contain a timeout of the HTTP client?
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<HttpError>()
            && h.kind() == HttpErrorKind::Timeout
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// S3 answers 404 both for a missing key and for a missing bucket; only the body tells.
fn mentions_no_such_bucket(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if s.contains("NoSuchBucket") || s.contains("ContainerNotFound") {
            return true;
        }
        cur = err.source();
    }
    false
}

impl ObjStore {
    /// One GET of a record, without a deadline of its own (the caller sets it).
    async fn fetch(&self, key: &str) -> Result<ReadResult, StoreError> {
        let path = self.path(key)?;
        let got = match self.store.get_opts(&path, GetOptions::default()).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { source, .. })
                if !mentions_no_such_bucket(&*source) =>
            {
                return Ok(ReadResult::Absent);
            }
            Err(e) => return Err(self.map_err("read", key, e)),
        };
        let meta = got.meta.clone();
        let version = self.version_of(key, meta.e_tag.clone(), meta.version.clone())?;
        // The size comes from the response headers: an oversized object is never
        // downloaded (dropping the body closes the connection).
        if meta.size > MAX_RECORD_BYTES as u64 {
            return Ok(ReadResult::Unreadable {
                version,
                reason: format!(
                    "record of {} bytes exceeds the {} KiB limit",
                    meta.size,
                    MAX_RECORD_BYTES / 1024
                ),
            });
        }
        let bytes = got
            .bytes()
            .await
            .map_err(|e| self.map_err("read", key, e))?;
        Ok(ReadResult::Present(Record {
            bytes: bytes.to_vec(),
            version,
            modified: Some(meta.last_modified.into()),
        }))
    }
}

impl Store for ObjStore {
    fn read(&self, key: &str) -> Result<ReadResult, StoreError> {
        self.run(self.fetch(key))
    }

    fn read_many(&self, keys: &[String]) -> Vec<Result<ReadResult, StoreError>> {
        let Some(rt) = self.runtime.as_ref() else {
            return keys
                .iter()
                .map(|_| Err(StoreError::Unavailable("the store is closing".into())))
                .collect();
        };
        rt.block_on(async {
            let reads = keys.iter().map(|k| async move {
                tokio::time::timeout(self.timeout, self.fetch(k))
                    .await
                    .unwrap_or(Err(StoreError::Timeout(self.timeout)))
            });
            futures_util::stream::iter(reads)
                .buffered(SCAN_CONCURRENCY)
                .collect()
                .await
        })
    }

    fn create(&self, key: &str, bytes: &[u8]) -> Result<Version, StoreError> {
        let path = self.path(key)?;
        let started = Instant::now();
        self.run(async {
            loop {
                let payload = PutPayload::from(bytes.to_vec());
                match self
                    .store
                    .put_opts(&path, payload, Self::put_options(PutMode::Create))
                    .await
                {
                    Ok(r) => return self.version_of(key, r.e_tag, r.version),
                    // 412 / 304 (it exists) and 409 (a conflicting write was in flight) all
                    // come back as AlreadyExists: only a read tells them apart.
                    Err(object_store::Error::AlreadyExists { .. })
                    | Err(object_store::Error::Precondition { .. }) => {
                        match self.head_version(key, &path).await? {
                            Some(v) => {
                                return Err(StoreError::Conflict(format!(
                                    "{key} exists (version {v})"
                                )));
                            }
                            None if self.time_left(started) => {
                                tokio::time::sleep(CONFLICT_BACKOFF).await;
                            }
                            None => {
                                return Err(StoreError::Conflict(format!(
                                    "{key}: conflicting writes in flight until the deadline"
                                )));
                            }
                        }
                    }
                    Err(e) => return Err(self.map_err("create", key, e)),
                }
            }
        })
    }

    fn replace(&self, key: &str, bytes: &[u8], expected: &Version) -> Result<Version, StoreError> {
        let path = self.path(key)?;
        let Some(update) = self.update_version(expected) else {
            return Err(StoreError::Conflict(format!(
                "{key}: version {expected:?} cannot be current in {}",
                self.url
            )));
        };
        let started = Instant::now();
        self.run(async {
            loop {
                let payload = PutPayload::from(bytes.to_vec());
                match self
                    .store
                    .put_opts(
                        &path,
                        payload,
                        Self::put_options(PutMode::Update(update.clone())),
                    )
                    .await
                {
                    Ok(r) => return self.version_of(key, r.e_tag, r.version),
                    // 412, or 404 (If-Match on a missing key), which object_store reports
                    // as a failed precondition too.
                    Err(object_store::Error::Precondition { .. }) => {
                        return Err(StoreError::Conflict(format!(
                            "{key} is not at version {expected}"
                        )));
                    }
                    // 409 ConditionalRequestConflict: another conditional write was in
                    // flight and this one was not applied. Retry while the version still
                    // matches.
                    Err(object_store::Error::AlreadyExists { .. }) => {
                        match self.head_version(key, &path).await? {
                            Some(v) if v == *expected && self.time_left(started) => {
                                tokio::time::sleep(CONFLICT_BACKOFF).await;
                            }
                            Some(v) if v != *expected => {
                                return Err(StoreError::Conflict(format!(
                                    "{key} is at version {v}, expected {expected}"
                                )));
                            }
                            None => {
                                return Err(StoreError::Conflict(format!(
                                    "{key} is absent, expected version {expected}"
                                )));
                            }
                            Some(_) => {
                                return Err(StoreError::Conflict(format!(
                                    "{key}: 409 ConditionalRequestConflict until the deadline"
                                )));
                            }
                        }
                    }
                    Err(e) => return Err(self.map_err("replace", key, e)),
                }
            }
        })
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<Version, StoreError> {
        let path = self.path(key)?;
        self.run(async {
            let payload = PutPayload::from(bytes.to_vec());
            match self
                .store
                .put_opts(&path, payload, Self::put_options(PutMode::Overwrite))
                .await
            {
                Ok(r) => self.version_of(key, r.e_tag, r.version),
                Err(e) => Err(self.map_err("write", key, e)),
            }
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        validate_prefix(prefix)?;
        let folder = prefix.trim_end_matches('/');
        let full = match (self.prefix.is_empty(), folder.is_empty()) {
            (true, true) => None,
            (true, false) => Some(folder.to_string()),
            (false, true) => Some(self.prefix.clone()),
            (false, false) => Some(format!("{}/{folder}", self.prefix)),
        };
        let path = match full {
            None => None,
            Some(p) => {
                Some(Path::parse(&p).map_err(|_| StoreError::InvalidKey(prefix.to_string()))?)
            }
        };
        self.run(async {
            let listed = self
                .store
                .list_with_delimiter(path.as_ref())
                .await
                .map_err(|e| self.map_err("list", prefix, e))?;
            let mut keys: Vec<String> = listed
                .objects
                .iter()
                .filter_map(|o| self.key_of(&o.location))
                .filter(|k| {
                    k.strip_prefix(prefix)
                        .is_some_and(|rest| !rest.contains('/'))
                })
                .collect();
            keys.sort();
            keys.dedup();
            Ok(keys)
        })
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        if key == LEASE_KEY {
            validate_key(key)?;
            return Err(StoreError::InvalidKey(format!(
                "{key}: the lease is never deleted (a missing lease with epochs/ present is a version like any other)"
            )));
        }
        let path = self.path(key)?;
        self.run(async {
            match self.store.delete(&path).await {
                Ok(()) => Ok(()),
                Err(object_store::Error::NotFound { source, .. })
                    if !mentions_no_such_bucket(&*source) =>
                {
                    Ok(())
                }
                Err(e) => Err(self.map_err("delete", key, e)),
            }
        })
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

#[cfg(test)]
mod tests;
