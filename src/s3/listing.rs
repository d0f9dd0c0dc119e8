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

/// The continuation markers a paginated listing has followed. A server
/// whose markers go round in a circle (A, B, A, ...) would otherwise keep
/// every caller listing for ever; a marker that comes back is an error.
#[derive(Debug, Default)]
pub struct MarkerGuard {
    seen: HashSet<String>,
}

impl MarkerGuard {
    /// Call with each marker before following it.
    pub fn follow(&mut self, operation: &'static str, marker: &str) -> Result<(), S3Error> {
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
        let page = req.parse(&body, xml::parse_list_objects)?;
        if page.next_continuation_token.is_some()
            && page.next_continuation_token == request.continuation_token
        {
            // A server that hands back the token it was given would keep us
            // listing the same page for ever.
            return Err(S3Error::invalid_response(
                req.op,
                None,
                "server returned the same continuation token twice",
            ));
        }
        Ok(page)
    }

    /// Follow ListObjectsV2 pagination and gather every page's objects and
    /// common prefixes.
    pub async fn list_all(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Result<ListPage, S3Error> {
        let mut request = ListRequest {
            prefix: prefix.to_owned(),
            delimiter: delimiter.map(str::to_owned),
            ..Default::default()
        };
        let mut all = ListPage::default();
        let mut guard = MarkerGuard::default();
        loop {
            let page = self.list_objects(&request).await?;
            for raw in &page.undecodable_keys {
                tracing::warn!("skipping a listed key that does not decode (bad URL encoding or UTF-8): {raw:?}");
            }
            all.objects.extend(page.objects);
            all.common_prefixes.extend(page.common_prefixes);
            all.undecodable_keys.extend(page.undecodable_keys);
            match page.next_continuation_token {
                Some(token) => {
                    guard.follow("ListObjectsV2", &token)?;
                    request.continuation_token = Some(token);
                }
                None => return Ok(all),
            }
        }
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
        let page = req.parse(&body, xml::parse_list_versions)?;
        if page.next_key_marker.is_some()
            && page.next_key_marker == request.key_marker
            && page.next_version_id_marker == request.version_id_marker
        {
            return Err(S3Error::invalid_response(
                req.op,
                None,
                "server returned the same version markers twice",
            ));
        }
        Ok(page)
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
            match page.next_key_marker {
                Some(key) => {
                    let version = page.next_version_id_marker.as_deref().unwrap_or("");
                    guard.follow("ListObjectVersions", &format!("{key}\n{version}"))?;
                    request.key_marker = Some(key);
                    request.version_id_marker = page.next_version_id_marker;
                }
                None => return Ok(all),
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
            match next {
                Some(next) if Some(&next) != markers.as_ref() => markers = Some(next),
                Some(_) => {
                    return Err(S3Error::invalid_response(
                        req.op,
                        None,
                        "server returned the same upload markers twice",
                    ))
                }
                None => return Ok(all),
            }
        }
    }
}
