//! A real kernel mount of bucketfs for a test, unmounted when dropped, even
//! when the test fails.
//!
//! bucketfs runs in the foreground as a child of the test (so its PID is
//! known and its stderr is captured in `target/test-logs`). Unmounting is by
//! `fusermount3 -u` of our own mount point; the child is then waited for,
//! and killed by its PID only if it does not exit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{repo_root, server};

pub struct Mount {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
    child: Option<Child>,
    pub log: PathBuf,
}

/// Whether `path` is a mount point now.
pub fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let wanted = path.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&wanted))
}

/// The bucketfs binary built for these tests.
pub fn bucketfs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_bucketfs")
}

/// Environment with the test server's credentials.
pub fn credential_env() -> Vec<(String, String)> {
    let s = server();
    vec![
        ("AWS_ACCESS_KEY_ID".into(), s.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY".into(), s.secret_access_key.clone()),
    ]
}

impl Mount {
    /// Mount `source` (`bucket` or `bucket:/prefix`) from `endpoint` with
    /// extra arguments, and wait until the kernel shows the mount.
    pub fn start(source: &str, endpoint: &str, extra: &[&str]) -> Mount {
        Self::try_start(source, endpoint, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start(source: &str, endpoint: &str, extra: &[&str]) -> Result<Mount, String> {
        Self::try_start_with_env(source, endpoint, extra, &credential_env())
    }

    /// Mount with `env` in place of the test server's keys: no `AWS_*` or
    /// `B2_*` variable of the test's own environment is passed on.
    pub fn try_start_with_env(
        source: &str,
        endpoint: &str,
        extra: &[&str],
        env: &[(String, String)],
    ) -> Result<Mount, String> {
        let dir = tempfile::tempdir().expect("mount dir");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).expect("create mount point");
        let log_dir = repo_root().join("target/test-logs");
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let log = log_dir.join(format!(
            "bucketfs-{}-{}.log",
            std::process::id(),
            dir.path().file_name().unwrap_or_default().to_string_lossy()
        ));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(bucketfs_bin());
        cmd.arg(source)
            .arg(&path)
            .args(["-f", "--endpoint", endpoint, "--max-attempts", "4"])
            .args(extra);
        for (name, _) in std::env::vars() {
            if name.starts_with("AWS_") || name.starts_with("B2_") {
                cmd.env_remove(name);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start bucketfs: {e}"))?;
        let started = Instant::now();
        loop {
            if is_mounted(&path) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "bucketfs exited ({status}) before mounting:\n{text}"
                ));
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                return Err("bucketfs did not mount within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Mount {
            path,
            _dir: dir,
            child: Some(child),
            log,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `fusermount3 -u`, then wait for bucketfs to exit; its exit status.
    pub fn unmount(&mut self) -> ExitStatus {
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.path)
            .output()
            .expect("run fusermount3");
        assert!(
            out.status.success(),
            "fusermount3 -u: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_exit()
    }

    /// Wait (bounded) for the bucketfs process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("bucketfs still running");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait for bucketfs") {
                return status;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("bucketfs did not exit within 20 s of unmounting");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.path) {
            let ok = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.path)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                // Busy or hung: detach it so nothing is left behind.
                let _ = Command::new("umount").arg("-l").arg(&self.path).status();
            }
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
