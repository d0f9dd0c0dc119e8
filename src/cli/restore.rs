//! `bucketfs restore`: bring back a file, or a whole subtree, as it was at
//! a version or an instant, with server-side copies (no data passes
//! through this machine), deleted files included.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::{anyhow, bail};
use clap::Args;
use futures::StreamExt;

use super::s3_options::S3Options;
use crate::fs::{parse_instant, version_at};
use crate::s3::endpoint::validate_bucket;
use crate::s3::{CopySource, MetadataDirective, ObjectVersion, S3Client, VersionKind};

/// Copies in flight at once.
const RESTORE_CONCURRENCY: usize = 8;

fn parse_instant_arg(s: &str) -> Result<SystemTime, String> {
    parse_instant(s).ok_or_else(|| format!("invalid instant {s:?}: use RFC 3339 in UTC (2026-11-23T10:00:00Z) or a date (2026-11-23)"))
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// What to restore: BUCKET:/PATH (a file, or everything below a
    /// directory), or a path inside a mounted bucketfs (given the same
    /// connection options as the mount).
    pub target: String,

    /// Restore this version of a single file.
    #[arg(long, conflicts_with = "at", required_unless_present = "at")]
    pub version_id: Option<String>,

    /// Restore every file to the version it had at this instant (RFC 3339
    /// UTC, or a date for its midnight UTC). Files deleted since come back;
    /// files created since are left alone.
    #[arg(long, value_parser = parse_instant_arg)]
    pub at: Option<SystemTime>,

    /// Show what would be restored and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub s3: S3Options,
}

/// A bucket and the key (file) or key prefix (directory) to restore.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    bucket: String,
    key: String,
}

/// `BUCKET:/path`, `BUCKET:path` or `BUCKET`.
fn parse_bucket_target(text: &str) -> Option<Target> {
    let (bucket, path) = text.split_once(':').unwrap_or((text, ""));
    validate_bucket(bucket).ok()?;
    Some(Target {
        bucket: bucket.to_owned(),
        key: path.trim_matches('/').to_owned(),
    })
}

/// Map a path inside a bucketfs mount to its bucket and key, from the
/// kernel's mount table (the mount's source is `BUCKET[:/PREFIX]`).
fn mounted_target(path: &Path) -> anyhow::Result<Target> {
    let absolute = std::path::absolute(path)?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut best: Option<(PathBuf, String)> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut right = right.split(' ');
        // "fuse.bucketfs", or plain "fuse" when mounted without a helper
        // that records the subtype; the source must then read as a bucket.
        if !matches!(right.next(), Some("fuse.bucketfs" | "fuse")) {
            continue;
        }
        let Some(source) = right.next() else { continue };
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        let point = PathBuf::from(point.replace("\\040", " "));
        if absolute.starts_with(&point)
            && best
                .as_ref()
                .is_none_or(|(b, _)| point.as_os_str().len() > b.as_os_str().len())
        {
            best = Some((point, source.to_owned()));
        }
    }
    let (point, source) = best.ok_or_else(|| {
        anyhow!(
            "{} is not inside a bucketfs mount; give BUCKET:/PATH instead",
            path.display()
        )
    })?;
    let mount = parse_bucket_target(&source)
        .ok_or_else(|| anyhow!("cannot read the mount's source {source:?}"))?;
    let relative = absolute
        .strip_prefix(&point)?
        .to_string_lossy()
        .into_owned();
    if relative.split('/').next() == Some(crate::fs::VERSIONS_DIR_NAME) {
        bail!("give the path of the file to restore, not a path inside .versions");
    }
    let key = [mount.key.as_str(), relative.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join("/");
    Ok(Target {
        bucket: mount.bucket,
        key,
    })
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// One copy to make: `version` becomes the current content of its key.
struct Plan {
    key: String,
    version_id: String,
    size: u64,
}

/// Run `bucketfs restore`; returns the exit code.
pub fn main(args: RestoreArgs, debug: bool) -> i32 {
    super::run_command(debug, run(args))
}

async fn run(args: RestoreArgs) -> anyhow::Result<i32> {
    let target = match parse_bucket_target(&args.target) {
        Some(t) if args.target.contains(':') => t,
        _ => mounted_target(Path::new(&args.target))?,
    };
    let client = args.s3.client(&target.bucket).await?;
    let plans = plan(&client, &target, &args).await?;
    let (mut unchanged, mut copies) = (0usize, Vec::new());
    for p in plans {
        match p {
            None => unchanged += 1,
            Some(p) => copies.push(p),
        }
    }
    let total_bytes: u64 = copies.iter().map(|p| p.size).sum();
    if args.dry_run {
        for p in &copies {
            println!(
                "would restore {} to version {} ({})",
                p.key,
                p.version_id,
                human(p.size)
            );
        }
        println!(
            "{} files ({}) would be restored; {unchanged} already current",
            copies.len(),
            human(total_bytes)
        );
        return Ok(0);
    }
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let (mut done_files, mut done_bytes) = (0usize, 0u64);
    let mut failures = Vec::new();
    let total_files = copies.len();
    let mut results = futures::stream::iter(copies)
        .map(|p| {
            let client = client.clone();
            async move {
                let source = CopySource {
                    key: p.key.clone(),
                    version_id: Some(p.version_id.clone()),
                    if_match: None,
                };
                let result = client
                    .copy(&source, &p.key, p.size, &MetadataDirective::Copy)
                    .await;
                (p, result)
            }
        })
        .buffer_unordered(RESTORE_CONCURRENCY);
    while let Some((p, result)) = results.next().await {
        match result {
            Ok(_) => {
                done_files += 1;
                done_bytes += p.size;
            }
            Err(e) => failures.push(format!("{}: {}", p.key, e.user_message())),
        }
        if terminal {
            let elapsed = started.elapsed().as_secs_f64();
            let eta = if done_bytes > 0 && total_bytes > done_bytes {
                format!(
                    ", ETA {:.0}s",
                    elapsed * (total_bytes - done_bytes) as f64 / done_bytes as f64
                )
            } else {
                String::new()
            };
            eprint!(
                "\r\x1b[Krestoring: {}/{} files, {} of {}{eta}",
                done_files + failures.len(),
                total_files,
                human(done_bytes),
                human(total_bytes)
            );
            let _ = std::io::stderr().flush();
        }
    }
    if terminal {
        eprintln!();
    }
    println!(
        "restored {done_files} files ({}) in {:.1}s; {unchanged} already current; {} failed",
        human(done_bytes),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    for failure in &failures {
        eprintln!("bucketfs: restore failed: {failure}");
    }
    Ok(if failures.is_empty() { 0 } else { 1 })
}

/// What to copy: for each key, the version to bring back (`None` when it
/// is already the current one).
async fn plan(
    client: &S3Client,
    target: &Target,
    args: &RestoreArgs,
) -> anyhow::Result<Vec<Option<Plan>>> {
    let under = if target.key.is_empty() {
        String::new()
    } else {
        format!("{}/", target.key)
    };
    let mut by_key: std::collections::BTreeMap<String, Vec<ObjectVersion>> = Default::default();
    for v in client
        .list_all_versions(&target.key)
        .await
        .map_err(|e| anyhow!(e.user_message()))?
    {
        if v.key == target.key || v.key.starts_with(&under) {
            by_key.entry(v.key.clone()).or_default().push(v);
        }
    }
    for versions in by_key.values_mut() {
        versions.sort_by_key(|v| std::cmp::Reverse(v.last_modified));
    }
    let shown = format!("{}:/{}", target.bucket, target.key);
    if by_key.is_empty() {
        bail!("nothing has ever been stored at {shown}");
    }
    let as_plan = |v: &ObjectVersion| match &v.kind {
        VersionKind::Object { size, .. } if !v.is_latest => Some(Some(Plan {
            key: v.key.clone(),
            version_id: v.version_id.clone(),
            size: *size,
        })),
        VersionKind::Object { .. } => Some(None),
        VersionKind::DeleteMarker => None,
    };
    if let Some(id) = &args.version_id {
        let versions = by_key.get(&target.key).ok_or_else(|| {
            anyhow!(
                "{shown} is a directory: --version-id restores one file; use --at for a subtree"
            )
        })?;
        let v = versions
            .iter()
            .find(|v| &v.version_id == id)
            .ok_or_else(|| anyhow!("{shown} has no version {id:?}"))?;
        return as_plan(v)
            .map(|p| vec![p])
            .ok_or_else(|| anyhow!("version {id:?} of {shown} is a delete marker"));
    }
    let at = args
        .at
        .ok_or_else(|| anyhow!("give --version-id or --at"))?;
    let plans: Vec<Option<Plan>> = by_key
        .values()
        .filter_map(|versions| version_at(versions, at))
        .filter_map(as_plan)
        .collect();
    if plans.is_empty() {
        bail!(
            "nothing existed at {shown} at {}",
            humantime::format_rfc3339(at)
        );
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_targets() {
        assert_eq!(
            parse_bucket_target("photos:/2026/a.jpg"),
            Some(Target {
                bucket: "photos".into(),
                key: "2026/a.jpg".into()
            })
        );
        assert_eq!(
            parse_bucket_target("photos").map(|t| t.key),
            Some(String::new())
        );
        assert_eq!(
            parse_bucket_target("photos:dir/").map(|t| t.key),
            Some("dir".into())
        );
        assert!(parse_bucket_target("/not/a/bucket").is_none());
        assert_eq!(human(1536), "1.5 KiB");
    }
}
