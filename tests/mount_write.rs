//! Writing through a real kernel mount, checked through the S3 API: every
//! byte the application wrote and closed is in the bucket, with s3fs
//! metadata; renames, deletes, directories, attributes; partial re-uploads;
//! failures reported at close with nothing lost.

mod support;

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bucketfs::s3::{GetRequest, PutOptions, S3Client};
use bytes::Bytes;
use support::mount::Mount;
use support::proxy::{Fault, FaultProxy};
use support::{blocking, close_checked, names, new_bucket, put, server, sha256, test_data, upload};

const MIB: usize = 1024 * 1024;

async fn object(c: &S3Client, key: &str) -> Option<(Bytes, BTreeMap<String, String>)> {
    match c.get_object_bytes(key, GetRequest::default()).await {
        Ok((meta, body)) => Some((body, meta.user_metadata)),
        Err(e) if e.is_not_found() => None,
        Err(e) => panic!("get {key}: {e}"),
    }
}

async fn keys(c: &S3Client, prefix: &str) -> Vec<String> {
    c.list_all(prefix, None)
        .await
        .unwrap()
        .objects
        .into_iter()
        .map(|o| o.key)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_files_land_in_the_bucket_exactly() {
    let c = new_bucket("wsizes").await;
    // Through the proxy, which refuses empty parts as S3 does.
    let proxy = FaultProxy::start(&server().endpoint).await;
    let mount = Mount::start(c.bucket(), &proxy.url, &[]);
    let root = mount.path.clone();
    let sizes = [
        0,
        1,
        8 * MIB - 1,
        8 * MIB,
        8 * MIB + 1,
        16 * MIB,
        28 * MIB,
        100 * MIB,
    ];
    let expected = blocking(move || {
        let mut expected = BTreeMap::new();
        for (i, size) in sizes.iter().enumerate() {
            let data = test_data(*size, 100 + i as u64);
            let name = format!("f{size}");
            // Through cp, as a user would.
            let src =
                std::env::temp_dir().join(format!("bucketfs-src-{}-{name}", std::process::id()));
            std::fs::write(&src, &data).unwrap();
            let status = std::process::Command::new("cp")
                .arg(&src)
                .arg(root.join(&name))
                .status()
                .unwrap();
            std::fs::remove_file(&src).unwrap();
            assert!(status.success());
            assert_eq!(
                std::fs::metadata(root.join(&name)).unwrap().len(),
                *size as u64
            );
            expected.insert(name, sha256(&data));
        }
        expected
    })
    .await;
    for (name, digest) in expected {
        let (body, meta) = object(&c, &name)
            .await
            .unwrap_or_else(|| panic!("{name} not in bucket"));
        assert_eq!(sha256(&body), digest, "{name}");
        let mode: u32 = meta["mode"].parse().unwrap();
        assert_eq!(mode & libc::S_IFMT, libc::S_IFREG, "{name}");
        assert_eq!(meta["uid"], "0");
        assert!(meta.contains_key("mtime"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_close_without_write_stores_an_empty_object_and_appends_append() {
    let c = new_bucket("wempty").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    blocking(move || {
        std::fs::File::create(root.join("empty")).unwrap();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("log"))
            .unwrap();
        log.write_all(b"one\n").unwrap();
        drop(log);
        for line in ["two\n", "three\n"] {
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .open(root.join("log"))
                .unwrap();
            log.write_all(line.as_bytes()).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(root.join("log")).unwrap(),
            "one\ntwo\nthree\n"
        );
    })
    .await;
    assert_eq!(object(&c, "empty").await.unwrap().0.len(), 0);
    assert_eq!(
        &object(&c, "log").await.unwrap().0[..],
        b"one\ntwo\nthree\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_being_written_is_visible_and_readable_at_once() {
    let c = new_bucket("wvisible").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    blocking(move || {
        let mut f = std::fs::File::create(root.join("growing")).unwrap();
        assert!(std::fs::read_dir(&root)
            .unwrap()
            .any(|e| e.unwrap().file_name() == "growing"));
        f.write_all(&[7u8; 10_000]).unwrap();
        assert_eq!(
            std::fs::metadata(root.join("growing")).unwrap().len(),
            10_000
        );
        let mut buf = [0u8; 100];
        let reader = std::fs::File::open(root.join("growing")).unwrap();
        assert_eq!(reader.read_at(&mut buf, 5_000).unwrap(), 100);
        assert_eq!(buf, [7u8; 100]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwriting_the_middle_reuploads_only_that_part() {
    let s = server();
    // Versioned, so that the copies are pinned by version id: moto ignores
    // x-amz-copy-source-if-match, and on a bucket without versions the
    // mount then reads the unchanged parts instead (tests/two_writers.rs).
    let c = support::new_versioned_bucket("wmiddle").await;
    if !support::versioning_enabled(&c).await {
        return;
    }
    let original = test_data(20 * MIB, 5);
    upload(&c, "big.bin", original.clone()).await;
    let proxy = FaultProxy::start(&s.endpoint).await;
    let mount = Mount::start(c.bucket(), &proxy.url, &[]);
    proxy.clear_seen();
    let path = mount.path.join("big.bin");
    blocking(move || {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(b"PATCHED!", 10 * MIB as u64).unwrap();
        f.sync_all().unwrap();
    })
    .await;
    let seen = proxy.seen();
    let copies = seen
        .iter()
        .filter(|r| r.method == "PUT" && r.header_names.iter().any(|h| h == "x-amz-copy-source"))
        .count();
    let uploads = seen
        .iter()
        .filter(|r| {
            r.method == "PUT"
                && r.path_and_query.contains("partNumber")
                && !r.header_names.iter().any(|h| h == "x-amz-copy-source")
        })
        .count();
    assert_eq!(
        (uploads, copies),
        (1, 2),
        "one 8 MiB part sent, two copied server-side: {seen:?}"
    );
    let (body, _) = object(&c, "big.bin").await.unwrap();
    let mut want = original.to_vec();
    want[10 * MIB..10 * MIB + 8].copy_from_slice(b"PATCHED!");
    assert_eq!(sha256(&body), sha256(&want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_shrinks_and_grows_open_and_closed_files() {
    let c = new_bucket("wtrunc").await;
    put(&c, "closed.txt", b"0123456789").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    blocking(move || {
        // Closed file, by path.
        let f = root.join("closed.txt");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(4)
            .unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"0123");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(6)
            .unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"0123\0\0");
        // Open file: shrink with ftruncate while writing.
        let mut open = std::fs::File::create(root.join("open.txt")).unwrap();
        open.write_all(b"abcdefghij").unwrap();
        open.set_len(3).unwrap();
        open.seek(SeekFrom::End(0)).unwrap();
        open.write_all(b"XY").unwrap();
        drop(open);
        assert_eq!(std::fs::read(root.join("open.txt")).unwrap(), b"abcXY");
    })
    .await;
    assert_eq!(&object(&c, "closed.txt").await.unwrap().0[..], b"0123\0\0");
    assert_eq!(&object(&c, "open.txt").await.unwrap().0[..], b"abcXY");
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a = CString::new(from.as_os_str().as_bytes()).unwrap();
    let b = CString::new(to.as_os_str().as_bytes()).unwrap();
    // SAFETY: two valid NUL-terminated paths, relative to the cwd.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_of_files_and_a_big_directory() {
    let c = new_bucket("wrename").await;
    let children: Vec<String> = (0..1200)
        .map(|i| format!("tree/sub{}/f{i:04}", i % 7))
        .collect();
    use futures::StreamExt;
    let options = PutOptions::default();
    let puts: Vec<_> = futures::stream::iter(&children)
        .map(|k| c.put_object(k, Bytes::from(k.clone()), &options))
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(puts.iter().all(|r| r.is_ok()));
    c.put_object("tree/", Bytes::new(), &PutOptions::default())
        .await
        .unwrap();
    c.put_object("a.txt", Bytes::from_static(b"A"), &options)
        .await
        .unwrap();
    c.put_object("b.txt", Bytes::from_static(b"B"), &options)
        .await
        .unwrap();
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    blocking(move || {
        // RENAME_NOREPLACE refuses to clobber; plain rename replaces.
        let err = renameat2(
            &root.join("a.txt"),
            &root.join("b.txt"),
            libc::RENAME_NOREPLACE,
        )
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
        let err = renameat2(
            &root.join("a.txt"),
            &root.join("b.txt"),
            libc::RENAME_EXCHANGE,
        )
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        std::fs::rename(root.join("a.txt"), root.join("b.txt")).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("b.txt")).unwrap(), "A");
        assert!(!root.join("a.txt").exists());
        // A file still open for writing moves with its unsaved data.
        let mut open = std::fs::File::create(root.join("open.txt")).unwrap();
        open.write_all(b"first ").unwrap();
        std::fs::rename(root.join("open.txt"), root.join("moved.txt")).unwrap();
        assert!(
            !root.join("open.txt").exists(),
            "the old name is gone at once"
        );
        assert!(!names(&root).contains(&"open.txt".to_owned()));
        open.write_all(b"second").unwrap();
        drop(open);
        assert_eq!(
            std::fs::read_to_string(root.join("moved.txt")).unwrap(),
            "first second"
        );
        // A directory of 1,200 files.
        std::fs::rename(root.join("tree"), root.join("forest")).unwrap();
        assert!(!root.join("tree").exists());
        assert_eq!(
            std::fs::read_to_string(root.join("forest/sub3/f0003")).unwrap(),
            "tree/sub3/f0003"
        );
    })
    .await;
    assert!(object(&c, "a.txt").await.is_none());
    assert_eq!(&object(&c, "b.txt").await.unwrap().0[..], b"A");
    assert_eq!(
        &object(&c, "moved.txt").await.unwrap().0[..],
        b"first second"
    );
    assert!(object(&c, "open.txt").await.is_none());
    assert!(keys(&c, "tree/").await.is_empty());
    let moved = keys(&c, "forest/").await;
    assert_eq!(moved.len(), 1201, "1,200 files and the marker");
    assert_eq!(
        &object(&c, "forest/sub4/f1194").await.unwrap().0[..],
        b"tree/sub4/f1194"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkdir_rmdir_unlink_and_rm_r() {
    let c = new_bucket("wdirs").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    blocking(move || {
        std::fs::create_dir(root.join("d")).unwrap();
        assert_eq!(
            std::fs::create_dir(root.join("d"))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EEXIST)
        );
        let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let before = mtime(&root.join("d"));
        std::fs::write(root.join("d/f"), b"x").unwrap();
        let after_create = mtime(&root.join("d"));
        assert!(
            after_create > before,
            "a new entry changes the directory's mtime"
        );
        assert_eq!(
            std::fs::remove_dir(root.join("d"))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENOTEMPTY)
        );
        std::fs::create_dir_all(root.join("deep/a/b/c")).unwrap();
        std::fs::write(root.join("deep/a/b/c/leaf"), b"leaf").unwrap();
        std::fs::remove_file(root.join("d/f")).unwrap();
        assert!(
            mtime(&root.join("d")) > after_create,
            "so does removing one"
        );
        assert_eq!(
            std::fs::remove_file(root.join("d/f"))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENOENT)
        );
        std::fs::remove_dir(root.join("d")).unwrap();
        let status = std::process::Command::new("rm")
            .arg("-r")
            .arg(root.join("deep"))
            .status()
            .unwrap();
        assert!(status.success());
        let left: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(
            std::fs::remove_dir(root.join("nope"))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENOENT)
        );
    })
    .await;
    assert!(keys(&c, "").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_persist_across_a_remount() {
    let c = new_bucket("wattrs").await;
    let mut mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    blocking(move || {
        std::fs::write(root.join("f"), b"data").unwrap();
        std::fs::set_permissions(root.join("f"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(root.join("f"), Some(1234), Some(5678)).unwrap();
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        std::fs::File::options()
            .write(true)
            .open(root.join("f"))
            .unwrap()
            .set_modified(when)
            .unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::set_permissions(root.join("d"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink("f", root.join("l")).unwrap();
    })
    .await;
    assert!(mount.unmount().success());
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root: PathBuf = mount.path.clone();
    blocking(move || {
        let m = std::fs::metadata(root.join("f")).unwrap();
        // Listings carry no metadata: look the file up by name first.
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()),
            (0o640, 1234, 5678, 1_600_000_000)
        );
        assert_eq!(std::fs::read(root.join("f")).unwrap(), b"data");
        assert_eq!(
            std::fs::metadata(root.join("d")).unwrap().mode() & 0o7777,
            0o700
        );
        assert_eq!(std::fs::read_link(root.join("l")).unwrap(), Path::new("f"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_is_an_error_at_close_and_loses_nothing() {
    let s = server();
    let c = new_bucket("wfail").await;
    let proxy = FaultProxy::start(&s.endpoint).await;
    let mut mount = Mount::start(c.bucket(), &proxy.url, &["--max-attempts", "2"]);
    let root = mount.path.clone();
    proxy.inject(Some("PUT"), Fault::internal_error(), 1000);
    let data = test_data(3 * MIB, 9);
    let expected = sha256(&data);
    let err = blocking({
        let root = root.clone();
        move || {
            let mut f = std::fs::File::create(root.join("precious.bin")).unwrap();
            f.write_all(&data).unwrap();
            f.sync_all().unwrap_err()
        }
    })
    .await;
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(object(&c, "precious.bin").await.is_none());
    // The server recovers: the data, kept locally, goes up at unmount.
    assert!(proxy.pending_faults() > 0);
    proxy.clear_faults();
    let size = blocking(move || std::fs::metadata(root.join("precious.bin")).unwrap().len()).await;
    assert_eq!(size, 3 * MIB as u64, "still shown while unsaved");
    assert!(mount.unmount().success());
    let (body, _) = object(&c, "precious.bin")
        .await
        .expect("uploaded once the server recovered");
    assert_eq!(sha256(&body), expected);
    assert!(
        mount.log_text().contains("the data is kept in"),
        "{}",
        mount.log_text()
    );
}

/// A seeded workload of writes, truncates and reads, checked against an
/// in-memory model, and again after a remount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_workload_matches_a_model_and_survives_remount() {
    let c = new_bucket("wmodel").await;
    let mut mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    let model = blocking(move || {
        let mut seed = 0x5eed_u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n.max(1)
        };
        let names = ["a", "b", "c", "d"];
        let mut model: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
        for step in 0..2000 {
            let name = names[rnd(4) as usize];
            let path = root.join(name);
            match rnd(10) {
                0..=4 => {
                    let current = model.entry(name).or_default();
                    let offset = rnd(current.len() as u64 + 20_000) as usize;
                    let len = rnd(9_000) as usize + 1;
                    let byte = (step % 251) as u8;
                    let f = std::fs::OpenOptions::new()
                        .create(true)
                        .write(true)
                        .truncate(false)
                        .open(&path)
                        .unwrap();
                    f.write_all_at(&vec![byte; len], offset as u64).unwrap();
                    if current.len() < offset + len {
                        current.resize(offset + len, 0);
                    }
                    current[offset..offset + len].fill(byte);
                }
                5 => {
                    let current = model.entry(name).or_default();
                    let len = rnd(current.len() as u64 + 5_000) as usize;
                    let f = std::fs::OpenOptions::new()
                        .create(true)
                        .write(true)
                        .truncate(false)
                        .open(&path)
                        .unwrap();
                    f.set_len(len as u64).unwrap();
                    current.resize(len, 0);
                }
                6 => {
                    if model.remove(name).is_some() {
                        std::fs::remove_file(&path).unwrap();
                    }
                }
                _ => {
                    let got = std::fs::read(&path).ok();
                    assert_eq!(
                        got.as_deref(),
                        model.get(name).map(|v| v.as_slice()),
                        "step {step}: {name}"
                    );
                }
            }
        }
        model
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<BTreeMap<String, Vec<u8>>>()
    })
    .await;
    assert!(mount.unmount().success());
    for (name, want) in &model {
        assert_eq!(
            sha256(&object(&c, name).await.unwrap().0),
            sha256(want),
            "{name} in the bucket"
        );
    }
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    blocking(move || {
        for (name, want) in &model {
            assert_eq!(
                &std::fs::read(root.join(name)).unwrap(),
                want,
                "{name} after remount"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_open_for_reading_stay_readable_after_unlink_and_rename() {
    let c = support::new_versioned_bucket("wunlinkopen").await;
    if !support::versioning_enabled(&c).await {
        return;
    }
    let first = test_data(16 * MIB, 21);
    let second = test_data(16 * MIB, 22);
    upload(&c, "gone.bin", first.clone()).await;
    upload(&c, "moved.bin", second.clone()).await;
    let mount = Mount::start(
        c.bucket(),
        &server().endpoint,
        &["-o", "read_ahead_max=1MiB,cache_size=1MiB"],
    );
    let root = mount.path.clone();
    blocking(move || {
        let gone = std::fs::File::open(root.join("gone.bin")).unwrap();
        let moved = std::fs::File::open(root.join("moved.bin")).unwrap();
        let mut buf = vec![0u8; 4096];
        gone.read_at(&mut buf, 0).unwrap();
        moved.read_at(&mut buf, 0).unwrap();
        std::fs::remove_file(root.join("gone.bin")).unwrap();
        std::fs::rename(root.join("moved.bin"), root.join("elsewhere.bin")).unwrap();
        assert!(!root.join("gone.bin").exists());
        for (file, data) in [(&gone, &first), (&moved, &second)] {
            let offset = 13 * MIB;
            let n = file.read_at(&mut buf, offset as u64).unwrap();
            assert_eq!(&buf[..n], &data[offset..offset + n]);
            assert_eq!(n, 4096);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_inside_the_mount_copies_server_side() {
    let s = server();
    let c = new_bucket("wcopy").await;
    let data = test_data(12 * MIB, 31);
    upload(&c, "orig.bin", data.clone()).await;
    let proxy = FaultProxy::start(&s.endpoint).await;
    let mount = Mount::start(c.bucket(), &proxy.url, &[]);
    proxy.clear_seen();
    let root = mount.path.clone();
    blocking(move || {
        let status = std::process::Command::new("cp")
            .arg(root.join("orig.bin"))
            .arg(root.join("copy.bin"))
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            std::fs::metadata(root.join("copy.bin")).unwrap().len(),
            12 * MIB as u64
        );
    })
    .await;
    let seen = proxy.seen();
    let copies = seen
        .iter()
        .filter(|r| {
            r.method == "PUT"
                && r.path_and_query.ends_with("/copy.bin")
                && r.header_names.iter().any(|h| h == "x-amz-copy-source")
        })
        .count();
    let data_gets = seen
        .iter()
        .filter(|r| r.method == "GET" && r.path_and_query.ends_with("/orig.bin"))
        .count();
    assert_eq!(copies, 1, "{seen:?}");
    assert_eq!(data_gets, 0, "no data read through the mount: {seen:?}");
    assert_eq!(
        sha256(&object(&c, "copy.bin").await.unwrap().0),
        sha256(&data)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_renamed_while_a_file_inside_is_open_for_writing() {
    let c = new_bucket("wrenameopen").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    blocking(move || {
        std::fs::create_dir(root.join("old")).unwrap();
        let mut f = std::fs::File::create(root.join("old/f.txt")).unwrap();
        f.write_all(b"before ").unwrap();
        std::fs::rename(root.join("old"), root.join("new")).unwrap();
        f.write_all(b"after").unwrap();
        drop(f);
        assert!(!root.join("old").exists());
        assert_eq!(
            std::fs::read_to_string(root.join("new/f.txt")).unwrap(),
            "before after"
        );
    })
    .await;
    assert_eq!(
        &object(&c, "new/f.txt").await.unwrap().0[..],
        b"before after"
    );
    assert!(
        keys(&c, "old/").await.is_empty(),
        "nothing written back under the old name"
    );
}

/// Filling a new directory (`cp -r`, `tar x`) costs one PUT per file: the
/// mount knows the directory it made is empty and keeps track of the names
/// it adds and removes there, so looking up each new name asks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_a_new_directory_asks_nothing_but_the_puts() {
    let c = new_bucket("wfill").await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    // A long metadata TTL, so that what is counted does not depend on how
    // fast this machine runs the loop.
    let mount = Mount::start(c.bucket(), &proxy.url, &["-o", "metadata_ttl=60s"]);
    let root = mount.path.clone();
    blocking(move || std::fs::create_dir(root.join("new")).unwrap()).await;
    proxy.clear_seen();
    let root = mount.path.clone();
    blocking(move || {
        let dir = root.join("new");
        for i in 0..100 {
            std::fs::write(dir.join(format!("f{i:03}")), format!("file {i}")).unwrap();
        }
        std::fs::create_dir(dir.join("sub")).unwrap();
    })
    .await;
    let seen = proxy.seen();
    let heads = seen.iter().filter(|s| s.method == "HEAD").count();
    let lists = proxy.count("GET", "list-type=2");
    let puts = seen.iter().filter(|s| s.method == "PUT").count();
    assert_eq!(
        (heads, lists),
        (0, 0),
        "no lookup asked the server: {seen:#?}"
    );
    assert_eq!(puts, 100 + 1, "one PUT per file and directory");
    // The names it tracks stay true through removals.
    let root = mount.path.clone();
    let (gone, back) = blocking(move || {
        let dir = root.join("new");
        std::fs::remove_file(dir.join("f007")).unwrap();
        std::fs::remove_dir(dir.join("sub")).unwrap();
        let gone = (
            dir.join("f007").exists(),
            dir.join("sub").exists(),
            dir.join("f008").exists(),
        );
        std::fs::write(dir.join("f007"), "again").unwrap();
        let back = std::fs::read_to_string(dir.join("f007")).unwrap();
        (gone, back)
    })
    .await;
    assert_eq!(
        gone,
        (false, false, true),
        "removed names are gone, others stay"
    );
    assert_eq!(back, "again");
    let mut stored = keys(&c, "new/").await;
    stored.retain(|k| k != "new/"); // the directory's own marker
    stored.sort();
    assert_eq!(stored.len(), 100);
    assert_eq!(stored[7], "new/f007");
    assert!(!stored.iter().any(|k| k.starts_with("new/sub")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_never_waits_for_memory_its_other_open_files_hold() {
    // One thread streams a file, opens many more and writes a block to
    // each (each may take a part's memory and keep it while open), then
    // goes on with the first: it must not wait for memory that only a
    // write to one of the others would free.
    let c = new_bucket("heldmemory").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &["-o", "part_size=5MiB"]);
    let root = mount.path.clone();
    let first = test_data(11 * MIB, 40);
    let others = 16;
    let block = test_data(MIB, 41);
    let written = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        blocking({
            let (first, block) = (first.clone(), block.clone());
            move || {
                let mut f = std::fs::File::create(root.join("first")).unwrap();
                f.write_all(&first[..5 * MIB]).unwrap();
                let open: Vec<_> = (0..others)
                    .map(|i| {
                        let mut g = std::fs::File::create(root.join(format!("o{i}"))).unwrap();
                        g.write_all(&block).unwrap();
                        g
                    })
                    .collect();
                f.write_all(&first[5 * MIB..]).unwrap();
                drop(f);
                drop(open);
            }
        }),
    )
    .await;
    assert!(
        written.is_ok(),
        "the writes did not finish within 2 minutes"
    );
    let (body, _) = object(&c, "first").await.expect("stored");
    assert_eq!(sha256(&body), sha256(&first));
    for i in 0..others {
        let (body, _) = object(&c, &format!("o{i}")).await.expect("stored");
        assert_eq!(body, block, "o{i}");
    }
}

/// `echo v2 > f` over an existing file adds one version, not an empty one
/// and then v2: the flush of the shell's first descriptor, closed after
/// its dup2 and before the write, stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_redirect_over_a_file_adds_one_version() {
    let c = support::new_versioned_bucket("wredirect").await;
    if !support::versioning_enabled(&c).await {
        return;
    }
    put(&c, "f", b"v1\n").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let f = mount.path.join("f");
    let status = blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg("echo v2 > \"$1\"")
            .arg("sh")
            .arg(&f)
            .status()
            .unwrap()
    })
    .await;
    assert!(status.success());
    assert_eq!(&object(&c, "f").await.unwrap().0[..], b"v2\n");
    let versions = c.list_all_versions("f").await.unwrap();
    assert_eq!(
        versions.len(),
        2,
        "v1 and v2, no empty version: {versions:?}"
    );
}

/// Copies follow the provider's price list. On B2's, a server-side copy is
/// billed as ten GETs, so objects up to 360 KB are copied by a GET and a
/// (free) PUT: renames, chmod, `cp` inside the mount and directory moves of
/// small files send no CopyObject, and the copies keep content, mode,
/// mtime and the content headers other tools set. Bigger objects, and
/// every object on AWS's price list, are copied server-side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_copies_follow_the_price_list() {
    let c = new_bucket("wprice").await;
    c.put_object(
        "web.txt",
        Bytes::from_static(b"gzip, supposedly"),
        &PutOptions {
            content_type: Some("text/plain".into()),
            content_headers: vec![
                ("content-encoding", "gzip".into()),
                ("cache-control", "max-age=60".into()),
            ],
            ..Default::default()
        },
    )
    .await
    .expect("put web.txt");
    let small = test_data(300_000, 1);
    let big = test_data(400_000, 2);
    // chmod, rename, cp, the directory move (two files; its marker is put
    // anew), the two renames of web.txt.
    for (price_list, small_copies) in [("b2", 0), ("aws", 7)] {
        let proxy = FaultProxy::start(&server().endpoint).await;
        let opts = format!("price_list={price_list}");
        let mount = Mount::start(c.bucket(), &proxy.url, &["-o", &opts]);
        let root = mount.path.clone();
        let (small_w, big_w) = (small.clone(), big.clone());
        let dir = format!("{price_list}-dir");
        blocking(move || {
            std::fs::create_dir(root.join(&dir)).unwrap();
            std::fs::write(root.join(&dir).join("small"), &small_w).unwrap();
            std::fs::write(root.join("big"), &big_w).unwrap();
            let when =
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
            let f = std::fs::File::options()
                .write(true)
                .open(root.join(&dir).join("small"))
                .unwrap();
            f.set_modified(when).unwrap();
            close_checked(f).unwrap();
        })
        .await;
        proxy.clear_seen();
        let root = mount.path.clone();
        let dir = format!("{price_list}-dir");
        blocking(move || {
            let d = root.join(&dir);
            std::fs::set_permissions(d.join("small"), std::fs::Permissions::from_mode(0o640))
                .unwrap();
            std::fs::rename(d.join("small"), d.join("moved")).unwrap();
            std::fs::copy(d.join("moved"), d.join("copied")).unwrap();
            std::fs::rename(&d, root.join(format!("{dir}-renamed"))).unwrap();
            std::fs::rename(root.join("web.txt"), root.join("web2.txt")).unwrap();
            std::fs::rename(root.join("web2.txt"), root.join("web.txt")).unwrap();
            std::fs::rename(root.join("big"), root.join("big2")).unwrap();
            std::fs::rename(root.join("big2"), root.join("big")).unwrap();
        })
        .await;
        let copies = |needle: &str| {
            proxy
                .seen()
                .iter()
                .filter(|s| {
                    s.header_names.iter().any(|h| h == "x-amz-copy-source")
                        && s.path_and_query.contains(needle)
                })
                .count()
        };
        assert_eq!(
            copies("/big"),
            2,
            "{price_list}: big objects copy server-side"
        );
        // The chmod right after the file's last close may come before the
        // kernel's release of it, and then rides on that upload instead.
        let small_seen = copies("") - copies("/big");
        assert!(
            small_seen <= small_copies && small_seen + 1 >= small_copies,
            "{price_list}: {small_seen} server-side copies of small objects: {:#?}",
            proxy.seen()
        );
        drop(mount);
        let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
        let root = mount.path.clone();
        let dir = format!("{price_list}-dir-renamed");
        let (small_r, big_r) = (small.clone(), big.clone());
        blocking(move || {
            let d = root.join(&dir);
            for name in ["moved", "copied"] {
                assert!(
                    std::fs::read(d.join(name)).unwrap()[..] == small_r[..],
                    "{name}"
                );
            }
            let moved = std::fs::metadata(d.join("moved")).unwrap();
            assert_eq!(moved.permissions().mode() & 0o7777, 0o640, "mode kept");
            assert_eq!(
                moved.modified().unwrap(),
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000),
                "mtime kept"
            );
            assert!(std::fs::read(root.join("big")).unwrap()[..] == big_r[..]);
            assert_eq!(
                std::fs::read(root.join("web.txt")).unwrap(),
                b"gzip, supposedly"
            );
        })
        .await;
        let web = c.head_object("web.txt", None).await.expect("web.txt");
        assert_eq!(web.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            web.content_headers,
            vec![
                ("cache-control", "max-age=60".to_owned()),
                ("content-encoding", "gzip".to_owned())
            ],
            "{price_list}: the content headers survive two renames"
        );
    }
}

/// `rm -r` of a tree listed by this mount for the first time, as the bill
/// bench does it: every file and directory goes, and rm reports nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_r_of_a_tree_made_elsewhere() {
    let c = new_bucket("wrmr").await;
    let names: Vec<String> = (0..1000)
        .map(|i| format!("copy/d{}/f{i:04}", i / 100))
        .collect();
    support::put_many(&c, &names, b"y").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    let out = blocking(move || {
        std::process::Command::new("rm")
            .arg("-r")
            .arg(root.join("copy"))
            .output()
            .expect("rm runs")
    })
    .await;
    assert!(
        out.status.success(),
        "rm -r: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(keys(&c, "copy/").await.is_empty());
}

/// A directory without a marker that this mount emptied stays a directory
/// until its rmdir (which `rm -r` sends last), and after that rmdir the
/// name is free for a new directory at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_implicit_directory_lives_until_its_rmdir() {
    let c = new_bucket("wempty").await;
    put(&c, "d/f", b"x").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &["-o", "metadata_ttl=0"]);
    let d = mount.path.join("d");
    blocking(move || {
        std::fs::remove_file(d.join("f")).unwrap();
        // TTL 0: every check asks the bucket, which has nothing under d/.
        assert!(d.is_dir(), "still a directory on this mount");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "and empty");
        // Held open (as a shell's working directory would be) across its
        // rmdir, so that the kernel keeps its inode.
        let held = std::fs::File::open(&d).expect("open the directory");
        std::fs::remove_dir(&d).expect("rmdir");
        assert!(!d.exists());
        std::fs::create_dir(&d).expect("mkdir of the name again");
        assert!(d.is_dir());
        drop(held);
    })
    .await;
    assert_eq!(keys(&c, "d").await, ["d/"], "the new directory's marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_r_of_a_tree_written_elsewhere_lists_each_directory_once_and_heads_no_file() {
    let c = new_bucket("rmtree").await;
    let mut keys: Vec<String> = (0..90)
        .map(|i| format!("tree/d{}/f{i:02}", i / 30))
        .collect();
    keys.push("tree/top".to_owned());
    support::put_many(&c, &keys, &[b'z'; 4096]).await;
    // Small enough to be a symlink: its kind needs a HEAD.
    put(&c, "tree/d0/small", b"tiny").await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    // Listings trusted for a minute: what `rm` read is what it removes,
    // however slow the machine.
    let mount = Mount::start(c.bucket(), &proxy.url, &["-o", "metadata_ttl=60s"]);
    proxy.clear_seen();
    let tree = mount.path.join("tree");
    let out = blocking(move || {
        std::process::Command::new("rm")
            .arg("-r")
            .arg(&tree)
            .output()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = c
        .list_objects(&bucketfs::s3::ListRequest {
            prefix: "tree/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(left.objects.is_empty(), "left: {:?}", left.objects);
    let seen = proxy.seen();
    let bucket = c.bucket().to_owned();
    // `rm -r` reads each directory twice (whether it is empty, then its
    // entries) and removes it once emptied: one listing each, tree and
    // its three directories.
    let lists: Vec<&str> = seen
        .iter()
        .filter(|r| r.method == "GET" && r.path_and_query.contains("list-type=2"))
        .map(|r| r.path_and_query.as_str())
        .collect();
    assert_eq!(lists.len(), 4, "{lists:#?}");
    // No HEAD of a file but the small one; directories' markers may be.
    let file_heads: Vec<&str> = seen
        .iter()
        .filter(|r| r.method == "HEAD" && !r.path_and_query.ends_with('/'))
        .map(|r| r.path_and_query.as_str())
        .collect();
    assert_eq!(file_heads, [format!("/{bucket}/tree/d0/small")]);
    let deletes = seen.iter().filter(|r| r.method == "DELETE").count();
    // Every file (the small one too) and every directory's marker.
    assert!(deletes >= keys.len() + 1 + 4, "{deletes} deletes");
}

/// `cp` inside the mount (a whole file into a new one: copy_file_range)
/// is one copy, with no HEAD of what it made: the copy's answer says its
/// ETag, and what it holds is known. What a stat shows then, and after a
/// remount, is the copy as stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_inside_the_mount_asks_nothing_about_the_copy() {
    let c = new_bucket("wcp").await;
    let body = test_data(600_000, 7);
    for price_list in ["b2", "aws"] {
        let src = format!("{price_list}-src");
        let dst = format!("{price_list}-dst");
        upload(&c, &src, body.clone()).await;
        let proxy = FaultProxy::start(&server().endpoint).await;
        let opts = format!("price_list={price_list},metadata_ttl=60s");
        let mount = Mount::start(c.bucket(), &proxy.url, &["-o", &opts]);
        proxy.clear_seen();
        let (root, s, d) = (mount.path.clone(), src.clone(), dst.clone());
        let shown = blocking(move || {
            let out = std::process::Command::new("cp")
                .arg(root.join(&s))
                .arg(root.join(&d))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let m = std::fs::metadata(root.join(&d)).unwrap();
            (m.len(), m.mode() & 0o7777)
        })
        .await;
        assert_eq!(shown.0, body.len() as u64);
        let bucket = c.bucket().to_owned();
        let heads: Vec<String> = proxy
            .seen()
            .iter()
            .filter(|r| r.method == "HEAD" && r.path_and_query == format!("/{bucket}/{dst}"))
            .map(|r| r.path_and_query.clone())
            .collect();
        assert!(
            heads.is_empty(),
            "{price_list}: HEADs of the copy: {heads:?}"
        );
        drop(mount);
        let (stored, _) = object(&c, &dst).await.expect("the copy is in the bucket");
        assert!(stored[..] == body[..], "{price_list}: the copy's bytes");
        let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
        let (root, d) = (mount.path.clone(), dst.clone());
        let again = blocking(move || {
            let m = std::fs::metadata(root.join(&d)).unwrap();
            (m.len(), m.mode() & 0o7777)
        })
        .await;
        assert_eq!(again, shown, "{price_list}: after a remount");
    }
}

/// rmdir takes a fresh listing's word that a directory is empty (`rm -r`
/// has just emptied it), never that it is not: a child removed by another
/// client since the listing does not make rmdir fail with ENOTEMPTY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmdir_asks_the_bucket_before_saying_not_empty() {
    let c = new_bucket("wrmdir").await;
    put(&c, "d/", b"").await;
    put(&c, "d/x", b"x").await;
    // Listings trusted for a minute: the cache still shows `x` below.
    let mount = Mount::start(c.bucket(), &server().endpoint, &["-o", "metadata_ttl=60s"]);
    let d = mount.path.join("d");
    let listed = blocking({
        let d = d.clone();
        move || names(&d)
    })
    .await;
    assert_eq!(listed, ["x"]);
    c.delete_object("d/x", None)
        .await
        .expect("delete d/x elsewhere");
    blocking(move || std::fs::remove_dir(&d))
        .await
        .expect("rmdir d");
    assert!(object(&c, "d/").await.is_none(), "the marker is gone");
}
