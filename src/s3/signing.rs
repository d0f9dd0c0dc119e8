//! SigV4 request signing, by `aws-sigv4`, with S3's settings.
//!
//! S3 differs from other AWS services in two ways that matter here: the path
//! is signed exactly as sent (no second percent-encoding, no `.`/`//`
//! normalisation), and every request carries `x-amz-content-sha256`. Bodies
//! are sent as `UNSIGNED-PAYLOAD` unless the caller hashed them with
//! SHA-256 to have the server check them (see `checksum.rs`); a
//! `Content-MD5` header, the other way to have them checked, is signed like
//! any header, so no body is ever hashed twice.

use std::time::SystemTime;

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::identity::LiveCredentials;

/// Why a request could not be signed.
pub(crate) enum SignError {
    /// The keys expired and no refresh replaced them.
    Expired(String),
    Other(String),
}

pub(crate) struct Signer {
    credentials: LiveCredentials,
    region: String,
}

impl Signer {
    pub(crate) fn key_pair(&self) -> Option<(String, String)> {
        self.credentials.key_pair()
    }

    pub(crate) fn credentials(&self) -> &LiveCredentials {
        &self.credentials
    }

    pub(crate) fn new(credentials: LiveCredentials, region: &str) -> Self {
        Signer {
            credentials,
            region: region.to_owned(),
        }
    }

    /// Add the signature headers (`authorization`, `x-amz-date`,
    /// `x-amz-content-sha256`, `x-amz-security-token`) to `headers`, for a
    /// body whose SHA-256 is `payload_sha256` (hex) or is left unsigned.
    pub(crate) fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &mut HeaderMap,
        payload_sha256: Option<&str>,
    ) -> Result<(), SignError> {
        // Read per attempt: a retry after a refresh signs with the new keys.
        let keys = self
            .credentials
            .current()
            .map_err(|e| SignError::Expired(e.to_string()))?;
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&keys.identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| SignError::Other(format!("signing parameters: {e}")))?
            .into();
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect();
        let request = SignableRequest::new(
            method,
            url,
            pairs.into_iter(),
            match payload_sha256 {
                Some(hex) => SignableBody::Precomputed(hex.to_owned()),
                None => SignableBody::UnsignedPayload,
            },
        )
        .map_err(|e| SignError::Other(format!("cannot sign request: {e}")))?;
        let (instructions, _signature) = sign(request, &params)
            .map_err(|e| SignError::Other(format!("cannot sign request: {e}")))?
            .into_parts();
        let (new_headers, _params) = instructions.into_parts();
        for header in new_headers {
            let name = HeaderName::from_static(header.name());
            let mut value = HeaderValue::from_str(header.value())
                .map_err(|_| SignError::Other("signature produced an invalid header".to_owned()))?;
            value.set_sensitive(header.sensitive());
            headers.insert(name, value);
        }
        Ok(())
    }
}
