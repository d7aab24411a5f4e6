//! Opening an object store from its URL: the provider's builder, tenure's settings on top of
//! the environment's (`AWS_*`, `GOOGLE_*`, `AZURE_*`), and refusals that name the fix.

use super::*;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::{ClientConfigKey, RetryConfig};

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
    /// object_store refuses plain HTTP unless allowed, saying only "builder error" at the first
    /// request: refused here, naming the variable.
    #[error(
        "--store {url}: the endpoint {endpoint} is plain HTTP, which the object-store client refuses unless allowed: set {var}=true (or use https://)"
    )]
    PlainHttp {
        url: String,
        endpoint: String,
        var: &'static str,
    },
    #[error(
        "--store {url}: GOOGLE_SKIP_SIGNATURE=true without credentials: object_store still asks the cloud metadata server for a token when it uploads (its issue #520), which hangs outside GCP; give GOOGLE_SERVICE_ACCOUNT, GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_BEARER_TOKEN, or unset GOOGLE_SKIP_SIGNATURE"
    )]
    GcsSkipSignatureWithoutCredentials { url: String },
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
                check_plain_http(
                    url,
                    b.get_config_value(&AmazonS3ConfigKey::Endpoint)
                        .or_else(|| b.get_config_value(&AmazonS3ConfigKey::S3Endpoint)),
                    b.get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)),
                    "AWS_ALLOW_HTTP",
                )?;
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
                check_gcs_skip_signature(&b, url)?;
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
                // The emulator (Azurite) is plain HTTP and object_store allows it by itself.
                let emulator = b
                    .get_config_value(&AzureConfigKey::UseEmulator)
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                if !emulator {
                    check_plain_http(
                        url,
                        b.get_config_value(&AzureConfigKey::Endpoint),
                        b.get_config_value(&AzureConfigKey::Client(ClientConfigKey::AllowHttp)),
                        "AZURE_ALLOW_HTTP",
                    )?;
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

/// An `http://` endpoint needs `allow_http`, or every request fails with "builder error".
fn check_plain_http(
    url: &str,
    endpoint: Option<String>,
    allow: Option<String>,
    var: &'static str,
) -> Result<(), ObjOpenError> {
    let allowed = allow.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    match endpoint {
        Some(e) if !allowed && e.trim().to_ascii_lowercase().starts_with("http://") => {
            Err(ObjOpenError::PlainHttp {
                url: url.to_string(),
                endpoint: e,
                var,
            })
        }
        _ => Ok(()),
    }
}

/// `GOOGLE_SKIP_SIGNATURE` signs nothing, yet object_store fetches a token for uploads from
/// the metadata server: without credentials, every write would hang there.
fn check_gcs_skip_signature(b: &GoogleCloudStorageBuilder, url: &str) -> Result<(), ObjOpenError> {
    let set = |k: GoogleConfigKey| b.get_config_value(&k).is_some_and(|v| !v.trim().is_empty());
    let skip = b
        .get_config_value(&GoogleConfigKey::SkipSignature)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let credentials = set(GoogleConfigKey::ServiceAccount)
        || set(GoogleConfigKey::ServiceAccountKey)
        || set(GoogleConfigKey::ApplicationCredentials)
        || set(GoogleConfigKey::BearerToken);
    if skip && !credentials {
        return Err(ObjOpenError::GcsSkipSignatureWithoutCredentials {
            url: url.to_string(),
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
