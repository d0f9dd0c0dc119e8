//! POSIX calls that work on a local disk and must work here too (issue
//! 19): chmod of special files, device numbers, access times set
//! explicitly, `fstat` after `unlink`, and paths at S3's key limit. Each
//! is checked through a real kernel mount, and again after a remount where
//! the answer is stored in the bucket.

mod support;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use support::mount::Mount;
use support::{blocking, new_bucket, server};

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("no NUL in a test path")
}

fn mknod(path: &Path, mode: u32, dev: libc::dev_t) -> std::io::Result<()> {
    // SAFETY: a valid C string; mknod only reads it.
    match unsafe { libc::mknod(c_path(path).as_ptr(), mode, dev) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn chmod(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Set the access time alone (the mtime is left as it is).
fn set_atime(path: &Path, secs: i64) -> std::io::Result<()> {
    let times = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    ];
    // SAFETY: a valid C string and two timespecs, as utimensat wants.
    match unsafe { libc::utimensat(libc::AT_FDCWD, c_path(path).as_ptr(), times.as_ptr(), 0) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_keep_their_type_and_device_numbers_through_chmod_and_a_remount() {
    let c = new_bucket("pxspecial").await;
    let mut mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    let check = move |root: std::path::PathBuf| {
        let fifo = std::fs::symlink_metadata(root.join("ff")).unwrap();
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.mode() & 0o7777, 0o111);
        let dev = std::fs::symlink_metadata(root.join("cdev")).unwrap();
        assert!(dev.file_type().is_char_device());
        assert_eq!(dev.mode() & 0o7777, 0o6555, "set-id bits on a device node");
        assert_eq!(
            (libc::major(dev.rdev()), libc::minor(dev.rdev())),
            (1, 2),
            "device numbers"
        );
        let sock = std::fs::symlink_metadata(root.join("sock")).unwrap();
        assert!(sock.file_type().is_socket());
        assert_eq!(sock.mode() & 0o7777, 0o700);
    };
    blocking({
        let root = root.clone();
        move || {
            mknod(&root.join("ff"), libc::S_IFIFO | 0o644, 0).expect("mkfifo");
            chmod(&root.join("ff"), 0o111).expect("chmod of a FIFO");
            mknod(
                &root.join("cdev"),
                libc::S_IFCHR | 0o600,
                libc::makedev(1, 2),
            )
            .expect("mknod c 1 2");
            chmod(&root.join("cdev"), 0o6555).expect("chmod 06555 of a device node");
            let listener = std::os::unix::net::UnixListener::bind(root.join("sock"))
                .expect("a socket bound in the mount");
            drop(listener);
            chmod(&root.join("sock"), 0o700).expect("chmod of a socket");
            check(root);
        }
    })
    .await;
    assert!(mount.unmount().success());
    let again = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = again.path.clone();
    blocking(move || check(root)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_times_set_explicitly_are_kept_and_reads_do_not_change_them() {
    let c = new_bucket("pxatime").await;
    let mut mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    const ATIME: i64 = 978_307_200; // 2001-01-01
    const MTIME: i64 = 1_500_000_000;
    let mtime = blocking({
        let root = root.clone();
        move || {
            let f = root.join("f");
            std::fs::write(&f, b"data").unwrap();
            let status = std::process::Command::new("touch")
                .args(["-m", "-d", "@1500000000"])
                .arg(&f)
                .status()
                .unwrap();
            assert!(status.success());
            set_atime(&f, ATIME).expect("utimensat of the access time alone");
            let m = std::fs::metadata(&f).unwrap();
            assert_eq!(m.atime(), ATIME);
            assert_eq!(m.mtime(), MTIME, "the mtime is left alone");
            assert_eq!(std::fs::read(&f).unwrap(), b"data");
            m.mtime()
        }
    })
    .await;
    assert!(mount.unmount().success());
    let again = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = again.path.clone();
    blocking(move || {
        let m = std::fs::metadata(root.join("f")).unwrap();
        assert_eq!(m.atime(), ATIME, "kept in the bucket");
        assert_eq!(m.mtime(), mtime);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fstat_after_unlink_shows_no_link() {
    let c = new_bucket("pxnlink").await;
    support::put(&c, "read-me", b"0123456789").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    blocking(move || {
        use std::io::Write;
        let mut w = std::fs::File::create(root.join("written")).unwrap();
        w.write_all(b"abc").unwrap();
        let r = std::fs::File::open(root.join("read-me")).unwrap();
        assert_eq!(w.metadata().unwrap().nlink(), 1);
        std::fs::remove_file(root.join("written")).unwrap();
        std::fs::remove_file(root.join("read-me")).unwrap();
        // Past the attribute TTL, so the kernel asks.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let wm = w
            .metadata()
            .expect("fstat of an unlinked file open for writing");
        assert_eq!((wm.nlink(), wm.size()), (0, 3));
        let rm = r
            .metadata()
            .expect("fstat of an unlinked file open for reading");
        assert_eq!((rm.nlink(), rm.size()), (0, 10));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_past_the_key_limit_are_enametoolong_at_every_call() {
    let c = new_bucket("pxlong").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    blocking(move || {
        // Four directories of 200 bytes and one of 203: a 1,007-byte path.
        let mut deep = root.clone();
        let mut len = 0;
        for i in 0..5 {
            let name = format!("{i}{}", "d".repeat(if i == 4 { 202 } else { 199 }));
            len += name.len() + usize::from(i > 0);
            deep.push(name);
            std::fs::create_dir(&deep).expect("a directory within the limit");
        }
        assert_eq!(len, 1007);
        // A 1,024-byte path: a file fits (its key is 1,024 bytes), a
        // directory does not (its marker would be 1,025).
        let at_limit = deep.join("x".repeat(1024 - len - 1));
        let err = std::fs::create_dir(&at_limit).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG), "mkdir: {err}");
        std::fs::write(&at_limit, b"fits").expect("a file whose key is 1,024 bytes");
        assert_eq!(std::fs::read(&at_limit).unwrap(), b"fits");
        // One byte more: every call that names it.
        let over = deep.join("y".repeat(1024 - len));
        for (call, err) in [
            ("create", std::fs::write(&over, b"x").unwrap_err()),
            ("stat", std::fs::metadata(&over).unwrap_err()),
            ("chmod", chmod(&over, 0o600).unwrap_err()),
            ("mkdir", std::fs::create_dir(&over).unwrap_err()),
            (
                "mkdir of a parent",
                std::fs::create_dir_all(over.join("z")).unwrap_err(),
            ),
        ] {
            assert_eq!(
                err.raw_os_error(),
                Some(libc::ENAMETOOLONG),
                "{call}: {err}"
            );
        }
    })
    .await;
}

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn getfattr(path: &Path, name: &str) -> Result<String, String> {
    let out = std::process::Command::new("getfattr")
        .args(["--only-values", "-n", name])
        .arg(path)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `user.*` extended attributes are kept in s3fs's format and survive
/// `cp -a`, `rsync -aX` and a remount; what cannot be kept is refused, never
/// dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_extended_attributes_are_kept_and_refused_when_they_do_not_fit() {
    let c = new_bucket("pxxattr").await;
    let local = tempfile::tempdir().unwrap();
    let mut mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    let src = local.path().join("src");
    blocking({
        let (root, src) = (root.clone(), src.clone());
        move || {
            let f = root.join("f");
            std::fs::write(&f, b"data").unwrap();
            let fs = f.to_str().unwrap();
            run(
                "setfattr",
                &["-n", "user.origin", "-v", "https://example.com/f", fs],
            );
            run("setfattr", &["-n", "user.sum", "-v", "0x00ff10", fs]);
            assert_eq!(
                getfattr(&f, "user.origin").unwrap(),
                "https://example.com/f"
            );
            let listed = run("getfattr", &["-d", "-m", "-", fs]);
            let listed = String::from_utf8_lossy(&listed.stdout);
            assert!(
                listed.contains("user.origin") && listed.contains("user.sum"),
                "{listed}"
            );
            // Removal, and the errnos of what is absent or refused.
            run("setfattr", &["-x", "user.sum", fs]);
            assert!(getfattr(&f, "user.sum")
                .unwrap_err()
                .contains("No such attribute"));
            let trusted = std::process::Command::new("setfattr")
                .args(["-n", "trusted.x", "-v", "1", fs])
                .output()
                .unwrap();
            assert!(!trusted.status.success());
            assert!(
                String::from_utf8_lossy(&trusted.stderr).contains("Operation not supported"),
                "{}",
                String::from_utf8_lossy(&trusted.stderr)
            );
            // More than the object's 2 KiB of metadata: ENOSPC, and what
            // was there stays.
            let big = "x".repeat(2100);
            let refused = std::process::Command::new("setfattr")
                .args(["-n", "user.big", "-v", &big, fs])
                .output()
                .unwrap();
            assert!(!refused.status.success());
            assert!(
                String::from_utf8_lossy(&refused.stderr).contains("No space left"),
                "{}",
                String::from_utf8_lossy(&refused.stderr)
            );
            assert_eq!(
                getfattr(&f, "user.origin").unwrap(),
                "https://example.com/f"
            );
            // On a directory, and on a file written and not yet closed.
            let d = root.join("d");
            std::fs::create_dir(&d).unwrap();
            run(
                "setfattr",
                &["-n", "user.tag", "-v", "dir", d.to_str().unwrap()],
            );
            // From a local tree with attributes: cp -a and rsync -aX in.
            std::fs::create_dir(&src).unwrap();
            std::fs::write(src.join("a"), b"a").unwrap();
            run(
                "setfattr",
                &[
                    "-n",
                    "user.color",
                    "-v",
                    "red",
                    src.join("a").to_str().unwrap(),
                ],
            );
            run(
                "cp",
                &[
                    "-a",
                    src.to_str().unwrap(),
                    root.join("cp").to_str().unwrap(),
                ],
            );
            let rsync_dst = format!("{}/", root.join("rs").display());
            run(
                "rsync",
                &["-aX", &format!("{}/", src.display()), &rsync_dst],
            );
        }
    })
    .await;
    // s3fs's header, as s3fs writes it.
    let head = c.head_object("f", None).await.unwrap();
    let header = head.user_metadata.get("xattr").expect("x-amz-meta-xattr");
    assert!(header.starts_with("%7B%22user.origin%22"), "{header}");
    assert!(mount.unmount().success());
    let again = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = again.path.clone();
    blocking(move || {
        assert_eq!(
            getfattr(&root.join("f"), "user.origin").unwrap(),
            "https://example.com/f"
        );
        assert!(getfattr(&root.join("f"), "user.sum").is_err());
        assert_eq!(getfattr(&root.join("d"), "user.tag").unwrap(), "dir");
        assert_eq!(getfattr(&root.join("cp/a"), "user.color").unwrap(), "red");
        assert_eq!(getfattr(&root.join("rs/a"), "user.color").unwrap(), "red");
        // And back out: cp -a from the mount keeps them.
        let out = local.path().join("out");
        run(
            "cp",
            &[
                "-a",
                root.join("cp").to_str().unwrap(),
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(getfattr(&out.join("a"), "user.color").unwrap(), "red");
    })
    .await;
}
