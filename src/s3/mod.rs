//! The S3 client: every request bucketfs sends to the object store.
//!
//! Layout: `client` (configuration, one signed request, the retry loop),
//! `b2_key` (what a B2 key may do, asked of B2's native API to explain a
//! refusal),
//! one module per family of operations (`objects`, `listing`, `multipart`,
//! `bucket`), and the pieces they share: `endpoint` (URLs and addressing),
//! `credentials` (which source gives the keys), `temporary` (the SDK's
//! providers of expiring keys), `identity` (the current keys, refreshed
//! before they expire), `signing` (SigV4), `checksum` (the digest
//! uploads carry), `server_caps` (which optional headers the server honours), `sse` (encryption headers), `encode`
//! (key and query encoding), `xml` (bodies), `retry` (when to try again) and
//! `error` (what went wrong). This layer knows nothing of files or inodes.

pub mod b2_key;
mod bucket;
mod checksum;
mod client;
pub mod credentials;
pub mod encode;
pub mod endpoint;
mod error;
mod identity;
pub mod listing;
mod multipart;
mod objects;
pub mod pricing;
mod retry;
mod server_caps;
mod signing;
pub mod sse;
pub mod temporary;
mod throttle;
mod types;
pub mod xml;

pub(crate) use checksum::hex as hex_digest;
pub use checksum::UploadChecksum;
pub use client::{ClientBuildError, S3Client, S3Config};
pub use credentials::{
    CredentialSources, Credentials, CredentialsError, Resolved, TemporarySource,
};
pub use endpoint::{Addressing, Endpoint, EndpointError};
pub use error::{ErrorKind, S3Error};
pub use identity::LiveCredentials;
pub use multipart::{multipart_etag, MAX_PARTS, MAX_SINGLE_COPY};
pub use objects::DELETE_BATCH;
pub use pricing::PriceList;
pub use retry::RetryPolicy;
pub use sse::{ServerSideEncryption, SseCustomerKey};
pub use types::*;
