//! Promises about failure and secrecy: a full staging disk is ENOSPC with
//! nothing corrupted and reads still working; secrets never reach output;
//! other users are kept out of files that are not theirs.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use bucketfs::s3::GetRequest;
use support::mount::{bucketfs_bin, is_mounted, Mount};
use support::{blocking, names, new_bucket, put, server};

/// A small tmpfs of our own, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs (the tests run as root)");
        Tmpfs { path, _dir: dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_staging_disk_is_enospc_and_reads_keep_working() {
    let c = new_bucket("diskfull").await;
    put(&c, "keep.txt", b"safe").await;
    let disk = Tmpfs::new("2m");
    let cache = disk.path.join("cache");
    let mount = Mount::start(
        c.bucket(),
        &server().endpoint,
        &["--cache-dir", cache.to_str().unwrap()],
    );
    let root = mount.path.clone();
    let err = blocking({
        let root = root.clone();
        move || {
            let mut f = std::fs::File::create(root.join("big.bin")).unwrap();
            let chunk = vec![1u8; 256 * 1024];
            let mut failure = None;
            for _ in 0..40 {
                if let Err(e) = f.write_all(&chunk) {
                    failure = Some(e);
                    break;
                }
            }
            failure.expect("a 10 MiB write into a 2 MiB staging disk must fail")
        }
    })
    .await;
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    blocking(move || {
        assert_eq!(
            std::fs::read_to_string(root.join("keep.txt")).unwrap(),
            "safe"
        );
    })
    .await;
    let (_, body) = c
        .get_object_bytes("keep.txt", GetRequest::default())
        .await
        .unwrap();
    assert_eq!(&body[..], b"safe", "nothing corrupted");
    drop(mount);
}

fn all_output(dir: &Path, extra: &[&std::process::Output]) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        text.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default());
    }
    for out in extra {
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        text.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_or_errors() {
    let s = server();
    let c = new_bucket("secrets").await;
    let logs = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("sse-c.key");
    // 32 printable bytes, so a leak would be greppable as is.
    let sse_key = "SseCustomerKeyThatMustNotLeak!!!";
    std::fs::write(&key_file, sse_key).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let sse_b64 = base64_of(sse_key.as_bytes());

    // A working, debug-logging mount that writes and reads with SSE-C.
    let log = logs.path().join("debug.log");
    let mount = Mount::start(
        c.bucket(),
        &s.endpoint,
        &["-d", "--sse-c-key-file", key_file.to_str().unwrap()],
    );
    let root = mount.path.clone();
    blocking(move || {
        std::fs::write(root.join("f.txt"), b"payload").unwrap();
        assert_eq!(std::fs::read(root.join("f.txt")).unwrap(), b"payload");
    })
    .await;
    let debug_log = mount.log_text();
    assert!(
        debug_log.contains("PutObject"),
        "the debug log logs requests"
    );
    drop(mount);

    // A failing mount with a wrong secret and a session token.
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let token = "SessionTokenThatMustNotLeak";
    let wrong = "WrongSecretThatMustNotLeak";
    let failed = Command::new(bucketfs_bin())
        .arg(c.bucket())
        .arg(&mnt)
        .args([
            "-f",
            "-d",
            "--endpoint",
            &s.endpoint,
            "--log-file",
            log.to_str().unwrap(),
        ])
        .args(["--sse-c-key-file", key_file.to_str().unwrap()])
        .env("AWS_ACCESS_KEY_ID", &s.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", wrong)
        .env("AWS_SESSION_TOKEN", token)
        .output()
        .unwrap();
    assert!(!failed.status.success());
    assert!(!is_mounted(&mnt));

    let mut text = all_output(logs.path(), &[&failed]);
    text.push_str(&debug_log);
    for (what, secret) in [
        ("secret key", s.secret_access_key.as_str()),
        ("wrong secret", wrong),
        ("session token", token),
        ("SSE-C key", sse_key),
        ("SSE-C key in base64", sse_b64.as_str()),
    ] {
        assert!(!text.contains(secret), "the {what} reached the output");
    }
    assert!(
        text.contains("session token is not valid"),
        "the failure is explained: {text}"
    );
}

fn base64_of(bytes: &[u8]) -> String {
    const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_other_keeps_other_users_out_of_private_files() {
    let c = new_bucket("allowother").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &["-o", "allow_other"]);
    let root = mount.path.clone();
    blocking(move || {
        std::fs::write(root.join("private.txt"), b"root only").unwrap();
        std::fs::set_permissions(
            root.join("private.txt"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(root.join("public.txt"), b"anyone").unwrap();
        // The mount's own temporary directory (0700 when made) must be
        // reachable by the other user; nothing above it is touched.
        let ours = root
            .parent()
            .expect("the mount point is inside its temporary directory");
        std::fs::set_permissions(ours, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let as_nobody = |file: &str| {
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
                .arg(root.join(file))
                .output()
                .unwrap()
        };
        let denied = as_nobody("private.txt");
        assert!(!denied.status.success());
        assert!(
            String::from_utf8_lossy(&denied.stderr).contains("Permission denied"),
            "{denied:?}"
        );
        let allowed = as_nobody("public.txt");
        assert!(allowed.status.success(), "{allowed:?}");
        assert_eq!(allowed.stdout, b"anyone");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_cannot_be_keys_are_refused_clearly() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let c = new_bucket("names").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    blocking(move || {
        // Not UTF-8: S3 keys are, and the name is never mangled into another.
        let latin1 = root.join(OsStr::from_bytes(b"caf\xe9.txt"));
        let err = std::fs::write(&latin1, b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EILSEQ), "{err}");
        // A segment over 255 bytes.
        let err = std::fs::write(root.join("n".repeat(256)), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG), "{err}");
        // A path whose key would pass S3's 1,024 bytes.
        let mut deep = root.clone();
        for i in 0..5 {
            deep.push(format!("{i}{}", "d".repeat(200)));
            std::fs::create_dir(&deep).unwrap();
        }
        let err = std::fs::write(deep.join("f".repeat(100)), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG), "{err}");
        assert!(
            names(&root).iter().all(|n| n.starts_with('0')),
            "nothing else was created"
        );
    })
    .await;
}
