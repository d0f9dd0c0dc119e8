//! `bucketfs cleanup`: abort unfinished multipart uploads under a bucket
//! (or prefix) that are older than a bound — the ones no journal accounts
//! for, such as those of a machine that is gone. Unfinished uploads hold
//! storage (and cost money) until aborted.

use std::time::{Duration, SystemTime};

use clap::Args;

use super::s3_options::S3Options;
use super::source::Source;
use super::units::parse_duration;

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// BUCKET or BUCKET:/PREFIX whose unfinished uploads to abort.
    pub source: Source,

    /// Only uploads started longer ago than this (uploads in progress
    /// elsewhere are younger).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub older_than: Duration,

    /// List what would be aborted and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub s3: S3Options,
}

pub fn main(args: CleanupArgs, debug: bool) -> i32 {
    super::run_command(debug, run(args))
}

async fn run(args: CleanupArgs) -> anyhow::Result<i32> {
    let client = args.s3.client(&args.source.bucket).await?;
    let uploads = client
        .list_multipart_uploads(&args.source.prefix)
        .await
        .map_err(|e| anyhow::anyhow!(e.user_message()))?;
    let cutoff = SystemTime::now() - args.older_than;
    let (old, young): (Vec<_>, Vec<_>) = uploads.into_iter().partition(|u| u.initiated < cutoff);
    let mut failed = 0;
    for upload in &old {
        let started = humantime::format_rfc3339_seconds(upload.initiated);
        if args.dry_run {
            println!("would abort the upload of {} started {started}", upload.key);
            continue;
        }
        match client
            .abort_multipart_upload(&upload.key, &upload.upload_id)
            .await
        {
            Ok(()) => println!("aborted the upload of {} started {started}", upload.key),
            Err(e) => {
                failed += 1;
                eprintln!(
                    "bucketfs: cannot abort the upload of {}: {}",
                    upload.key,
                    e.user_message()
                );
            }
        }
    }
    println!(
        "{} unfinished uploads older than {}{}; {} younger left alone; {failed} failed",
        old.len(),
        humantime::format_duration(args.older_than),
        if args.dry_run {
            " (dry run)"
        } else {
            " aborted"
        },
        young.len()
    );
    Ok(if failed == 0 { 0 } else { 1 })
}
