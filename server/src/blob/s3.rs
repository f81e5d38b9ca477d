//! The blob store on an S3-compatible object store (AWS S3, MinIO, Ceph, …), which several
//! nodes share: `--blob-store s3 --s3-bucket NAME [--s3-endpoint URL] [--s3-region R]`, with
//! the credentials in `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
//!
//! Built on the `object_store` crate (only its `aws` feature; its 0.13 line runs on the reqwest,
//! rustls and ring already in the tree). A put of up to [`SINGLE_PUT_BYTES`] is one `PutObject`
//! from memory; a larger one (a finished blob being joined) is a multipart upload in
//! [`MULTIPART_CHUNK`] parts, at most [`MULTIPART_CONCURRENCY`] in flight, so memory stays
//! bounded whatever the object's size. S3 makes both appear whole or not at all. A multipart
//! upload whose source fails is aborted; one the process did not live to abort is left to the
//! bucket's lifecycle rule (`AbortIncompleteMultipartUpload`), which a deployment should set.
//! A rename is a server-side copy and a delete.
//!
//! With an `http://` endpoint plain HTTP is allowed (a store on loopback or a private network);
//! otherwise TLS. Requests use path-style addressing (`endpoint/bucket/key`), which every
//! S3-compatible server accepts.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig, WriteMultipart,
};

use super::{check_key, BlobError, BlobStore, ByteStream, ObjectMeta};
use crate::config::Config;

/// Largest object sent as one `PutObject` (held in memory while it is sent).
pub const SINGLE_PUT_BYTES: usize = 8 * 1024 * 1024;
/// Part size of a multipart upload (S3's smallest is 5 MiB).
pub const MULTIPART_CHUNK: usize = 8 * 1024 * 1024;
/// Parts of one multipart upload in flight at once.
pub const MULTIPART_CONCURRENCY: usize = 2;

/// How to reach the bucket.
#[derive(Clone)]
pub struct S3Settings {
    /// The service's URL (`http://127.0.0.1:9000`); `None`: AWS itself, by region.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Settings {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl S3Settings {
    /// The settings of `--s3-*` and the AWS credential variables.
    pub fn from_config(config: &Config) -> Result<Self, BlobError> {
        let missing = |what: &str| BlobError::Backend(format!("--blob-store s3 needs {what}"));
        Ok(S3Settings {
            endpoint: config.s3_endpoint.clone().filter(|e| !e.is_empty()),
            bucket: config
                .s3_bucket
                .clone()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| missing("--s3-bucket"))?,
            region: config.s3_region.clone(),
            access_key_id: config
                .s3_access_key_id
                .clone()
                .ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?,
            secret_access_key: config
                .s3_secret_access_key
                .as_ref()
                .map(|s| s.expose().to_owned())
                .ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?,
        })
    }
}

/// Blobs as objects of one S3 bucket.
pub struct S3BlobStore {
    s3: AmazonS3,
    bucket: String,
}

impl std::fmt::Debug for S3BlobStore {
    /// The bucket only (the client's own form would show its credentials).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3BlobStore")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

fn backend(e: object_store::Error) -> BlobError {
    BlobError::Backend(e.to_string())
}

fn path(key: &str) -> Result<Path, BlobError> {
    check_key(key)?;
    Path::parse(key).map_err(|_| BlobError::InvalidKey(key.to_owned()))
}

impl S3BlobStore {
    /// A client for the bucket (no request is made here).
    pub fn new(s: &S3Settings) -> Result<Self, BlobError> {
        let mut options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            // A whole request, body included: a 100 MiB part at 1 MiB/s fits.
            .with_timeout(Duration::from_secs(300));
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&s.bucket)
            .with_region(&s.region)
            .with_access_key_id(&s.access_key_id)
            .with_secret_access_key(&s.secret_access_key)
            .with_virtual_hosted_style_request(false)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
            });
        if let Some(endpoint) = &s.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(BlobError::Backend(format!(
                    "the S3 endpoint must be an http:// or https:// URL, not {endpoint:?}"
                )));
            }
            options = options.with_allow_http(endpoint.starts_with("http://"));
            b = b.with_endpoint(endpoint);
        }
        let s3 = b
            .with_client_options(options)
            .build()
            .map_err(|e| BlobError::Backend(format!("setting up the S3 client: {e}")))?;
        Ok(S3BlobStore {
            s3,
            bucket: s.bucket.clone(),
        })
    }

    /// A put too large for one request: a multipart upload fed from `first` and then `body`.
    async fn put_multipart(
        &self,
        location: &Path,
        first: Vec<Bytes>,
        mut body: ByteStream,
    ) -> Result<u64, BlobError> {
        let upload = self.s3.put_multipart(location).await.map_err(backend)?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, MULTIPART_CHUNK);
        let mut n = 0u64;
        let fed = async {
            for chunk in first {
                n += chunk.len() as u64;
                w.put(chunk);
            }
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                w.wait_for_capacity(MULTIPART_CONCURRENCY)
                    .await
                    .map_err(backend)?;
                n += chunk.len() as u64;
                w.put(chunk);
            }
            Ok::<(), BlobError>(())
        }
        .await;
        match fed {
            Ok(()) => {
                w.finish().await.map_err(backend)?;
                Ok(n)
            }
            Err(e) => {
                if let Err(abort) = w.abort().await {
                    tracing::warn!(error = %abort, key = %location, "aborting a multipart upload failed");
                }
                Err(e)
            }
        }
    }
}

fn meta_of(m: object_store::ObjectMeta) -> ObjectMeta {
    let modified = u64::try_from(m.last_modified.timestamp_millis())
        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    ObjectMeta {
        key: m.location.to_string(),
        size: m.size,
        modified,
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put(&self, key: &str, mut body: ByteStream) -> Result<u64, BlobError> {
        let location = path(key)?;
        let mut held = Vec::new();
        let mut len = 0usize;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            len += chunk.len();
            held.push(chunk);
            if len > SINGLE_PUT_BYTES {
                return self.put_multipart(&location, held, body).await;
            }
        }
        let payload: PutPayload = held.into_iter().collect();
        self.s3.put(&location, payload).await.map_err(backend)?;
        Ok(len as u64)
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, BlobError> {
        let location = path(key)?;
        let range = match range {
            // S3 refuses an empty range; there is nothing to read either.
            Some(r) if r.start >= r.end => {
                return Ok(Box::pin(futures_util::stream::empty()));
            }
            Some(r) => Some(GetRange::Bounded(r)),
            None => None,
        };
        let options = GetOptions {
            range,
            ..GetOptions::default()
        };
        match self.s3.get_opts(&location, options).await {
            Ok(r) => Ok(Box::pin(r.into_stream().map_err(backend))),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::NotFound(key.to_owned())),
            Err(e) => Err(backend(e)),
        }
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>, BlobError> {
        match self.s3.head(&path(key)?).await {
            Ok(m) => Ok(Some(meta_of(m))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.s3.delete(&path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, BlobError> {
        let p = path(prefix.trim_end_matches('/'))?;
        self.s3
            .list(Some(&p))
            .map_ok(meta_of)
            .map_err(backend)
            .try_collect()
            .await
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let p = path(prefix.trim_end_matches('/'))?;
        let listed = self
            .s3
            .list_with_delimiter(Some(&p))
            .await
            .map_err(backend)?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|d| d.filename().map(str::to_owned))
            .collect())
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), BlobError> {
        match self.s3.rename(&path(from)?, &path(to)?).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::NotFound(from.to_owned())),
            Err(e) => Err(backend(e)),
        }
    }

    fn kind(&self) -> &'static str {
        "s3"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: Option<&str>) -> S3Settings {
        S3Settings {
            endpoint: endpoint.map(str::to_owned),
            bucket: "b".into(),
            region: "us-east-1".into(),
            access_key_id: "id".into(),
            secret_access_key: "very-secret".into(),
        }
    }

    #[test]
    fn endpoints_must_be_http_urls_and_secrets_stay_hidden() {
        assert!(S3BlobStore::new(&settings(Some("http://127.0.0.1:9000"))).is_ok());
        assert!(S3BlobStore::new(&settings(None)).is_ok());
        assert!(S3BlobStore::new(&settings(Some("127.0.0.1:9000"))).is_err());
        assert!(!format!("{:?}", settings(None)).contains("very-secret"));
    }

    #[test]
    fn keys_become_object_paths_unchanged() {
        let p = path("uploads/abc/parts/00000000000000000042").expect("path");
        assert_eq!(p.to_string(), "uploads/abc/parts/00000000000000000042");
        assert!(path("../x").is_err());
    }
}
