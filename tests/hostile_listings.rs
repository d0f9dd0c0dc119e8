//! Listings no well-behaved bucket gives, served to a real mount: 100,000
//! keys in one directory, a listing that changes between its pages, one
//! whose continuation tokens go round in a circle, keys that cannot be
//! file names (`./x`, `../x`, `a/./b`), keys that do not decode, and
//! 1,024-byte keys. None may crash, hang or loop; each name is shown
//! correctly or hidden and logged once. And a directory of more files than
//! the kernel is let hold: the daemon has it forget the least recently
//! used, and they come back under the same inode numbers.
//!
//! The odd listings are answered by the test proxy itself (a server would
//! have to store 100,000 objects, and no real one changes or loops on
//! cue); everything else reaches the real test server.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use support::mount::Mount;
use support::proxy::{Fault, FaultProxy};
use support::{blocking, new_bucket, put, server, wait_until};

/// The `prefix` and `continuation-token` of a ListObjectsV2 request, if
/// this is one.
fn list_request(method: &str, path_and_query: &str) -> Option<(String, Option<String>)> {
    if method != "GET" {
        return None;
    }
    let url = reqwest::Url::parse(&format!("http://proxy{path_and_query}")).ok()?;
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    (get("list-type").as_deref() == Some("2"))
        .then(|| (get("prefix").unwrap_or_default(), get("continuation-token")))
}

/// The `start-after` of a ListObjectsV2 request, if it has one.
fn start_after(path_and_query: &str) -> Option<String> {
    let url = reqwest::Url::parse(&format!("http://proxy{path_and_query}")).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "start-after")
        .map(|(_, v)| v.into_owned())
}

/// One ListObjectsV2 page (url-encoded keys, as asked), with `token` as
/// the next continuation token if given.
fn page(prefix: &str, keys: &[String], token: Option<&str>) -> Fault {
    page_with_dirs(prefix, keys, &[], token)
}

/// `page` with common prefixes (directories) too.
fn page_with_dirs(prefix: &str, keys: &[String], dirs: &[&str], token: Option<&str>) -> Fault {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Name>bucket</Name><Prefix>{prefix}</Prefix><KeyCount>{}</KeyCount>\
         <MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter><EncodingType>url</EncodingType>\
         <IsTruncated>{}</IsTruncated>",
        keys.len(),
        token.is_some()
    );
    if let Some(token) = token {
        xml.push_str(&format!(
            "<NextContinuationToken>{token}</NextContinuationToken>"
        ));
    }
    for (i, key) in keys.iter().enumerate() {
        xml.push_str(&format!(
            "<Contents><Key>{key}</Key><LastModified>2026-11-01T00:00:00.000Z</LastModified>\
             <ETag>\"etag{i}\"</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
            key.len()
        ));
    }
    for dir in dirs {
        xml.push_str(&format!(
            "<CommonPrefixes><Prefix>{dir}</Prefix></CommonPrefixes>"
        ));
    }
    xml.push_str("</ListBucketResult>");
    Fault::Raw {
        status: 200,
        headers: vec![("content-type", "application/xml".into())],
        body: xml.into_bytes(),
    }
}

/// The listings here are the proxy's own: their keys are not on the
/// server, so a HEAD of one finds nothing (the entry, deleted since it was
/// listed as far as the mount can tell, is shown as listed, and a stat of
/// it fails). These tests are about listings, so their mounts show what a
/// listing says.
const TRUST_LISTINGS: &str = "--trust-listings";

/// Entry names of a directory in the mount, read in a blocking task with a
/// bound on the time it may take (a hang fails the test, not CI).
async fn list(path: std::path::PathBuf) -> std::io::Result<Vec<String>> {
    let listing = blocking(move || {
        std::fs::read_dir(&path)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<Vec<String>>>()
    });
    tokio::time::timeout(Duration::from_secs(120), listing)
        .await
        .expect("the listing finished within 120 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_100000_keys_lists_whole_in_100_requests() {
    let c = new_bucket("huge").await;
    // The directory exists on the server; its contents come from the proxy.
    put(&c, "big/", b"").await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    proxy.respond_with(Arc::new(|method, path| {
        let (prefix, token) = list_request(method, path)?;
        if prefix != "big/" {
            return None;
        }
        let n: usize = token.map_or(0, |t| t.trim_start_matches('p').parse().unwrap_or(0));
        let keys: Vec<String> = (n * 1000..(n + 1) * 1000)
            .map(|i| format!("big/f{i:06}"))
            .collect();
        let next = (n + 1 < 100).then(|| format!("p{}", n + 1));
        Some(page("big/", &keys, next.as_deref()))
    }));
    let mount = Mount::start(
        c.bucket(),
        &proxy.url,
        &["--metadata-ttl", "60s", TRUST_LISTINGS],
    );
    proxy.clear_seen();

    let names = list(mount.path.join("big")).await.unwrap();
    assert_eq!(names.len(), 100_000);
    let unique: HashSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), 100_000);
    // 100 pages of 1,000 (with the delimiter), besides the one-key
    // listing that found the directory.
    assert_eq!(proxy.count("GET", "delimiter=%2F"), 100);

    // The listing answers a stat of any of them: no HEAD.
    let meta = blocking({
        let path = mount.path.join("big/f054321");
        move || std::fs::metadata(path).unwrap()
    })
    .await;
    assert_eq!(meta.len(), "big/f054321".len() as u64);
    assert_eq!(proxy.count("HEAD", "f054321"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_inodes_the_kernel_forgets_least_recent_files_but_not_open_ones() {
    let c = new_bucket("forgets").await;
    put(&c, "big/", b"").await;
    put(&c, "held.txt", b"kept open").await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    proxy.respond_with(Arc::new(|method, path| {
        let (prefix, token) = list_request(method, path)?;
        if prefix != "big/" {
            return None;
        }
        // Pages of 1,000 from the continuation token's index, or from the
        // first key after `start-after` (a lookup's page, see
        // `range_pages.rs`).
        let key = |i: usize| format!("big/f{i:06}");
        let start = match (token, start_after(path)) {
            (Some(t), _) => t.trim_start_matches('k').parse().unwrap_or(0),
            (None, Some(after)) => (0..5000).find(|i| key(*i) > after).unwrap_or(5000),
            (None, None) => 0,
        };
        let end = (start + 1000).min(5000);
        let keys: Vec<String> = (start..end).map(key).collect();
        let next = (end < 5000).then(|| format!("k{end}"));
        Some(page("big/", &keys, next.as_deref()))
    }));
    let mount = Mount::start(
        c.bucket(),
        &proxy.url,
        &[
            "--metadata-ttl",
            "60s",
            TRUST_LISTINGS,
            "--max-inodes",
            "500",
            "--debug",
        ],
    );
    let root = mount.path.clone();
    let (held, first_ino, walked) = blocking(move || {
        use std::os::unix::fs::MetadataExt;
        // Opened first: the least recently used of all, but open.
        let held = std::fs::File::open(root.join("held.txt")).unwrap();
        // `ls -l`: readdirplus hands the kernel all 5,000 (the daemon has
        // it forget most at once), then a stat each, answered from the
        // listing just made (its keys are the proxy's: a HEAD finds none).
        let entries: Vec<std::fs::DirEntry> = std::fs::read_dir(root.join("big"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut walked = 0;
        let mut first_ino = None;
        for entry in entries {
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            assert_eq!(meta.len(), "big/f000000".len() as u64);
            if entry.file_name() == "f000000" {
                first_ino = Some(meta.ino());
            }
            walked += 1;
        }
        (held, first_ino.expect("f000000 listed"), walked)
    })
    .await;
    assert_eq!(walked, 5000);
    // The kernel is asked to forget, and does: the daemon's count of the
    // inodes it holds comes back under the limit.
    assert!(
        wait_until(Duration::from_secs(20), || mount
            .log_text()
            .contains("the kernel holds no more than the limit again")),
        "the kernel never came back under 500 inodes:\n{}",
        mount.log_text()
    );
    assert!(mount.log_text().contains("asked the kernel to forget"));
    let root = mount.path.clone();
    let (again, held_link, held_content) = blocking(move || {
        use std::io::{Read, Seek};
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::io::AsRawFd;
        let again = std::fs::metadata(root.join("big/f000000")).unwrap().ino();
        let mut held = held;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", held.as_raw_fd())).unwrap();
        let mut content = String::new();
        held.rewind().unwrap();
        held.read_to_string(&mut content).unwrap();
        (again, link, content)
    })
    .await;
    // A file forgotten is looked up again under its number.
    assert_eq!(again, first_ino);
    // The open file's name was left alone (an invalidated one would show
    // as deleted), and it reads on.
    assert_eq!(held_link, mount.path.join("held.txt"));
    assert_eq!(held_content, "kept open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_changes_between_pages_shows_each_name_once() {
    let c = new_bucket("moving").await;
    put(&c, "moving/", b"").await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    proxy.respond_with(Arc::new(|method, path| {
        let (prefix, token) = list_request(method, path)?;
        if prefix != "moving/" {
            return None;
        }
        let keys = |range: std::ops::Range<usize>| -> Vec<String> {
            range.map(|i| format!("moving/k{i:04}")).collect()
        };
        Some(match token.as_deref() {
            None => page("moving/", &keys(0..500), Some("second")),
            // Between the pages, keys were added before and inside the
            // part already listed: the second page repeats 250 names.
            _ => {
                let mut later = vec!["moving/a-late".to_owned()];
                later.extend(keys(250..1000));
                page("moving/", &later, None)
            }
        })
    }));
    let mount = Mount::start(c.bucket(), &proxy.url, &[TRUST_LISTINGS]);
    let names = list(mount.path.join("moving")).await.unwrap();
    let unique: HashSet<&String> = names.iter().collect();
    assert_eq!(names.len(), unique.len(), "a name listed twice");
    assert_eq!(names.len(), 1001);
    assert!(unique.contains(&"a-late".to_owned()));
    assert!(unique.contains(&"k0999".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_going_round_in_circles_fails_instead_of_hanging() {
    let c = new_bucket("circle").await;
    put(&c, "circle/", b"").await;
    put(&c, "fine.txt", b"fine").await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    proxy.respond_with(Arc::new(|method, path| {
        let (prefix, token) = list_request(method, path)?;
        if prefix != "circle/" {
            return None;
        }
        // A → B → A → B ... for ever, one key per page.
        let (key, next) = match token.as_deref() {
            None => ("circle/start", "A"),
            Some("A") => ("circle/a", "B"),
            _ => ("circle/b", "A"),
        };
        Some(page("circle/", &[key.to_owned()], Some(next)))
    }));
    let mount = Mount::start(c.bucket(), &proxy.url, &[TRUST_LISTINGS]);
    let error = list(mount.path.join("circle")).await.unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    assert!(
        proxy.count("GET", "list-type=2") < 10,
        "the listing should stop at the first marker that comes back"
    );
    assert!(
        mount.log_text().contains("round in a circle"),
        "{}",
        mount.log_text()
    );
    // The rest of the mount works.
    let fine = blocking({
        let path = mount.path.join("fine.txt");
        move || std::fs::read(path).unwrap()
    })
    .await;
    assert_eq!(fine, b"fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_are_no_file_names_are_hidden_and_logged_once() {
    let c = new_bucket("dots").await;
    put(&c, "dots/", b"").await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    proxy.respond_with(Arc::new(|method, path| {
        let (prefix, _) = list_request(method, path)?;
        if prefix != "dots/" {
            return None;
        }
        let keys = [
            "dots/.",
            "dots/..",
            "dots/%ZZnot-encoding",
            "dots/%FF%FEnot-utf8",
            "dots/fine.txt",
        ];
        let mut fault = page("dots/", &keys.map(str::to_owned), None);
        // Common prefixes that would be `.` and `..` directories.
        if let Fault::Raw { body, .. } = &mut fault {
            let text = String::from_utf8(body.clone()).unwrap().replace(
                "</ListBucketResult>",
                "<CommonPrefixes><Prefix>dots/./</Prefix></CommonPrefixes>\
                 <CommonPrefixes><Prefix>dots/../</Prefix></CommonPrefixes>\
                 <CommonPrefixes><Prefix>dots/sub/</Prefix></CommonPrefixes></ListBucketResult>",
            );
            *body = text.into_bytes();
        }
        Some(fault)
    }));
    let mount = Mount::start(
        c.bucket(),
        &proxy.url,
        &["--metadata-ttl", "0s", TRUST_LISTINGS],
    );
    for _ in 0..2 {
        let mut names = list(mount.path.join("dots")).await.unwrap();
        names.sort();
        assert_eq!(names, ["fine.txt", "sub"]);
    }
    let log = mount.log_text();
    for key in [
        "dots/./",
        "dots/../",
        "dots/%ZZnot-encoding",
        "dots/%FF%FEnot-utf8",
    ] {
        let lines = log
            .lines()
            .filter(|l| l.contains("hiding key") && l.contains(&format!("{key:?}")))
            .count();
        assert_eq!(lines, 1, "{key} logged {lines} times:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_1024_bytes_are_shown_and_read() {
    let c = new_bucket("long").await;
    // Four segments of 250 bytes and separators: S3's longest key.
    let segment = |ch: char| ch.to_string().repeat(250);
    let key = format!(
        "{}/{}/{}/{}/{}",
        segment('a'),
        segment('b'),
        segment('c'),
        segment('d'),
        "x".repeat(20)
    );
    assert_eq!(key.len(), 1024);
    put(&c, &key, b"at the limit").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let body = blocking({
        let path = mount.path.join(&key);
        move || std::fs::read(path).unwrap()
    })
    .await;
    assert_eq!(body, b"at the limit");
    // One byte more cannot exist as a key: creating it is ENAMETOOLONG.
    let longer = blocking({
        let path = mount.path.join(format!("{key}y"));
        move || std::fs::write(path, b"no").unwrap_err()
    })
    .await;
    assert_eq!(longer.raw_os_error(), Some(libc::ENAMETOOLONG));
}

/// Entries stream out page by page, yet a file and a directory of one name
/// (`x` and `x/...`) still show once, as the directory, when the file ends
/// one page and the directory comes in the next. A page that cannot be
/// fetched fails the listing: no silently short directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_split_across_pages_shows_once_and_a_lost_page_is_an_error() {
    let c = new_bucket("split").await;
    put(&c, "split/", b"").await;
    put(&c, "broken/", b"").await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    proxy.respond_with(Arc::new(|method, path| {
        let (prefix, token) = list_request(method, path)?;
        let keys = |names: &[&str]| -> Vec<String> {
            names.iter().map(|n| format!("{prefix}{n}")).collect()
        };
        match (prefix.as_str(), token.as_deref()) {
            ("split/", None) => Some(page("split/", &keys(&["a.txt", "x"]), Some("two"))),
            ("split/", Some(_)) => Some(page_with_dirs(
                "split/",
                &keys(&["z.txt"]),
                &["split/x/"],
                None,
            )),
            ("broken/", None) => Some(page("broken/", &keys(&["first"]), Some("two"))),
            ("broken/", Some(_)) => Some(Fault::internal_error()),
            _ => None,
        }
    }));
    let mount = Mount::start(
        c.bucket(),
        &proxy.url,
        &["-o", "max_attempts=2", TRUST_LISTINGS],
    );
    let dir = mount.path.join("split");
    let entries = blocking(move || {
        let mut entries: Vec<(String, bool)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.file_type().unwrap().is_dir(),
                )
            })
            .collect();
        entries.sort();
        entries
    })
    .await;
    assert_eq!(
        entries,
        [
            ("a.txt".to_owned(), false),
            ("x".to_owned(), true),
            ("z.txt".to_owned(), false)
        ]
    );
    let broken = list(mount.path.join("broken")).await;
    let err = broken.expect_err("a listing with a lost page is an error");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
}
