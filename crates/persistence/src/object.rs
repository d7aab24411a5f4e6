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
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ClientConfigKey, GetOptions, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, RetryConfig, UpdateVersion,
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

#[derive(Clone, Debug)]
pub struct ObjOptions {
    /// Deadline of one [`Store`] call, and the HTTP client's timeout (default 5 s). Give it
    /// no more than the caller's storage deadline (`--storage-timeout`).
    pub timeout: Duration,
    /// Read the conventional environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`), as
    /// `object_store`'s `from_env` builders do (default true).
    pub use_env: bool,
    /// More settings by `object_store` configuration key (`aws_endpoint`,
    /// `aws_access_key_id`, `google_service_account`, …), applied after the environment.
    pub config: Vec<(String, String)>,
}

impl Default for ObjOptions {
    fn default() -> Self {
        ObjOptions {
            timeout: Duration::from_secs(5),
            use_env: true,
            config: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Provider {
    S3,
    Gcs,
    Azure,
}

/// Is `url` an object-store URL (`s3://`, `gs://`, `az://` and their aliases)?
pub fn is_object_url(url: &str) -> bool {
    provider_of(url).is_some()
}

fn provider_of(url: &str) -> Option<Provider> {
    let (scheme, _) = url.split_once("://")?;
    match scheme.to_ascii_lowercase().as_str() {
        "s3" | "s3a" => Some(Provider::S3),
        "gs" | "gcs" => Some(Provider::Gcs),
        "az" | "azure" | "abfs" | "abfss" | "adl" => Some(Provider::Azure),
        _ => None,
    }
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

/// Why [`ObjStore::open`] refused a URL. Every message names the URL and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ObjOpenError {
    #[error(
        "--store {url}: not an object-store URL; use s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"
    )]
    NotObjectUrl { url: String },
    /// No bucket (container, for Azure) in the URL.
    #[error("--store {url}: no {what} named; give one, e.g. {scheme}://my-{what}/tenure")]
    NoBucket {
        url: String,
        /// `bucket` or `container`.
        what: &'static str,
        scheme: String,
    },
    #[error(
        "--store {url}: the prefix {prefix:?} is not a valid object path; use plain names separated by '/'"
    )]
    BadPrefix { url: String, prefix: String },
    #[error("--store {url}: the storage timeout must not be zero")]
    ZeroTimeout { url: String },
    /// A configuration key the provider does not know.
    #[error("--store {url}: unknown {provider} setting {key:?}: {source}")]
    UnknownSetting {
        url: String,
        /// `S3`, `GCS` or `Azure`.
        provider: &'static str,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    /// A custom S3 endpoint without credentials (and without skip-signature).
    #[error(
        "--store {url}: no credentials for the S3 endpoint {endpoint}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones)"
    )]
    NoS3Credentials { url: String, endpoint: String },
    /// object_store refused the S3 configuration; the fix is chosen from its message.
    #[error("--store {url}: {source}; {}", s3_fix(&source.to_string()))]
    S3Build {
        url: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error(
        "--store {url}: {source}; set GOOGLE_SERVICE_ACCOUNT (a key file) or GOOGLE_APPLICATION_CREDENTIALS"
    )]
    GcsBuild {
        url: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error(
        "--store {url}: {source}; set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or another AZURE_* credential)"
    )]
    AzureBuild {
        url: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("--store {url}: cannot start the I/O runtime: {source}")]
    Runtime {
        url: String,
        #[source]
        source: std::io::Error,
    },
}

fn unknown_setting(
    url: &str,
    provider: &'static str,
    k: &str,
    e: object_store::Error,
) -> ObjOpenError {
    ObjOpenError::UnknownSetting {
        url: url.to_string(),
        provider,
        key: k.to_string(),
        source: Box::new(e),
    }
}

fn set_s3(
    b: AmazonS3Builder,
    url: &str,
    k: &str,
    v: &str,
) -> Result<AmazonS3Builder, ObjOpenError> {
    let key: AmazonS3ConfigKey = k.parse().map_err(|e| unknown_setting(url, "S3", k, e))?;
    Ok(b.with_config(key, v))
}

fn set_gcs(
    b: GoogleCloudStorageBuilder,
    url: &str,
    k: &str,
    v: &str,
) -> Result<GoogleCloudStorageBuilder, ObjOpenError> {
    let key: GoogleConfigKey = k.parse().map_err(|e| unknown_setting(url, "GCS", k, e))?;
    Ok(b.with_config(key, v))
}

fn set_azure(
    b: MicrosoftAzureBuilder,
    url: &str,
    k: &str,
    v: &str,
) -> Result<MicrosoftAzureBuilder, ObjOpenError> {
    let key: AzureConfigKey = k.parse().map_err(|e| unknown_setting(url, "Azure", k, e))?;
    Ok(b.with_config(key, v))
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

impl ObjStore {
    /// Open `s3://bucket/prefix`, `gs://bucket/prefix` or `az://container/prefix`. Nothing is
    /// sent to the server yet; see [`crate::probe_conditional_writes`] for a start-up check.
    /// Errors name the URL and the fix.
    pub fn open(url: &str, opts: ObjOptions) -> Result<ObjStore, ObjOpenError> {
        // ring is the only crypto provider compiled in and reqwest has none of its own: make
        // it the process default before object_store builds a client.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let provider = provider_of(url).ok_or_else(|| ObjOpenError::NotObjectUrl {
            url: url.to_string(),
        })?;
        let rest = url.split_once("://").map_or("", |(_, r)| r);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let what = if provider == Provider::Azure {
            "container"
        } else {
            "bucket"
        };
        if bucket.is_empty() {
            return Err(ObjOpenError::NoBucket {
                url: url.to_string(),
                what,
                scheme: url.split_once("://").map_or("s3", |(s, _)| s).to_string(),
            });
        }
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() && Path::parse(&prefix).is_err()
            || prefix.split('/').any(|c| c == "." || c == "..")
        {
            return Err(ObjOpenError::BadPrefix {
                url: url.to_string(),
                prefix,
            });
        }
        if opts.timeout.is_zero() {
            return Err(ObjOpenError::ZeroTimeout {
                url: url.to_string(),
            });
        }
        // No retries inside object_store (see the module comment); the backoff settings are
        // unused with max_retries = 0.
        let retry = RetryConfig {
            max_retries: 0,
            retry_timeout: opts.timeout,
            ..RetryConfig::default()
        };
        let timeout = millis(opts.timeout);
        let built: Result<Arc<dyn ObjectStore>, ObjOpenError> = match provider {
            Provider::S3 => {
                let mut b = if opts.use_env {
                    AmazonS3Builder::from_env()
                } else {
                    AmazonS3Builder::new()
                };
                for (k, v) in &opts.config {
                    b = set_s3(b, url, k, v)?;
                }
                check_s3_credentials(&b, url)?;
                b.with_bucket_name(bucket)
                    // ETag preconditions are what tenure relies on; never let the
                    // environment turn them off.
                    .with_conditional_put(S3ConditionalPut::ETagMatch)
                    // tenure deletes one record at a time: a plain DELETE, which every
                    // S3-compatible server has, rather than the bulk `POST /?delete`.
                    .with_disable_bulk_delete(true)
                    .with_config(
                        AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                        timeout.clone(),
                    )
                    .with_config(
                        AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                        timeout,
                    )
                    .with_retry(retry)
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
                    .map_err(|e| s3_build_error(url, e))
            }
            Provider::Gcs => {
                let mut b = if opts.use_env {
                    GoogleCloudStorageBuilder::from_env()
                } else {
                    GoogleCloudStorageBuilder::new()
                };
                for (k, v) in &opts.config {
                    b = set_gcs(b, url, k, v)?;
                }
                b.with_bucket_name(bucket)
                    .with_config(
                        GoogleConfigKey::Client(ClientConfigKey::Timeout),
                        timeout.clone(),
                    )
                    .with_config(
                        GoogleConfigKey::Client(ClientConfigKey::ConnectTimeout),
                        timeout,
                    )
                    .with_retry(retry)
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
                    .map_err(|e| ObjOpenError::GcsBuild {
                        url: url.to_string(),
                        source: Box::new(e),
                    })
            }
            Provider::Azure => {
                let mut b = if opts.use_env {
                    MicrosoftAzureBuilder::from_env()
                } else {
                    MicrosoftAzureBuilder::new()
                };
                for (k, v) in &opts.config {
                    b = set_azure(b, url, k, v)?;
                }
                b.with_container_name(bucket)
                    .with_config(
                        AzureConfigKey::Client(ClientConfigKey::Timeout),
                        timeout.clone(),
                    )
                    .with_config(
                        AzureConfigKey::Client(ClientConfigKey::ConnectTimeout),
                        timeout,
                    )
                    .with_retry(retry)
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
                    .map_err(|e| ObjOpenError::AzureBuild {
                        url: url.to_string(),
                        source: Box::new(e),
                    })
            }
        };
        let store = built?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("tenure-objstore")
            .build()
            .map_err(|e| ObjOpenError::Runtime {
                url: url.to_string(),
                source: e,
            })?;
        Ok(ObjStore {
            store,
            runtime: Some(runtime),
            provider,
            prefix,
            url: url.to_string(),
            timeout: opts.timeout,
        })
    }

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
        match &e {
            E::NotFound { source, .. } if mentions_no_such_bucket(&**source) => {
                StoreError::Unavailable(format!(
                    "{url}: {op} {key}: the bucket does not exist: create it (or fix --store): {e}"
                ))
            }
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                StoreError::Unavailable(format!(
                    "{url}: {op} {key}: access denied: check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, GOOGLE_*, AZURE_*) and their rights on the bucket: {e}"
                ))
            }
            _ if is_timeout(&e) => StoreError::Timeout(self.timeout),
            _ => StoreError::Unavailable(format!("{url}: {op} {key}: {e}")),
        }
    }
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

/// With a custom endpoint (MinIO, moto, another S3-compatible server) and no credentials,
/// `object_store` would ask the EC2 instance-metadata service, which such a setup never has:
/// say what to set instead of timing out against it.
fn check_s3_credentials(b: &AmazonS3Builder, url: &str) -> Result<(), ObjOpenError> {
    let has = |k: AmazonS3ConfigKey| b.get_config_value(&k).is_some_and(|v| !v.is_empty());
    let custom_endpoint = has(AmazonS3ConfigKey::Endpoint) || has(AmazonS3ConfigKey::S3Endpoint);
    let skip_signature = b
        .get_config_value(&AmazonS3ConfigKey::SkipSignature)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let credentials = has(AmazonS3ConfigKey::AccessKeyId)
        || has(AmazonS3ConfigKey::SecretAccessKey)
        || has(AmazonS3ConfigKey::WebIdentityTokenFile)
        || has(AmazonS3ConfigKey::ContainerCredentialsRelativeUri)
        || has(AmazonS3ConfigKey::ContainerCredentialsFullUri)
        || has(AmazonS3ConfigKey::MetadataEndpoint);
    if custom_endpoint && !credentials && !skip_signature {
        let endpoint = b
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .or_else(|| b.get_config_value(&AmazonS3ConfigKey::S3Endpoint))
            .unwrap_or_default();
        return Err(ObjOpenError::NoS3Credentials {
            url: url.to_string(),
            endpoint,
        });
    }
    Ok(())
}

fn s3_build_error(url: &str, e: object_store::Error) -> ObjOpenError {
    ObjOpenError::S3Build {
        url: url.to_string(),
        source: Box::new(e),
    }
}

/// The fix for an S3 configuration object_store refused, from its message.
fn s3_fix(msg: &str) -> &'static str {
    if msg.contains("AccessKeyId") || msg.contains("SecretAccessKey") {
        "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    } else if msg.to_ascii_lowercase().contains("endpoint") || msg.contains("URL") {
        "check AWS_ENDPOINT_URL (e.g. http://127.0.0.1:9000, with AWS_ALLOW_HTTP=true for plain HTTP)"
    } else {
        "check the AWS_* settings (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
    }
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
mod tests {
    use super::*;

    fn offline(url: &str) -> ObjStore {
        ObjStore::open(
            url,
            ObjOptions {
                timeout: Duration::from_secs(1),
                use_env: false,
                config: vec![
                    ("aws_endpoint".into(), "http://127.0.0.1:9".into()),
                    ("aws_allow_http".into(), "true".into()),
                    ("aws_access_key_id".into(), "k".into()),
                    ("aws_secret_access_key".into(), "s".into()),
                    ("aws_region".into(), "us-east-1".into()),
                ],
            },
        )
        .unwrap()
    }

    #[test]
    fn urls_are_recognised() {
        for u in ["s3://b/p", "S3A://b", "gs://b/p", "az://c/p", "azure://c"] {
            assert!(is_object_url(u), "{u}");
        }
        for u in ["/srv/x", "file:///srv/x", "http://x/y", "s3:/b"] {
            assert!(!is_object_url(u), "{u}");
        }
    }

    #[test]
    fn keys_map_to_objects_under_the_prefix() {
        let s = offline("s3://bucket/some/prefix/");
        assert_eq!(s.describe(), "s3://bucket/some/prefix/");
        assert_eq!(
            s.path(LEASE_KEY).unwrap().as_ref(),
            "some/prefix/lease.json"
        );
        assert_eq!(
            s.path("nodes/a.json").unwrap().as_ref(),
            "some/prefix/nodes/a.json"
        );
        assert!(matches!(
            s.path("lease.json"),
            Err(StoreError::InvalidKey(_))
        ));
        assert!(matches!(s.path("../x"), Err(StoreError::InvalidKey(_))));
        assert_eq!(
            s.key_of(&Path::from("some/prefix/lease.json")).as_deref(),
            Some(LEASE_KEY)
        );
        assert_eq!(
            s.key_of(&Path::from("some/prefix/nodes/a.json")).as_deref(),
            Some("nodes/a.json")
        );
        assert_eq!(s.key_of(&Path::from("some/prefixes/x.json")), None);
        assert_eq!(s.key_of(&Path::from("other/x.json")), None);
        let root = offline("s3://bucket");
        assert_eq!(root.path(LEASE_KEY).unwrap().as_ref(), "lease.json");
        assert_eq!(
            root.key_of(&Path::from("cluster.json")).as_deref(),
            Some("cluster.json")
        );
    }

    #[test]
    fn versions_round_trip_through_preconditions() {
        let s = offline("s3://b/p");
        let v = s
            .version_of("k", Some("\"abc\"".into()), Some("v1".into()))
            .unwrap();
        assert_eq!(
            s.update_version(&v),
            Some(UpdateVersion {
                e_tag: Some("\"abc\"".into()),
                version: Some("v1".into())
            })
        );
        let v = s.version_of("k", Some("\"abc\"".into()), None).unwrap();
        assert_eq!(
            s.update_version(&v).unwrap().e_tag.as_deref(),
            Some("\"abc\"")
        );
        assert!(s.version_of("k", None, None).is_err());
        assert_eq!(s.update_version(&Version("a\nb".into())), None);
        assert_eq!(s.update_version(&Version(String::new())), None);
    }

    #[test]
    fn gcs_and_azure_urls_open_without_contacting_anyone() {
        let gs = ObjStore::open(
            "gs://bucket/ha",
            ObjOptions {
                use_env: false,
                config: vec![("google_skip_signature".into(), "true".into())],
                ..ObjOptions::default()
            },
        )
        .unwrap();
        assert_eq!(gs.path(LEASE_KEY).unwrap().as_ref(), "ha/lease.json");
        // GCS conditions on the generation: a version without one cannot match.
        assert_eq!(gs.update_version(&Version("\"etag\"".into())), None);
        let v = gs
            .version_of("k", Some("e".into()), Some("17".into()))
            .unwrap();
        assert_eq!(
            gs.update_version(&v).unwrap().version.as_deref(),
            Some("17")
        );

        let az = ObjStore::open(
            "az://container/ha",
            ObjOptions {
                use_env: false,
                config: vec![
                    ("azure_storage_account_name".into(), "account".into()),
                    ("azure_storage_account_key".into(), "a2V5".into()),
                ],
                ..ObjOptions::default()
            },
        )
        .unwrap();
        assert_eq!(az.describe(), "az://container/ha");
        let e = ObjStore::open(
            "az://container/ha",
            ObjOptions {
                use_env: false,
                ..ObjOptions::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("AZURE_STORAGE_ACCOUNT_NAME"), "{e}");
    }

    #[test]
    fn bad_urls_name_the_fix() {
        let e = ObjStore::open("s3://", ObjOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no bucket named"), "{e}");
        let e = ObjStore::open("az:///x", ObjOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no container named"), "{e}");
        let e = ObjStore::open("s3://b/a/../c", ObjOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a valid object path"), "{e}");
        let e = ObjStore::open("/srv/x", ObjOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("s3://bucket/prefix"), "{e}");
    }

    #[test]
    fn a_custom_endpoint_without_credentials_is_refused_before_any_request() {
        let e = ObjStore::open(
            "s3://b/p",
            ObjOptions {
                use_env: false,
                config: vec![("aws_endpoint".into(), "http://127.0.0.1:9".into())],
                ..ObjOptions::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("AWS_ACCESS_KEY_ID")
                && e.contains("http://127.0.0.1:9")
                && e.contains("s3://b/p"),
            "{e}"
        );
    }

    #[test]
    fn a_refused_connection_is_unavailable_not_a_panic() {
        // Port 9 (discard) is closed on loopback here: connection refused.
        let s = offline("s3://b/p");
        for r in [
            s.read("nodes/a.json").map(|_| ()),
            s.put("nodes/a.json", b"x").map(|_| ()),
            s.create("epochs/1.json", b"x").map(|_| ()),
            s.replace(LEASE_KEY, b"x", &Version("\"e\"".into()))
                .map(|_| ()),
            s.list("nodes/").map(|_| ()),
            s.delete("nodes/a.json"),
        ] {
            assert!(
                matches!(
                    r,
                    Err(StoreError::Unavailable(_)) | Err(StoreError::Timeout(_))
                ),
                "{r:?}"
            );
        }
        assert!(matches!(
            s.delete(LEASE_KEY),
            Err(StoreError::InvalidKey(_))
        ));
    }
}
