//! Reading a bucket through a real kernel mount: contents, random reads,
//! directories, listing cost, symlinks, odd keys, prefixes.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use bucketfs::s3::PutOptions;
use bytes::Bytes;
use support::mount::Mount;
use support::proxy::FaultProxy;
use support::{blocking, names, new_bucket, put, server, sha256, test_data, upload};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_every_size_read_back_exactly() {
    let c = new_bucket("sizes").await;
    let sizes = [0, 1, 8 * MIB - 1, 8 * MIB, 8 * MIB + 1, 100 * MIB];
    let mut expected = BTreeMap::new();
    for (i, size) in sizes.iter().enumerate() {
        let body = test_data(*size, i as u64);
        let name = format!("f{size}");
        upload(&c, &name, body.clone()).await;
        expected.insert(name, (body.len(), sha256(&body)));
    }
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let path = mount.path.clone();
    blocking(move || {
        for (name, (len, digest)) in &expected {
            let file = path.join(name);
            assert_eq!(
                std::fs::metadata(&file).unwrap().len(),
                *len as u64,
                "{name}"
            );
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("read {name}: {e}"));
            assert_eq!(data.len(), *len, "{name}");
            assert_eq!(&sha256(&data), digest, "{name}");
        }
        // A second read (warm) gives the same bytes.
        let again = std::fs::read(path.join(format!("f{}", 100 * MIB))).unwrap();
        assert_eq!(sha256(&again), expected[&format!("f{}", 100 * MIB)].1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_offset_reads_match_byte_for_byte() {
    let c = new_bucket("random").await;
    let body = test_data(20 * MIB + 12345, 77);
    upload(&c, "big.bin", body.clone()).await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &["-o", "cache_size=4MiB"]);
    let file_path = mount.path.join("big.bin");
    blocking(move || {
        let file = std::fs::File::open(&file_path).unwrap();
        let mut seed = 12345u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let offset = next() % body.len() as u64;
            let len = (next() % (300 * 1024) + 1) as usize;
            let mut buf = vec![0u8; len];
            let n = file.read_at(&mut buf, offset).unwrap();
            let want_end = (offset as usize + len).min(body.len());
            assert_eq!(n, want_end - offset as usize, "short read at {offset}");
            assert_eq!(
                &buf[..n],
                &body[offset as usize..want_end],
                "bytes at {offset}+{len}"
            );
        }
        // Reading past the end gives 0 bytes.
        let mut buf = [0u8; 10];
        assert_eq!(file.read_at(&mut buf, body.len() as u64 + 5).unwrap(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_and_marker_directories_list_like_a_tree() {
    let c = new_bucket("dirs").await;
    for key in [
        "top.txt",
        "a/b/c.txt",
        "a/b/d.txt",
        "a/e.txt",
        "m/",
        "m/x.txt",
        "empty/",
        "deep/1/2/3/4/leaf",
    ] {
        c.put_object(key, Bytes::from(key.to_owned()), &PutOptions::default())
            .await
            .unwrap();
    }
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    blocking(move || {
        assert_eq!(names(&root), ["a", "deep", "empty", "m", "top.txt"]);
        assert_eq!(names(&root.join("a")), ["b", "e.txt"]);
        assert_eq!(names(&root.join("a/b")), ["c.txt", "d.txt"]);
        assert_eq!(names(&root.join("m")), ["x.txt"]);
        assert!(names(&root.join("empty")).is_empty());
        for dir in ["a", "a/b", "m", "empty", "deep/1/2/3"] {
            let meta = std::fs::metadata(root.join(dir)).unwrap();
            assert!(meta.is_dir(), "{dir}");
            assert_eq!(meta.mode() & 0o777, 0o755, "{dir}");
        }
        let meta = std::fs::symlink_metadata(root.join("a/b/c.txt")).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.len(), "a/b/c.txt".len() as u64);
        assert_eq!(meta.mode() & 0o777, 0o644);
        assert_eq!(
            std::fs::read_to_string(root.join("deep/1/2/3/4/leaf")).unwrap(),
            "deep/1/2/3/4/leaf"
        );
        // `ls -l` through the real tool.
        let out = std::process::Command::new("ls")
            .arg("-l")
            .arg(root.join("a"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines()
                .any(|l| l.starts_with('d') && l.ends_with(" b")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("-rw-r--r--") && l.ends_with(" e.txt")),
            "{text}"
        );
        assert!(std::fs::metadata(root.join("nope")).is_err());
        assert_eq!(
            std::fs::read_dir(root.join("top.txt"))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENOTDIR)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keys_cost_about_ten_list_requests() {
    let s = server();
    let c = new_bucket("tenk").await;
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("many/file-{i:05}.txt"))
        .collect();
    let options = PutOptions::default();
    use futures::StreamExt;
    let results: Vec<_> = futures::stream::iter(&keys)
        .map(|k| c.put_object(k, Bytes::from_static(b"0123456789"), &options))
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(results.iter().all(|r| r.is_ok()));

    let proxy = FaultProxy::start(&s.endpoint).await;
    // By default each file this mount has not seen costs one HEAD (its
    // metadata may hold a mode, an owner, an mtime, a symlink); a second
    // walk, which lists afresh, costs none: the versions are known.
    let mount = Mount::start(c.bucket(), &proxy.url, &["-o", "metadata_ttl=60s"]);
    for walk in ["first", "second"] {
        proxy.clear_seen();
        let (ls_lines, find_lines) = ls_and_find(mount.path.join("many")).await;
        assert_eq!((ls_lines, find_lines), (10_000, 10_000), "{walk} walk");
        let lists = proxy.count("GET", "list-type=2");
        let file_heads = proxy.count("HEAD", "/many/file-");
        assert!(
            lists <= 25,
            "{walk} walk: {lists} ListObjectsV2 requests for ls -l and find of 10,000 keys"
        );
        let most = if walk == "first" { 10_000 } else { 0 };
        assert!(
            file_heads <= most,
            "{walk} walk: {file_heads} HEADs for 10,000 files"
        );
    }
    drop(mount);
    // --trust-listings: the listings alone.
    let mount = Mount::start(
        c.bucket(),
        &proxy.url,
        &["-o", "metadata_ttl=60s,trust_listings"],
    );
    proxy.clear_seen();
    let (ls_lines, find_lines) = ls_and_find(mount.path.join("many")).await;
    assert_eq!((ls_lines, find_lines), (10_000, 10_000));
    let lists = proxy.count("GET", "list-type=2");
    let file_heads = proxy.count("HEAD", "/many/file-");
    assert!(
        lists <= 25,
        "{lists} ListObjectsV2 requests for ls -l and find of 10,000 keys"
    );
    assert_eq!(file_heads, 0, "no per-file HEAD");
    drop(mount);
}

/// A walk that stats each file of a directory too big to index, past the
/// attribute TTL (`du`, or `stat` in a loop, after an `ls -l`), costs a
/// listing page per 1,000 files, and no HEAD of versions whose metadata
/// the `ls -l` learnt (here: that they have none). Before, each stat was a
/// HEAD, and before that a HEAD and a one-key listing (on B2 the class C
/// request, ten times the price of the HEAD). What the stats show is what
/// the `ls -l`'s HEADs showed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_of_known_files_past_the_ttl_cost_a_listing_page_per_thousand() {
    const FILES: usize = 1_100; // more than one listing page
    let c = new_bucket("statwalk").await;
    let options = PutOptions::default();
    use futures::StreamExt;
    let keys: Vec<String> = (0..FILES)
        .map(|i| format!("big/f-{i:04}"))
        .chain((0..20).map(|i| format!("small/f-{i:04}")))
        .collect();
    let results: Vec<_> = futures::stream::iter(&keys)
        .map(|k| c.put_object(k, Bytes::from_static(b"x"), &options))
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(results.iter().all(|r| r.is_ok()));
    let proxy = FaultProxy::start(&server().endpoint).await;
    let mount = Mount::start(c.bucket(), &proxy.url, &[]);
    let dir = mount.path.join("big");
    let (ls_lines, _) = ls_and_find(dir.clone()).await;
    assert_eq!(ls_lines, FILES);
    let shown = |dir: std::path::PathBuf| {
        blocking(move || {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(dir.join("f-0777")).unwrap();
            (
                m.mtime(),
                m.mtime_nsec(),
                m.mode(),
                m.uid(),
                m.gid(),
                m.size(),
            )
        })
    };
    // Still within the TTL: as the `ls -l`'s HEAD of it said.
    let first = shown(dir.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    proxy.clear_seen();
    let started = std::time::Instant::now();
    let walk = dir.clone();
    blocking(move || {
        for i in 0..FILES {
            assert_eq!(
                std::fs::metadata(walk.join(format!("f-{i:04}")))
                    .unwrap()
                    .len(),
                1
            );
        }
    })
    .await;
    let seen = proxy.seen();
    let lists_of = |what: &dyn Fn(&str) -> bool| {
        seen.iter()
            .filter(|r| {
                r.method == "GET"
                    && r.path_and_query.contains("list-type=2")
                    && what(&r.path_and_query)
            })
            .count()
    };
    // A listing of `big/f-NNNN/` per file is what was saved first: only
    // the lookup that finds the directory too big to index (once a minute;
    // a busy machine can make the walk that long) is asked by name.
    let ttls = started.elapsed().as_secs() as usize + 1;
    let per_file_lists = lists_of(&|q| q.contains("prefix=big%2Ff-"));
    assert!(
        per_file_lists <= 1 + ttls / 60,
        "{per_file_lists} one-key listings for {FILES} stats of known files"
    );
    // Pages from just before a name: 1,100 names in order need two, once
    // a TTL (1 s; a busy machine makes the walk longer).
    let range_pages = lists_of(&|q| {
        q.contains("prefix=big%2F") && !q.contains("prefix=big%2Ff-") && q.contains("start-after=")
    });
    assert!(
        (1..=2 * ttls + 1).contains(&range_pages),
        "{range_pages} pages listed for {FILES} stats in {ttls} s"
    );
    // A try at indexing the directory by name (one page), once a minute.
    let index_pages = lists_of(&|q| {
        q.contains("prefix=big%2F")
            && !q.contains("prefix=big%2Ff-")
            && !q.contains("start-after=")
            && !q.contains("max-keys=1")
    });
    assert!(
        index_pages <= 1 + ttls / 60,
        "{index_pages} pages listed to index the directory in {ttls} s"
    );
    // The lookup that finds the directory too big to index is asked by
    // name (a HEAD); every other is answered by a page.
    let heads = proxy.count("HEAD", "/big/f-");
    assert!(
        heads <= 2,
        "{heads} HEADs for {FILES} stats of known versions"
    );
    assert_eq!(
        shown(dir).await,
        first,
        "the page and the HEAD show the same"
    );
    // A directory that lists in one page is indexed by name: its files'
    // versions are known from the `ls -l`, so the stats cost no HEAD.
    let small = mount.path.join("small");
    let (ls_lines, _) = ls_and_find(small.clone()).await;
    assert_eq!(ls_lines, 20);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    proxy.clear_seen();
    blocking(move || {
        for i in 0..20 {
            assert_eq!(
                std::fs::metadata(small.join(format!("f-{i:04}")))
                    .unwrap()
                    .len(),
                1
            );
        }
    })
    .await;
    // The first lookup is a HEAD; the second fetches the index.
    let heads = proxy.count("HEAD", "/small/f-");
    assert!(
        heads <= 1,
        "{heads} HEADs of 20 files whose listed versions are known"
    );
}

/// Files `ls -l` and `find -type f` show in `dir`.
async fn ls_and_find(dir: std::path::PathBuf) -> (usize, usize) {
    blocking(move || {
        let ls = std::process::Command::new("ls")
            .arg("-l")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(ls.status.success());
        let find = std::process::Command::new("find")
            .arg(&dir)
            .arg("-type")
            .arg("f")
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&ls.stdout)
                .lines()
                .filter(|l| l.starts_with('-'))
                .count(),
            String::from_utf8_lossy(&find.stdout).lines().count(),
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3fs_symlinks_and_metadata_are_honoured() {
    let c = new_bucket("symlinks").await;
    put(&c, "target.txt", b"pointed at").await;
    let link = PutOptions {
        user_metadata: [("mode".to_owned(), (libc::S_IFLNK | 0o777).to_string())].into(),
        ..Default::default()
    };
    c.put_object("link", Bytes::from_static(b"target.txt"), &link)
        .await
        .unwrap();
    let owned = PutOptions {
        user_metadata: [
            ("mode".to_owned(), (libc::S_IFREG | 0o600).to_string()),
            ("uid".to_owned(), "1234".to_owned()),
            ("gid".to_owned(), "5678".to_owned()),
            ("mtime".to_owned(), "1500000000".to_owned()),
        ]
        .into(),
        ..Default::default()
    };
    c.put_object("owned.txt", Bytes::from_static(b"mine"), &owned)
        .await
        .unwrap();
    let mount = Mount::start(c.bucket(), &server().endpoint, &["-o", "metadata_ttl=0"]);
    let root = mount.path.clone();
    blocking(move || {
        assert_eq!(
            std::fs::read_link(root.join("link")).unwrap(),
            Path::new("target.txt")
        );
        assert_eq!(
            std::fs::read_to_string(root.join("link")).unwrap(),
            "pointed at"
        );
        let meta = std::fs::symlink_metadata(root.join("owned.txt")).unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o600, 1234, 5678)
        );
        assert_eq!(meta.mtime(), 1_500_000_000);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_keys_are_shown_or_hidden_never_fatal() {
    let c = new_bucket("odd").await;
    let long = "L".repeat(256);
    let keys = [
        "ok.txt".to_owned(),
        "a//b".to_owned(),
        "x".to_owned(),
        "x/inside".to_owned(),
        format!("{long}/f"),
        long.clone(),
        "sp ace & ünï.txt".to_owned(),
        "ctl\u{1}name".to_owned(),
        "trailing/".to_owned(),
        "marker-with-body/".to_owned(),
    ];
    for key in &keys {
        c.put_object(
            key,
            Bytes::from(format!("body:{key}")),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    }
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    blocking(move || {
        let shown = names(&root);
        assert_eq!(
            shown,
            [
                "a",
                "ctl\u{1}name",
                "marker-with-body",
                "ok.txt",
                "sp ace & ünï.txt",
                "trailing",
                "x"
            ],
            "'.', '..', empty and over-long names are hidden; x/ wins over x"
        );
        assert!(
            names(&root.join("a")).is_empty(),
            "a//b has an empty segment"
        );
        assert!(std::fs::metadata(root.join("x")).unwrap().is_dir());
        assert_eq!(
            std::fs::read_to_string(root.join("x/inside")).unwrap(),
            "body:x/inside"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("sp ace & ünï.txt")).unwrap(),
            "body:sp ace & ünï.txt"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("ctl\u{1}name")).unwrap(),
            "body:ctl\u{1}name"
        );
        let too_long = root.join("N".repeat(300));
        assert_eq!(
            std::fs::metadata(too_long).unwrap_err().raw_os_error(),
            Some(libc::ENAMETOOLONG)
        );
        // Listing twice logs each hidden key once.
        names(&root);
        std::thread::sleep(std::time::Duration::from_millis(100));
    })
    .await;
    let text = mount.log_text();
    // The root was listed twice; each hidden key is reported once.
    let long_file = format!("hiding key \"{}\": not a valid file name", "L".repeat(256));
    assert_eq!(text.matches(&long_file).count(), 1, "{text}");
    assert_eq!(text.matches("hiding key \"a//\"").count(), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_mount_shows_only_that_subtree() {
    let c = new_bucket("prefix").await;
    for key in [
        "outside.txt",
        "team/a.txt",
        "team/sub/b.txt",
        "teammate.txt",
    ] {
        c.put_object(key, Bytes::from(key.to_owned()), &PutOptions::default())
            .await
            .unwrap();
    }
    let source = format!("{}:/team", c.bucket());
    let mount = Mount::start(&source, &server().endpoint, &[]);
    let root = mount.path.clone();
    blocking(move || {
        assert_eq!(names(&root), ["a.txt", "sub"]);
        assert_eq!(
            std::fs::read_to_string(root.join("sub/b.txt")).unwrap(),
            "team/sub/b.txt"
        );
        assert!(std::fs::metadata(root.join("outside.txt")).is_err());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_replaced_while_open_is_an_error_not_a_mix() {
    let c = new_bucket("replaced").await;
    let first = test_data(16 * MIB, 1);
    upload(&c, "f.bin", first.clone()).await;
    let mount = Mount::start(
        c.bucket(),
        &server().endpoint,
        &["-o", "read_ahead_max=1MiB"],
    );
    let path = mount.path.join("f.bin");
    let file = blocking(move || {
        let file = std::fs::File::open(path).unwrap();
        let mut head = [0u8; 4096];
        file.read_at(&mut head, 0).unwrap();
        assert_eq!(&head[..], &first[..4096]);
        file
    })
    .await;
    upload(&c, "f.bin", test_data(16 * MIB, 2)).await;
    let err = blocking(move || {
        let mut buf = vec![0u8; 4096];
        file.read_at(&mut buf, 15 * MIB as u64).unwrap_err()
    })
    .await;
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
}

/// `stat` of many files by name (no readdir first) in one directory: after
/// the second, the directory's names are listed once and each further
/// stat costs one HEAD (not a HEAD and a listing), a missing name costs
/// nothing, and s3fs metadata still comes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_by_name_cost_one_head_each_and_keep_metadata() {
    let c = new_bucket("stats").await;
    let s = server();
    let mode = PutOptions {
        user_metadata: [("mode".to_owned(), (libc::S_IFREG | 0o751).to_string())].into(),
        ..Default::default()
    };
    for i in 0..40 {
        c.put_object(&format!("d/f{i:02}"), Bytes::from_static(b"12345"), &mode)
            .await
            .unwrap();
    }
    put(&c, "d/sub/inner", b"x").await;
    let proxy = FaultProxy::start(&s.endpoint).await;
    let mount = Mount::start(c.bucket(), &proxy.url, &["-o", "metadata_ttl=60s"]);
    // Resolve `d` itself first, so only the children's lookups are counted.
    let dir = mount.path.join("d");
    blocking({
        let dir = dir.clone();
        move || std::fs::metadata(dir).unwrap()
    })
    .await;
    proxy.clear_seen();
    let (modes, missing, sub) = blocking(move || {
        use std::os::unix::fs::PermissionsExt;
        let modes: Vec<u32> = (0..40)
            .map(|i| {
                let meta = std::fs::metadata(dir.join(format!("f{i:02}"))).unwrap();
                assert_eq!(meta.len(), 5);
                meta.permissions().mode() & 0o7777
            })
            .collect();
        let missing = std::fs::metadata(dir.join("nope")).unwrap_err().kind();
        let sub = std::fs::metadata(dir.join("sub")).unwrap().is_dir();
        (modes, missing, sub)
    })
    .await;
    assert!(modes.iter().all(|m| *m == 0o751), "{modes:?}");
    assert_eq!(missing, std::io::ErrorKind::NotFound);
    assert!(sub);
    let lists = proxy.count("GET", "list-type=2");
    let heads = proxy.count("HEAD", "/d/");
    // Two full lookups (HEAD + one-key listing) before the directory is
    // listed once; then one HEAD per file, none for the missing name, and
    // a directory resolved as before.
    assert!(lists <= 5, "{lists} listings for 42 lookups");
    assert!(heads <= 42, "{heads} HEADs for 40 files");
    drop(mount);
}

/// What `ls -l` asks of every file (its ACL) and what the kernel asks at
/// writes (`security.capability`) are answered at once as absent, with no
/// request to the bucket; a file without attributes lists none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_and_security_queries_cost_no_request() {
    let c = new_bucket("xattr").await;
    put(&c, "a.txt", b"a").await;
    put(&c, "b.txt", b"b").await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    let mount = Mount::start(c.bucket(), &proxy.url, &[]);
    let root = mount.path.clone();
    // Known first: the HEADs of the stat are not what is counted.
    blocking({
        let root = root.clone();
        move || {
            for name in ["a.txt", "b.txt"] {
                std::fs::metadata(root.join(name)).unwrap();
            }
        }
    })
    .await;
    let before = proxy.seen().len();
    let results = blocking(move || {
        let mut results = Vec::new();
        for name in ["a.txt", "b.txt"] {
            let path = std::ffi::CString::new(root.join(name).to_str().unwrap()).unwrap();
            let mut buf = [0u8; 64];
            for attr in [
                c"system.posix_acl_access",
                c"security.capability",
                c"security.selinux",
            ] {
                // SAFETY: valid NUL-terminated strings and a buffer of the given size.
                let got = unsafe {
                    libc::getxattr(
                        path.as_ptr(),
                        attr.as_ptr(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                };
                results.push((got, std::io::Error::last_os_error().raw_os_error()));
            }
            // SAFETY: as above.
            let listed =
                unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            results.push((listed, Some(0)));
        }
        results
    })
    .await;
    for (i, (result, errno)) in results.into_iter().enumerate() {
        if i % 4 == 3 {
            assert_eq!(result, 0, "no attributes listed");
        } else {
            assert_eq!((result, errno), (-1, Some(libc::ENODATA)));
        }
    }
    assert_eq!(proxy.seen().len(), before, "no request to the bucket");
    // And `ls -l` shows the files as ever.
    let listing = std::process::Command::new("ls")
        .arg("-l")
        .arg(&mount.path)
        .output()
        .unwrap();
    assert!(listing.status.success());
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout)
            .matches(".txt")
            .count(),
        2
    );
}

/// Stat-ahead: a walk through a directory's files in name order gets the
/// HEADs of the next files started before they are asked for and answers
/// with each file's own size and metadata. A walk in another order starts
/// nothing extra.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_through_a_directory_heads_ahead() {
    let c = new_bucket("statahead").await;
    let mode = PutOptions {
        user_metadata: [("mode".to_owned(), (libc::S_IFREG | 0o640).to_string())].into(),
        ..Default::default()
    };
    for i in 0..100usize {
        c.put_object(&format!("d/f{i:03}"), Bytes::from(vec![b'x'; i]), &mode)
            .await
            .unwrap();
    }
    for i in 0..30 {
        put(&c, &format!("e/g{i:02}"), b"e").await;
    }
    let proxy = FaultProxy::start(&server().endpoint).await;
    let mount = Mount::start(c.bucket(), &proxy.url, &["-o", "metadata_ttl=60s"]);
    let (d, e) = (mount.path.join("d"), mount.path.join("e"));
    blocking({
        let (d, e) = (d.clone(), e.clone());
        move || (std::fs::metadata(d).unwrap(), std::fs::metadata(e).unwrap())
    })
    .await;
    proxy.clear_seen();
    let stat = |dir: &std::path::Path, i: usize| {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.join(format!("f{i:03}"))).unwrap();
        (meta.len(), meta.permissions().mode() & 0o7777)
    };
    let first: Vec<_> = blocking({
        let d = d.clone();
        move || (0..10).map(|i| stat(&d, i)).collect()
    })
    .await;
    assert!(
        support::wait_until(std::time::Duration::from_secs(10), || proxy
            .count("HEAD", "/d/")
            > 12),
        "HEADs went ahead of the walk: {} for 10 stats",
        proxy.count("HEAD", "/d/")
    );
    let rest: Vec<_> = blocking({
        let d = d.clone();
        move || (10..100).map(|i| stat(&d, i)).collect()
    })
    .await;
    for (i, (len, mode)) in first.iter().chain(rest.iter()).enumerate() {
        assert_eq!(*len, i as u64, "f{i:03}'s own size");
        assert_eq!(*mode, 0o640, "f{i:03}'s own mode");
    }
    let heads = proxy.count("HEAD", "/d/");
    assert!(heads <= 100 + 40, "about one HEAD per file: {heads}");

    // Backwards: no walk is recognised, one HEAD per file.
    proxy.clear_seen();
    let sizes: Vec<u64> = blocking(move || {
        (0..30)
            .rev()
            .map(|i| std::fs::metadata(e.join(format!("g{i:02}"))).unwrap().len())
            .collect()
    })
    .await;
    assert!(sizes.iter().all(|s| *s == 1));
    let heads = proxy.count("HEAD", "/e/");
    assert!(heads <= 31, "{heads} HEADs for 30 stats in reverse");
}

/// A HEAD that stat-ahead started before a file changed through the mount
/// is never the answer afterwards. The file is open (the kernel knows it)
/// while the walk passes it, is rewritten and closed, and is looked up again
/// once the kernel's entry expires but while the early HEAD is still young.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_ahead_never_answers_from_before_a_change() {
    use std::io::Write;
    let c = new_bucket("statstale").await;
    for i in 0..20 {
        put(&c, &format!("d/f{i:02}"), b"old").await;
    }
    let ttl = std::time::Duration::from_secs(3);
    let mount = Mount::start(c.bucket(), &server().endpoint, &["-o", "metadata_ttl=3s"]);
    let d = mount.path.join("d");
    let len = blocking(move || {
        let mut open = std::fs::OpenOptions::new()
            .write(true)
            .open(d.join("f10"))
            .unwrap();
        std::thread::sleep(ttl / 3);
        // The walk passes f10: its HEAD is started ahead ("old").
        for i in 0..10 {
            std::fs::metadata(d.join(format!("f{i:02}"))).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        open.write_all(b"new and longer").unwrap();
        drop(open); // saved
                    // The kernel's entry for f10 (from the open) expires first.
        std::thread::sleep(ttl * 2 / 3 + std::time::Duration::from_millis(300));
        std::fs::metadata(d.join("f10")).unwrap().len()
    })
    .await;
    assert_eq!(len, "new and longer".len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequential_read_asks_for_each_part_once() {
    // The kernel sends a sequential reader's reads several at once and out
    // of order. Each part of the object is fetched by one ranged GET: none
    // cancelled under a read still waiting for it (and fetched again), no
    // extra small GET at the end of every prefetch top-up.
    let c = new_bucket("seqgets").await;
    let data = test_data(96 * MIB, 7);
    upload(&c, "seq.bin", data.clone()).await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    let mount = Mount::start(c.bucket(), &proxy.url, &["-o", "part_size=8MiB"]);
    let path = mount.path.join("seq.bin");
    let read = blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(path).unwrap();
        let mut all = Vec::new();
        let mut buf = vec![0u8; MIB];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    })
    .await;
    assert_eq!(sha256(&read), sha256(&data));
    let gets = proxy.count("GET", "seq.bin");
    // 12 whole parts, the first few small ones (a window that starts at
    // 1 MiB and doubles) that make the first bytes come fast, and a few
    // reads that came early and fetched for themselves. It was 28 when a
    // reordered read restarted the run, 40-77 with other tests running.
    assert!(gets <= 12 + 10, "{gets} GETs for 96 MiB in 8 MiB parts");
}

/// Names from libc's readdir on `dir`, as `(name, telldir cookie after it)`.
fn libc_readdir(dir: *mut libc::DIR, limit: usize) -> Vec<(String, libc::c_long)> {
    let mut out = Vec::new();
    while out.len() < limit {
        // SAFETY: `dir` is an open DIR*; readdir's entry is read at once.
        let entry = unsafe { libc::readdir(dir) };
        if entry.is_null() {
            break;
        }
        // SAFETY: d_name is a NUL-terminated name inside the entry.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        if name != "." && name != ".." {
            // SAFETY: `dir` is open.
            out.push((name, unsafe { libc::telldir(dir) }));
        }
    }
    out
}

/// A directory handle lets go of what its reader has read (so that a
/// listing of millions holds little): going back with `rewinddir` or
/// `seekdir` lists afresh from there, and shows the same names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewinddir_and_seekdir_after_reading_a_directory() {
    let c = new_bucket("rewind").await;
    let keys: Vec<String> = (0..2500).map(|i| format!("d/f{i:04}")).collect();
    support::put_many(&c, &keys, b"x").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &["-o", "trust_listings"]);
    let path = mount.path.join("d");
    blocking(move || {
        let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path; the handle is closed below.
        let dir = unsafe { libc::opendir(cpath.as_ptr()) };
        assert!(
            !dir.is_null(),
            "opendir: {}",
            std::io::Error::last_os_error()
        );
        let all = libc_readdir(dir, usize::MAX);
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        let expected: Vec<String> = (0..2500).map(|i| format!("f{i:04}")).collect();
        assert!(names == expected, "{} names in the first read", names.len());
        // SAFETY: `dir` is open.
        unsafe { libc::rewinddir(dir) };
        let again = libc_readdir(dir, 3);
        assert_eq!(
            again.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["f0000", "f0001", "f0002"],
            "after rewinddir"
        );
        // Back to just after f1999.
        // SAFETY: `dir` is open, and the cookie came from telldir on it.
        unsafe { libc::seekdir(dir, all[1999].1) };
        let rest = libc_readdir(dir, usize::MAX);
        assert_eq!(rest.len(), 500, "seekdir to after f1999");
        assert_eq!(rest[0].0, "f2000");
        // SAFETY: `dir` is open and closed once.
        assert_eq!(unsafe { libc::closedir(dir) }, 0);
    })
    .await;
}

/// Whether a proxied request is a HEAD of `key` (in bucket `bucket`).
fn is_head_of(r: &support::proxy::Seen, bucket: &str, key: &str) -> bool {
    r.method == "HEAD" && r.path_and_query == format!("/{bucket}/{key}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readdir_tells_kinds_without_heads_and_a_stat_shows_the_metadata() {
    let c = new_bucket("kinds").await;
    let meta = |pairs: &[(&str, String)]| PutOptions {
        user_metadata: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..Default::default()
    };
    let big = Bytes::from(vec![b'b'; 8192]);
    let owned = meta(&[
        ("mode", (libc::S_IFREG | 0o600).to_string()),
        ("uid", "1234".to_owned()),
        ("gid", "5678".to_owned()),
        ("mtime", "1500000000".to_owned()),
    ]);
    c.put_object("d/big-owned", big.clone(), &owned)
        .await
        .unwrap();
    // Metadata that calls 8 KiB a symlink: no symlink target is that long.
    let link_meta = meta(&[("mode", (libc::S_IFLNK | 0o777).to_string())]);
    c.put_object("d/big-says-link", big.clone(), &link_meta)
        .await
        .unwrap();
    c.put_object("d/link", Bytes::from_static(b"big-owned"), &link_meta)
        .await
        .unwrap();
    c.put_object("d/plain", big.clone(), &PutOptions::default())
        .await
        .unwrap();
    let dir_meta = meta(&[("mode", (libc::S_IFDIR | 0o700).to_string())]);
    c.put_object("d/sub/", Bytes::new(), &dir_meta)
        .await
        .unwrap();
    put(&c, "d/sub/x", b"x").await;

    let proxy = FaultProxy::start(&server().endpoint).await;
    // Attributes trusted for a minute, so that what the readdir handed out
    // is what the stats below find, however slow the machine.
    let mount = Mount::start(c.bucket(), &proxy.url, &["-o", "metadata_ttl=60s"]);
    let dir = mount.path.join("d");
    proxy.clear_seen();
    let kinds = blocking({
        let dir = dir.clone();
        move || {
            let mut kinds: Vec<(String, &'static str)> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let t = e.file_type().unwrap();
                    let kind = match (t.is_file(), t.is_dir(), t.is_symlink()) {
                        (true, _, _) => "file",
                        (_, true, _) => "dir",
                        (_, _, true) => "symlink",
                        _ => "other",
                    };
                    (e.file_name().to_string_lossy().into_owned(), kind)
                })
                .collect();
            kinds.sort();
            kinds
        }
    })
    .await;
    assert_eq!(
        kinds,
        [
            ("big-owned".to_owned(), "file"),
            ("big-says-link".to_owned(), "file"),
            ("link".to_owned(), "symlink"),
            ("plain".to_owned(), "file"),
            ("sub".to_owned(), "dir"),
        ]
    );
    // Of the files, only the small object, which may be a symlink, was
    // asked about (the directory's own marker may be, at its opendir).
    let bucket = c.bucket().to_owned();
    let seen = proxy.seen();
    let heads: Vec<&str> = seen
        .iter()
        .filter(|r| r.method == "HEAD" && !r.path_and_query.ends_with('/'))
        .map(|r| r.path_and_query.as_str())
        .collect();
    assert_eq!(heads, [format!("/{bucket}/d/link")], "HEADs of the readdir");

    // A stat shows what the metadata says, each asked once.
    proxy.clear_seen();
    blocking({
        let dir = dir.clone();
        move || {
            let m = std::fs::symlink_metadata(dir.join("big-owned")).unwrap();
            assert_eq!(
                (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime(), m.len()),
                (0o600, 1234, 5678, 1_500_000_000, 8192)
            );
            let m = std::fs::symlink_metadata(dir.join("big-says-link")).unwrap();
            assert!(m.file_type().is_file() && m.len() == 8192, "{m:?}");
            assert_eq!(
                std::fs::read(dir.join("big-says-link")).unwrap().len(),
                8192
            );
            let m = std::fs::symlink_metadata(dir.join("sub")).unwrap();
            assert!(m.is_dir());
            assert_eq!(m.mode() & 0o7777, 0o700);
            assert_eq!(
                std::fs::read_link(dir.join("link")).unwrap(),
                Path::new("big-owned")
            );
            // Stat again: the kernel and the daemon keep what they learnt.
            let m = std::fs::symlink_metadata(dir.join("big-owned")).unwrap();
            assert_eq!(m.mode() & 0o7777, 0o600);
        }
    })
    .await;
    let seen = proxy.seen();
    for key in ["d/big-owned", "d/big-says-link", "d/sub/"] {
        let n = seen.iter().filter(|r| is_head_of(r, &bucket, key)).count();
        assert_eq!(n, 1, "HEADs of {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mount_check_listing_answers_the_first_lookups_at_the_root() {
    let c = new_bucket("seed").await;
    put(&c, "existing.txt", b"was here").await;
    put(&c, "dir/inside", b"x").await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    // Priced as B2, where bucket calls are class C: not asked whether the
    // bucket keeps versions either.
    let mount = Mount::start(
        c.bucket(),
        &proxy.url,
        &["-o", "metadata_ttl=60s", "--price-list", "b2"],
    );
    let root = mount.path.clone();
    blocking(move || {
        assert_eq!(
            std::fs::read_to_string(root.join("existing.txt")).unwrap(),
            "was here"
        );
        assert!(std::fs::metadata(root.join("dir")).unwrap().is_dir());
        assert!(std::fs::metadata(root.join("missing")).is_err());
        support::write_closed(&root.join("new.txt"), b"new").unwrap();
    })
    .await;
    let (_, body) = c
        .get_object_bytes("new.txt", Default::default())
        .await
        .unwrap();
    assert_eq!(&body[..], b"new");
    let seen = proxy.seen();
    let lists: Vec<&str> = seen
        .iter()
        .filter(|r| r.method == "GET" && r.path_and_query.contains("list-type=2"))
        .map(|r| r.path_and_query.as_str())
        .collect();
    assert_eq!(lists.len(), 1, "listings: {lists:?}");
    assert!(lists[0].contains("delimiter=%2F"), "{lists:?}");
    let bucket = c.bucket().to_owned();
    for key in ["new.txt", "missing", "dir"] {
        assert!(
            !seen.iter().any(|r| is_head_of(r, &bucket, key)),
            "a HEAD of {key}"
        );
    }
    assert_eq!(proxy.count("GET", "versioning"), 0);
}

/// With `metadata_ttl=0` the kernel asks at every path walk and stat (a
/// LOOKUP of each component, a GETATTR): each of those checks is one
/// request, not a HEAD and a listing. A file the kernel holds is HEADed
/// alone, a directory with a marker object is checked by a HEAD of the
/// marker, one without by a one-key listing; and what changed elsewhere
/// is still seen at the next check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_ttl_each_check_is_one_request() {
    let c = new_bucket("strict-checks").await;
    put(&c, "f", b"file").await;
    put(&c, "marked/", b"").await;
    put(&c, "marked/x", b"x").await;
    put(&c, "implicit/y", b"y").await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    let mount = Mount::start(
        c.bucket(),
        &proxy.url,
        &["-o", "metadata_ttl=0,negative_ttl=0"],
    );
    let root = mount.path.clone();
    let stat_all = move |rounds: usize| {
        let root = root.clone();
        blocking(move || {
            for _ in 0..rounds {
                assert!(std::fs::metadata(root.join("f")).unwrap().is_file());
                assert!(std::fs::metadata(root.join("marked")).unwrap().is_dir());
                assert!(std::fs::metadata(root.join("implicit")).unwrap().is_dir());
            }
        })
    };
    // The first lookups find what each name is.
    stat_all(1).await;
    proxy.clear_seen();
    const ROUNDS: usize = 5;
    stat_all(ROUNDS).await;
    let seen = proxy.seen();
    let bucket = c.bucket().to_owned();
    let lists_of = |prefix: &str| {
        seen.iter()
            .filter(|r| {
                r.method == "GET"
                    && r.path_and_query.contains("list-type=2")
                    && r.path_and_query.contains(&format!("prefix={prefix}%2F&"))
            })
            .count()
    };
    let heads_of = |key: &str| seen.iter().filter(|r| is_head_of(r, &bucket, key)).count();
    // Every stat asked the bucket...
    assert!(heads_of("f") >= ROUNDS, "HEADs of f: {seen:#?}");
    assert!(heads_of("marked/") >= ROUNDS, "HEADs of marked/: {seen:#?}");
    assert!(
        lists_of("implicit") >= ROUNDS,
        "listings of implicit/: {seen:#?}"
    );
    // ...once per check.
    assert_eq!(lists_of("f"), 0, "a listing of f/ beside its HEAD");
    assert_eq!(
        lists_of("marked"),
        0,
        "a listing of marked/ beside its marker's HEAD"
    );
    assert_eq!(heads_of("marked"), 0, "a HEAD of the name marked");
    assert_eq!(heads_of("implicit"), 0, "a HEAD of the name implicit");
    assert_eq!(
        seen.len(),
        heads_of("f") + heads_of("marked/") + lists_of("implicit")
    );

    // Changed elsewhere: seen at the next check.
    c.delete_object("f", None).await.unwrap();
    put(&c, "f/z", b"z").await;
    c.delete_object("marked/", None).await.unwrap();
    c.delete_object("implicit/y", None).await.unwrap();
    let root = mount.path.clone();
    blocking(move || {
        assert!(
            std::fs::metadata(root.join("f")).unwrap().is_dir(),
            "f is a directory now"
        );
        assert!(
            std::fs::metadata(root.join("marked")).unwrap().is_dir(),
            "marked still holds x"
        );
        assert!(
            std::fs::metadata(root.join("implicit")).is_err(),
            "implicit is gone"
        );
    })
    .await;
}
