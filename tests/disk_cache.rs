//! The disk cache through real mounts: a re-read after a remount costs no
//! GET, a changed object is fetched again, a damaged block is caught and
//! fetched again, two mounts share one directory, the size bound holds, a
//! `kill -9` while the cache fills leaves a cache the next mount uses, and
//! the directory is private. GETs are counted by a proxy.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::mount::Mount;
use support::proxy::FaultProxy;
use support::{blocking, put, server, test_data, wait_until};

const BLOCK: u64 = 32 * 1024;

/// Object GETs the proxy saw (listings excluded).
fn object_gets(proxy: &FaultProxy) -> usize {
    proxy
        .seen()
        .iter()
        .filter(|s| {
            // `/bucket/key`, not `/bucket/?list-type=2` or `?versioning`.
            let path = s.path_and_query.split('?').next().unwrap_or_default();
            s.method == "GET" && path.trim_start_matches('/').contains('/') && !path.ends_with('/')
        })
        .count()
}

fn mount(bucket: &str, proxy: &FaultProxy, cache: &Path, extra: &[&str]) -> Mount {
    let dir = cache.to_string_lossy().into_owned();
    let mut args = vec!["--disk-cache", &dir];
    args.extend_from_slice(extra);
    Mount::start(bucket, &proxy.url, &args)
}

async fn read_all(path: PathBuf) -> Vec<u8> {
    blocking(move || std::fs::read(&path).expect("read through the mount")).await
}

/// Every file under `dir`, with its allocated bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.push((entry.path(), meta.blocks() * 512));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reread_after_a_remount_issues_no_get() {
    let c = support::new_bucket("dc-reread").await;
    let data = test_data(6 * 1024 * 1024 + 1234, 1);
    put(&c, "big.bin", &data).await;
    put(&c, "small.txt", b"hello").await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    let cache = tempfile::tempdir().expect("cache dir");

    let mut first = mount(c.bucket(), &proxy, cache.path(), &[]);
    assert!(read_all(first.path.join("big.bin")).await == data[..]);
    assert_eq!(read_all(first.path.join("small.txt")).await, b"hello");
    assert!(object_gets(&proxy) > 0);
    assert!(first.unmount().success());

    proxy.clear_seen();
    let second = mount(c.bucket(), &proxy, cache.path(), &[]);
    assert!(read_all(second.path.join("big.bin")).await == data[..]);
    assert_eq!(read_all(second.path.join("small.txt")).await, b"hello");
    // Random reads too.
    let path = second.path.join("big.bin");
    let expected = data.clone();
    blocking(move || {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&path).expect("open");
        for i in 0..50u64 {
            let off = (i * 7919 * 4096) % (expected.len() as u64 - 4096);
            let mut buf = [0u8; 4096];
            f.read_exact_at(&mut buf, off).expect("pread");
            assert!(buf[..] == expected[off as usize..off as usize + 4096]);
        }
    })
    .await;
    assert_eq!(
        object_gets(&proxy),
        0,
        "everything came from the disk cache: {:?}",
        proxy.seen()
    );

    // Private: what bucketfs makes in it is 0700, its files 0600.
    let v1 = cache.path().join("v1");
    let mut dirs = vec![v1.clone()];
    for entry in std::fs::read_dir(&v1).unwrap().flatten() {
        if entry.file_type().unwrap().is_dir() {
            dirs.push(entry.path());
        }
    }
    for dir in dirs {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
    for (file, _) in files_under(cache.path()) {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_changed_between_mounts_is_fetched_again() {
    let c = support::new_bucket("dc-changed").await;
    put(&c, "f", &test_data(300_000, 1)).await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    let cache = tempfile::tempdir().expect("cache dir");
    let mut first = mount(c.bucket(), &proxy, cache.path(), &[]);
    assert!(read_all(first.path.join("f")).await == test_data(300_000, 1)[..]);
    assert!(first.unmount().success());

    // Same size, other bytes: only the ETag tells.
    let new = test_data(300_000, 2);
    put(&c, "f", &new).await;
    proxy.clear_seen();
    let second = mount(c.bucket(), &proxy, cache.path(), &[]);
    assert!(read_all(second.path.join("f")).await == new[..]);
    assert!(object_gets(&proxy) > 0, "the new version was fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_block_is_caught_and_fetched_again() {
    let c = support::new_bucket("dc-damaged").await;
    let data = test_data(10 * BLOCK as usize, 3);
    put(&c, "f", &data).await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    let cache = tempfile::tempdir().expect("cache dir");
    let mut first = mount(c.bucket(), &proxy, cache.path(), &[]);
    assert!(read_all(first.path.join("f")).await == data[..]);
    assert!(first.unmount().success());

    let (data_file, _) = files_under(cache.path())
        .into_iter()
        .find(|(p, _)| p.extension().is_some_and(|e| e == "data"))
        .expect("a data file");
    let mut bytes = std::fs::read(&data_file).unwrap();
    bytes[5 * BLOCK as usize + 17] ^= 0x40;
    std::fs::write(&data_file, &bytes).unwrap();

    proxy.clear_seen();
    let second = mount(c.bucket(), &proxy, cache.path(), &[]);
    assert!(
        read_all(second.path.join("f")).await == data[..],
        "the damaged block is never returned"
    );
    assert_eq!(object_gets(&proxy), 1, "only the damaged block is fetched");
    assert!(
        second.log_text().contains("does not match its checksum"),
        "{}",
        second.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mounts_share_one_cache_directory() {
    let c = support::new_bucket("dc-shared").await;
    let data = test_data(2 * 1024 * 1024, 4);
    put(&c, "f", &data).await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    let cache = tempfile::tempdir().expect("cache dir");
    let mut a = mount(c.bucket(), &proxy, cache.path(), &[]);
    let b = mount(c.bucket(), &proxy, cache.path(), &[]);
    assert!(read_all(a.path.join("f")).await == data[..]);
    // A's blocks reach the disk by its unmount at the latest.
    assert!(a.unmount().success());
    proxy.clear_seen();
    assert!(read_all(b.path.join("f")).await == data[..]);
    assert_eq!(object_gets(&proxy), 0, "B reads what A cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_bound_holds_under_a_larger_workload() {
    let c = support::new_bucket("dc-bound").await;
    let bound: u64 = 1024 * 1024;
    let proxy = FaultProxy::start(&server().endpoint).await;
    let cache = tempfile::tempdir().expect("cache dir");
    for i in 0..8u64 {
        put(&c, &format!("f{i}"), &test_data(400_000, i)).await;
    }
    let m = mount(
        c.bucket(),
        &proxy,
        cache.path(),
        &["-o", "disk_cache_size=1MiB"],
    );
    let mut peak = 0;
    for i in 0..8u64 {
        assert!(read_all(m.path.join(format!("f{i}"))).await == test_data(400_000, i)[..]);
        // Measured while the writer works, too.
        for _ in 0..20 {
            let used: u64 = files_under(&cache.path().join("v1"))
                .iter()
                .filter(|(p, _)| p.extension().is_some_and(|e| e == "data"))
                .map(|(_, n)| n)
                .sum();
            peak = peak.max(used);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(peak > bound / 2, "the cache was used: peak {peak}");
    assert!(
        peak <= bound + BLOCK,
        "data on disk peaked at {peak} bytes, over the {bound}-byte bound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_while_the_cache_fills_leaves_a_cache_the_next_mount_uses() {
    let c = support::new_bucket("dc-kill").await;
    let data = test_data(48 * 1024 * 1024, 5);
    put(&c, "f", &data).await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    // Slow enough that the kill lands while blocks are still being written.
    proxy.set_latency(Duration::from_millis(30));
    let cache = tempfile::tempdir().expect("cache dir");
    let first = mount(c.bucket(), &proxy, cache.path(), &[]);
    let path = first.path.join("f");
    let reader = std::thread::spawn(move || {
        let _ = std::fs::read(&path);
    });
    let v1 = cache.path().join("v1");
    assert!(
        wait_until(Duration::from_secs(30), || files_under(&v1).iter().any(
            |(p, n)| p.extension().is_some_and(|e| e == "data") && *n > 2 * 1024 * 1024
        )),
        "the cache fills"
    );
    let pid = first.pid().expect("pid");
    // SAFETY: kill of our own child process by its PID.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z"))
    }));
    drop(first); // detaches the dead mount
    let _ = reader.join();

    proxy.set_latency(Duration::ZERO);
    let started = Instant::now();
    let mut second = mount(c.bucket(), &proxy, cache.path(), &[]);
    let mounted_in = started.elapsed();
    assert!(
        read_all(second.path.join("f")).await == data[..],
        "no torn block is served"
    );
    assert!(second.unmount().success());
    // Loose on purpose (timings are not tested here): no scan of the cache
    // delays the mount.
    assert!(
        mounted_in < Duration::from_secs(10),
        "mounted in {mounted_in:?}"
    );
    // The killed mount's blocks and the second's make the whole file.
    proxy.clear_seen();
    let third = mount(c.bucket(), &proxy, cache.path(), &[]);
    assert!(read_all(third.path.join("f")).await == data[..]);
    assert_eq!(object_gets(&proxy), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_directory_others_can_write_is_refused() {
    let c = support::new_bucket("dc-open").await;
    let cache = tempfile::tempdir().expect("cache dir");
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let dir = cache.path().to_string_lossy().into_owned();
    let bucket = c.bucket().to_owned();
    let err = blocking(move || {
        Mount::try_start(&bucket, &server().endpoint, &["--disk-cache", &dir])
            .err()
            .expect("refused")
    })
    .await;
    assert!(err.contains("writable by group or others"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_through_the_mount_reads_back_without_a_get() {
    let c = support::new_bucket("dc-written").await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    let cache = tempfile::tempdir().expect("cache dir");
    let data = test_data(3 * 1024 * 1024 + 5, 6);
    let mut first = mount(c.bucket(), &proxy, cache.path(), &[]);
    // Written by `cp`, not by this process: a process that a parallel test
    // spawns would inherit our descriptor and flush the file half-written
    // (a save then, whose staging file is freed: the cache takes only what
    // is whole in staging at an upload).
    let copied = cp_into(&data, first.path.join("new.bin")).await;
    assert!(copied.status.success(), "cp into the mount: {copied:?}");
    assert!(first.unmount().success());

    proxy.clear_seen();
    let second = mount(c.bucket(), &proxy, cache.path(), &[]);
    assert!(read_all(second.path.join("new.bin")).await == data[..]);
    assert_eq!(
        object_gets(&proxy),
        0,
        "the upload fed the disk cache: {:?}",
        proxy.seen()
    );
    // And the bucket holds the same bytes.
    let (_, stored) = c
        .get_object_bytes("new.bin", Default::default())
        .await
        .expect("stored");
    assert!(stored[..] == data[..]);
}

/// Keeps a stopped process stopped only for as long as this lives: the
/// daemon is sent SIGCONT however the test ends.
struct Stopped(i32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        let pid = pid as i32;
        // SAFETY: a signal to the daemon this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// Fill the disk cache with `name` through one mount, then unmount it:
/// the next mount finds the file whole (and checked) in the cache.
async fn cache_whole(bucket: &str, proxy: &FaultProxy, cache: &Path, name: &str, data: &[u8]) {
    let mut first = mount(bucket, proxy, cache, &[]);
    assert!(read_all(first.path.join(name)).await == data[..]);
    assert!(first.unmount().success());
}

/// Read all of `file` with pread only: no fstat, which could ask the
/// daemon for attributes.
fn pread_all(file: &std::fs::File, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_wholly_cached_is_read_by_the_kernel_with_the_daemon_stopped() {
    let c = support::new_bucket("dc-passthrough").await;
    let data = test_data(5 * 1024 * 1024 + 321, 7);
    put(&c, "whole.bin", &data).await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    let cache = tempfile::tempdir().expect("cache dir");
    cache_whole(c.bucket(), &proxy, cache.path(), "whole.bin", &data).await;

    proxy.clear_seen();
    let second = mount(c.bucket(), &proxy, cache.path(), &[]);
    assert!(
        second.log_text().contains("FUSE passthrough"),
        "the log says which path reads take: {}",
        second.log_text()
    );
    let path = second.path.join("whole.bin");
    let file = blocking(move || std::fs::File::open(path).expect("open")).await;
    // With the daemon stopped, only the kernel can answer: a read that
    // needed bucketfs would hang until the timeout below. (The file is
    // closed only after SIGCONT: a close asks the daemon to flush.)
    let stopped = Stopped::stop(second.pid().expect("daemon pid"));
    let len = data.len();
    let reading = tokio::task::spawn_blocking(move || (pread_all(&file, len), file));
    let read = tokio::time::timeout(Duration::from_secs(20), reading).await;
    drop(stopped);
    let (read, file) = read
        .expect("read without the daemon (passthrough)")
        .expect("reader thread");
    drop(file);
    assert!(read.expect("read") == data[..]);
    assert_eq!(object_gets(&proxy), 0, "{:?}", proxy.seen());
}

/// Write `data` to `to` with `cp` (see the written-file test for why not
/// from this process); its exit status.
async fn cp_into(data: &[u8], to: PathBuf) -> std::process::Output {
    let local = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(local.path(), data).expect("local copy");
    let from = local.path().to_owned();
    blocking(move || {
        let out = std::process::Command::new("cp")
            .arg(&from)
            .arg(&to)
            .output()
            .expect("run cp");
        drop(local);
        out
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_open_refuses_writers_and_newer_versions_until_closed() {
    let c = support::new_bucket("dc-pt-busy").await;
    let old = test_data(2 * 1024 * 1024, 8);
    put(&c, "f", &old).await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    let cache = tempfile::tempdir().expect("cache dir");
    cache_whole(c.bucket(), &proxy, cache.path(), "f", &old).await;

    let m = mount(c.bucket(), &proxy, cache.path(), &["--metadata-ttl", "0"]);
    let path = m.path.join("f");
    let p = path.clone();
    let reader = blocking(move || std::fs::File::open(p).expect("open")).await;

    // A writer on this mount: refused while the passthrough open lasts.
    let out = cp_into(b"new bytes", path.clone()).await;
    assert!(!out.status.success(), "cp over a file open by passthrough");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Text file busy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = path.clone();
    let err = blocking(move || std::fs::OpenOptions::new().write(true).open(p))
        .await
        .expect_err("open for writing");
    assert_eq!(err.raw_os_error(), Some(libc::ETXTBSY));
    assert!(
        m.log_text()
            .contains("open for writing of /f: refused (ETXTBSY"),
        "the log says why, with the path: {}",
        m.log_text()
    );
    let p = path.clone();
    let err = blocking(move || {
        std::process::Command::new("truncate")
            .args(["-s", "10"])
            .arg(p)
            .output()
            .expect("run truncate")
    })
    .await;
    assert!(
        !err.status.success(),
        "truncate of a file open by passthrough"
    );

    // Another client replaces the object: a new open cannot be given the
    // new version beside the old one's passthrough opens.
    let new = test_data(1024 * 1024, 9);
    put(&c, "f", &new).await;
    let p = path.clone();
    let err = blocking(move || std::fs::File::open(p))
        .await
        .expect_err("open of the newer version");
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE));
    // The open reader still reads the old version, whole.
    let len = old.len();
    let read = blocking(move || {
        let read = pread_all(&reader, len);
        drop(reader);
        read
    })
    .await;
    assert!(read.expect("old version") == old[..]);

    // Once closed, the new version opens, and a writer may write.
    assert!(read_all(path.clone()).await == new[..]);
    let out = cp_into(b"written", path.clone()).await;
    assert!(out.status.success(), "{:?}", out);
    assert_eq!(read_all(path).await, b"written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_passthrough_reads_through_the_daemon_and_lets_writers_in() {
    let c = support::new_bucket("dc-no-pt").await;
    let data = test_data(1024 * 1024, 10);
    put(&c, "f", &data).await;
    let proxy = FaultProxy::start(&server().endpoint).await;
    let cache = tempfile::tempdir().expect("cache dir");
    cache_whole(c.bucket(), &proxy, cache.path(), "f", &data).await;

    proxy.clear_seen();
    let m = mount(c.bucket(), &proxy, cache.path(), &["--no-passthrough"]);
    assert!(
        m.log_text()
            .contains("without FUSE passthrough: --no-passthrough"),
        "{}",
        m.log_text()
    );
    let path = m.path.join("f");
    let p = path.clone();
    let reader = blocking(move || std::fs::File::open(p).expect("open")).await;
    let out = cp_into(b"replaced", path.clone()).await;
    assert!(out.status.success(), "{:?}", out);
    drop(reader);
    assert_eq!(read_all(path).await, b"replaced");
    assert_eq!(object_gets(&proxy), 0, "{:?}", proxy.seen());
}
