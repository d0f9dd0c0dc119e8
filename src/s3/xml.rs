//! S3's XML bodies: parsing responses into the types of `types.rs`, and
//! writing the few request bodies S3 takes (CompleteMultipartUpload, Delete,
//! bucket configuration).
//!
//! Parsing is tolerant of elements we do not know (servers add their own) and
//! strict about the ones we need: a missing key or a size that is not a
//! number is an error, never a default that would show a wrong file.

use std::time::SystemTime;

use quick_xml::escape::escape;
use serde::Deserialize;

use super::encode::decode_listed_key;
use super::types::*;

/// Why a body could not be understood. Turned into `S3Error::InvalidResponse`
/// by the caller, which knows the operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError(pub String);

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn from_xml<'de, T: Deserialize<'de>>(body: &'de str, what: &str) -> Result<T, XmlError> {
    quick_xml::de::from_str(body).map_err(|e| XmlError(format!("malformed {what} XML: {e}")))
}

/// Like `from_xml`, but the document's root element must be `root`
/// (`...Result`, or `...Response` as moto names some): serde ignores the
/// root's name, and with every field optional another document (a listing
/// of the wrong kind, say) would read as an empty page — as if there were
/// nothing there.
fn from_xml_rooted<'de, T: Deserialize<'de>>(
    body: &'de str,
    what: &str,
    root: &str,
) -> Result<T, XmlError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(body);
    let found = loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                break String::from_utf8_lossy(e.local_name().as_ref()).into_owned()
            }
            Ok(Event::Eof) => break String::new(),
            Ok(_) => continue,
            Err(e) => return Err(XmlError(format!("malformed {what} XML: {e}"))),
        }
    };
    if found != root && found != root.replace("Result", "Response") {
        return Err(XmlError(format!(
            "malformed {what} XML: the document is <{found}>, not <{root}>"
        )));
    }
    from_xml(body, what)
}

/// Parse an S3 timestamp: ISO 8601 as listings give it, or an HTTP date.
pub fn parse_timestamp(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    humantime::parse_rfc3339_weak(value.trim_end_matches('Z'))
        .ok()
        .or_else(|| httpdate::parse_http_date(value).ok())
}

fn timestamp(value: &str, what: &str) -> Result<SystemTime, XmlError> {
    parse_timestamp(value).ok_or_else(|| XmlError(format!("bad {what} timestamp {value:?}")))
}

/// Remove the quotes S3 puts around ETags (and a weak-validator prefix).
pub fn unquote_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_owned()
}

/// Decode a listed key if the server says it url-encoded the listing.
fn listed_key(raw: String, url_encoded: bool, undecodable: &mut Vec<String>) -> Option<String> {
    if !url_encoded {
        return Some(raw);
    }
    match decode_listed_key(&raw) {
        Some(key) => Some(key),
        None => {
            undecodable.push(raw);
            None
        }
    }
}

fn is_url(encoding: &Option<String>) -> bool {
    encoding
        .as_deref()
        .is_some_and(|e| e.eq_ignore_ascii_case("url"))
}

// ---- error bodies -------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ErrorXml {
    code: String,
    message: String,
    request_id: Option<String>,
}

/// What an error body said.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
}

/// Parse an error body: S3's `<Error>` XML or, as B2 sometimes sends with a
/// 5xx, JSON (`{"code": ..., "message": ...}`). `None` if it is neither.
pub fn parse_error_body(body: &str) -> Option<ErrorBody> {
    let trimmed = body.trim_start();
    if trimmed.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(trimmed).ok()?;
        let code = v.get("code")?.as_str()?.to_owned();
        let message = v
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_owned();
        return Some(ErrorBody {
            code,
            message,
            request_id: None,
        });
    }
    if !is_error_document(trimmed) {
        return None;
    }
    let e: ErrorXml = quick_xml::de::from_str(trimmed).ok()?;
    (!e.code.is_empty()).then_some(ErrorBody {
        code: e.code,
        message: e.message,
        request_id: e.request_id,
    })
}

/// Whether a body is an `<Error>` document. CopyObject, UploadPartCopy and
/// CompleteMultipartUpload can answer 200 and still have failed.
pub fn is_error_document(body: &str) -> bool {
    let mut rest = body.trim_start();
    if rest.starts_with("<?xml") {
        match rest.find("?>") {
            Some(end) => rest = rest[end + 2..].trim_start(),
            None => return false,
        }
    }
    rest.starts_with("<Error>") || rest.starts_with("<Error ")
}

// ---- ListObjectsV2 ------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResultXml {
    #[serde(default)]
    contents: Vec<ContentsXml>,
    #[serde(default)]
    common_prefixes: Vec<PrefixXml>,
    #[serde(default)]
    is_truncated: bool,
    next_continuation_token: Option<String>,
    encoding_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContentsXml {
    key: String,
    last_modified: String,
    #[serde(rename = "ETag", default)]
    etag: String,
    size: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PrefixXml {
    prefix: String,
}

pub fn parse_list_objects(body: &str) -> Result<ListPage, XmlError> {
    let xml: ListBucketResultXml = from_xml_rooted(body, "ListObjectsV2", "ListBucketResult")?;
    let url = is_url(&xml.encoding_type);
    let mut page = ListPage::default();
    for c in xml.contents {
        let last_modified = timestamp(&c.last_modified, "LastModified")?;
        if let Some(key) = listed_key(c.key, url, &mut page.undecodable_keys) {
            page.objects.push(ObjectInfo {
                key,
                size: c.size,
                etag: unquote_etag(&c.etag),
                last_modified,
            });
        }
    }
    for p in xml.common_prefixes {
        if let Some(prefix) = listed_key(p.prefix, url, &mut page.undecodable_keys) {
            page.common_prefixes.push(prefix);
        }
    }
    if xml.is_truncated {
        match xml.next_continuation_token {
            Some(token) if !token.is_empty() => page.next_continuation_token = Some(token),
            _ => {
                return Err(XmlError(
                    "listing is truncated but has no NextContinuationToken".into(),
                ))
            }
        }
    }
    Ok(page)
}

// ---- ListObjectVersions -------------------------------------------------

#[derive(Debug, Deserialize)]
struct ListVersionsXml {
    #[serde(rename = "$value", default)]
    items: Vec<VersionsItem>,
}

/// Children of `<ListVersionsResult>` in document order, so that versions and
/// delete markers keep their relative order.
#[derive(Debug, Deserialize)]
enum VersionsItem {
    Version(VersionXml),
    DeleteMarker(VersionXml),
    CommonPrefixes(PrefixXml),
    IsTruncated(bool),
    NextKeyMarker(String),
    NextVersionIdMarker(String),
    EncodingType(String),
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VersionXml {
    key: String,
    version_id: String,
    #[serde(default)]
    is_latest: bool,
    last_modified: String,
    #[serde(rename = "ETag", default)]
    etag: String,
    #[serde(default)]
    size: u64,
}

pub fn parse_list_versions(body: &str) -> Result<VersionPage, XmlError> {
    let xml: ListVersionsXml = from_xml_rooted(body, "ListObjectVersions", "ListVersionsResult")?;
    let url = xml
        .items
        .iter()
        .any(|i| matches!(i, VersionsItem::EncodingType(e) if e.eq_ignore_ascii_case("url")));
    let mut page = VersionPage::default();
    let mut truncated = false;
    let mut next_key = None;
    let mut next_version = None;
    for item in xml.items {
        match item {
            VersionsItem::Version(v) => {
                let last_modified = timestamp(&v.last_modified, "LastModified")?;
                if let Some(key) = listed_key(v.key, url, &mut page.undecodable_keys) {
                    page.versions.push(ObjectVersion {
                        key,
                        version_id: v.version_id,
                        is_latest: v.is_latest,
                        last_modified,
                        kind: VersionKind::Object {
                            size: v.size,
                            etag: unquote_etag(&v.etag),
                        },
                    });
                }
            }
            VersionsItem::DeleteMarker(v) => {
                let last_modified = timestamp(&v.last_modified, "LastModified")?;
                if let Some(key) = listed_key(v.key, url, &mut page.undecodable_keys) {
                    page.versions.push(ObjectVersion {
                        key,
                        version_id: v.version_id,
                        is_latest: v.is_latest,
                        last_modified,
                        kind: VersionKind::DeleteMarker,
                    });
                }
            }
            VersionsItem::CommonPrefixes(p) => {
                if let Some(prefix) = listed_key(p.prefix, url, &mut page.undecodable_keys) {
                    page.common_prefixes.push(prefix);
                }
            }
            VersionsItem::IsTruncated(t) => truncated = t,
            VersionsItem::NextKeyMarker(k) => next_key = Some(k),
            VersionsItem::NextVersionIdMarker(v) => next_version = Some(v),
            VersionsItem::EncodingType(_) | VersionsItem::Other => {}
        }
    }
    // S3 sends entries by key and, within a key, newest first with delete
    // markers in place. Some servers (moto) send all versions and then all
    // delete markers; restore the S3 order. The sort is stable, so entries
    // with equal times keep the server's order.
    page.versions.sort_by(|a, b| {
        a.key
            .cmp(&b.key)
            .then(b.is_latest.cmp(&a.is_latest))
            .then(b.last_modified.cmp(&a.last_modified))
    });
    if truncated {
        // The key marker is echoed encoded like the keys; it is sent back as
        // a parameter, so it must be decoded to the key it names.
        let key = next_key.filter(|k| !k.is_empty()).ok_or_else(|| {
            XmlError("version listing is truncated but has no NextKeyMarker".into())
        })?;
        let key = if url {
            decode_listed_key(&key).ok_or_else(|| XmlError("undecodable NextKeyMarker".into()))?
        } else {
            key
        };
        page.next_key_marker = Some(key);
        page.next_version_id_marker = next_version.filter(|v| !v.is_empty());
    }
    Ok(page)
}

// ---- multipart ----------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InitiateXml {
    upload_id: String,
}

pub fn parse_initiate_multipart(body: &str) -> Result<UploadId, XmlError> {
    let xml: InitiateXml = from_xml(body, "CreateMultipartUpload")?;
    if xml.upload_id.is_empty() {
        return Err(XmlError("empty UploadId".into()));
    }
    Ok(UploadId(xml.upload_id))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ETagResultXml {
    #[serde(rename = "ETag")]
    etag: String,
    last_modified: Option<String>,
    /// Only in a CopyPartResult of an upload created with CRC32C.
    #[serde(rename = "ChecksumCRC32C")]
    checksum_crc32c: Option<String>,
}

/// The ETag (and time) in a CopyObjectResult, CopyPartResult or
/// CompleteMultipartUploadResult.
pub fn parse_etag_result(body: &str, what: &str) -> Result<(String, Option<SystemTime>), XmlError> {
    let (etag, modified, _) = etag_result(body, what)?;
    Ok((etag, modified))
}

/// The ETag of a CopyPartResult, and the part's CRC32C when the server
/// gives one (S3 does for uploads created with that checksum).
pub fn parse_copy_part_result(body: &str) -> Result<(String, Option<String>), XmlError> {
    let (etag, _, crc32c) = etag_result(body, "CopyPartResult")?;
    Ok((etag, crc32c))
}

fn etag_result(
    body: &str,
    what: &str,
) -> Result<(String, Option<SystemTime>, Option<String>), XmlError> {
    let xml: ETagResultXml = from_xml(body, what)?;
    let modified = match xml.last_modified {
        Some(t) => Some(timestamp(&t, "LastModified")?),
        None => None,
    };
    let crc32c = xml.checksum_crc32c.filter(|c| !c.is_empty());
    Ok((unquote_etag(&xml.etag), modified, crc32c))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListPartsXml {
    #[serde(default)]
    part: Vec<PartXml>,
    #[serde(default)]
    is_truncated: bool,
    next_part_number_marker: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PartXml {
    part_number: u32,
    #[serde(rename = "ETag")]
    etag: String,
    size: u64,
}

/// One page of ListParts and the marker for the next.
pub fn parse_list_parts(body: &str) -> Result<(Vec<PartInfo>, Option<u32>), XmlError> {
    let xml: ListPartsXml = from_xml_rooted(body, "ListParts", "ListPartsResult")?;
    let parts = xml
        .part
        .into_iter()
        .map(|p| PartInfo {
            part_number: p.part_number,
            etag: unquote_etag(&p.etag),
            size: p.size,
        })
        .collect();
    let next =
        if xml.is_truncated {
            Some(xml.next_part_number_marker.ok_or_else(|| {
                XmlError("ListParts truncated without NextPartNumberMarker".into())
            })?)
        } else {
            None
        };
    Ok((parts, next))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListUploadsXml {
    #[serde(default)]
    upload: Vec<UploadXml>,
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
    encoding_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UploadXml {
    key: String,
    upload_id: String,
    initiated: String,
}

/// One page of ListMultipartUploads: uploads and `(key, upload id)` markers.
pub type UploadsPage = (Vec<MultipartUploadInfo>, Option<(String, String)>);

pub fn parse_list_uploads(body: &str) -> Result<UploadsPage, XmlError> {
    let xml: ListUploadsXml =
        from_xml_rooted(body, "ListMultipartUploads", "ListMultipartUploadsResult")?;
    let url = is_url(&xml.encoding_type);
    let mut undecodable = Vec::new();
    let mut uploads = Vec::new();
    for u in xml.upload {
        let initiated = timestamp(&u.initiated, "Initiated")?;
        if let Some(key) = listed_key(u.key, url, &mut undecodable) {
            uploads.push(MultipartUploadInfo {
                key,
                upload_id: UploadId(u.upload_id),
                initiated,
            });
        }
    }
    let next = if xml.is_truncated {
        let key = xml.next_key_marker.unwrap_or_default();
        let key = if url {
            decode_listed_key(&key).unwrap_or(key)
        } else {
            key
        };
        Some((key, xml.next_upload_id_marker.unwrap_or_default()))
    } else {
        None
    };
    Ok((uploads, next))
}

// ---- bucket -------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VersioningXml {
    status: Option<String>,
}

pub fn parse_versioning(body: &str) -> Result<VersioningStatus, XmlError> {
    let xml: VersioningXml = from_xml(body, "GetBucketVersioning")?;
    Ok(match xml.status.as_deref().map(str::trim) {
        Some("Enabled") => VersioningStatus::Enabled,
        Some("Suspended") => VersioningStatus::Suspended,
        None | Some("") => VersioningStatus::Unversioned,
        Some(other) => return Err(XmlError(format!("unknown versioning status {other:?}"))),
    })
}

// ---- DeleteObjects ------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteResultXml {
    #[serde(default)]
    error: Vec<DeleteErrorXml>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteErrorXml {
    key: String,
    version_id: Option<String>,
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The keys a DeleteObjects request failed to delete.
pub fn parse_delete_result(body: &str) -> Result<Vec<DeleteFailure>, XmlError> {
    let xml: DeleteResultXml = from_xml(body, "DeleteObjects")?;
    Ok(xml
        .error
        .into_iter()
        .map(|e| DeleteFailure {
            key: e.key,
            version_id: e.version_id,
            code: e.code,
            message: e.message,
        })
        .collect())
}

// ---- request bodies -----------------------------------------------------

pub fn complete_multipart_body(parts: &[CompletedPart]) -> String {
    let mut out = String::from("<CompleteMultipartUpload>");
    for p in parts {
        out.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>\"{}\"</ETag>",
            p.part_number,
            escape(p.etag.as_str())
        ));
        if let Some(crc) = &p.checksum_crc32c {
            out.push_str(&format!("<ChecksumCRC32C>{}</ChecksumCRC32C>", escape(crc)));
        }
        out.push_str("</Part>");
    }
    out.push_str("</CompleteMultipartUpload>");
    out
}

/// Quiet mode: the answer lists only failures.
pub fn delete_objects_body(objects: &[ObjectIdentifier]) -> String {
    let mut out = String::from("<Delete><Quiet>true</Quiet>");
    for o in objects {
        out.push_str("<Object><Key>");
        out.push_str(&escape(o.key.as_str()));
        out.push_str("</Key>");
        if let Some(v) = &o.version_id {
            out.push_str("<VersionId>");
            out.push_str(&escape(v.as_str()));
            out.push_str("</VersionId>");
        }
        out.push_str("</Object>");
    }
    out.push_str("</Delete>");
    out
}

pub fn versioning_body(enabled: bool) -> String {
    format!(
        "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>{}</Status></VersioningConfiguration>",
        if enabled { "Enabled" } else { "Suspended" }
    )
}

pub fn create_bucket_body(region: &str) -> Option<String> {
    (region != "us-east-1").then(|| {
        format!(
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
            escape(region)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_objects_with_url_encoding_and_prefixes() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix></Prefix><KeyCount>3</KeyCount><MaxKeys>2</MaxKeys>
  <EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>
  <Contents><Key>a+b%2Bc</Key><LastModified>2026-11-23T10:15:30.123Z</LastModified>
    <ETag>&quot;0cc175b9c0f1b6a831c399e269772661&quot;</ETag><Size>1</Size><StorageClass>STANDARD</StorageClass></Contents>
  <Contents><Key>%FF</Key><LastModified>2026-11-23T10:15:30Z</LastModified><ETag>"x"</ETag><Size>2</Size></Contents>
  <CommonPrefixes><Prefix>dir%20x/</Prefix></CommonPrefixes>
  <NextContinuationToken>tok/en==</NextContinuationToken>
</ListBucketResult>"#;
        let page = parse_list_objects(body).unwrap();
        assert_eq!(page.objects.len(), 1);
        assert_eq!(page.objects[0].key, "a b+c");
        assert_eq!(page.objects[0].etag, "0cc175b9c0f1b6a831c399e269772661");
        assert_eq!(page.objects[0].size, 1);
        assert_eq!(page.common_prefixes, vec!["dir x/"]);
        assert_eq!(page.undecodable_keys, vec!["%FF"]);
        assert_eq!(page.next_continuation_token.as_deref(), Some("tok/en=="));
    }

    #[test]
    fn list_objects_without_encoding_keeps_keys_verbatim() {
        let body = "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a+b%20</Key>\
            <LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>\"e\"</ETag><Size>5</Size></Contents></ListBucketResult>";
        let page = parse_list_objects(body).unwrap();
        assert_eq!(page.objects[0].key, "a+b%20");
        assert!(page.next_continuation_token.is_none());
    }

    #[test]
    fn truncated_listing_without_token_is_an_error_not_an_endless_loop() {
        let body = "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>";
        assert!(parse_list_objects(body).is_err());
        let body = "<ListBucketResult><Contents><Key>k</Key><LastModified>x</LastModified><Size>1</Size></Contents></ListBucketResult>";
        assert!(
            parse_list_objects(body).is_err(),
            "bad timestamp must not pass"
        );
    }

    #[test]
    fn versions_keep_document_order_with_delete_markers() {
        let body = r#"<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix/><KeyMarker/><VersionIdMarker/><MaxKeys>3</MaxKeys><IsTruncated>true</IsTruncated>
  <NextKeyMarker>a.txt</NextKeyMarker><NextVersionIdMarker>v1</NextVersionIdMarker>
  <DeleteMarker><Key>a.txt</Key><VersionId>v3</VersionId><IsLatest>true</IsLatest><LastModified>2026-11-23T10:00:03.000Z</LastModified></DeleteMarker>
  <Version><Key>a.txt</Key><VersionId>v2</VersionId><IsLatest>false</IsLatest><LastModified>2026-11-23T10:00:02.000Z</LastModified><ETag>"e2"</ETag><Size>20</Size></Version>
  <Version><Key>a.txt</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest><LastModified>2026-11-23T10:00:01.000Z</LastModified><ETag>"e1"</ETag><Size>10</Size></Version>
</ListVersionsResult>"#;
        let page = parse_list_versions(body).unwrap();
        let ids: Vec<_> = page
            .versions
            .iter()
            .map(|v| v.version_id.as_str())
            .collect();
        assert_eq!(ids, ["v3", "v2", "v1"]);
        assert_eq!(page.versions[0].kind, VersionKind::DeleteMarker);
        assert!(page.versions[0].is_latest);
        assert_eq!(
            page.versions[2].kind,
            VersionKind::Object {
                size: 10,
                etag: "e1".into()
            }
        );
        assert_eq!(page.next_key_marker.as_deref(), Some("a.txt"));
        assert_eq!(page.next_version_id_marker.as_deref(), Some("v1"));
    }

    #[test]
    fn error_bodies_in_xml_and_json() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Reduce your rate</Message><RequestId>r1</RequestId></Error>";
        assert!(is_error_document(xml));
        let e = parse_error_body(xml).unwrap();
        assert_eq!(
            (e.code.as_str(), e.request_id.as_deref()),
            ("SlowDown", Some("r1"))
        );
        let json =
            r#"{"code": "service_unavailable", "message": "no tomes available", "status": 503}"#;
        assert_eq!(parse_error_body(json).unwrap().code, "service_unavailable");
        assert!(parse_error_body("<html>gateway</html>").is_none());
        assert!(!is_error_document(
            "<CopyObjectResult><ETag>x</ETag></CopyObjectResult>"
        ));
    }

    #[test]
    fn copy_part_results_give_their_crc32c_when_there_is_one() {
        let with = "<CopyPartResult><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>\"e1\"</ETag><ChecksumCRC32C>Nks/tw==</ChecksumCRC32C></CopyPartResult>";
        assert_eq!(
            parse_copy_part_result(with).unwrap(),
            ("e1".to_owned(), Some("Nks/tw==".to_owned()))
        );
        let without = "<CopyPartResult><ETag>\"e2\"</ETag></CopyPartResult>";
        assert_eq!(
            parse_copy_part_result(without).unwrap(),
            ("e2".to_owned(), None)
        );
    }

    #[test]
    fn request_bodies_escape_keys() {
        let body = delete_objects_body(&[ObjectIdentifier {
            key: "a&b<c>".into(),
            version_id: Some("v\"1".into()),
        }]);
        assert!(body.contains("<Key>a&amp;b&lt;c&gt;</Key>"), "{body}");
        let body = complete_multipart_body(&[
            CompletedPart {
                part_number: 1,
                etag: "abc".into(),
                checksum_crc32c: None,
            },
            CompletedPart {
                part_number: 2,
                etag: "def".into(),
                checksum_crc32c: Some("Nks/tw==".into()),
            },
        ]);
        assert_eq!(
            body,
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"abc\"</ETag></Part><Part><PartNumber>2</PartNumber><ETag>\"def\"</ETag><ChecksumCRC32C>Nks/tw==</ChecksumCRC32C></Part></CompleteMultipartUpload>"
        );
    }

    #[test]
    fn versioning_states() {
        assert_eq!(
            parse_versioning(
                "<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>"
            )
            .unwrap(),
            VersioningStatus::Enabled
        );
        assert_eq!(
            parse_versioning("<VersioningConfiguration/>").unwrap(),
            VersioningStatus::Unversioned
        );
    }
}

/// Property tests: no body a server can send makes a parser panic, and
/// keys survive the listing encoding whatever they hold.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Bodies shaped like S3's, with arbitrary (often broken) content.
    fn xmlish() -> impl Strategy<Value = String> {
        let element = prop_oneof![
            Just("Contents"),
            Just("Key"),
            Just("Size"),
            Just("LastModified"),
            Just("ETag"),
            Just("IsTruncated"),
            Just("NextContinuationToken"),
            Just("CommonPrefixes"),
            Just("Prefix"),
            Just("Version"),
            Just("DeleteMarker"),
            Just("VersionId"),
            Just("Error"),
            Just("Code"),
            Just("UploadId"),
            Just("Part"),
            Just("PartNumber"),
            Just("EncodingType"),
            Just("Status"),
        ];
        proptest::collection::vec((element, any::<String>(), any::<bool>()), 0..12).prop_map(
            |parts| {
                let mut body = String::from("<?xml version=\"1.0\"?><ListBucketResult>");
                for (name, text, close) in parts {
                    body.push_str(&format!("<{name}>{text}"));
                    if close {
                        body.push_str(&format!("</{name}>"));
                    }
                }
                body.push_str("</ListBucketResult>");
                body
            },
        )
    }

    fn parse_everything(body: &str) {
        let _ = parse_list_objects(body);
        let _ = parse_list_versions(body);
        let _ = parse_error_body(body);
        let _ = parse_initiate_multipart(body);
        let _ = parse_etag_result(body, "test");
        let _ = parse_list_parts(body);
        let _ = parse_list_uploads(body);
        let _ = parse_versioning(body);
        let _ = parse_delete_result(body);
        let _ = parse_timestamp(body);
    }

    /// The checked-in corpus (`tests/corpus/xml`): real answers of S3, B2
    /// and moto, and broken ones, by file name.
    fn corpus() -> Vec<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/xml");
        let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
            .expect("the corpus directory")
            .map(|e| {
                let path = e.expect("a corpus entry").path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let bytes = std::fs::read(&path).expect("a corpus file");
                (name, String::from_utf8_lossy(&bytes).into_owned())
            })
            .collect();
        files.sort();
        assert!(files.len() >= 20, "the corpus is missing files");
        files
    }

    fn corpus_file(name: &str) -> String {
        corpus()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, body)| body)
            .unwrap_or_else(|| panic!("corpus file {name}"))
    }

    #[test]
    fn the_corpus_answers_parse_to_what_they_say() {
        let page = parse_list_objects(&corpus_file("list-objects-v2.xml")).unwrap();
        let keys: Vec<&str> = page.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["2026/a b.jpg", "2026/été.png", "2026/ctrl\u{1}char"]);
        assert_eq!(page.objects[1].size, 25_165_824);
        assert_eq!(page.common_prefixes, ["2026/january/", "2026/sp ace/"]);
        assert!(page.next_continuation_token.is_some());

        let b2 = parse_list_objects(&corpus_file("list-objects-v2-b2.xml")).unwrap();
        assert_eq!(b2.objects.len(), 2);
        assert_eq!(b2.objects[1].key, "docs/");
        assert_eq!(b2.next_continuation_token, None);

        let versions = parse_list_versions(&corpus_file("list-object-versions.xml")).unwrap();
        assert_eq!(versions.versions.len(), 3);
        assert!(matches!(
            versions.versions[0].kind,
            VersionKind::DeleteMarker
        ));
        assert_eq!(versions.next_key_marker.as_deref(), Some("docs/report.csv"));

        let (uploads, next) =
            parse_list_uploads(&corpus_file("list-multipart-uploads.xml")).unwrap();
        assert_eq!(uploads.len(), 2);
        assert_eq!(next.map(|(k, _)| k).as_deref(), Some("big/file.bin"));
        let (parts, next) = parse_list_parts(&corpus_file("list-parts.xml")).unwrap();
        assert_eq!((parts.len(), next), (2, Some(2)));
        assert!(parse_initiate_multipart(&corpus_file("initiate-multipart.xml")).is_ok());
        for name in ["copy-object-result.xml", "complete-multipart.xml"] {
            assert!(
                parse_etag_result(&corpus_file(name), "test").is_ok(),
                "{name}"
            );
        }
        assert_eq!(
            parse_delete_result(&corpus_file("delete-result.xml"))
                .unwrap()
                .len(),
            1
        );
        assert!(matches!(
            parse_versioning(&corpus_file("versioning.xml")),
            Ok(VersioningStatus::Enabled)
        ));

        let error = corpus_file("error-in-200.xml");
        assert!(is_error_document(&error));
        assert_eq!(parse_error_body(&error).unwrap().code, "InternalError");
        assert_eq!(
            parse_error_body(&corpus_file("error-b2.json"))
                .unwrap()
                .code,
            "cap_exceeded"
        );
        assert_eq!(
            parse_error_body(&corpus_file("error-slowdown.xml"))
                .unwrap()
                .code,
            "SlowDown"
        );

        // Broken answers are errors, never a page of made-up entries.
        for (name, body) in corpus().iter().filter(|(n, _)| n.starts_with("bad-")) {
            assert!(
                parse_list_objects(body).is_err(),
                "{name} parsed as a listing"
            );
            assert!(
                parse_list_versions(body).is_err(),
                "{name} parsed as versions"
            );
        }
    }

    #[test]
    fn corpus_answers_cut_and_garbled_never_panic() {
        // A small deterministic fuzzer over the corpus: every file cut at
        // 64 points, and 256 single-character substitutions with the
        // characters that matter to XML.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        let specials = ['<', '>', '&', '"', '/', '\0', ';', '%', 'é', '9', ' '];
        for (_, body) in corpus() {
            parse_everything(&body);
            let chars: Vec<char> = body.chars().collect();
            for cut in 0..64 {
                let end = chars.len() * cut / 64;
                parse_everything(&chars[..end].iter().collect::<String>());
            }
            for _ in 0..256 {
                let mut garbled = chars.clone();
                if garbled.is_empty() {
                    break;
                }
                let at = next() % garbled.len();
                garbled[at] = specials[next() % specials.len()];
                parse_everything(&garbled.iter().collect::<String>());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bodies_never_panic(body in any::<String>()) {
            parse_everything(&body);
        }

        #[test]
        fn s3_shaped_bodies_never_panic(body in xmlish()) {
            parse_everything(&body);
        }

        #[test]
        fn listed_keys_round_trip(key in "\\PC{0,64}") {
            // S3's url encoding of listings: form-style, space as '+'.
            let encoded: String = key
                .bytes()
                .map(|b| match b {
                    b' ' => "+".to_owned(),
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            prop_assert_eq!(crate::s3::encode::decode_listed_key(&encoded), Some(key));
        }
    }
}
