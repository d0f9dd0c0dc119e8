//! The S3 client against a real S3 server (moto, verifying signatures):
//! every operation round-trips, odd keys survive, errors are clear, and
//! retries carry requests through injected faults.

mod support;

use bucketfs::s3::*;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use support::proxy::{Fault, FaultProxy, TestTls};
use support::{new_bucket, new_versioned_bucket, put, server, test_data, versioning_enabled};

const MIB: usize = 1024 * 1024;

fn sha(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

fn meta(pairs: &[(&str, &str)]) -> PutOptions {
    PutOptions {
        content_type: Some("text/plain".into()),
        user_metadata: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn put_head_get_delete_round_trip() {
    let c = new_bucket("roundtrip").await;
    let body = test_data(100_000, 1);
    let put = c
        .put_object(
            "dir/file.bin",
            body.clone(),
            &meta(&[("mode", "33188"), ("mtime", "1700000000")]),
        )
        .await
        .unwrap();
    assert_eq!(put.etag.len(), 32);

    let head = c.head_object("dir/file.bin", None).await.unwrap();
    assert_eq!(head.size, 100_000);
    assert_eq!(head.etag, put.etag);
    assert_eq!(head.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        head.user_metadata.get("mode").map(String::as_str),
        Some("33188")
    );
    assert_eq!(
        head.user_metadata.get("mtime").map(String::as_str),
        Some("1700000000")
    );

    let (got_meta, got) = c
        .get_object_bytes("dir/file.bin", GetRequest::default())
        .await
        .unwrap();
    assert_eq!(sha(&got), sha(&body));
    assert_eq!(got_meta.etag, put.etag);

    // Ranges, including the last byte.
    let (_, part) = c
        .get_object_bytes(
            "dir/file.bin",
            GetRequest {
                range: Some(1000..2001),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(&part[..], &body[1000..2001]);
    let (m, last) = c
        .get_object_bytes(
            "dir/file.bin",
            GetRequest {
                range: Some(99_999..100_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((&last[..], m.size), (&body[99_999..], 100_000));

    c.delete_object("dir/file.bin", None).await.unwrap();
    let err = c.head_object("dir/file.bin", None).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let err = c
        .get_object_bytes("dir/file.bin", GetRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NoSuchKey"), "{err}");
}

#[tokio::test]
async fn empty_object_round_trips() {
    let c = new_bucket("empty").await;
    c.put_object("empty", Bytes::new(), &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(c.head_object("empty", None).await.unwrap().size, 0);
    let (m, b) = c
        .get_object_bytes("empty", GetRequest::default())
        .await
        .unwrap();
    assert_eq!((m.size, b.len()), (0, 0));
}

#[tokio::test]
async fn conditional_requests() {
    let c = new_bucket("conditional").await;
    let first = c
        .put_object("k", Bytes::from_static(b"one"), &PutOptions::default())
        .await
        .unwrap();

    // If-Match with the current ETag reads; with another it fails 412.
    let ok = GetRequest {
        if_match: Some(first.etag.clone()),
        ..Default::default()
    };
    assert_eq!(&c.get_object_bytes("k", ok).await.unwrap().1[..], b"one");
    let stale = GetRequest {
        if_match: Some("0".repeat(32)),
        ..Default::default()
    };
    let err = c.get_object_bytes("k", stale).await.unwrap_err();
    assert!(err.is_precondition_failed(), "{err}");

    // If-None-Match with the current ETag: not modified.
    let same = GetRequest {
        if_none_match: Some(first.etag.clone()),
        ..Default::default()
    };
    assert!(matches!(
        c.get_object("k", same).await.unwrap(),
        GetObjectOutput::NotModified
    ));

    // PutObject If-None-Match: * creates only.
    let create = PutOptions {
        if_none_match_any: true,
        ..Default::default()
    };
    let err = c
        .put_object("k", Bytes::from_static(b"two"), &create)
        .await
        .unwrap_err();
    assert!(err.is_precondition_failed(), "{err}");
    assert_eq!(
        &c.get_object_bytes("k", GetRequest::default())
            .await
            .unwrap()
            .1[..],
        b"one"
    );
    c.put_object("new", Bytes::from_static(b"two"), &create)
        .await
        .unwrap();
}

/// A server that refuses conditional PUTs (B2's 501): the first O_EXCL
/// put is refused once and sent again plain after a HEAD; from then on no
/// conditional header is sent, and an existing key still gets 412.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_puts_fall_back_to_a_head_where_conditional_puts_are_refused() {
    let s = server();
    let direct = new_bucket("refused-conditional").await;
    let proxy = FaultProxy::start(&s.endpoint).await;
    proxy.refuse_conditional_put(true);
    let c = S3Client::new(s.config_via(&proxy.url, direct.bucket())).unwrap();
    let create = PutOptions {
        if_none_match_any: true,
        ..Default::default()
    };
    c.put_object("a", Bytes::from_static(b"one"), &create)
        .await
        .expect("an O_EXCL put on a server refusing If-None-Match succeeds");
    let err = c
        .put_object("a", Bytes::from_static(b"two"), &create)
        .await
        .unwrap_err();
    assert!(err.is_precondition_failed(), "{err}");
    c.put_object("b", Bytes::from_static(b"three"), &create)
        .await
        .unwrap();
    let seen = proxy.seen();
    let conditional = seen
        .iter()
        .filter(|r| r.method == "PUT" && r.header_names.iter().any(|h| h == "if-none-match"))
        .count();
    assert_eq!(conditional, 1, "asked once, then never again");
    assert_eq!(proxy.count("HEAD", "/a"), 2, "a HEAD before each put of a");
    let (_, a) = direct
        .get_object_bytes("a", GetRequest::default())
        .await
        .unwrap();
    assert_eq!(&a[..], b"one", "the existing object is kept");
}

/// An O_EXCL put whose answer is lost after the server stored it: the
/// retry gets 412, and the client finds its own bytes there instead of
/// reporting that the key exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_put_whose_answer_was_lost_is_not_reported_as_existing() {
    let s = server();
    let direct = new_bucket("lost-exclusive").await;
    let proxy = FaultProxy::start(&s.endpoint).await;
    let c = S3Client::new(s.config_via(&proxy.url, direct.bucket())).unwrap();
    let create = PutOptions {
        if_none_match_any: true,
        ..Default::default()
    };
    proxy.inject(Some("PUT"), Fault::DropConnection, 1);
    c.put_object("k", Bytes::from_static(b"mine"), &create)
        .await
        .expect("the lost answer is recognised as our own create");
    assert_eq!(proxy.count("PUT", "/k"), 2, "sent twice");
    // Someone else's object is still a conflict after a retry.
    proxy.inject(Some("PUT"), Fault::DropConnection, 1);
    put(&direct, "other", b"theirs").await;
    let err = c
        .put_object("other", Bytes::from_static(b"mine"), &create)
        .await
        .unwrap_err();
    assert!(err.is_precondition_failed(), "{err}");
}

#[tokio::test]
async fn odd_keys_round_trip_and_list_back_exactly() {
    let c = new_bucket("oddkeys").await;
    let keys = [
        "with space.txt",
        "plus+sign",
        "percent%20literal",
        "question?mark",
        "hash#tag",
        "ünïcødé/日本語.txt",
        "emoji 🎉",
        "trailing/",
        "amp&lt;<xml>\"'",
        "tilde~and=equals;semi,comma",
        "ctl\u{1}char",
        "a//double",
        "/leading",
    ];
    for (i, key) in keys.iter().enumerate() {
        let body = Bytes::from(format!("body of {i}"));
        c.put_object(key, body.clone(), &PutOptions::default())
            .await
            .unwrap_or_else(|e| panic!("put {key:?}: {e}"));
        let (_, got) = c
            .get_object_bytes(key, GetRequest::default())
            .await
            .unwrap_or_else(|e| panic!("get {key:?}: {e}"));
        assert_eq!(got, body, "{key:?}");
        let head = c
            .head_object(key, None)
            .await
            .unwrap_or_else(|e| panic!("head {key:?}: {e}"));
        assert_eq!(head.size, body.len() as u64);
    }
    let listed = c.list_all("", None).await.unwrap();
    let mut got: Vec<String> = listed.objects.iter().map(|o| o.key.clone()).collect();
    let mut want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // Copy and delete work on odd keys too.
    c.copy_object(
        &CopySource::latest("question?mark"),
        "copied #1 +",
        &MetadataDirective::Copy,
    )
    .await
    .unwrap();
    let (_, copied) = c
        .get_object_bytes("copied #1 +", GetRequest::default())
        .await
        .unwrap();
    assert_eq!(&copied[..], b"body of 3");
    c.delete_object("plus+sign", None).await.unwrap();
    assert!(c
        .head_object("plus+sign", None)
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn dot_segment_keys_are_refused_not_misaddressed() {
    let c = new_bucket("dotseg").await;
    let err = c.head_object("a/../b", None).await.unwrap_err();
    assert!(
        matches!(*err.kind, ErrorKind::InvalidRequest { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn listing_paginates_with_delimiter_and_start_after() {
    let c = new_bucket("paging").await;
    let keys = ["a.txt", "b/1", "b/2", "c/x/y", "d.txt", "e.txt", "f/"];
    for k in keys {
        put(&c, k, b"x").await;
    }
    // max-keys=2 with a delimiter: every page has at most two entries and
    // following the tokens yields every file and prefix once.
    let mut request = ListRequest {
        delimiter: Some("/".into()),
        max_keys: Some(2),
        ..Default::default()
    };
    let (mut files, mut dirs, mut pages) = (Vec::new(), Vec::new(), 0);
    loop {
        let page = c.list_objects(&request).await.unwrap();
        pages += 1;
        assert!(page.objects.len() + page.common_prefixes.len() <= 2);
        files.extend(page.objects.into_iter().map(|o| o.key));
        dirs.extend(page.common_prefixes);
        match page.next_continuation_token {
            Some(t) => request.continuation_token = Some(t),
            None => break,
        }
    }
    assert_eq!(files, ["a.txt", "d.txt", "e.txt"]);
    assert_eq!(dirs, ["b/", "c/", "f/"]);
    assert!(pages >= 3, "{pages} pages");

    let page = c
        .list_objects(&ListRequest {
            prefix: "b/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let sizes: Vec<_> = page
        .objects
        .iter()
        .map(|o| (o.key.as_str(), o.size))
        .collect();
    assert_eq!(sizes, [("b/1", 1), ("b/2", 1)]);

    let page = c
        .list_objects(&ListRequest {
            start_after: Some("c/x/y".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let after: Vec<_> = page.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(after, ["d.txt", "e.txt", "f/"]);
}

#[tokio::test]
async fn multipart_upload_of_three_parts_with_a_copied_part() {
    let c = new_bucket("multipart").await;
    let p1 = test_data(5 * MIB, 11);
    let p2 = test_data(5 * MIB, 12);
    let p3 = test_data(1234, 13);
    let opts = meta(&[("mode", "33261")]);
    let upload = c.create_multipart_upload("big.bin", &opts).await.unwrap();
    let parts = vec![
        c.upload_part("big.bin", &upload, 1, p1.clone())
            .await
            .unwrap(),
        c.upload_part("big.bin", &upload, 2, p2.clone())
            .await
            .unwrap(),
        c.upload_part("big.bin", &upload, 3, p3.clone())
            .await
            .unwrap(),
    ];
    let listed = c.list_parts("big.bin", &upload).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|p| (p.part_number, p.size))
            .collect::<Vec<_>>(),
        [(1, 5 * MIB as u64), (2, 5 * MIB as u64), (3, 1234)]
    );
    let in_progress = c.list_multipart_uploads("").await.unwrap();
    assert!(in_progress
        .iter()
        .any(|u| u.upload_id == upload && u.key == "big.bin"));
    let done = c
        .complete_multipart_upload("big.bin", &upload, &parts)
        .await
        .unwrap();
    assert!(done.etag.ends_with("-3"), "multipart ETag {}", done.etag);
    assert_eq!(
        multipart_etag(&parts).as_deref(),
        Some(done.etag.as_str()),
        "computed as the server does"
    );

    let mut whole = Vec::new();
    whole.extend_from_slice(&p1);
    whole.extend_from_slice(&p2);
    whole.extend_from_slice(&p3);
    let (m, got) = c
        .get_object_bytes("big.bin", GetRequest::default())
        .await
        .unwrap();
    assert_eq!(sha(&got), sha(&whole));
    assert_eq!(
        m.user_metadata.get("mode").map(String::as_str),
        Some("33261")
    );

    // A new object from a copied range of the old plus a fresh part.
    let upload = c
        .create_multipart_upload("spliced.bin", &PutOptions::default())
        .await
        .unwrap();
    let copied = c
        .upload_part_copy(
            "spliced.bin",
            &upload,
            1,
            &CopySource::latest("big.bin"),
            0..(5 * MIB as u64),
        )
        .await
        .unwrap();
    let tail = c
        .upload_part("spliced.bin", &upload, 2, p3.clone())
        .await
        .unwrap();
    c.complete_multipart_upload("spliced.bin", &upload, &[copied, tail])
        .await
        .unwrap();
    let (_, got) = c
        .get_object_bytes("spliced.bin", GetRequest::default())
        .await
        .unwrap();
    assert_eq!(got.len(), 5 * MIB + 1234);
    assert_eq!(sha(&got[..5 * MIB]), sha(&p1));
    assert_eq!(&got[5 * MIB..], &p3[..]);

    // Abort leaves nothing behind, and aborting twice is fine.
    let upload = c
        .create_multipart_upload("aborted.bin", &PutOptions::default())
        .await
        .unwrap();
    c.upload_part("aborted.bin", &upload, 1, p3.clone())
        .await
        .unwrap();
    c.abort_multipart_upload("aborted.bin", &upload)
        .await
        .unwrap();
    c.abort_multipart_upload("aborted.bin", &upload)
        .await
        .unwrap();
    let uploads = c.list_multipart_uploads("aborted").await.unwrap();
    assert!(uploads.iter().all(|u| u.upload_id != upload));
    assert!(c
        .head_object("aborted.bin", None)
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn copy_object_keeps_or_replaces_metatest_data() {
    let c = new_bucket("copymeta").await;
    c.put_object(
        "src",
        Bytes::from_static(b"payload"),
        &meta(&[("mode", "33188"), ("uid", "1000")]),
    )
    .await
    .unwrap();
    c.copy_object(&CopySource::latest("src"), "kept", &MetadataDirective::Copy)
        .await
        .unwrap();
    let kept = c.head_object("kept", None).await.unwrap();
    assert_eq!(
        kept.user_metadata.get("uid").map(String::as_str),
        Some("1000")
    );

    let replacement = meta(&[("mode", "33261")]);
    c.copy_object(
        &CopySource::latest("src"),
        "src",
        &MetadataDirective::Replace(replacement),
    )
    .await
    .unwrap();
    let replaced = c.head_object("src", None).await.unwrap();
    assert_eq!(
        replaced.user_metadata.get("mode").map(String::as_str),
        Some("33261")
    );
    assert_eq!(replaced.user_metadata.get("uid"), None);
    let (_, body) = c
        .get_object_bytes("src", GetRequest::default())
        .await
        .unwrap();
    assert_eq!(&body[..], b"payload");
}

#[tokio::test]
async fn delete_objects_in_batches_over_a_thousand() {
    let c = new_bucket("bulkdelete").await;
    let keys: Vec<String> = (0..1005).map(|i| format!("many/{i:04}")).collect();
    let options = PutOptions::default();
    let results: Vec<_> = futures::stream::iter(&keys)
        .map(|k| c.put_object(k, Bytes::from_static(b"."), &options))
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        r.unwrap();
    }
    assert_eq!(c.list_all("many/", None).await.unwrap().objects.len(), 1005);
    let ids: Vec<ObjectIdentifier> = keys
        .iter()
        .map(|k| ObjectIdentifier {
            key: k.clone(),
            version_id: None,
        })
        .collect();
    let failures = c.delete_objects(&ids).await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(c.list_all("many/", None).await.unwrap().objects.is_empty());
}

#[tokio::test]
async fn versions_and_delete_markers_are_listed_and_readable() {
    let c = new_versioned_bucket("versions").await;
    if !versioning_enabled(&c).await {
        return;
    }
    let mut ids = Vec::new();
    for body in ["v1", "v2", "v3"] {
        let put = c
            .put_object("doc.txt", Bytes::from(body), &PutOptions::default())
            .await
            .unwrap();
        ids.push(
            put.version_id
                .expect("versioned bucket returns version ids"),
        );
    }
    c.delete_object("doc.txt", None).await.unwrap();
    put(&c, "other.txt", b"o").await;

    let versions = c.list_all_versions("doc").await.unwrap();
    assert_eq!(versions.len(), 4, "{versions:?}");
    assert_eq!(versions[0].kind, VersionKind::DeleteMarker);
    assert!(versions[0].is_latest);
    let object_ids: Vec<&str> = versions[1..]
        .iter()
        .map(|v| v.version_id.as_str())
        .collect();
    assert_eq!(
        object_ids,
        [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]
    );

    // Each old version is still readable by id.
    let (_, old) = c
        .get_object_bytes(
            "doc.txt",
            GetRequest {
                version_id: Some(ids[0].clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(&old[..], b"v1");
    let head = c.head_object("doc.txt", Some(&ids[1])).await.unwrap();
    assert_eq!(head.version_id.as_deref(), Some(ids[1].as_str()));

    // Restore by copying an old version over the deleted key.
    c.copy_object(
        &CopySource {
            key: "doc.txt".into(),
            version_id: Some(ids[1].clone()),
            if_match: None,
        },
        "doc.txt",
        &MetadataDirective::Copy,
    )
    .await
    .unwrap();
    let (_, now) = c
        .get_object_bytes("doc.txt", GetRequest::default())
        .await
        .unwrap();
    assert_eq!(&now[..], b"v2");

    // Pagination by key and version markers, two entries a page.
    let mut request = ListVersionsRequest {
        max_keys: Some(2),
        ..Default::default()
    };
    let mut all = Vec::new();
    loop {
        let page = c.list_object_versions(&request).await.unwrap();
        assert!(page.versions.len() <= 2);
        all.extend(page.versions);
        match page.next_key_marker {
            Some(k) => {
                request.key_marker = Some(k);
                request.version_id_marker = page.next_version_id_marker;
            }
            None => break,
        }
    }
    assert_eq!(all.len(), 6, "5 of doc.txt and 1 of other.txt: {all:?}");

    // Deleting a specific version removes it for good.
    c.delete_object("doc.txt", Some(&ids[0])).await.unwrap();
    let versions = c.list_all_versions("doc").await.unwrap();
    assert!(versions.iter().all(|v| v.version_id != ids[0]));
}

#[tokio::test]
async fn bucket_level_operations() {
    let c = new_bucket("bucketops").await;
    c.head_bucket().await.unwrap();
    c.put_bucket_versioning(true).await.unwrap();
    assert_eq!(
        c.get_bucket_versioning().await.unwrap(),
        VersioningStatus::Enabled
    );

    let fresh = server().client("never-versioned-bucket");
    fresh.create_bucket().await.unwrap();
    assert_eq!(
        fresh.get_bucket_versioning().await.unwrap(),
        VersioningStatus::Unversioned
    );
    fresh.delete_bucket().await.unwrap();
}

#[tokio::test]
async fn wrong_secret_is_a_clear_authentication_error() {
    let s = server();
    let good = new_bucket("wrongsecret").await;
    let mut config = s.config_via(&s.endpoint, good.bucket());
    config.credentials = Credentials::new(&s.access_key_id, "not-the-secret", None, "test").into();
    let bad = S3Client::new(config).unwrap();
    let err = bad.list_objects(&ListRequest::default()).await.unwrap_err();
    assert!(err.is_auth_failure(), "{err}");
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"));
    assert_eq!(err.attempts, 1, "a 403 is never retried");
    let msg = err.user_message();
    assert!(msg.contains("secret key does not match"), "{msg}");
    assert!(!msg.contains("not-the-secret"), "{msg}");

    let mut config = s.config_via(&s.endpoint, good.bucket());
    config.credentials = Credentials::new("AKIDUNKNOWN", "whatever", None, "test").into();
    let err = S3Client::new(config)
        .unwrap()
        .list_objects(&ListRequest::default())
        .await
        .unwrap_err();
    assert!(err.is_auth_failure(), "{err}");
}

#[tokio::test]
async fn missing_bucket_is_a_clear_error() {
    let c = server().client("no-such-bucket-here");
    let err = c.list_objects(&ListRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Some("NoSuchBucket"), "{err}");
    assert!(err.user_message().contains("bucket does not exist"));
    assert!(c.head_bucket().await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn retries_carry_requests_through_503s_500s_and_dropped_connections() {
    let s = server();
    let direct = new_bucket("retries").await;
    let proxy = FaultProxy::start(&s.endpoint).await;
    let c = S3Client::new(s.config_via(&proxy.url, direct.bucket())).unwrap();

    proxy.inject(Some("PUT"), Fault::slow_down(), 2);
    proxy.inject(Some("PUT"), Fault::internal_error(), 1);
    proxy.inject(Some("PUT"), Fault::DropConnection, 1);
    let body = test_data(300_000, 5);
    c.put_object("r.bin", body.clone(), &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(proxy.pending_faults(), 0);
    assert_eq!(proxy.count("PUT", "/r.bin"), 5, "4 faults then success");

    proxy.inject(Some("GET"), Fault::DropConnection, 2);
    proxy.inject(
        Some("GET"),
        Fault::Status {
            status: 503,
            code: "SlowDown",
            retry_after: Some(1),
        },
        1,
    );
    let started = std::time::Instant::now();
    let (_, got) = c
        .get_object_bytes("r.bin", GetRequest::default())
        .await
        .unwrap();
    assert_eq!(sha(&got), sha(&body));
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After was honoured"
    );

    // A body cut mid-stream resumes from where it stopped.
    proxy.clear_seen();
    proxy.inject(Some("GET"), Fault::CutBodyAfter(100_000), 1);
    let (_, got) = c
        .get_object_bytes("r.bin", GetRequest::default())
        .await
        .unwrap();
    assert_eq!(sha(&got), sha(&body));
    assert_eq!(
        proxy.count("GET", "/r.bin"),
        2,
        "one cut GET and one resumed ranged GET"
    );

    // Attempts are bounded: a server that keeps failing gives an error
    // saying how many attempts were made.
    proxy.inject(None, Fault::slow_down(), 100);
    let err = c.head_object("r.bin", None).await.unwrap_err();
    assert_eq!(err.attempts, 6, "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("after 6 attempts"), "{err}");
}

#[tokio::test]
async fn non_retryable_errors_are_sent_once() {
    let s = server();
    let direct = new_bucket("noretry").await;
    let proxy = FaultProxy::start(&s.endpoint).await;
    let c = S3Client::new(s.config_via(&proxy.url, direct.bucket())).unwrap();
    proxy.inject(
        None,
        Fault::Status {
            status: 400,
            code: "InvalidArgument",
            retry_after: None,
        },
        3,
    );
    let err = c.list_objects(&ListRequest::default()).await.unwrap_err();
    assert_eq!((err.code(), err.attempts), (Some("InvalidArgument"), 1));
    assert_eq!(proxy.seen().len(), 1);
}

#[tokio::test]
async fn https_with_a_custom_ca_bundle() {
    let s = server();
    let direct = new_bucket("https").await;
    direct
        .put_object(
            "tls.txt",
            Bytes::from_static(b"over TLS"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let tls = TestTls::generate();
    let proxy = FaultProxy::start_tls(&s.endpoint, &tls).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();

    // Trusting the test CA: works.
    let mut config = s.config_via(&proxy.url, direct.bucket());
    config.ca_bundle = Some(ca.clone());
    let c = S3Client::new(config).unwrap();
    let (_, body) = c
        .get_object_bytes("tls.txt", GetRequest::default())
        .await
        .unwrap();
    assert_eq!(&body[..], b"over TLS");

    // Without it the certificate is refused: no silent trust.
    let mut config = s.config_via(&proxy.url, direct.bucket());
    config.retry.max_attempts = 1;
    let c = S3Client::new(config).unwrap();
    let err = c
        .get_object_bytes("tls.txt", GetRequest::default())
        .await
        .unwrap_err();
    let msg = err.to_string().to_ascii_lowercase();
    assert!(
        msg.contains("certificate") || msg.contains("unknown issuer"),
        "{msg}"
    );

    // A bundle that is not PEM is a clear error at start-up.
    std::fs::write(&ca, "not a certificate").unwrap();
    let mut config = s.config_via(&proxy.url, direct.bucket());
    config.ca_bundle = Some(ca);
    let err = S3Client::new(config).unwrap_err();
    assert!(err.to_string().contains("CA bundle"), "{err}");
}

#[tokio::test]
async fn sse_c_headers_are_sent_and_objects_round_trip() {
    let s = server();
    let direct = new_bucket("ssec").await;
    let proxy = FaultProxy::start(&s.endpoint).await;
    let mut config = s.config_via(&proxy.url, direct.bucket());
    config.sse = ServerSideEncryption::Customer(SseCustomerKey::from_bytes(&[42u8; 32]));
    let c = S3Client::new(config).unwrap();
    put(&c, "secret.bin", b"classified").await;
    let (_, body) = c
        .get_object_bytes("secret.bin", GetRequest::default())
        .await
        .unwrap();
    assert_eq!(&body[..], b"classified");
    c.copy_object(
        &CopySource::latest("secret.bin"),
        "copy.bin",
        &MetadataDirective::Copy,
    )
    .await
    .unwrap();
    let (_, body) = c
        .get_object_bytes("copy.bin", GetRequest::default())
        .await
        .unwrap();
    assert_eq!(&body[..], b"classified");
    // Every data request carried the key; the copy also named the source's.
    let seen = proxy.seen();
    let has = |s: &support::proxy::Seen, h: &str| s.header_names.iter().any(|n| n == h);
    for s in &seen {
        assert!(has(s, "x-amz-server-side-encryption-customer-key"), "{s:?}");
        assert!(
            has(s, "x-amz-server-side-encryption-customer-key-md5"),
            "{s:?}"
        );
    }
    let copy = seen
        .iter()
        .find(|s| s.path_and_query.ends_with("/copy.bin") && s.method == "PUT")
        .unwrap();
    assert!(has(
        copy,
        "x-amz-copy-source-server-side-encryption-customer-key"
    ));
}

#[tokio::test]
async fn odd_server_answers_are_clear_errors() {
    let s = server();
    let direct = new_bucket("oddanswers").await;
    let proxy = FaultProxy::start(&s.endpoint).await;
    let mut config = s.config_via(&proxy.url, direct.bucket());
    config.retry.max_attempts = 2;
    let c = S3Client::new(config).unwrap();

    // An empty 200 where a listing should be.
    proxy.inject(
        None,
        Fault::Raw {
            status: 200,
            headers: vec![],
            body: vec![],
        },
        1,
    );
    let err = c.list_objects(&ListRequest::default()).await.unwrap_err();
    assert!(
        matches!(*err.kind, ErrorKind::InvalidResponse { .. }),
        "{err}"
    );

    // Malformed XML.
    proxy.inject(
        None,
        Fault::Raw {
            status: 200,
            headers: vec![],
            body: b"<ListBucketResult><Contents><Key>x".to_vec(),
        },
        1,
    );
    let err = c.list_objects(&ListRequest::default()).await.unwrap_err();
    assert!(
        matches!(*err.kind, ErrorKind::InvalidResponse { .. }),
        "{err}"
    );

    // A huge error body: read only as far as needed, then retried.
    let mut huge = b"<?xml version=\"1.0\"?><Error><Code>InternalError</Code><Message>".to_vec();
    huge.resize(8 * 1024 * 1024, b'x');
    proxy.inject(
        None,
        Fault::Raw {
            status: 500,
            headers: vec![],
            body: huge,
        },
        1,
    );
    c.list_objects(&ListRequest::default())
        .await
        .expect("retried after the huge error");

    // A redirect is reported, not followed.
    let location = ("location", "http://127.0.0.1:9/elsewhere".to_owned());
    proxy.inject(
        None,
        Fault::Raw {
            status: 301,
            headers: vec![location],
            body: b"<Error><Code>PermanentRedirect</Code><Message>use another endpoint</Message></Error>".to_vec(),
        },
        1,
    );
    let err = c.list_objects(&ListRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Some("PermanentRedirect"), "{err}");
    assert_eq!(err.attempts, 1);

    // A body shorter than its Content-Length is a broken transfer: retried.
    c.put_object(
        "k",
        Bytes::from_static(b"0123456789"),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    proxy.inject(Some("GET"), Fault::CutBodyAfter(4), 1);
    let (_, body) = c
        .get_object_bytes("k", GetRequest::default())
        .await
        .unwrap();
    assert_eq!(&body[..], b"0123456789");
}
