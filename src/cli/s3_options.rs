//! Options that say how to reach the bucket: endpoint, region, credentials,
//! TLS, encryption, retries. Shared by every subcommand.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use crate::s3::{
    temporary, CredentialSources, Endpoint, PriceList, RetryPolicy, S3Client, S3Config,
    ServerSideEncryption, SseCustomerKey, UploadChecksum,
};

use super::units::parse_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SseMode {
    /// Server-managed keys: SSE-B2 on Backblaze, SSE-S3 on AWS.
    #[value(alias = "sse-b2", alias = "sse-s3", alias = "AES256")]
    Aes256,
}

/// `--upload-checksum`: see `s3::checksum` for what each costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChecksumMode {
    /// crc32c where the server confirms checking it (not B2), else sha256
    /// where the CPU has SHA instructions, else md5.
    Auto,
    /// x-amz-checksum-crc32c (AWS, Garage, MinIO; not B2).
    Crc32c,
    /// Content-MD5.
    Md5,
    /// The body's SHA-256, signed as x-amz-content-sha256.
    Sha256,
    /// None: rely on TLS alone.
    Off,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
pub struct S3Options {
    /// S3 endpoint URL [env: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL]. Without
    /// it, the region picks one: a B2 region such as us-west-004 gives
    /// https://s3.us-west-004.backblazeb2.com, others AWS.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// Region for signing [env: AWS_REGION, AWS_DEFAULT_REGION; else the
    /// profile's, the endpoint's, or us-east-1].
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,

    /// Address the bucket as https://host/BUCKET/ rather than
    /// https://BUCKET.host/ (automatic for IP addresses and localhost).
    #[arg(long, alias = "use-path-request-style")]
    pub force_path_style: bool,

    /// Extra CA certificates (PEM) to trust besides the system's [env: AWS_CA_BUNDLE].
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,

    /// s3fs-style credentials file: KEY:SECRET or BUCKET:KEY:SECRET lines;
    /// must not be readable by group or others.
    #[arg(long, value_name = "FILE")]
    pub passwd_file: Option<PathBuf>,

    /// Profile of ~/.aws/credentials and ~/.aws/config to use [env: AWS_PROFILE].
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// Requests sent at most for one operation, retries of throttling,
    /// server errors and broken connections included.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,

    /// Time allowed to open a connection.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Time a response may stay silent before the request is abandoned (and retried).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub read_timeout: Duration,

    /// Ask for server-side encryption with server-managed keys (SSE-B2 / SSE-S3).
    #[arg(long, value_enum, value_name = "MODE")]
    pub sse: Option<SseMode>,

    /// Encrypt with a customer key (SSE-C): a file holding 32 bytes, raw or
    /// base64; must not be readable by group or others.
    #[arg(long, value_name = "FILE", conflicts_with = "sse")]
    pub sse_c_key_file: Option<PathBuf>,

    /// Digest every upload carries for the server to check, so damaged
    /// bytes are refused rather than stored.
    #[arg(long, value_enum, value_name = "KIND", default_value = "auto")]
    pub upload_checksum: ChecksumMode,

    /// Whose prices decide how small objects are copied (rename, chmod,
    /// cp inside the mount): b2 uploads objects up to 360 KB again (a GET
    /// and a free PUT) rather than copy them server-side (a copy is billed
    /// as ten GETs there); aws always copies. [default: b2 on a B2
    /// endpoint, else aws]
    #[arg(long, value_enum, value_name = "PROVIDER")]
    pub price_list: Option<PriceList>,

    /// B2's native API, asked what a refused key may do (its bucket,
    /// prefix and capabilities) [default: https://api.backblazeb2.com on a
    /// B2 endpoint, none elsewhere].
    #[arg(long, value_name = "URL", hide = true, env = "BUCKETFS_B2_API_URL")]
    pub b2_api_url: Option<String>,
}

impl S3Options {
    /// Why `client` was refused the mount of `bucket` at `prefix`, as B2's
    /// native API tells (`s3::b2_key`), or `None` where it cannot tell.
    pub async fn explain_refusal(
        &self,
        client: &S3Client,
        bucket: &str,
        prefix: &str,
    ) -> Option<String> {
        let api = match &self.b2_api_url {
            Some(url) => url.clone(),
            None if client.endpoint().is_b2() => crate::s3::b2_key::B2_API_URL.to_owned(),
            None => return None,
        };
        match client.b2_key_limits(&api).await {
            Ok(limits) => limits.why_refused(bucket, prefix),
            Err(e) => {
                tracing::debug!("cannot ask B2 what this key may do: {e}");
                None
            }
        }
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl S3Options {
    /// Resolve everything and build a client for `bucket`. Errors are
    /// written for a person: what is wrong and where it came from.
    pub async fn client(&self, bucket: &str) -> anyhow::Result<S3Client> {
        let sources =
            CredentialSources::from_process(self.passwd_file.clone(), self.profile.clone());
        let resolved = sources.resolve(bucket)?;
        let region = self
            .region
            .clone()
            .or_else(|| env_nonempty("AWS_REGION"))
            .or_else(|| env_nonempty("AWS_DEFAULT_REGION"))
            .or_else(|| sources.profile_region());
        let endpoint_url = self
            .endpoint
            .clone()
            .or_else(|| env_nonempty("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env_nonempty("AWS_ENDPOINT_URL"));
        let endpoint = Endpoint::resolve(
            endpoint_url.as_deref(),
            region.as_deref(),
            bucket,
            self.force_path_style,
        )?;
        let sse = match (&self.sse, &self.sse_c_key_file) {
            (Some(SseMode::Aes256), None) => ServerSideEncryption::ServerManaged,
            (None, Some(path)) => ServerSideEncryption::Customer(SseCustomerKey::from_file(path)?),
            (None, None) => ServerSideEncryption::BucketDefault,
            (Some(_), Some(_)) => bail!("--sse and --sse-c-key-file exclude each other"),
        };
        let credentials = temporary::start(resolved, &endpoint.region).await?;
        tracing::info!(
            endpoint = endpoint.display_url(),
            region = endpoint.region,
            access_key_id = credentials.access_key_id(),
            "using credentials from {}{}",
            credentials.source(),
            credentials
                .expiry()
                .map(|e| format!(
                    ", valid until {} and refreshed before then",
                    humantime::format_rfc3339_seconds(e)
                ))
                .unwrap_or_default()
        );
        let mut config = S3Config::new(bucket, endpoint, credentials);
        config.retry = RetryPolicy {
            max_attempts: self.max_attempts,
            ..RetryPolicy::default()
        };
        config.connect_timeout = self.connect_timeout;
        config.read_timeout = self.read_timeout;
        config.ca_bundle = self
            .ca_bundle
            .clone()
            .or_else(|| env_nonempty("AWS_CA_BUNDLE").map(PathBuf::from));
        config.sse = sse;
        config.upload_checksum = match self.upload_checksum {
            ChecksumMode::Auto => None,
            ChecksumMode::Crc32c => Some(UploadChecksum::Crc32c),
            ChecksumMode::Md5 => Some(UploadChecksum::Md5),
            ChecksumMode::Sha256 => Some(UploadChecksum::Sha256),
            ChecksumMode::Off => Some(UploadChecksum::Off),
        };
        config.price_list = self.price_list;
        S3Client::new(config).context("cannot create the S3 client")
    }
}
