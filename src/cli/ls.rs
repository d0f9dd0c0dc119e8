//! `bucketfs ls`: list a bucket through the same client the mount uses. A
//! quick way to check credentials, endpoint and bucket before mounting.

use std::io::Write;

use clap::Args;

use crate::s3::listing::MarkerGuard;
use crate::s3::{ListRequest, S3Client, VersionKind};

use super::s3_options::S3Options;
use super::source::Source;

#[derive(Debug, Args)]
pub struct LsArgs {
    /// BUCKET or BUCKET:/PREFIX to list.
    pub source: Source,

    /// List every key below the prefix, not just one level.
    #[arg(short, long)]
    pub recursive: bool,

    /// Show every version and delete marker (B2 buckets keep them all).
    #[arg(long)]
    pub versions: bool,

    #[command(flatten)]
    pub s3: S3Options,
}

fn timestamp(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .replace('Z', "")
}

/// Run `bucketfs ls`; returns the exit code.
pub fn main(args: LsArgs, debug: bool) -> i32 {
    super::run_command(debug, async move { run(args).await.map(|()| 0) })
}

async fn run(args: LsArgs) -> anyhow::Result<()> {
    let client = args.s3.client(&args.source.bucket).await?;
    let mut out = std::io::stdout().lock();
    if args.versions {
        return list_versions(&client, &args.source.prefix, &mut out).await;
    }
    let mut request = ListRequest {
        prefix: args.source.prefix.clone(),
        delimiter: (!args.recursive).then(|| "/".to_owned()),
        ..Default::default()
    };
    let mut guard = MarkerGuard::default();
    loop {
        let page = client
            .list_objects(&request)
            .await
            .map_err(|e| anyhow::anyhow!(e.user_message()))?;
        for prefix in &page.common_prefixes {
            writeln!(out, "{:>19} {:>12} {}", "", "PRE", prefix)?;
        }
        for object in &page.objects {
            writeln!(
                out,
                "{} {:>12} {}",
                timestamp(object.last_modified),
                object.size,
                object.key
            )?;
        }
        if !guard
            .next_page(&mut request, page.next_continuation_token)
            .map_err(|e| anyhow::anyhow!(e.user_message()))?
        {
            return Ok(());
        }
    }
}

async fn list_versions(
    client: &S3Client,
    prefix: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let versions = client
        .list_all_versions(prefix)
        .await
        .map_err(|e| anyhow::anyhow!(e.user_message()))?;
    for v in versions {
        let (size, what) = match &v.kind {
            VersionKind::Object { size, .. } => (size.to_string(), ""),
            VersionKind::DeleteMarker => ("-".to_owned(), " (delete marker)"),
        };
        let latest = if v.is_latest { "*" } else { " " };
        writeln!(
            out,
            "{} {:>12} {latest} {} {}{what}",
            timestamp(v.last_modified),
            size,
            v.key,
            v.version_id
        )?;
    }
    Ok(())
}
