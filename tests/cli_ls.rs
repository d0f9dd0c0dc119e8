//! `bucketfs ls` as a user runs it: the binary, its options (as flags and as
//! `-o`), its credential sources, and its errors.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use support::{new_bucket, put, server};

fn bucketfs(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bucketfs"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run bucketfs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

async fn bucket_with_files(name: &str) -> String {
    let c = new_bucket(name).await;
    for key in ["top.txt", "dir/inner.txt", "dir/deeper/x.bin"] {
        put(&c, key, b"12345").await;
    }
    c.bucket().to_owned()
}

#[tokio::test]
async fn lists_with_env_credentials_and_flags() {
    let s = server();
    let bucket = bucket_with_files("clienv").await;
    let env = [
        ("AWS_ACCESS_KEY_ID", s.access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", s.secret_access_key.as_str()),
    ];
    let out = bucketfs(&["ls", &bucket, "--endpoint", &s.endpoint], &env);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("PRE dir/"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.ends_with(" 5 top.txt")),
        "{stdout}"
    );
    assert!(!stdout.contains("inner.txt"), "one level only: {stdout}");

    let source = format!("{bucket}:/dir");
    let opts = format!("endpoint={},max_attempts=3,read_timeout=5s", s.endpoint);
    let out = bucketfs(&["ls", &source, "-r", "-o", &opts], &env);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let keys: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(keys, ["dir/deeper/x.bin", "dir/inner.txt"]);
}

#[tokio::test]
async fn lists_with_a_passwd_file_and_refuses_an_open_one() {
    let s = server();
    let bucket = bucket_with_files("clipasswd").await;
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd-bucketfs");
    std::fs::write(
        &passwd,
        format!(
            "otherbucket:WRONG:wrong\n{bucket}:{}:{}\n",
            s.access_key_id, s.secret_access_key
        ),
    )
    .unwrap();
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o600)).unwrap();
    let p = passwd.to_str().unwrap();
    let out = bucketfs(
        &["ls", &bucket, "--endpoint", &s.endpoint, "--passwd-file", p],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).0.contains("top.txt"));

    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = bucketfs(
        &["ls", &bucket, "--endpoint", &s.endpoint, "--passwd-file", p],
        &[],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("accessible by group or others"), "{stderr}");
    assert!(!stderr.contains(&s.secret_access_key));
}

#[tokio::test]
async fn aws_profile_files_are_used() {
    let s = server();
    let bucket = bucket_with_files("cliprofile").await;
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/credentials"),
        format!(
            "[default]\naws_access_key_id=WRONG\naws_secret_access_key=wrong\n[test]\naws_access_key_id={}\naws_secret_access_key={}\n",
            s.access_key_id, s.secret_access_key
        ),
    )
    .unwrap();
    let home_str = home.path().to_str().unwrap();
    let out = bucketfs(
        &[
            "ls",
            &bucket,
            "--endpoint",
            &s.endpoint,
            "--profile",
            "test",
        ],
        &[("HOME", home_str)],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let out = bucketfs(
        &["ls", &bucket, "--endpoint", &s.endpoint],
        &[("HOME", home_str), ("AWS_PROFILE", "test")],
    );
    assert!(out.status.success(), "{}", text(&out).1);
}

#[tokio::test]
async fn errors_are_one_clear_line_and_never_show_the_secret() {
    let s = server();
    let bucket = bucket_with_files("clierrors").await;
    let wrong = "WrongSecretThatMustNotLeak";
    let out = bucketfs(
        &["ls", &bucket, "--endpoint", &s.endpoint, "--debug"],
        &[
            ("AWS_ACCESS_KEY_ID", &s.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", wrong),
            ("AWS_SESSION_TOKEN", "TokenThatMustNotLeak"),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("secret key does not match") || stderr.contains("token"),
        "{stderr}"
    );
    for secret in [wrong, "TokenThatMustNotLeak"] {
        assert!(
            !stderr.contains(secret) && !stdout.contains(secret),
            "{stderr}"
        );
    }

    let env = [
        ("AWS_ACCESS_KEY_ID", s.access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", s.secret_access_key.as_str()),
    ];
    let out = bucketfs(
        &[
            "ls",
            "no-such-bucket-anywhere",
            "--endpoint",
            &s.endpoint,
            "-d",
        ],
        &env,
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("bucket does not exist"), "{stderr}");
    assert!(!stderr.contains(&s.secret_access_key), "{stderr}");

    let out = bucketfs(
        &[
            "ls",
            &bucket,
            "--endpoint",
            "http://127.0.0.1:9",
            "--max-attempts",
            "2",
        ],
        &env,
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("cannot reach"), "{stderr}");

    let out = bucketfs(&["ls", &bucket], &[]);
    assert!(
        text(&out).1.contains("no credentials found"),
        "{}",
        text(&out).1
    );

    let out = bucketfs(&["ls", &bucket, "-o", "no_such_option=1"], &env);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out)
        .1
        .contains("unknown mount option \"no_such_option\""));

    let out = bucketfs(&["ls", &bucket, "--read-timeout", "soon"], &env);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("read-timeout"), "{}", text(&out).1);
}
