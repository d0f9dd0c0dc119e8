//! Directories of our own on local disk: the staging directory (`write`)
//! and the disk cache (`read`) hold file data, so they are made 0700 and
//! refused if another user owns them or others may write to them (a
//! planted symlink or file there could read or replace our data); and
//! what a process left in them is recovered once that process is gone.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Create `dir` (and its parents) 0700 if needed, and refuse one that
/// another user owns or that group or others may write to. `what` names
/// it in errors ("cache directory").
pub fn ensure_private_dir(dir: &Path, what: &str) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(io::Error::other(format!(
            "{what} {} belongs to uid {}, not to us",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "{what} {} is writable by group or others",
            dir.display()
        )));
    }
    Ok(())
}

/// Whether process `pid` is still running. A killed daemon whose parent
/// has not reaped it yet (an orphan under an init that reaps late) stays in
/// /proc as a zombie: it runs nothing and writes nothing, so it is gone.
pub fn process_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        // pid (comm) state ...: the name may hold spaces and parentheses.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z')),
    }
}
