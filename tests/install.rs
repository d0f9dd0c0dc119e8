//! bucketfs installed and used like a system tool: the Debian package (man
//! pages, completions, units, the mount helper), mounts from an fstab file
//! of both types through mount(8) with an empty environment, and a user's
//! own mount that no one else can enter.
//!
//! These tests change the machine: they need root, install and purge the
//! package (never over an installed one), and run commands as the system
//! users `nobody` and `daemon`.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use support::mount::{bucketfs_bin, is_mounted};
use support::{blocking, new_bucket, process_gone, put, repo_root, server, wait_until};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the install tests need root (dpkg, mount(8), other users)"
    );
}

/// Unmounts a mount point on drop if it is still mounted, whatever the
/// test did (lazily, if busy), so no test leaves a mount behind.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let ok = Command::new("umount")
                .arg(&self.0)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.0).status();
            }
        }
    }
}

/// The installed package, purged on drop.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "bucketfs"]).output();
    }
}

fn package_installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "bucketfs"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// The passwd file of the test server's key, mode 0600.
fn passwd_file(dir: &Path) -> PathBuf {
    let s = server();
    let path = dir.join("passwd");
    std::fs::write(
        &path,
        format!("{}:{}\n", s.access_key_id, s.secret_access_key),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The file system type the kernel's mount table shows at `path`.
fn mount_type(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let wanted = path.to_string_lossy();
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&wanted.as_ref())).then(|| format!("{} {}", f[2], f[3]))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_installs_mounts_from_fstab_and_purges() {
    assert_root();
    if package_installed() {
        eprintln!("SKIP: a bucketfs package is installed here; this test would replace it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();

    // Build the package from the binary under test.
    let build = Command::new(repo_root().join("packaging/deb/build"))
        .args(["--binary", bucketfs_bin(), "--compress", "none", "--out"])
        .arg(dir.path())
        .output()
        .expect("run packaging/deb/build");
    assert!(build.status.success(), "{}", text(&build));
    let deb = String::from_utf8_lossy(&build.stdout).trim().to_owned();
    assert!(deb.ends_with(".deb"), "{deb}");

    let install = run("dpkg", &["-i", &deb]);
    let _installed = Installed;
    assert!(install.status.success(), "dpkg -i: {}", text(&install));

    // What the package put where.
    let version = run("/usr/bin/bucketfs", &["--version"]);
    assert!(
        text(&version).starts_with("bucketfs "),
        "{}",
        text(&version)
    );
    assert_eq!(
        std::fs::canonicalize("/sbin/mount.bucketfs").unwrap(),
        std::fs::canonicalize("/usr/bin/bucketfs").unwrap()
    );
    for unit in [
        "/lib/systemd/system/bucketfs@.service",
        "/usr/share/doc/bucketfs/examples/mnt-photos.mount",
        "/usr/share/doc/bucketfs/examples/mnt-photos.automount",
    ] {
        assert!(Path::new(unit).is_file(), "{unit} missing");
    }
    let example = std::fs::metadata("/usr/share/doc/bucketfs/examples/passwd-bucketfs").unwrap();
    assert_eq!(example.permissions().mode() & 0o777, 0o600);
    assert_eq!(example.uid(), 0);
    assert!(Path::new("/usr/share/man/man1/bucketfs.1.gz").is_file());
    if Path::new("/usr/bin/man").exists() {
        let page = Command::new("man")
            .args(["-P", "cat", "bucketfs"])
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        assert!(
            text(&page).contains("passwd-file") && text(&page).contains("--foreground"),
            "man bucketfs: {}",
            text(&page)
        );
        let helper = run("man", &["-w", "mount.bucketfs"]);
        assert!(helper.status.success(), "{}", text(&helper));
    }
    let completion = run(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/bucketfs && complete -p bucketfs",
        ],
    );
    assert!(
        completion.status.success() && text(&completion).contains("bucketfs"),
        "{}",
        text(&completion)
    );
    assert!(Path::new("/usr/share/zsh/vendor-completions/_bucketfs").is_file());
    assert!(Path::new("/usr/share/fish/vendor_completions.d/bucketfs.fish").is_file());

    // Mounts from an fstab file, through mount(8) with an empty
    // environment: type fuse.bucketfs (mount.fuse3 calls bucketfs) and
    // type bucketfs (mount(8) calls /sbin/mount.bucketfs).
    let c = new_bucket("fstab").await;
    put(&c, "hello.txt", b"from the bucket").await;
    let passwd = passwd_file(dir.path());
    let endpoint = &server().endpoint;
    let fstab = dir.path().join("fstab");
    let mut lines = String::new();
    let mut points = Vec::new();
    for (name, fstype, extra) in [
        (
            "via-fuse",
            "fuse.bucketfs",
            "_netdev,nofail,noauto,x-systemd.automount,comment=test,noexec",
        ),
        ("via-helper", "bucketfs", "defaults,rw,_netdev,user"),
        ("bad", "bucketfs", "no_such_option=1"),
    ] {
        let point = dir.path().join(name);
        std::fs::create_dir(&point).unwrap();
        lines.push_str(&format!(
            "{} {} {fstype} {extra},passwd_file={},endpoint={endpoint},log_file={} 0 0\n",
            c.bucket(),
            point.display(),
            passwd.display(),
            dir.path().join(format!("{name}.log")).display()
        ));
        points.push(point);
    }
    std::fs::write(&fstab, lines).unwrap();
    let fstab = fstab.to_str().unwrap().to_owned();

    for (point, expected_flag) in points[..2].iter().zip(["noexec", "nosuid"]) {
        let _guard = Unmount(point.clone());
        let p = point.to_str().unwrap().to_owned();
        let out = blocking({
            let (fstab, p) = (fstab.clone(), p.clone());
            move || {
                Command::new("/usr/bin/mount")
                    .args(["-T", &fstab, &p])
                    .env_clear()
                    .output()
                    .unwrap()
            }
        })
        .await;
        assert!(out.status.success(), "mount -T {p}: {}", text(&out));
        let shown = mount_type(point).expect("mounted");
        assert!(shown.starts_with("fuse.bucketfs "), "{shown}");
        // `noexec` asked for; `user` implies nosuid for the second.
        assert!(shown.contains(expected_flag), "{shown}");
        let name = point.file_name().unwrap().to_str().unwrap().to_owned();
        let (read, written) = blocking({
            let point = point.clone();
            let name = name.clone();
            move || {
                let read = std::fs::read_to_string(point.join("hello.txt")).unwrap();
                std::fs::write(point.join(format!("{name}.txt")), name.as_bytes()).unwrap();
                let written = std::fs::read_to_string(point.join(format!("{name}.txt"))).unwrap();
                (read, written)
            }
        })
        .await;
        assert_eq!(read, "from the bucket");
        assert_eq!(written, name);
        let out = run("/usr/bin/umount", &[&p]);
        assert!(out.status.success(), "umount {p}: {}", text(&out));
        assert!(!is_mounted(point));
        let (_, body) = c
            .get_object_bytes(&format!("{name}.txt"), Default::default())
            .await
            .expect("written through the mount");
        assert_eq!(&body[..], name.as_bytes());
    }

    // An unknown option fails the mount, naming it.
    let bad = points[2].to_str().unwrap().to_owned();
    let _guard = Unmount(points[2].clone());
    let out = Command::new("/usr/bin/mount")
        .args(["-T", &fstab, &bad])
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("no_such_option"), "{}", text(&out));
    assert!(!is_mounted(&points[2]));

    let purge = run("dpkg", &["--purge", "bucketfs"]);
    assert!(purge.status.success(), "{}", text(&purge));
    assert!(!Path::new("/usr/bin/bucketfs").exists());
    assert!(!Path::new("/sbin/mount.bucketfs").exists());
}

/// Run a command as another (system) user and their group, with an empty
/// environment.
fn as_user(user: &str, program: &str, args: &[&str]) -> Output {
    let gid = text(&run("id", &["-g", user])).trim().to_owned();
    Command::new("setpriv")
        .arg(format!("--reuid={user}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(program)
        .args(args)
        .env_clear()
        .output()
        .expect("run setpriv")
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

fn uid_of(user: &str) -> u32 {
    let out = run("id", &["-u", user]);
    text(&out).trim().parse().expect("a uid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_mount_works_for_them_and_is_closed_to_others() {
    assert_root();
    let mode = std::fs::metadata("/dev/fuse").unwrap().permissions().mode();
    assert_eq!(
        mode & 0o666,
        0o666,
        "users need /dev/fuse mode 0666, as the fuse3 package's udev rule sets it \
         (scripts/bootstrap does it where udev does not run)"
    );
    let c = new_bucket("user").await;
    put(&c, "hello.txt", b"for nobody").await;

    // Everything the user needs, theirs: the mount point, the key, the
    // cache and log directory. The user has no HOME and no AWS_* here.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody = uid_of("nobody");
    let mnt = dir.path().join("mnt");
    let other_mnt = dir.path().join("other");
    let own = dir.path().join("own");
    for d in [&mnt, &other_mnt, &own] {
        std::fs::create_dir(d).unwrap();
        chown(d, nobody);
    }
    let passwd = passwd_file(&own);
    chown(&passwd, nobody);
    let _guard = Unmount(mnt.clone());
    let _other_guard = Unmount(other_mnt.clone());

    let base = |point: &Path| -> Vec<String> {
        vec![
            c.bucket().to_owned(),
            point.display().to_string(),
            "--passwd-file".into(),
            passwd.display().to_string(),
            "--endpoint".into(),
            server().endpoint.clone(),
            "--cache-dir".into(),
            own.join("cache").display().to_string(),
            "--log-file".into(),
            own.join("log").display().to_string(),
            "--pid-file".into(),
            own.join("pid").display().to_string(),
        ]
    };
    let args = base(&mnt);
    let out = blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        as_user("nobody", bucketfs_bin(), &args)
    })
    .await;
    assert!(out.status.success(), "mount as nobody: {}", text(&out));
    let shown = mount_type(&mnt).expect("mounted");
    assert!(shown.starts_with("fuse.bucketfs "), "{shown}");
    assert!(shown.contains(&format!("user_id={nobody}")), "{shown}");

    let hello = mnt.join("hello.txt");
    let hello = hello.to_str().unwrap();
    let read = as_user("nobody", "cat", &[hello]);
    assert_eq!(text(&read), "for nobody");
    let written = mnt.join("mine.txt");
    let write = as_user(
        "nobody",
        "sh",
        &["-c", &format!("echo mine > {}", written.display())],
    );
    assert!(write.status.success(), "{}", text(&write));
    let (_, body) = c
        .get_object_bytes("mine.txt", Default::default())
        .await
        .unwrap();
    assert_eq!(&body[..], b"mine\n");

    // Anyone else, root included, is turned away by the kernel.
    let other = as_user("daemon", "cat", &[hello]);
    assert!(!other.status.success());
    assert!(
        text(&other).contains("Permission denied"),
        "{}",
        text(&other)
    );
    let root = std::fs::read_dir(&mnt).map(|_| ()).unwrap_err();
    assert_eq!(root.kind(), std::io::ErrorKind::PermissionDenied);

    // allow_other is the admin's to grant (user_allow_other in
    // /etc/fuse.conf): without it, a user's allow_other mount is refused.
    let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    if !conf.lines().any(|l| l.trim() == "user_allow_other") {
        let mut args = base(&other_mnt);
        args.push("--allow-other".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = as_user("nobody", bucketfs_bin(), &args);
        assert!(!out.status.success());
        assert!(text(&out).contains("user_allow_other"), "{}", text(&out));
        assert!(!is_mounted(&other_mnt));
    }

    // The user unmounts it, and the daemon exits.
    let pid: u32 = std::fs::read_to_string(own.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let out = as_user("nobody", "fusermount3", &["-u", mnt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!is_mounted(&mnt));
    assert!(
        wait_until(Duration::from_secs(20), || process_gone(pid)),
        "the daemon did not exit after fusermount3 -u"
    );
}

/// What a `Type=notify` unit relies on: with `NOTIFY_SOCKET` set, bucketfs
/// says READY=1 (with its pid) once the mount is live, not before, and
/// STOPPING=1 when SIGTERM starts the unmount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_once_mounted_and_stopping_on_sigterm() {
    use std::os::unix::net::UnixDatagram;
    let c = new_bucket("notify").await;
    put(&c, "hello.txt", b"hi").await;
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let passwd = passwd_file(dir.path());
    let _guard = Unmount(mnt.clone());
    let mut child = Command::new(bucketfs_bin())
        .arg(c.bucket())
        .arg(&mnt)
        .args(["--foreground", "--endpoint", &server().endpoint])
        .arg("--passwd-file")
        .arg(&passwd)
        .env_clear()
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification within 30 s");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        ready
            .lines()
            .any(|l| l == format!("MAINPID={}", child.id())),
        "{ready}"
    );
    // Ready means mounted: the file is there the moment systemd hears it.
    assert!(is_mounted(&mnt));
    assert_eq!(std::fs::read(mnt.join("hello.txt")).unwrap(), b"hi");

    // SAFETY: kill with a valid pid of our own child and a valid signal.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let n = socket.recv(&mut buf).expect("STOPPING within 30 s");
    let stopping = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    let status = blocking(move || child.wait().unwrap()).await;
    assert!(status.success(), "{status}");
    assert!(!is_mounted(&mnt));
}
