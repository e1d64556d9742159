//! S3 access to a [`Garage`] with its key: a ready client, and listings for
//! tests to assert what a bucket holds.
//!
//! The listings are plain signed S3 requests rather than `object_store`'s
//! `list`: that one turns keys into its normalised `Path` (and fails on keys
//! such as `a//b`), and has no call for in-progress multipart uploads, while a
//! test wants the keys exactly as stored. Signing and HTTP still come from
//! `object_store` (its SigV4 signer and client), so only the query and the
//! XML are written here.
use object_store::ClientOptions;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer, AwsCredential};
use object_store::client::{HttpConnector as _, HttpRequestBody, ReqwestConnector};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use super::{Garage, REGION};

/// What SigV4 leaves unencoded in a query: the RFC 3986 unreserved set.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Entries per listing request: the S3 maximum.
const PAGE: usize = 1000;

/// An upload started with CreateMultipartUpload and neither completed nor
/// aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUpload {
    pub key: String,
    pub upload_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListObjectsV2 {
    #[serde(default)]
    contents: Vec<Object>,
    #[serde(default)]
    is_truncated: bool,
    next_continuation_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Object {
    key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListMultipartUploads {
    #[serde(default, rename = "Upload")]
    uploads: Vec<Upload>,
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Upload {
    key: String,
    upload_id: String,
}

/// object_store is built without a TLS provider of its own: ring, the
/// workspace's, serves every rustls client in the process.
fn ring_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Garage {
    /// An `object_store` S3 client for `bucket` through node `node`, with
    /// the key, path-style requests and plain HTTP allowed.
    pub fn store(&self, node: usize, bucket: &str) -> AmazonS3 {
        ring_provider();
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint(node))
            .with_region(REGION)
            .with_bucket_name(bucket)
            .with_access_key_id(&self.key_id)
            .with_secret_access_key(&self.secret_key)
            .with_allow_http(true)
            .build()
            .expect("S3 client for garage")
    }

    /// Every object key in `bucket`, sorted, exactly as stored (all pages of
    /// ListObjectsV2, through the first running node).
    pub async fn list_keys(&self, bucket: &str) -> Vec<String> {
        self.list_keys_paged(bucket, PAGE).await
    }

    async fn list_keys_paged(&self, bucket: &str, page_size: usize) -> Vec<String> {
        let page_size = page_size.to_string();
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("max-keys", &page_size)];
            if let Some(t) = &token {
                query.push(("continuation-token", t));
            }
            let page: ListObjectsV2 = self.signed_get(bucket, &query).await;
            keys.extend(page.contents.into_iter().map(|o| o.key));
            match page.next_continuation_token {
                Some(next) if page.is_truncated => token = Some(next),
                _ => return keys,
            }
        }
    }

    /// The multipart uploads in progress in `bucket` (all pages of
    /// ListMultipartUploads, through the first running node).
    pub async fn list_multipart_uploads(&self, bucket: &str) -> Vec<MultipartUpload> {
        self.list_uploads_paged(bucket, PAGE).await
    }

    async fn list_uploads_paged(&self, bucket: &str, page_size: usize) -> Vec<MultipartUpload> {
        let page_size = page_size.to_string();
        let mut uploads = Vec::new();
        let mut markers: Option<(String, Option<String>)> = None;
        loop {
            let mut query = vec![("uploads", ""), ("max-uploads", &page_size)];
            if let Some((key, id)) = &markers {
                query.push(("key-marker", key));
                if let Some(id) = id {
                    query.push(("upload-id-marker", id));
                }
            }
            let page: ListMultipartUploads = self.signed_get(bucket, &query).await;
            uploads.extend(page.uploads.into_iter().map(|u| MultipartUpload {
                key: u.key,
                upload_id: u.upload_id,
            }));
            // Garage sends no NextUploadIdMarker: the key marker alone then
            // means "after this key".
            match page.next_key_marker {
                Some(key) if page.is_truncated => markers = Some((key, page.next_upload_id_marker)),
                _ => return uploads,
            }
        }
    }

    /// A SigV4-signed `GET /bucket?query` to the first running node, its XML
    /// reply parsed; panics on any failure with the reply.
    async fn signed_get<T: for<'de> Deserialize<'de>>(
        &self,
        bucket: &str,
        query: &[(&str, &str)],
    ) -> T {
        let node = self.running().next().expect("no garage node is running");
        let url = format!("{}/{bucket}?{}", self.endpoint(node), encode_query(query));
        let mut request = http::Request::get(&url)
            .body(HttpRequestBody::empty())
            .expect("S3 request");
        let credential = AwsCredential {
            key_id: self.key_id.clone(),
            secret_key: self.secret_key.clone(),
            token: None,
        };
        AwsAuthorizer::new(&credential, "s3", REGION)
            .try_authorize(&mut request, None)
            .expect("sign S3 request");
        ring_provider();
        let client = ReqwestConnector::default()
            .connect(&ClientOptions::new().with_allow_http(true))
            .expect("HTTP client");
        let response = client
            .execute(request)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status();
        let body = response.into_body().bytes().await.expect("S3 reply body");
        let text = String::from_utf8_lossy(&body);
        assert!(status.is_success(), "GET {url}: {status}\n{text}");
        quick_xml::de::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {e}\n{text}"))
    }
}

fn encode_query(query: &[(&str, &str)]) -> String {
    query
        .iter()
        .map(|(k, v)| {
            let (k, v) = (
                utf8_percent_encode(k, QUERY_VALUE),
                utf8_percent_encode(v, QUERY_VALUE),
            );
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded_like_sigv4_expects() {
        let q = encode_query(&[("uploads", ""), ("key-marker", "a b/c~d+e")]);
        assert_eq!(q, "uploads=&key-marker=a%20b%2Fc~d%2Be");
    }

    /// Every page is fetched, and queries with several parameters and
    /// markers are signed right.
    #[tokio::test]
    async fn listings_follow_every_page() {
        use object_store::{ObjectStoreExt as _, path::Path};
        let garage = Garage::single();
        let store = garage.store(0, garage.bucket());
        let mut uploads = Vec::new();
        for key in ["a//b", "c d", "e+f"] {
            store
                .put(&Path::from(key), b"x".to_vec().into())
                .await
                .expect("put");
            uploads.push(store.put_multipart(&Path::from(key)).await.expect("upload"));
        }
        let keys = garage.list_keys_paged(garage.bucket(), 2).await;
        // object_store's Path drops the empty segment of "a//b".
        assert_eq!(keys, ["a/b", "c d", "e+f"]);
        let listed = garage.list_uploads_paged(garage.bucket(), 1).await;
        let listed: Vec<_> = listed.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(listed, ["a/b", "c d", "e+f"]);
        for mut upload in uploads {
            upload.abort().await.expect("abort");
        }
    }

    #[test]
    fn listings_parse() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>
<Contents><Key>a//b</Key><Size>1</Size></Contents><Contents><Key>c</Key></Contents>
<IsTruncated>true</IsTruncated><NextContinuationToken>t1</NextContinuationToken>
</ListBucketResult>"#;
        let page: ListObjectsV2 = quick_xml::de::from_str(xml).unwrap();
        let keys: Vec<_> = page.contents.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["a//b", "c"]);
        assert!(page.is_truncated);
        assert_eq!(page.next_continuation_token.as_deref(), Some("t1"));

        let xml = "<ListMultipartUploadsResult><Bucket>b</Bucket>\
            <Upload><Key>k</Key><UploadId>u1</UploadId></Upload>\
            <IsTruncated>false</IsTruncated></ListMultipartUploadsResult>";
        let page: ListMultipartUploads = quick_xml::de::from_str(xml).unwrap();
        assert_eq!(page.uploads.len(), 1);
        assert_eq!(
            (
                page.uploads[0].key.as_str(),
                page.uploads[0].upload_id.as_str()
            ),
            ("k", "u1")
        );
        assert!(!page.is_truncated);
    }
}
