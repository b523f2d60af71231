//! S3 and S3-compatible object storage (AWS S3, MinIO, Cloudflare R2, Backblaze B2, Wasabi,
//! Ceph, Garage).
//!
//! A destination is `s3://BUCKET[/PREFIX][?KEY=VALUE&...]`; keys are `PREFIX/<name>/<file>`,
//! and [`Storage::list`] returns them relative to the prefix, exactly as the local backend
//! does. Query keys: `endpoint`, `region`, `path_style` (on by default with a custom
//! endpoint), `storage_class`, `sse` (`AES256` or `aws:kms`), `sse_kms_key_id` and
//! `part_size`. Credentials and everything the URL does not say come from the standard AWS
//! chain (environment, shared config and profile, web identity, container and instance
//! roles), so `AWS_PROFILE` and `AWS_ENDPOINT_URL` work as with any AWS tool.
//!
//! The SDK is asynchronous; the [`Storage`] trait is not. Each destination owns a small
//! private tokio runtime (two worker threads) and blocks on it, so nothing outside this file
//! knows about async.
//!
//! # Checksums and integrity
//! Since early 2025 the AWS SDKs add CRC checksums to every upload by default, sent as
//! `aws-chunked` trailers, and several S3-compatible stores reject such requests. This
//! backend sets request checksum calculation and response validation to "when required"
//! and brings its own end-to-end checks, which every S3 implementation understands:
//! - every `PutObject` and `UploadPart` carries `Content-MD5`, which the server verifies
//!   before it stores anything (`BadDigest` otherwise), and the returned ETag is compared
//!   with that MD5 whenever it is one (no SSE-KMS, not multipart), catching a server that
//!   ignores the header;
//! - `DeleteObjects`, for which S3 requires a checksum, gets `Content-MD5` as well;
//! - the image's size (and its sha256 when the caller knows it up front) is stored as object
//!   metadata (`x-amz-meta-sqlbak-size`, `x-amz-meta-sqlbak-sha256`), returned by
//!   [`Storage::image_meta`] and compared with the decoded image on restore and verify, on
//!   top of the gzip CRCs and the sha256 trailer inside the stream.
//!
//! # Writes
//! An object smaller than one part (8 MiB by default) is sent as one `PutObject` at commit.
//! A larger one becomes a multipart upload: each full part is uploaded on a background task
//! while the caller keeps compressing, with at most [`PARTS_IN_FLIGHT`] parts in memory, and
//! the part size grows with the image so the 10,000-part limit is never reached. A failed or
//! abandoned upload is aborted; one killed outright is never completed, and S3 lists only
//! completed objects. Nothing is overwritten: the key is checked before the upload starts and
//! the final `PutObject` / `CompleteMultipartUpload` carries `If-None-Match: *`, so the server
//! refuses it if the key appeared meanwhile (a server that does not implement conditional
//! writes is detected and then only the first check applies). Each writer records a random
//! token in the metadata, so a retried request that finds "its" object already there, because
//! the first response was lost, is recognised as success and not as a clash. An object that
//! was stored but then fails its check (ETag, stored size) is deleted again, if it still
//! carries the writer's token, so a snapshot reported as failed is never listed.
//!
//! # Retries
//! The SDK's standard retry mode: up to 5 attempts with exponential backoff and jitter on
//! throttling, 5xx responses, timeouts and dropped connections. A download interrupted in
//! the middle resumes with a ranged `GetObject` pinned to the object's ETag.

use super::{ObjectInfo, ObjectMeta, ObjectWriter, Storage, StorageError};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, ServerSideEncryption,
    StorageClass,
};
use bytes::Bytes;
use md5::{Digest, Md5};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

const MIB: u64 = 1 << 20;
/// S3's smallest allowed part (except the last).
const MIN_PART_SIZE: u64 = 5 * MIB;
/// S3's largest allowed part.
const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;
const DEFAULT_PART_SIZE: u64 = 8 * MIB;
/// S3 allows 10,000 parts; parts are sized for 9,000 to leave room for an estimate that is
/// slightly off.
const PLANNED_PARTS: u64 = 9_000;
const MAX_PARTS: i32 = 10_000;
/// Parts uploading at once: memory is about `(PARTS_IN_FLIGHT + 1) × part size`.
pub const PARTS_IN_FLIGHT: usize = 4;
const MAX_ATTEMPTS: u32 = 5;
const DELETE_BATCH: usize = 1000;
const DOWNLOAD_RESUMES: u32 = 5;
const META_SHA256: &str = "sqlbak-sha256";
const META_SIZE: &str = "sqlbak-size";
const META_WRITER: &str = "sqlbak-writer";
const QUERY_KEYS: &[&str] = &[
    "endpoint",
    "region",
    "path_style",
    "storage_class",
    "sse",
    "sse_kms_key_id",
    "part_size",
];

/// What an `s3://` URL says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct S3Location {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix: empty, or ending with `/`.
    pub prefix: String,
    /// Custom endpoint (`http(s)://host[:port]`), for S3-compatible stores.
    pub endpoint: Option<String>,
    /// Region; from the AWS chain when absent.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`); default: on with a custom endpoint.
    pub path_style: Option<bool>,
    /// Storage class of new objects.
    pub storage_class: Option<StorageClass>,
    /// Server-side encryption of new objects.
    pub sse: Option<ServerSideEncryption>,
    /// KMS key for `sse=aws:kms`; the bucket's default key when absent.
    pub sse_kms_key_id: Option<String>,
    /// Multipart part size in bytes (grown for very large images).
    pub part_size: Option<u64>,
}

impl S3Location {
    /// Parses `s3://bucket[/prefix][?key=value&...]`; the error says what to fix.
    pub fn parse(url: &str) -> Result<S3Location, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or("an S3 destination starts with s3://")?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err("the bucket name is missing: use s3://BUCKET/PREFIX".into());
        }
        if bucket.len() > 255
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(format!(
                "{bucket:?} is not a valid bucket name (letters, digits, '.', '-')"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty()
            && !prefix
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
        {
            return Err(format!(
                "the prefix {prefix:?} has an empty, '.' or '..' component"
            ));
        }
        let mut loc = S3Location {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            ..S3Location::default()
        };
        let mut seen: Vec<&str> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, raw) = pair.split_once('=').unwrap_or((pair, ""));
            if seen.contains(&k) {
                return Err(format!("the query key {k:?} is given twice"));
            }
            seen.push(k);
            let v = percent_decode(raw).ok_or_else(|| format!("bad %-escape in {pair:?}"))?;
            if v.is_empty() {
                return Err(format!("the query key {k:?} needs a value ({k}=...)"));
            }
            match k {
                "endpoint" => {
                    if !(v.starts_with("http://") || v.starts_with("https://")) {
                        return Err(format!("endpoint={v} must start with http:// or https://"));
                    }
                    loc.endpoint = Some(v.trim_end_matches('/').to_string());
                }
                "region" => loc.region = Some(v),
                "path_style" => {
                    loc.path_style = Some(match v.to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" | "on" => true,
                        "false" | "0" | "no" | "off" => false,
                        _ => return Err(format!("path_style={v}: use true or false")),
                    })
                }
                "storage_class" => {
                    let upper = v.to_ascii_uppercase();
                    if !StorageClass::values().contains(&upper.as_str()) {
                        return Err(format!(
                            "storage_class={v} is not one of {}",
                            StorageClass::values().join(", ")
                        ));
                    }
                    loc.storage_class = Some(StorageClass::from(upper.as_str()));
                }
                "sse" => {
                    loc.sse = Some(match v.as_str() {
                        "AES256" => ServerSideEncryption::Aes256,
                        "aws:kms" => ServerSideEncryption::AwsKms,
                        _ => return Err(format!("sse={v}: use AES256 or aws:kms")),
                    })
                }
                "sse_kms_key_id" => loc.sse_kms_key_id = Some(v),
                "part_size" => {
                    let size = crate::config::parse_size(&v).ok_or_else(|| {
                        format!("part_size={v}: use a size such as 8MiB or 16777216")
                    })?;
                    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&size) {
                        return Err(format!("part_size={v}: S3 parts are between 5MiB and 5GiB"));
                    }
                    loc.part_size = Some(size);
                }
                _ => {
                    return Err(format!(
                        "unknown query key {k:?}; known keys: {}",
                        QUERY_KEYS.join(", ")
                    ));
                }
            }
        }
        if loc.sse_kms_key_id.is_some() && loc.sse != Some(ServerSideEncryption::AwsKms) {
            return Err("sse_kms_key_id needs sse=aws:kms".into());
        }
        Ok(loc)
    }

    /// The destination as shown in messages, without the query.
    pub fn display(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix.trim_end_matches('/'))
            .trim_end_matches('/')
            .to_string()
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The part size for an image of `image_size` bytes: at least `configured`, and large
/// enough that the compressed object (never much larger than the image, even when the data
/// does not compress) fits in [`PLANNED_PARTS`] parts.
pub fn part_size_for(image_size: u64, configured: u64) -> u64 {
    let worst_case = image_size
        .saturating_add(image_size / 100)
        .saturating_add(MIB);
    configured
        .max(worst_case.div_ceil(PLANNED_PARTS))
        .next_multiple_of(MIB)
        .clamp(MIN_PART_SIZE, MAX_PART_SIZE)
}

/// Where requests go, for error messages.
#[derive(Debug)]
struct Target {
    bucket: String,
    prefix: String,
    url: String,
    endpoint: String,
    region: String,
}

/// What went wrong with a request, once the SDK gave up retrying.
enum Failure {
    NotFound,
    Precondition,
    NotImplemented,
    Other(StorageError),
}

impl Target {
    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Turns an SDK error into one that says what happened and what to do. `what` is what
    /// was being done, e.g. "upload app/app-….sqlite3.gz".
    fn fail<E>(&self, what: &str, err: &SdkError<E, HttpResponse>) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        StorageError::Remote {
            context: format!("cannot {what} in {}", self.url),
            reason: self.reason(err),
        }
    }

    fn classify<E>(&self, what: &str, err: &SdkError<E, HttpResponse>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        match (err.code(), status) {
            (Some("NoSuchKey" | "NotFound" | "NoSuchUpload"), _) | (None, Some(404)) => {
                Failure::NotFound
            }
            (Some("PreconditionFailed" | "ConditionalRequestConflict"), _)
            | (None, Some(412 | 409)) => Failure::Precondition,
            (Some("NotImplemented"), _) | (None, Some(501)) => Failure::NotImplemented,
            _ => Failure::Other(self.fail(what, err)),
        }
    }

    fn reason<E>(&self, err: &SdkError<E, HttpResponse>) -> String
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let detail = error_chain(err);
        let (endpoint, bucket) = (&self.endpoint, &self.bucket);
        match err {
            SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => {
                return format!(
                    "cannot connect to {endpoint} ({MAX_ATTEMPTS} attempts): {detail}; check the \
endpoint (endpoint= in the URL or AWS_ENDPOINT_URL), the network and any firewall"
                );
            }
            SdkError::DispatchFailure(_) if detail.contains("credential") => {
                return format!(
                    "no usable AWS credentials: {detail}; set AWS_ACCESS_KEY_ID and \
AWS_SECRET_ACCESS_KEY, choose a profile with AWS_PROFILE, or run where an instance or \
container role is available"
                );
            }
            SdkError::DispatchFailure(_) => {
                return format!("the request to {endpoint} could not be sent: {detail}");
            }
            SdkError::TimeoutError(_) => {
                return format!(
                    "{endpoint} did not answer in time ({MAX_ATTEMPTS} attempts); check the \
network, or retry later"
                );
            }
            SdkError::ConstructionFailure(_) => {
                return format!("cannot build the request: {detail}");
            }
            SdkError::ResponseError(_) => {
                return format!(
                    "the answer from {endpoint} is not an S3 response ({detail}); check that \
the endpoint is an S3-compatible server"
                );
            }
            _ => {}
        }
        let response = err.raw_response();
        let status = response.map_or(0, |r| r.status().as_u16());
        let header = |name: &str| response.and_then(|r| r.headers().get(name));
        let code = err.code().unwrap_or("");
        let message = err.message().unwrap_or("");
        let said = if code.is_empty() {
            format!("HTTP {status}")
        } else if message.is_empty() {
            format!("{code}, HTTP {status}")
        } else {
            format!("{code}: {message}, HTTP {status}")
        };
        let moved = status == 301 || status == 400 || code == "PermanentRedirect";
        if let Some(actual) = header("x-amz-bucket-region").filter(|r| moved && *r != self.region) {
            return format!(
                "bucket {bucket} is in region {actual}, not {} ({said}); add region={actual} to \
the URL or set AWS_REGION={actual}",
                self.region
            );
        }
        match code {
            "NoSuchBucket" => format!(
                "bucket {bucket} does not exist at {endpoint} ({said}); create it first, or \
correct the bucket name in the destination"
            ),
            "AccessDenied" | "AllAccessDisabled" | "AccountProblem" => format!(
                "access denied ({said}); the credentials in use lack permission for this on \
bucket {bucket} (see \"IAM permissions\" in the README), or the bucket belongs to another \
account"
            ),
            "InvalidAccessKeyId" => format!(
                "the server does not know this access key ({said}); check AWS_ACCESS_KEY_ID or \
the profile's credentials, and that they belong to {endpoint}"
            ),
            "SignatureDoesNotMatch" => format!(
                "the request signature was rejected ({said}); the secret key does not belong \
to the access key (check AWS_SECRET_ACCESS_KEY), or something altered the request on the way"
            ),
            "ExpiredToken" | "InvalidToken" | "TokenRefreshRequired" => format!(
                "the session credentials have expired or are invalid ({said}); refresh them \
(for example log in again) and retry"
            ),
            "RequestTimeTooSkewed" => format!(
                "this machine's clock is too far from the server's ({said}); synchronise it \
(for example `timedatectl set-ntp true`) and retry"
            ),
            "AuthorizationHeaderMalformed"
            | "PermanentRedirect"
            | "IllegalLocationConstraintException" => {
                format!(
                    "bucket {bucket} is not in region {} ({said}); set region= in the URL or \
AWS_REGION to the bucket's region",
                    self.region
                )
            }
            "SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => format!(
                "the server kept throttling requests ({said}) through {MAX_ATTEMPTS} attempts; \
retry later"
            ),
            "InvalidObjectState" => format!(
                "the object is in an archive storage class and must be restored before it can \
be read ({said}); restore it in the S3 console or with `aws s3api restore-object`"
            ),
            "BadDigest" | "InvalidDigest" => format!(
                "the server received data that does not match its MD5 ({said}): it was \
damaged on the way; nothing was stored, retry"
            ),
            _ if status == 403 => format!(
                "access denied ({said}); the credentials in use lack permission for this on \
bucket {bucket} (see \"IAM permissions\" in the README)"
            ),
            _ if status >= 500 => format!(
                "the server failed ({said}) on each of {MAX_ATTEMPTS} attempts; retry later"
            ),
            _ if status == 301 || status == 307 => format!(
                "the server redirected the request ({said}); set region= in the URL to the \
bucket's region, or path_style=true for an S3-compatible store"
            ),
            _ => format!("{said}: {detail}"),
        }
    }
}

struct Inner {
    rt: tokio::runtime::Runtime,
    client: Client,
    target: Arc<Target>,
    loc: S3Location,
    /// Cleared when the server turns out not to implement `If-None-Match` on writes.
    conditional: AtomicBool,
}

impl Inner {
    /// `HeadObject` on a full key, waiting for the answer.
    #[allow(clippy::result_large_err)] // the SDK's own error, handed straight to the caller
    fn head_object(
        &self,
        full: &str,
    ) -> Result<
        aws_sdk_s3::operation::head_object::HeadObjectOutput,
        SdkError<aws_sdk_s3::operation::head_object::HeadObjectError, HttpResponse>,
    > {
        self.rt.block_on(
            self.client
                .head_object()
                .bucket(&self.target.bucket)
                .key(full)
                .send(),
        )
    }

    /// `GetObject` on a full key, from byte `from` on when resuming (and then only while
    /// the object still has ETag `if_match`), waiting for the answer's headers.
    #[allow(clippy::result_large_err)] // the SDK's own error, handed straight to the caller
    fn get_object(
        &self,
        full: &str,
        from: Option<u64>,
        if_match: Option<String>,
    ) -> Result<
        aws_sdk_s3::operation::get_object::GetObjectOutput,
        SdkError<aws_sdk_s3::operation::get_object::GetObjectError, HttpResponse>,
    > {
        self.rt.block_on(
            self.client
                .get_object()
                .bucket(&self.target.bucket)
                .key(full)
                .set_range(from.map(|offset| format!("bytes={offset}-")))
                .set_if_match(if_match)
                .send(),
        )
    }
}

/// A bucket (and prefix) on S3 or an S3-compatible store.
pub struct S3Storage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("url", &self.inner.target.url)
            .finish()
    }
}

impl S3Storage {
    /// Opens `url` with credentials and settings from the standard AWS chain.
    pub fn open(url: &str) -> Result<S3Storage, StorageError> {
        Self::build(url, None)
    }

    /// Opens `url` with the given access key instead of the AWS chain; for programs that
    /// manage credentials themselves, and for tests.
    pub fn with_credentials(
        url: &str,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Result<S3Storage, StorageError> {
        let creds = Credentials::new(access_key_id, secret_access_key, None, None, "sqlbak");
        Self::build(url, Some(creds))
    }

    fn build(url: &str, creds: Option<Credentials>) -> Result<S3Storage, StorageError> {
        let loc = S3Location::parse(url)
            .map_err(|why| StorageError::BadDestination(url.to_string(), why))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sqlbak-s3")
            .enable_all()
            .build()
            .map_err(|e| StorageError::io("cannot start the S3 client's threads", e))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(15 * 60))
                    .build(),
            );
        if let Some(region) = &loc.region {
            loader = loader.region(Region::new(region.clone()));
        } else if loc.endpoint.is_some() {
            // S3-compatible stores rarely care about the region; do not ask the instance
            // metadata service for one on a machine that is not in a cloud.
            loader = loader.region(
                aws_config::meta::region::RegionProviderChain::first_try(
                    aws_config::environment::region::EnvironmentVariableRegionProvider::new(),
                )
                .or_else(aws_config::profile::region::ProfileFileRegionProvider::new())
                .or_else(Region::new("us-east-1")),
            );
        }
        if let Some(creds) = creds {
            loader = loader.credentials_provider(creds);
        }
        let sdk = rt.block_on(loader.load());
        let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
            StorageError::BadDestination(
                url.to_string(),
                "no AWS region is configured: add region=... to the URL, or set AWS_REGION \
(or region in the AWS profile)"
                    .into(),
            )
        })?;
        let endpoint = loc
            .endpoint
            .clone()
            .or_else(|| sdk.endpoint_url().map(str::to_string));
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .force_path_style(loc.path_style.unwrap_or(endpoint.is_some()));
        if let Some(e) = &loc.endpoint {
            conf = conf.endpoint_url(e);
        }
        let target = Target {
            bucket: loc.bucket.clone(),
            prefix: loc.prefix.clone(),
            url: loc.display(),
            endpoint: endpoint.unwrap_or_else(|| format!("AWS S3 ({region})")),
            region,
        };
        Ok(S3Storage {
            inner: Arc::new(Inner {
                rt,
                client: Client::from_conf(conf.build()),
                target: Arc::new(target),
                loc,
                conditional: AtomicBool::new(true),
            }),
        })
    }

    fn check_key(&self, key: &str) -> Result<String, StorageError> {
        let ok = !key.is_empty() && key.split('/').all(|c| !c.is_empty() && !c.starts_with('.'));
        if !ok {
            return Err(StorageError::BadDestination(
                key.into(),
                "not a valid object key".into(),
            ));
        }
        Ok(self.inner.target.full_key(key))
    }

    /// The object's user metadata, `None` when it does not exist.
    fn head(&self, key: &str, full: &str) -> Result<Option<HashMap<String, String>>, StorageError> {
        let inner = &self.inner;
        let sent = inner.head_object(full);
        match sent {
            Ok(out) => Ok(Some(out.metadata.unwrap_or_default())),
            Err(e) => match inner.target.classify(&format!("read {key}"), &e) {
                Failure::NotFound => Ok(None),
                Failure::Other(e) => Err(e),
                _ => Err(inner.target.fail(&format!("read {key}"), &e)),
            },
        }
    }
}

impl Storage for S3Storage {
    fn url(&self) -> String {
        self.inner.target.url.clone()
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let inner = &self.inner;
        let t = &inner.target;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = inner
                .rt
                .block_on(
                    inner
                        .client
                        .list_objects_v2()
                        .bucket(&t.bucket)
                        .prefix(t.full_key(prefix))
                        .set_continuation_token(token.take())
                        .send(),
                )
                .map_err(|e| t.fail("list objects", &e))?;
            for obj in page.contents() {
                let Some(key) = obj.key().and_then(|k| k.strip_prefix(&t.prefix)) else {
                    continue;
                };
                out.push(ObjectInfo {
                    key: key.to_string(),
                    size: obj.size().map_or(0, |s| u64::try_from(s).unwrap_or(0)),
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            token = page.next_continuation_token;
            if token.is_none() {
                return Err(StorageError::Remote {
                    context: format!("cannot list objects in {}", t.url),
                    reason: "the server said the listing continues but gave no continuation \
token; it is not S3-compatible enough"
                        .into(),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn create(&self, key: &str, meta: &ObjectMeta) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let full = self.check_key(key)?;
        let t = &self.inner.target;
        // The conditional write at the end is the real guard; this check fails early (before
        // any data is sent) and is the only guard on a server without conditional writes.
        match self.head(key, &full) {
            Ok(Some(_)) => {
                return Err(StorageError::AlreadyExists {
                    dest: t.url.clone(),
                    key: key.into(),
                });
            }
            Ok(None) => {}
            // Without s3:GetObject the check cannot be made; the conditional write remains.
            Err(StorageError::Remote { reason, .. }) if reason.starts_with("access denied") => {
                tracing::debug!("cannot check whether {key} exists: {reason}");
            }
            Err(e) => return Err(e),
        }
        let mut metadata = HashMap::new();
        metadata.insert(META_SIZE.to_string(), meta.image_size.to_string());
        if let Some(sha) = &meta.image_sha256 {
            metadata.insert(META_SHA256.to_string(), sha.clone());
        }
        let token = writer_token();
        metadata.insert(META_WRITER.to_string(), token.clone());
        let part_size = part_size_for(
            meta.image_size,
            self.inner.loc.part_size.unwrap_or(DEFAULT_PART_SIZE),
        ) as usize;
        Ok(Box::new(S3Writer {
            inner: self.inner.clone(),
            key: key.to_string(),
            full,
            metadata,
            token,
            part_size,
            buf: Vec::new(),
            upload: None,
            failed: None,
            written: 0,
        }))
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        let full = self.check_key(key)?;
        let inner = &self.inner;
        let got = inner.get_object(&full, None, None);
        let out = match got {
            Ok(out) => out,
            Err(e) => {
                return Err(match inner.target.classify(&format!("read {key}"), &e) {
                    Failure::NotFound => StorageError::NotFound {
                        dest: inner.target.url.clone(),
                        key: key.into(),
                    },
                    Failure::Other(e) => e,
                    _ => inner.target.fail(&format!("read {key}"), &e),
                });
            }
        };
        Ok(Box::new(S3Reader {
            inner: inner.clone(),
            key: key.to_string(),
            full,
            etag: out.e_tag,
            size: out.content_length.and_then(|n| u64::try_from(n).ok()),
            body: out.body,
            pending: Bytes::new(),
            offset: 0,
            resumes: 0,
        }))
    }

    fn delete(&self, keys: &[String]) -> Vec<(String, StorageError)> {
        let inner = &self.inner;
        let t = &inner.target;
        let mut failed = Vec::new();
        let mut valid = Vec::new();
        for key in keys {
            match self.check_key(key) {
                Ok(full) => valid.push((key.clone(), full)),
                Err(e) => failed.push((key.clone(), e)),
            }
        }
        for batch in valid.chunks(DELETE_BATCH) {
            let objects: Result<Vec<ObjectIdentifier>, _> = batch
                .iter()
                .map(|(_, full)| ObjectIdentifier::builder().key(full).build())
                .collect();
            let delete =
                objects.and_then(|o| Delete::builder().set_objects(Some(o)).quiet(true).build());
            let delete = match delete {
                Ok(d) => d,
                Err(e) => {
                    for (key, _) in batch {
                        failed.push((
                            key.clone(),
                            StorageError::Remote {
                                context: format!("cannot delete {key} in {}", t.url),
                                reason: e.to_string(),
                            },
                        ));
                    }
                    continue;
                }
            };
            let sent = inner.rt.block_on(
                inner
                    .client
                    .delete_objects()
                    .bucket(&t.bucket)
                    .delete(delete)
                    .customize()
                    .mutate_request(add_content_md5)
                    .send(),
            );
            match sent {
                Ok(out) => {
                    for err in out.errors() {
                        let full = err.key().unwrap_or_default();
                        let key = full.strip_prefix(&t.prefix).unwrap_or(full).to_string();
                        failed.push((
                            key.clone(),
                            StorageError::Remote {
                                context: format!("cannot delete {key} in {}", t.url),
                                reason: format!(
                                    "{}: {}",
                                    err.code().unwrap_or("error"),
                                    err.message().unwrap_or("no message")
                                ),
                            },
                        ));
                    }
                }
                Err(e) => {
                    let reason = t.reason(&e);
                    for (key, _) in batch {
                        failed.push((
                            key.clone(),
                            StorageError::Remote {
                                context: format!("cannot delete {key} in {}", t.url),
                                reason: reason.clone(),
                            },
                        ));
                    }
                }
            }
        }
        failed
    }

    fn image_meta(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        let full = self.check_key(key)?;
        let Some(meta) = self.head(key, &full)? else {
            return Err(StorageError::NotFound {
                dest: self.url(),
                key: key.into(),
            });
        };
        let Some(size) = meta.get(META_SIZE) else {
            return Ok(None);
        };
        let size = size.parse().map_err(|_| StorageError::Remote {
            context: format!("cannot read the metadata of {key} in {}", self.url()),
            reason: format!("x-amz-meta-{META_SIZE} is {size:?}, not a number"),
        })?;
        Ok(Some(ObjectMeta {
            image_size: size,
            image_sha256: meta.get(META_SHA256).map(|s| s.to_ascii_lowercase()),
        }))
    }
}

/// An error and its causes, `a: b: c`, each said once (the SDK's own summaries such as
/// "dispatch failure" are left out: the message around it says what failed).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        let generic = matches!(
            text.as_str(),
            "dispatch failure" | "service error" | "response error" | "other" | "io error"
        );
        if !generic && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

/// Adds `Content-MD5` to a request whose body is in memory.
fn add_content_md5(req: &mut aws_sdk_s3::config::http::HttpRequest) {
    if let Some(body) = req.body().bytes() {
        let (b64, _) = md5_of(body);
        req.headers_mut().insert("content-md5", b64);
    }
}

/// Base64 (for `Content-MD5`) and hex (to compare with an ETag) of a buffer's MD5.
fn md5_of(data: &[u8]) -> (String, String) {
    let digest = Md5::digest(data);
    (
        aws_smithy_types::base64::encode(digest),
        crate::codec::hex(&digest),
    )
}

/// An ETag that is a plain MD5 must be the MD5 that was sent: the server stored other bytes
/// otherwise. SSE-KMS objects have other ETags, so they are not compared.
fn check_etag(
    etag: Option<&str>,
    md5_hex: &str,
    sse: Option<&ServerSideEncryption>,
    what: &str,
) -> Result<(), String> {
    let Some(etag) = etag.map(|e| e.trim_matches('"')) else {
        return Err(format!("the server returned no ETag for {what}"));
    };
    let plain = etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit());
    let kms = matches!(
        sse,
        Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
    );
    if plain && !kms && !etag.eq_ignore_ascii_case(md5_hex) {
        return Err(format!(
            "the server stored {what} with MD5 {etag}, but the data sent has MD5 {md5_hex}: it \
was damaged on the way"
        ));
    }
    Ok(())
}

/// What became of an object that failed its check after it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// It carried this writer's token and was deleted.
    Removed,
    /// Nothing is under the key.
    Absent,
    /// The object under the key carries another token (or none): not ours to delete.
    NotOurs,
}

/// The reason given for an upload that failed its check after the write: the check's
/// `reason`, then what became of the object at `location`, so the user knows whether a
/// snapshot reported as failed is still there and what to do about it.
fn unverified_reason(reason: &str, outcome: &Result<Removal, String>, location: &str) -> String {
    match outcome {
        Ok(Removal::Removed) => {
            format!("{reason}. The object was removed again, so nothing is stored; retry")
        }
        Ok(Removal::Absent) => format!("{reason}. No object is left under the key; retry"),
        Ok(Removal::NotOurs) => format!(
            "{reason}. The object now at {location} was not written by this run, so it was \
left in place; check it, and delete it if it is not a good snapshot"
        ),
        Err(why) => format!(
            "{reason}. Removing the object failed: {why}. Delete {location} yourself (it is \
listed as a snapshot but failed the check), then retry"
        ),
    }
}

fn writer_token() -> String {
    use std::hash::BuildHasher;
    let seed = (
        std::process::id(),
        std::time::SystemTime::now(),
        std::thread::current().id(),
    );
    let a = std::collections::hash_map::RandomState::new().hash_one(seed);
    let b = std::collections::hash_map::RandomState::new().hash_one(a);
    format!("{a:016x}{b:016x}")
}

struct Multipart {
    upload_id: String,
    next_part: i32,
    in_flight: VecDeque<JoinHandle<Result<CompletedPart, StorageError>>>,
    done: Vec<CompletedPart>,
}

struct S3Writer {
    inner: Arc<Inner>,
    key: String,
    full: String,
    metadata: HashMap<String, String>,
    token: String,
    part_size: usize,
    buf: Vec<u8>,
    upload: Option<Multipart>,
    failed: Option<String>,
    written: u64,
}

impl S3Writer {
    fn fail<E>(&self, doing: &str, err: &SdkError<E, HttpResponse>) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        self.inner
            .target
            .fail(&format!("{doing} {}", self.key), err)
    }

    fn content_type(&self) -> &'static str {
        if self.key.ends_with(".gz") {
            "application/gzip"
        } else {
            "application/octet-stream"
        }
    }

    /// Sends the full buffer as the next part, starting the multipart upload if needed and
    /// waiting while [`PARTS_IN_FLIGHT`] parts are already uploading.
    fn ship_part(&mut self) -> Result<(), StorageError> {
        if self.upload.is_none() {
            let upload_id = self.start_multipart()?;
            self.upload = Some(Multipart {
                upload_id,
                next_part: 1,
                in_flight: VecDeque::new(),
                done: Vec::new(),
            });
        }
        self.reap(PARTS_IN_FLIGHT - 1)?;
        let inner = self.inner.clone();
        let Some(up) = self.upload.as_mut() else {
            return Ok(());
        };
        let number = up.next_part;
        if number > MAX_PARTS {
            return Err(StorageError::Remote {
                context: format!("cannot upload {} to {}", self.key, inner.target.url),
                reason: format!("the object needs more than {MAX_PARTS} parts; this is a bug"),
            });
        }
        up.next_part += 1;
        let data = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(self.part_size),
        ));
        let task = upload_part(
            inner.client.clone(),
            inner.target.clone(),
            self.key.clone(),
            self.full.clone(),
            up.upload_id.clone(),
            number,
            data,
        );
        up.in_flight.push_back(inner.rt.spawn(task));
        Ok(())
    }

    /// Collects finished parts, waiting for the oldest ones until at most `keep` are left.
    fn reap(&mut self, keep: usize) -> Result<(), StorageError> {
        let inner = self.inner.clone();
        let Some(up) = self.upload.as_mut() else {
            return Ok(());
        };
        while let Some(front) = up.in_flight.front() {
            if up.in_flight.len() <= keep && !front.is_finished() {
                break;
            }
            let Some(handle) = up.in_flight.pop_front() else {
                break;
            };
            let part = inner
                .rt
                .block_on(handle)
                .map_err(|e| StorageError::Remote {
                    context: format!("cannot upload {} to {}", self.key, inner.target.url),
                    reason: format!("the upload task failed: {e}"),
                })??;
            up.done.push(part);
        }
        Ok(())
    }

    fn start_multipart(&self) -> Result<String, StorageError> {
        let inner = &self.inner;
        let loc = &inner.loc;
        let out = inner
            .rt
            .block_on(
                inner
                    .client
                    .create_multipart_upload()
                    .bucket(&inner.target.bucket)
                    .key(&self.full)
                    .content_type(self.content_type())
                    .set_metadata(Some(self.metadata.clone()))
                    .set_storage_class(loc.storage_class.clone())
                    .set_server_side_encryption(loc.sse.clone())
                    .set_ssekms_key_id(loc.sse_kms_key_id.clone())
                    .send(),
            )
            .map_err(|e| self.fail("start uploading", &e))?;
        out.upload_id.ok_or_else(|| StorageError::Remote {
            context: format!("cannot upload {} to {}", self.key, inner.target.url),
            reason: "the server started a multipart upload but returned no upload id".into(),
        })
    }

    /// Whether the object now under the key is the one this writer made (a retried request
    /// whose first attempt succeeded but whose answer was lost).
    fn is_ours(&self) -> bool {
        let inner = &self.inner;
        let head = inner.head_object(&self.full);
        head.ok()
            .and_then(|h| h.metadata)
            .and_then(|m| m.get(META_WRITER).cloned())
            .is_some_and(|t| t == self.token)
    }

    fn exists_error(&self) -> StorageError {
        StorageError::AlreadyExists {
            dest: self.inner.target.url.clone(),
            key: self.key.clone(),
        }
    }

    fn put_single(&mut self) -> Result<(), StorageError> {
        let data = Bytes::from(std::mem::take(&mut self.buf));
        let (b64, hex) = md5_of(&data);
        loop {
            let inner = &self.inner;
            let loc = &inner.loc;
            let conditional = inner.conditional.load(Ordering::Relaxed);
            let mut req = inner
                .client
                .put_object()
                .bucket(&inner.target.bucket)
                .key(&self.full)
                .body(ByteStream::from(data.clone()))
                .content_md5(&b64)
                .content_type(self.content_type())
                .set_metadata(Some(self.metadata.clone()))
                .set_storage_class(loc.storage_class.clone())
                .set_server_side_encryption(loc.sse.clone())
                .set_ssekms_key_id(loc.sse_kms_key_id.clone());
            if conditional {
                req = req.if_none_match("*");
            }
            match inner.rt.block_on(req.send()) {
                Ok(out) => {
                    return check_etag(out.e_tag(), &hex, out.server_side_encryption(), &self.key)
                        .map_err(|reason| self.remove_unverified(reason));
                }
                Err(e) => match inner.target.classify("upload", &e) {
                    Failure::Precondition if self.is_ours() => return Ok(()),
                    Failure::Precondition => return Err(self.exists_error()),
                    Failure::NotImplemented if conditional => self.no_conditional_writes(),
                    _ => return Err(self.fail("upload", &e)),
                },
            }
        }
    }

    fn no_conditional_writes(&self) {
        tracing::warn!(
            "{} does not implement conditional writes (If-None-Match); relying on the check \
made before the upload to never overwrite a snapshot",
            self.inner.target.endpoint
        );
        self.inner.conditional.store(false, Ordering::Relaxed);
    }

    fn complete(&mut self) -> Result<(), StorageError> {
        if !self.buf.is_empty() {
            self.ship_part()?;
        }
        self.reap(0)?;
        let inner = self.inner.clone();
        let Some(up) = self.upload.as_mut() else {
            return Ok(());
        };
        up.done.sort_by_key(|p| p.part_number);
        let parts = CompletedMultipartUpload::builder()
            .set_parts(Some(up.done.clone()))
            .build();
        let upload_id = up.upload_id.clone();
        loop {
            let conditional = inner.conditional.load(Ordering::Relaxed);
            let mut req = inner
                .client
                .complete_multipart_upload()
                .bucket(&inner.target.bucket)
                .key(&self.full)
                .upload_id(&upload_id)
                .multipart_upload(parts.clone());
            if conditional {
                req = req.if_none_match("*");
            }
            match inner.rt.block_on(req.send()) {
                Ok(_) => break,
                Err(e) => match inner.target.classify("finish uploading", &e) {
                    // A retry after a lost answer finds the upload completed: by us.
                    Failure::Precondition | Failure::NotFound if self.is_ours() => break,
                    Failure::Precondition => return Err(self.exists_error()),
                    Failure::NotImplemented if conditional => self.no_conditional_writes(),
                    _ => return Err(self.fail("finish uploading", &e)),
                },
            }
        }
        // Completed: nothing to abort any more.
        self.upload = None;
        let head = inner.head_object(&self.full);
        let head = match head {
            Ok(head) => head,
            Err(e) => {
                let reason = format!(
                    "the upload completed, but checking the stored object failed: {}",
                    inner.target.reason(&e)
                );
                return Err(self.remove_unverified(reason));
            }
        };
        let stored = head.content_length.and_then(|n| u64::try_from(n).ok());
        if stored != Some(self.written) {
            return Err(self.remove_unverified(format!(
                "the server stored {} bytes, but {} were sent",
                stored.map_or("an unknown number of".into(), |n| n.to_string()),
                self.written
            )));
        }
        Ok(())
    }

    /// The error for an object that was written but failed the check after the write
    /// (`reason`), after removing that object so that a snapshot reported as failed is
    /// never listed. Only an object whose metadata carries this writer's token is removed:
    /// the key may hold another writer's object by now. The error says what became of it.
    fn remove_unverified(&self, reason: String) -> StorageError {
        let inner = &self.inner;
        let location = format!("s3://{}/{}", inner.target.bucket, self.full);
        let outcome = self.delete_if_ours();
        StorageError::Remote {
            context: format!("cannot upload {} to {}", self.key, inner.target.url),
            reason: unverified_reason(&reason, &outcome, &location),
        }
    }

    /// Deletes the object under the key if this writer made it. Between the HEAD and the
    /// delete only a writer that ignores `If-None-Match` could replace it.
    fn delete_if_ours(&self) -> Result<Removal, String> {
        let inner = &self.inner;
        let head = inner.head_object(&self.full);
        let head = match head {
            Ok(head) => head,
            Err(e) => {
                return match inner.target.classify("read", &e) {
                    Failure::NotFound => Ok(Removal::Absent),
                    _ => Err(format!(
                        "cannot tell whose it is: {}",
                        inner.target.reason(&e)
                    )),
                };
            }
        };
        let token = head.metadata().and_then(|m| m.get(META_WRITER));
        if token != Some(&self.token) {
            return Ok(Removal::NotOurs);
        }
        inner
            .rt
            .block_on(
                inner
                    .client
                    .delete_object()
                    .bucket(&inner.target.bucket)
                    .key(&self.full)
                    .send(),
            )
            .map_err(|e| inner.target.reason(&e))?;
        Ok(Removal::Removed)
    }
}

async fn upload_part(
    client: Client,
    target: Arc<Target>,
    key: String,
    full: String,
    upload_id: String,
    number: i32,
    data: Bytes,
) -> Result<CompletedPart, StorageError> {
    let (b64, hex) = md5_of(&data);
    let what = format!("part {number} of {key}");
    let out = client
        .upload_part()
        .bucket(&target.bucket)
        .key(&full)
        .upload_id(upload_id)
        .part_number(number)
        .content_md5(b64)
        .body(ByteStream::from(data))
        .customize()
        .disable_payload_signing()
        .send()
        .await
        .map_err(|e| target.fail(&format!("upload {what}"), &e))?;
    check_etag(out.e_tag(), &hex, out.server_side_encryption(), &what).map_err(|reason| {
        StorageError::Remote {
            context: format!("cannot upload {key} to {}", target.url),
            reason,
        }
    })?;
    Ok(CompletedPart::builder()
        .part_number(number)
        .set_e_tag(out.e_tag)
        .build())
}

impl Write for S3Writer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(why) = &self.failed {
            return Err(io::Error::other(why.clone()));
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.part_size);
        }
        let n = data.len().min(self.part_size - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.written += n as u64;
        if self.buf.len() == self.part_size
            && let Err(e) = self.ship_part()
        {
            self.failed = Some(e.to_string());
            return Err(io::Error::other(e));
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn commit(mut self: Box<Self>) -> Result<(), StorageError> {
        if let Some(why) = self.failed.take() {
            return Err(StorageError::Remote {
                context: format!("cannot upload {} to {}", self.key, self.inner.target.url),
                reason: why,
            });
        }
        if self.upload.is_none() {
            self.put_single()
        } else {
            self.complete()
        }
    }
}

impl Drop for S3Writer {
    /// An upload that was not completed is aborted, so its parts do not linger.
    fn drop(&mut self) {
        let Some(up) = self.upload.take() else {
            return;
        };
        let inner = self.inner.clone();
        let Multipart {
            upload_id,
            in_flight,
            ..
        } = up;
        for task in &in_flight {
            task.abort();
        }
        let abort = inner
            .client
            .abort_multipart_upload()
            .bucket(&inner.target.bucket)
            .key(&self.full)
            .upload_id(&upload_id);
        let result = inner.rt.block_on(async move {
            for task in in_flight {
                let _ = task.await;
            }
            tokio::time::timeout(Duration::from_secs(60), abort.send()).await
        });
        match result {
            Ok(Ok(_)) => tracing::debug!("aborted the unfinished upload of {}", self.key),
            Ok(Err(e)) => tracing::warn!(
                "cannot abort the unfinished multipart upload {} of {}: {}; it is not a \
snapshot, but its parts use space until it is aborted (a lifecycle rule with \
AbortIncompleteMultipartUpload does that)",
                upload_id,
                self.key,
                inner.target.reason(&e)
            ),
            Err(_) => tracing::warn!(
                "timed out aborting the unfinished multipart upload {} of {}; a lifecycle rule \
with AbortIncompleteMultipartUpload removes its parts",
                upload_id,
                self.key
            ),
        }
    }
}

struct S3Reader {
    inner: Arc<Inner>,
    key: String,
    full: String,
    etag: Option<String>,
    size: Option<u64>,
    body: ByteStream,
    pending: Bytes,
    offset: u64,
    resumes: u32,
}

impl S3Reader {
    /// Continues an interrupted download from where it stopped, from the same object.
    fn resume(&mut self, why: String) -> io::Result<()> {
        let fail = |why: String| {
            io::Error::other(format!(
                "reading {} from {} stopped at byte {}: {why}",
                self.key, self.inner.target.url, self.offset
            ))
        };
        if self.resumes >= DOWNLOAD_RESUMES {
            return Err(fail(format!("{why} ({DOWNLOAD_RESUMES} resumes)")));
        }
        self.resumes += 1;
        tracing::warn!(
            "reading {} stopped at byte {} ({why}); resuming",
            self.key,
            self.offset
        );
        let inner = &self.inner;
        let got = inner.get_object(&self.full, Some(self.offset), self.etag.clone());
        match got {
            Ok(out) => {
                self.body = out.body;
                Ok(())
            }
            Err(e) => Err(fail(inner.target.reason(&e))),
        }
    }
}

impl Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.pending.is_empty() {
                let n = buf.len().min(self.pending.len());
                buf[..n].copy_from_slice(&self.pending[..n]);
                self.pending = self.pending.slice(n..);
                self.offset += n as u64;
                return Ok(n);
            }
            if buf.is_empty() {
                return Ok(0);
            }
            match self.inner.rt.block_on(self.body.try_next()) {
                Ok(Some(chunk)) => self.pending = chunk,
                Ok(None) => match self.size {
                    Some(size) if self.offset < size => {
                        self.resume(format!("the response ended early ({size} bytes expected)"))?
                    }
                    _ => return Ok(0),
                },
                Err(e) => self.resume(error_chain(&e))?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let l = S3Location::parse("s3://bkt").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("bkt", ""));
        assert_eq!(l.display(), "s3://bkt");
        let l = S3Location::parse("s3://bkt/").unwrap();
        assert_eq!(l.prefix, "");
        let l = S3Location::parse("s3://bkt/prod/db/").unwrap();
        assert_eq!(l.prefix, "prod/db/");
        assert_eq!(l.display(), "s3://bkt/prod/db");
        let l = S3Location::parse(
            "s3://bkt/p?endpoint=http://127.0.0.1:9000/&region=eu-west-1&path_style=false\
&storage_class=standard_ia&sse=aws:kms&sse_kms_key_id=arn%3Aaws%3Akms%3Ax&part_size=16MiB",
        )
        .unwrap();
        assert_eq!(l.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(l.region.as_deref(), Some("eu-west-1"));
        assert_eq!(l.path_style, Some(false));
        assert_eq!(l.storage_class, Some(StorageClass::StandardIa));
        assert_eq!(l.sse, Some(ServerSideEncryption::AwsKms));
        assert_eq!(l.sse_kms_key_id.as_deref(), Some("arn:aws:kms:x"));
        assert_eq!(l.part_size, Some(16 * MIB));
        for (bad, says) in [
            ("s3://", "bucket name is missing"),
            ("s3:///p", "bucket name is missing"),
            ("s3://b k/p", "not a valid bucket"),
            ("s3://bkt/a//b", "empty"),
            ("s3://bkt/a/../b", "'..'"),
            ("s3://bkt?colour=red", "unknown query key \"colour\""),
            ("s3://bkt?region=a&region=b", "twice"),
            ("s3://bkt?region=", "needs a value"),
            ("s3://bkt?endpoint=127.0.0.1:9000", "http://"),
            ("s3://bkt?path_style=maybe", "true or false"),
            ("s3://bkt?storage_class=COLD", "not one of"),
            ("s3://bkt?sse=rot13", "AES256 or aws:kms"),
            ("s3://bkt?sse_kms_key_id=k", "needs sse=aws:kms"),
            ("s3://bkt?part_size=1MiB", "between 5MiB and 5GiB"),
            ("s3://bkt?part_size=lots", "8MiB"),
            ("s3://bkt?region=%zz", "%-escape"),
        ] {
            let err = S3Location::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn sizes() {}

    #[test]
    fn part_sizes_never_need_more_than_10000_parts() {
        assert_eq!(part_size_for(0, DEFAULT_PART_SIZE), DEFAULT_PART_SIZE);
        assert_eq!(part_size_for(1 << 30, DEFAULT_PART_SIZE), DEFAULT_PART_SIZE);
        assert_eq!(part_size_for(1 << 30, 5 * MIB), 5 * MIB);
        for image in [
            70 << 30,
            100 << 30,
            1 << 40,
            5 << 40,
            u64::MAX / 2,
            u64::MAX,
        ] {
            let part = part_size_for(image, DEFAULT_PART_SIZE);
            assert!((DEFAULT_PART_SIZE..=MAX_PART_SIZE).contains(&part));
            assert_eq!(part % MIB, 0);
            // Incompressible data grows by well under 1%.
            let object = image.saturating_add(image / 200);
            if part < MAX_PART_SIZE {
                assert!(object.div_ceil(part) <= PLANNED_PARTS, "{image}: {part}");
            }
        }
    }

    #[test]
    fn a_check_failed_after_the_write_says_what_became_of_the_object() {
        let at = "s3://bkt/p/app/app-20240101T000000Z.sqlite3.gz";
        let said = |outcome| unverified_reason("the server stored 1 bytes", &outcome, at);
        let removed = said(Ok(Removal::Removed));
        assert!(
            removed.starts_with("the server stored 1 bytes. The object was removed"),
            "{removed}"
        );
        assert!(said(Ok(Removal::Absent)).contains("No object is left"));
        let foreign = said(Ok(Removal::NotOurs));
        assert!(
            foreign.contains(at) && foreign.contains("not written by this run"),
            "{foreign}"
        );
        let failed = said(Err("access denied".into()));
        assert!(
            failed.contains("Removing the object failed: access denied.")
                && failed.contains(&format!("Delete {at} yourself")),
            "{failed}"
        );
    }

    #[test]
    fn etags() {
        let (_, hex) = md5_of(b"hello");
        assert_eq!(hex, "5d41402abc4b2a76b9719d911017c592");
        assert!(
            check_etag(
                Some("\"5d41402abc4b2a76b9719d911017c592\""),
                &hex,
                None,
                "x"
            )
            .is_ok()
        );
        let err = check_etag(
            Some("\"00000000000000000000000000000000\""),
            &hex,
            None,
            "x",
        )
        .unwrap_err();
        assert!(err.contains("damaged"), "{err}");
        // Not comparable: multipart-style, KMS-encrypted, missing.
        assert!(check_etag(Some("\"abc-2\""), &hex, None, "x").is_ok());
        let kms = ServerSideEncryption::AwsKms;
        assert!(
            check_etag(
                Some("00000000000000000000000000000000"),
                &hex,
                Some(&kms),
                "x"
            )
            .is_ok()
        );
        assert!(check_etag(None, &hex, None, "x").is_err());
    }
}
