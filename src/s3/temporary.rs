//! Temporary keys from the AWS SDK's own providers: a profile's assumed
//! role, SSO or `credential_process`, web identity, a container endpoint,
//! and IMDSv2. `credentials.rs` chose the source; here it is built and asked
//! for its first keys, and `identity.rs` keeps asking before they expire.
//!
//! Each provider reads its settings (endpoints such as
//! `AWS_ENDPOINT_URL_STS`, `AWS_EC2_METADATA_SERVICE_ENDPOINT`, token files)
//! the way the AWS CLI does; they share one `ProviderConfig` carrying the
//! mount's region, which STS needs.

use std::time::Duration;

use aws_config::ecs::EcsCredentialsProvider;
use aws_config::imds;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use aws_types::region::Region;

use super::credentials::{CredentialsError, Resolved, TemporarySource};
use super::identity::LiveCredentials;

/// IMDS is tried last, also on machines that have none: give up on it
/// within a few seconds rather than the SDK's default of several attempts.
const IMDS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const IMDS_ATTEMPTS: u32 = 2;

/// The keys for `resolved`, refreshed from now on if they expire.
pub async fn start(resolved: Resolved, region: &str) -> Result<LiveCredentials, CredentialsError> {
    let source = match resolved {
        Resolved::Static(credentials) => return Ok(LiveCredentials::fixed(&credentials)),
        Resolved::Temporary(source) => source,
    };
    let name = source.describe();
    let provider = provider_for(&source, region);
    match LiveCredentials::refreshing(provider, name).await {
        // IMDS was only the last resort: its failure means nothing was
        // configured anywhere.
        Err(CredentialsError::Temporary { reason, .. })
            if source == TemporarySource::InstanceMetadata =>
        {
            Err(CredentialsError::NotFoundAnywhere { reason })
        }
        other => other,
    }
}

fn provider_for(source: &TemporarySource, region: &str) -> SharedCredentialsProvider {
    let config = ProviderConfig::default().with_region(Some(Region::new(region.to_owned())));
    match source {
        TemporarySource::Profile {
            name,
            config_file,
            credentials_file,
            ..
        } => {
            // The files bucketfs found (also without $HOME, at boot), and
            // only those; the SDK refuses a named file that is absent.
            let mut files = EnvConfigFiles::builder()
                .include_default_config_file(false)
                .include_default_credentials_file(false);
            for (kind, path) in [
                (EnvConfigFileKind::Config, config_file),
                (EnvConfigFileKind::Credentials, credentials_file),
            ] {
                if let Some(path) = path.as_ref().filter(|p| p.exists()) {
                    files = files.with_file(kind, path);
                }
            }
            SharedCredentialsProvider::new(
                ProfileFileCredentialsProvider::builder()
                    .configure(&config)
                    .profile_files(files.build())
                    .profile_name(name)
                    .build(),
            )
        }
        TemporarySource::WebIdentity { .. } => SharedCredentialsProvider::new(
            WebIdentityTokenCredentialsProvider::builder()
                .configure(&config)
                .build(),
        ),
        TemporarySource::Container { .. } => SharedCredentialsProvider::new(
            EcsCredentialsProvider::builder().configure(&config).build(),
        ),
        TemporarySource::InstanceMetadata => SharedCredentialsProvider::new(
            ImdsCredentialsProvider::builder()
                .configure(&config)
                .imds_client(
                    imds::Client::builder()
                        .configure(&config)
                        .connect_timeout(IMDS_CONNECT_TIMEOUT)
                        .max_attempts(IMDS_ATTEMPTS)
                        .build(),
                )
                .build(),
        ),
    }
}
