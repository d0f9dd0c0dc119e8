//! Log set-up: stderr in the foreground, a file (`--log-file`) or syslog
//! when daemonized.
//!
//! Only bucketfs's own events are ever above `warn`: HTTP and TLS crates at
//! debug level print request headers, and those carry signatures and SSE-C
//! keys.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

/// Where logs go.
pub enum LogTarget<'a> {
    Stderr,
    File(&'a Path),
    Syslog,
}

fn filter(debug: bool, default_level: &str) -> tracing_subscriber::EnvFilter {
    let level = std::env::var("BUCKETFS_LOG")
        .ok()
        .filter(|l| ["error", "warn", "info", "debug", "trace"].contains(&l.as_str()))
        .unwrap_or_else(|| if debug { "debug" } else { default_level }.to_owned());
    // fuser warns when it finds the mount already gone at exit, which is
    // the normal end after `umount`: keep it to errors.
    tracing_subscriber::EnvFilter::new(format!("warn,fuser=error,bucketfs={level}"))
}

/// Set up logging: `debug` (from `--debug`) raises bucketfs's level to
/// debug; otherwise `default_level` applies unless `BUCKETFS_LOG` says.
pub fn init(debug: bool, default_level: &str, target: LogTarget<'_>) -> std::io::Result<()> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(debug, default_level))
        .with_target(false);
    let result = match target {
        LogTarget::Stderr => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .try_init(),
        LogTarget::File(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            builder
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .try_init()
        }
        LogTarget::Syslog => {
            // SAFETY: the identifier is a static NUL-terminated string that
            // outlives every later syslog call.
            unsafe { libc::openlog(c"bucketfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
            builder
                .with_ansi(false)
                .without_time()
                .with_level(false)
                .with_writer(Syslog)
                .try_init()
        }
    };
    // A second init (tests, or `ls` after a failed mount) keeps the first.
    let _ = result;
    Ok(())
}

/// A `MakeWriter` that sends each event to syslog at its level's priority.
struct Syslog;

struct SyslogLine {
    priority: libc::c_int,
    buf: Vec<u8>,
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> SyslogLine {
        SyslogLine {
            priority: libc::LOG_INFO,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SyslogLine {
        let priority = match *meta.level() {
            Level::ERROR => libc::LOG_ERR,
            Level::WARN => libc::LOG_WARNING,
            Level::INFO => libc::LOG_INFO,
            _ => libc::LOG_DEBUG,
        };
        SyslogLine {
            priority,
            buf: Vec::new(),
        }
    }
}

impl Write for SyslogLine {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        let text: Vec<u8> = self
            .buf
            .iter()
            .copied()
            .filter(|b| *b != 0 && *b != b'\n')
            .collect();
        if let Ok(line) = std::ffi::CString::new(text) {
            // SAFETY: "%s" with one valid NUL-terminated string argument.
            unsafe { libc::syslog(self.priority, c"%s".as_ptr(), line.as_ptr()) };
        }
    }
}
