//! Listing operations: ListObjectsV2, ListObjectVersions and
//! ListMultipartUploads, one page at a time, plus helpers that follow the
//! pagination to the end.
//!
//! Listings are always requested with `encoding-type=url`, because XML 1.0
//! cannot carry every byte a key may hold (control characters); keys are
//! decoded only when the server confirms it encoded them.

use std::collections::HashSet;

use reqwest::Method;

use super::client::{Request, S3Client};
use super::error::S3Error;
use super::types::*;
use super::xml;
use crate::store::ObjectStore;

/// The continuation markers a paginated listing has followed. A server
/// whose markers go round in a circle (A, B, A, ...) would otherwise keep
/// every caller listing for ever; a marker that comes back is an error.
#[derive(Debug, Default)]
pub struct MarkerGuard {
    seen: HashSet<String>,
}

impl MarkerGuard {
    /// Point `request` at the ListObjectsV2 page after one that ended with
    /// `next`; `false` once the listing is complete.
    pub fn next_page(
        &mut self,
        request: &mut ListRequest,
        next: Option<String>,
    ) -> Result<bool, S3Error> {
        let Some(token) = next else {
            return Ok(false);
        };
        self.follow("ListObjectsV2", &token)?;
        request.continuation_token = Some(token);
        Ok(true)
    }

    /// The same for ListObjectVersions, whose marker is a key and a
    /// version id.
    pub fn next_versions_page(
        &mut self,
        request: &mut ListVersionsRequest,
        key: Option<String>,
        version_id: Option<String>,
    ) -> Result<bool, S3Error> {
        let Some(key) = key else {
            return Ok(false);
        };
        let marker = format!("{key}\n{}", version_id.as_deref().unwrap_or(""));
        self.follow("ListObjectVersions", &marker)?;
        request.key_marker = Some(key);
        request.version_id_marker = version_id;
        Ok(true)
    }

    fn follow(&mut self, operation: &'static str, marker: &str) -> Result<(), S3Error> {
        if self.seen.insert(marker.to_owned()) {
            return Ok(());
        }
        Err(S3Error::invalid_response(
            operation,
            None,
            "the server's listing goes round in a circle (a continuation marker came back)",
        ))
    }
}

impl S3Client {
    /// One page of ListObjectsV2.
    pub async fn list_objects(&self, request: &ListRequest) -> Result<ListPage, S3Error> {
        let mut req = Request::new("ListObjectsV2", Method::GET, None)
            .query("list-type", "2")
            .query("encoding-type", "url")
            .query("prefix", request.prefix.clone());
        if let Some(d) = &request.delimiter {
            req = req.query("delimiter", d.clone());
        }
        if let Some(t) = &request.continuation_token {
            req = req.query("continuation-token", t.clone());
        }
        if let Some(s) = &request.start_after {
            req = req.query("start-after", s.clone());
        }
        if let Some(m) = request.max_keys {
            req = req.query("max-keys", m.to_string());
        }
        let (_, _, body) = self.send(&req).await?;
        // A token that comes back is caught by the caller's MarkerGuard.
        req.parse(&body, xml::parse_list_objects)
    }

    /// Every page of a listing, gathered (see `ObjectStore::list_all`).
    pub async fn list_all(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Result<ListPage, S3Error> {
        ObjectStore::list_all(self, prefix, delimiter).await
    }

    /// One page of ListObjectVersions.
    pub async fn list_object_versions(
        &self,
        request: &ListVersionsRequest,
    ) -> Result<VersionPage, S3Error> {
        let mut req = Request::new("ListObjectVersions", Method::GET, None)
            .query("versions", "")
            .query("encoding-type", "url")
            .query("prefix", request.prefix.clone());
        if let Some(d) = &request.delimiter {
            req = req.query("delimiter", d.clone());
        }
        if let Some(k) = &request.key_marker {
            req = req.query("key-marker", k.clone());
        }
        if let Some(v) = &request.version_id_marker {
            req = req.query("version-id-marker", v.clone());
        }
        if let Some(m) = request.max_keys {
            req = req.query("max-keys", m.to_string());
        }
        let (_, _, body) = self.send(&req).await?;
        req.parse(&body, xml::parse_list_versions)
    }

    /// Every version and delete marker under `prefix` (no delimiter), in
    /// the server's order.
    pub async fn list_all_versions(&self, prefix: &str) -> Result<Vec<ObjectVersion>, S3Error> {
        let mut request = ListVersionsRequest {
            prefix: prefix.to_owned(),
            ..Default::default()
        };
        let mut all = Vec::new();
        let mut guard = MarkerGuard::default();
        loop {
            let page = self.list_object_versions(&request).await?;
            all.extend(page.versions);
            let (key, version_id) = (page.next_key_marker, page.next_version_id_marker);
            if !guard.next_versions_page(&mut request, key, version_id)? {
                return Ok(all);
            }
        }
    }

    /// Every unfinished multipart upload under `prefix`.
    pub async fn list_multipart_uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<MultipartUploadInfo>, S3Error> {
        let mut markers: Option<(String, String)> = None;
        let mut all = Vec::new();
        let mut guard = MarkerGuard::default();
        loop {
            let mut req = Request::new("ListMultipartUploads", Method::GET, None)
                .query("uploads", "")
                .query("encoding-type", "url")
                .query("prefix", prefix);
            if let Some((key, upload)) = &markers {
                req = req.query("key-marker", key.clone());
                if !upload.is_empty() {
                    req = req.query("upload-id-marker", upload.clone());
                }
            }
            let (_, _, body) = self.send(&req).await?;
            let (uploads, next) = req.parse(&body, xml::parse_list_uploads)?;
            all.extend(uploads);
            let Some((key, upload)) = next else {
                return Ok(all);
            };
            guard.follow(req.op, &format!("{key}\n{upload}"))?;
            markers = Some((key, upload));
        }
    }
}
