//! Mounting and unmounting as a user does it: the daemon returns once the
//! mount is live, refuses bad input with one clear line and no mount, and
//! leaves nothing behind when unmounted or signalled.

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::mount::{bucketfs_bin, credential_env, is_mounted, Mount};
use support::{blocking, new_bucket, process_gone, put, server, wait_until};

fn run(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(bucketfs_bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().cloned())
        .output()
        .expect("run bucketfs")
}

/// Unmounts a daemonized mount when dropped, so that a failing test
/// leaves no mount behind.
struct UnmountOnDrop(std::path::PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("fusermount3").arg("-u").arg(&self.0).status();
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_returns_once_mounted_and_exits_on_unmount() {
    let c = new_bucket("daemon").await;
    put(&c, "hello.txt", b"hi").await;
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let pid_file = dir.path().join("pid");
    let log_file = dir.path().join("log");
    let opts = format!(
        "endpoint={},pid_file={},log_file={}",
        server().endpoint,
        pid_file.display(),
        log_file.display()
    );
    let mnt_s = mnt.to_str().unwrap().to_owned();
    let out = run(&[c.bucket(), &mnt_s, "-o", &opts], &credential_env());
    let _guard = UnmountOnDrop(mnt.clone());
    assert!(out.status.success(), "{}", stderr(&out));
    // Live the moment the command returns.
    assert!(is_mounted(&mnt));
    assert_eq!(
        std::fs::read_to_string(mnt.join("hello.txt")).unwrap(),
        "hi"
    );
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!process_gone(pid));

    // A process another test forks at this moment holds a copy of every
    // descriptor this one has open until it executes its program, which
    // makes the mount briefly busy: try again, as an unmount script does.
    let unmounted = wait_until(Duration::from_secs(10), || {
        Command::new("fusermount3")
            .arg("-u")
            .arg(&mnt)
            .status()
            .unwrap()
            .success()
    });
    assert!(unmounted, "fusermount3 -u kept failing");
    assert!(
        wait_until(Duration::from_secs(10), || process_gone(pid)),
        "daemon {pid} still running"
    );
    assert!(!is_mounted(&mnt));
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        log.contains("mounted") && log.contains("unmounted"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_logging_to_syslog_lets_go_of_the_terminal() {
    // Without --log-file the daemon logs to syslog; it must still close the
    // stdout and stderr it inherited, or `bucketfs ... | cat` never ends.
    let c = new_bucket("daemonsyslog").await;
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let pid_file = dir.path().join("pid");
    let args = [
        c.bucket().to_owned(),
        mnt.to_str().unwrap().to_owned(),
        "--endpoint".to_owned(),
        server().endpoint.clone(),
        "--pid-file".to_owned(),
        pid_file.to_str().unwrap().to_owned(),
    ];
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let _ = tx.send(run(&args, &credential_env()));
    });
    let out = rx.recv_timeout(Duration::from_secs(30));
    let mounted = is_mounted(&mnt);
    if mounted {
        let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
    }
    let out = out.expect("the command's output ended once the mount was live");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(mounted);
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || process_gone(pid)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_unmount_cleanly() {
    let c = new_bucket("signals").await;
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut mount = Mount::start(c.bucket(), &server().endpoint, &[]);
        let pid = mount.pid().unwrap();
        // SAFETY: kill of our own child process by its PID.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
        let status = mount.wait_exit();
        assert!(status.success(), "exit after signal {signal}: {status}");
        assert!(!is_mounted(&mount.path), "no dead mount left behind");
        let log = mount.log_text();
        assert!(log.contains("signal received"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_one_clear_line_and_no_mount() {
    let s = server();
    let c = new_bucket("badinput").await;
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt_s = mnt.to_str().unwrap().to_owned();

    let wrong_secret = vec![
        ("AWS_ACCESS_KEY_ID".to_owned(), s.access_key_id.clone()),
        (
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            "wrong-secret-value".to_owned(),
        ),
    ];
    // (arguments, environment, what the error must say)
    type Case<'a> = (Vec<String>, Vec<(String, String)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![
                c.bucket().into(),
                mnt_s.clone(),
                "--endpoint".into(),
                s.endpoint.clone(),
            ],
            wrong_secret,
            "secret key does not match",
        ),
        (
            vec![
                "no-such-bucket-x".into(),
                mnt_s.clone(),
                "--endpoint".into(),
                s.endpoint.clone(),
            ],
            credential_env(),
            "bucket does not exist",
        ),
        (
            vec![
                c.bucket().into(),
                mnt_s.clone(),
                "--endpoint".into(),
                "http://127.0.0.1:9".into(),
                "--max-attempts".into(),
                "2".into(),
            ],
            credential_env(),
            "cannot reach",
        ),
        (
            vec![
                c.bucket().into(),
                "/nonexistent/mnt".into(),
                "--endpoint".into(),
                s.endpoint.clone(),
            ],
            credential_env(),
            "mountpoint /nonexistent/mnt",
        ),
        (
            vec![
                c.bucket().into(),
                dir.path().to_str().unwrap().into(),
                "--endpoint".into(),
                s.endpoint.clone(),
            ],
            credential_env(),
            "is not empty",
        ),
        (
            vec![
                c.bucket().into(),
                mnt_s.clone(),
                "-o".into(),
                "cache_size=lots".into(),
            ],
            credential_env(),
            "cache-size",
        ),
    ];
    for (args, env, expected) in cases {
        for foreground in [false, true] {
            let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
            if foreground {
                args.push("-f");
            }
            let out = run(&args, &env);
            let err = stderr(&out);
            assert!(!out.status.success(), "{args:?} succeeded");
            assert!(
                err.contains(expected),
                "{args:?}: expected {expected:?} in {err}"
            );
            assert!(!err.contains("wrong-secret-value"), "{err}");
            assert!(!is_mounted(&mnt), "{args:?} left a mount");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mount_refuses_writes() {
    let c = new_bucket("readonly").await;
    put(&c, "f.txt", b"data").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &["-o", "ro"]);
    let root = mount.path.clone();
    blocking(move || {
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(root.join("f.txt"))
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
        let err = std::fs::write(root.join("new.txt"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
        assert_eq!(std::fs::read_to_string(root.join("f.txt")).unwrap(), "data");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_readers_and_a_slow_listing_do_not_block_each_other() {
    // A reader busy with a big file must not hold up `ls` elsewhere.
    let c = new_bucket("concurrency").await;
    support::upload(&c, "big/file.bin", support::test_data(40 * 1024 * 1024, 3)).await;
    put(&c, "small/a.txt", b"a").await;
    let mount = Mount::start(c.bucket(), &server().endpoint, &[]);
    let root = mount.path.clone();
    blocking(move || {
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let p = root.join("big/file.bin");
                std::thread::spawn(move || std::fs::read(p).unwrap().len())
            })
            .collect();
        let started = Instant::now();
        let listed: Vec<_> = std::fs::read_dir(root.join("small")).unwrap().collect();
        assert_eq!(listed.len(), 1);
        let ls_time = started.elapsed();
        for r in readers {
            assert_eq!(r.join().unwrap(), 40 * 1024 * 1024);
        }
        assert!(
            ls_time < Duration::from_secs(5),
            "ls took {ls_time:?} while files were read"
        );
    })
    .await;
}
