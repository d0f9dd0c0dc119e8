//! Where the access key comes from.
//!
//! Sources are tried in a fixed order and the first one that has a key wins:
//! 1. an s3fs-style password file named with `--passwd-file`;
//! 2. an AWS profile named explicitly with `--profile`;
//! 3. the environment: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
//!    `AWS_SESSION_TOKEN`, then `B2_APPLICATION_KEY_ID` / `B2_APPLICATION_KEY`;
//! 4. the shared AWS files (`~/.aws/credentials`, `~/.aws/config`) with the
//!    profile from `AWS_PROFILE`, else `default`;
//! 5. web identity: `AWS_WEB_IDENTITY_TOKEN_FILE` with `AWS_ROLE_ARN`
//!    (EKS IRSA), exchanged through STS;
//! 6. a container endpoint: `AWS_CONTAINER_CREDENTIALS_FULL_URI` or
//!    `_RELATIVE_URI` (ECS, EKS Pod Identity);
//! 7. the EC2 instance metadata service (IMDSv2), unless
//!    `AWS_EC2_METADATA_DISABLED=true`.
//!
//! This is aws-config's `DefaultCredentialsChain` order with our explicit
//! sources first. A profile may hold static keys (read here) or name a
//! source of temporary keys: `role_arn` with `source_profile` or
//! `credential_source`, `credential_process`, SSO (`sso_session`,
//! `sso_start_url`) or `web_identity_token_file`. Those, and sources 5 to 7,
//! hand out keys that expire: this module only decides which source is
//! used (`Resolved`); `temporary.rs` asks the AWS SDK's providers for the
//! keys and `identity.rs` refreshes them before they expire.
//!
//! An explicitly named file or profile that cannot be used is an error, never
//! a silent fall-through to the next source: a typo must not mount with
//! someone else's key. Secrets live in `SecretString` so that `Debug` and
//! logs show `[REDACTED]`, and no error message here ever quotes a file's
//! contents.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

/// An access key with its secret and, for temporary credentials, a token.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    secret_access_key: SecretString,
    session_token: Option<SecretString>,
    /// Where these came from, for logs ("passwd file /etc/passwd-bucketfs").
    pub source: String,
}

impl Credentials {
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
        source: impl Into<String>,
    ) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: SecretString::from(secret_access_key.into()),
            session_token: session_token.map(SecretString::from),
            source: source.into(),
        }
    }

    pub(crate) fn secret_access_key(&self) -> &str {
        self.secret_access_key.expose_secret()
    }

    pub(crate) fn session_token(&self) -> Option<&str> {
        self.session_token.as_ref().map(|t| t.expose_secret())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[REDACTED]")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("source", &self.source)
            .finish()
    }
}

/// Why no credentials could be had. Messages name files and variables, never
/// their contents.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read credentials file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "credentials file {path} is accessible by group or others (mode {mode:03o}); \
         run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("credentials file {path}, line {line}: {reason}")]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error(
        "credentials file {path} has no entry for bucket {bucket:?} and no default KEY:SECRET line"
    )]
    NoEntry { path: PathBuf, bucket: String },
    #[error("profile {profile:?} not found in {files}")]
    NoProfile { profile: String, files: String },
    #[error(
        "profile {profile:?} has no aws_access_key_id/aws_secret_access_key, role_arn, \
         credential_process or sso settings"
    )]
    ProfileWithoutKeys { profile: String },
    #[error("{0} is set but {1} is not")]
    HalfSetEnvironment(&'static str, &'static str),
    #[error(
        "no credentials found: use --passwd-file, set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
         (or B2_APPLICATION_KEY_ID and B2_APPLICATION_KEY), or configure ~/.aws/credentials"
    )]
    NotFound,
    #[error(
        "no credentials found: none in --passwd-file, the environment or ~/.aws, and the EC2 \
         instance metadata service gave none ({reason})"
    )]
    NotFoundAnywhere { reason: String },
    #[error("cannot get credentials from {source_name}: {reason}")]
    Temporary { source_name: String, reason: String },
    #[error(
        "the credentials from {source_name} expired at {expired}, and no new ones could be had"
    )]
    Expired {
        source_name: String,
        expired: String,
    },
}

/// The user's home: `$HOME`, else the passwd database's entry for the
/// effective user. An fstab mount at boot runs with almost no environment,
/// and `profile=` must still find root's ~/.aws files.
pub fn home_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home));
    }
    // SAFETY: passwd is a plain C struct of integers and pointers, for which
    // all-zero is a valid (if meaningless) value; getpwuid_r fills it.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live, correctly sized storage that
    // outlives the call; getpwuid_r writes strings only into `buf`.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::geteuid(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() || entry.pw_dir.is_null() {
        return None;
    }
    // SAFETY: on success pw_dir points to a NUL-terminated string in `buf`.
    let dir = unsafe { std::ffi::CStr::from_ptr(entry.pw_dir) };
    let dir = std::ffi::OsStr::from_bytes(dir.to_bytes());
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// Everything the resolution looks at, gathered up front so that it can be
/// tested without touching the real environment or home directory.
#[derive(Debug, Default, Clone)]
pub struct CredentialSources {
    pub passwd_file: Option<PathBuf>,
    pub profile: Option<String>,
    pub env: HashMap<String, String>,
    pub home: Option<PathBuf>,
}

/// The source `CredentialSources::resolve` chose.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// Keys that do not expire (or whose expiry nobody tells us).
    Static(Credentials),
    /// A source of keys that expire, asked again before they do.
    Temporary(TemporarySource),
}

/// The sources of temporary keys, each served by an AWS SDK provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemporarySource {
    /// A profile with `role_arn`, `credential_process`, SSO or a web
    /// identity token file; `kind` says which, for logs.
    Profile {
        name: String,
        kind: &'static str,
        config_file: Option<PathBuf>,
        credentials_file: Option<PathBuf>,
    },
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` with `AWS_ROLE_ARN`.
    WebIdentity {
        role_arn: String,
        token_file: PathBuf,
    },
    /// A container endpoint; `var` is the variable that names it.
    Container { var: &'static str },
    /// The EC2 instance metadata service, the last resort.
    InstanceMetadata,
}

impl TemporarySource {
    /// Where the keys come from, for logs and `bucketfs ls`; never a secret.
    pub fn describe(&self) -> String {
        match self {
            TemporarySource::Profile { name, kind, .. } => format!("AWS profile {name:?} ({kind})"),
            TemporarySource::WebIdentity { role_arn, .. } => {
                format!("web identity (AWS_WEB_IDENTITY_TOKEN_FILE, role {role_arn})")
            }
            TemporarySource::Container { var } => format!("container credentials ({var})"),
            TemporarySource::InstanceMetadata => "EC2 instance metadata (IMDSv2)".to_owned(),
        }
    }
}

/// What kind of temporary keys a profile's settings name, if any.
fn temporary_profile_kind(keys: &HashMap<String, String>) -> Option<&'static str> {
    let has = |name: &str| keys.get(name).is_some_and(|v| !v.is_empty());
    if has("role_arn") {
        Some(if has("web_identity_token_file") {
            "web identity"
        } else {
            "assumed role"
        })
    } else if has("sso_session") || has("sso_start_url") || has("sso_account_id") {
        Some("SSO")
    } else if has("credential_process") {
        Some("credential_process")
    } else {
        None
    }
}

impl CredentialSources {
    /// Sources from this process's environment.
    pub fn from_process(passwd_file: Option<PathBuf>, profile: Option<String>) -> Self {
        let env = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("B2_"))
            .collect();
        CredentialSources {
            passwd_file,
            profile,
            env,
            home: home_dir(),
        }
    }

    fn env(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn credentials_file(&self) -> Option<PathBuf> {
        self.env("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| self.home.as_ref().map(|h| h.join(".aws/credentials")))
    }

    fn config_file(&self) -> Option<PathBuf> {
        self.env("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .or_else(|| self.home.as_ref().map(|h| h.join(".aws/config")))
    }

    /// Decide which source gives the credentials for `bucket`: static keys
    /// read here, or a source of temporary keys for `temporary.rs`.
    pub fn resolve(&self, bucket: &str) -> Result<Resolved, CredentialsError> {
        if let Some(path) = &self.passwd_file {
            return read_passwd_file(path, bucket).map(Resolved::Static);
        }
        if let Some(profile) = &self.profile {
            return match self.profile_source(profile)? {
                Some(resolved) => Ok(resolved),
                None => Err(CredentialsError::ProfileWithoutKeys {
                    profile: profile.clone(),
                }),
            };
        }
        if let Some(creds) = self.env_credentials()? {
            return Ok(Resolved::Static(creds));
        }
        let named = self.env("AWS_PROFILE");
        let profile = named.unwrap_or("default").to_owned();
        match self.profile_source(&profile) {
            Ok(Some(resolved)) => return Ok(resolved),
            // A profile with settings but no keys (often just a region)
            // leaves the keys to the sources below, as for the AWS CLI.
            Ok(None) => {}
            // Only a profile someone asked for by name is an error when absent.
            Err(CredentialsError::NoProfile { .. }) if named.is_none() => {}
            Err(e) => return Err(e),
        }
        if let Some(token_file) = self.env("AWS_WEB_IDENTITY_TOKEN_FILE") {
            let Some(role_arn) = self.env("AWS_ROLE_ARN") else {
                return Err(CredentialsError::HalfSetEnvironment(
                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                    "AWS_ROLE_ARN",
                ));
            };
            return Ok(Resolved::Temporary(TemporarySource::WebIdentity {
                role_arn: role_arn.to_owned(),
                token_file: PathBuf::from(token_file),
            }));
        }
        for var in [
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        ] {
            if self.env(var).is_some() {
                return Ok(Resolved::Temporary(TemporarySource::Container { var }));
            }
        }
        let imds_disabled = self
            .env("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if imds_disabled {
            return Err(CredentialsError::NotFound);
        }
        Ok(Resolved::Temporary(TemporarySource::InstanceMetadata))
    }

    fn env_credentials(&self) -> Result<Option<Credentials>, CredentialsError> {
        let pairs = [
            ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", true),
            ("B2_APPLICATION_KEY_ID", "B2_APPLICATION_KEY", false),
        ];
        for (id_var, secret_var, has_token) in pairs {
            match (self.env(id_var), self.env(secret_var)) {
                (Some(id), Some(secret)) => {
                    let token = if has_token {
                        self.env("AWS_SESSION_TOKEN").map(str::to_owned)
                    } else {
                        None
                    };
                    return Ok(Some(Credentials::new(
                        id,
                        secret,
                        token,
                        format!("environment ({id_var})"),
                    )));
                }
                (Some(_), None) => {
                    return Err(CredentialsError::HalfSetEnvironment(id_var, secret_var))
                }
                (None, Some(_)) => {
                    return Err(CredentialsError::HalfSetEnvironment(secret_var, id_var))
                }
                (None, None) => {}
            }
        }
        Ok(None)
    }

    /// The source a profile names: its static keys, a source of temporary
    /// keys, or `None` when it has neither (settings only).
    fn profile_source(&self, profile: &str) -> Result<Option<Resolved>, CredentialsError> {
        let mut files = Vec::new();
        let mut found = false;
        let mut keys: HashMap<String, String> = HashMap::new();
        // The config file names sections `[profile NAME]` (except `default`);
        // the credentials file names them `[NAME]`. Credentials-file values win.
        let config_section = if profile == "default" {
            "default".to_owned()
        } else {
            format!("profile {profile}")
        };
        let sources = [
            (self.config_file(), config_section),
            (self.credentials_file(), profile.to_owned()),
        ];
        for (path, section) in sources {
            let Some(path) = path else { continue };
            files.push(path.display().to_string());
            let Some(values) = read_ini_section(&path, &section)? else {
                continue;
            };
            found = true;
            keys.extend(values);
        }
        if !found {
            return Err(CredentialsError::NoProfile {
                profile: profile.to_owned(),
                files: if files.is_empty() {
                    "(no home directory)".into()
                } else {
                    files.join(" and ")
                },
            });
        }
        // A role in a profile wins over keys beside it, as for the AWS CLI:
        // those keys are what assumes it only when source_profile says so.
        if let Some(kind) = temporary_profile_kind(&keys) {
            return Ok(Some(Resolved::Temporary(TemporarySource::Profile {
                name: profile.to_owned(),
                kind,
                config_file: self.config_file(),
                credentials_file: self.credentials_file(),
            })));
        }
        Ok(
            match (
                keys.get("aws_access_key_id"),
                keys.get("aws_secret_access_key"),
            ) {
                (Some(id), Some(secret)) => Some(Resolved::Static(Credentials::new(
                    id.clone(),
                    secret.clone(),
                    keys.get("aws_session_token").cloned(),
                    format!("AWS profile {profile:?}"),
                ))),
                _ => None,
            },
        )
    }

    /// The `region` of the profile in use, if the shared config names one.
    pub fn profile_region(&self) -> Option<String> {
        let profile = self
            .profile
            .clone()
            .or_else(|| self.env("AWS_PROFILE").map(str::to_owned))
            .unwrap_or_else(|| "default".to_owned());
        let section = if profile == "default" {
            profile
        } else {
            format!("profile {profile}")
        };
        let path = self.config_file()?;
        read_ini_section(&path, &section)
            .ok()
            .flatten()
            .and_then(|mut values| values.remove("region"))
    }
}

/// Read one section of an INI file; `Ok(None)` when the file or the section
/// does not exist.
fn read_ini_section(
    path: &Path,
    section: &str,
) -> Result<Option<HashMap<String, String>>, CredentialsError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CredentialsError::Unreadable {
                path: path.to_owned(),
                source,
            })
        }
    };
    let ini = ini::Ini::load_from_str(&text).map_err(|e| CredentialsError::Malformed {
        path: path.to_owned(),
        line: e.line,
        reason: "not a valid INI file",
    })?;
    Ok(ini.section(Some(section.trim())).map(|props| {
        props
            .iter()
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect()
    }))
}

/// Read an s3fs-format password file: `KEY:SECRET` lines apply to any
/// bucket, `BUCKET:KEY:SECRET` lines to that bucket only (and win). Blank
/// lines and `#` comments are skipped. The file must not be accessible by
/// group or others, as s3fs insists too.
pub fn read_passwd_file(path: &Path, bucket: &str) -> Result<Credentials, CredentialsError> {
    let unreadable = |source| CredentialsError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let meta = fs::metadata(path).map_err(unreadable)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CredentialsError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(unreadable)?;
    let mut default = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let malformed = |reason| CredentialsError::Malformed {
            path: path.to_owned(),
            line: index + 1,
            reason,
        };
        let fields: Vec<&str> = line.splitn(3, ':').collect();
        let source = format!("passwd file {}", path.display());
        match fields.as_slice() {
            [key, secret] if !key.is_empty() && !secret.is_empty() => {
                default.get_or_insert_with(|| Credentials::new(*key, *secret, None, source));
            }
            [b, key, secret] if !key.is_empty() && !secret.is_empty() => {
                if *b == bucket {
                    return Ok(Credentials::new(*key, *secret, None, source));
                }
            }
            _ => return Err(malformed("expected KEY:SECRET or BUCKET:KEY:SECRET")),
        }
    }
    default.ok_or_else(|| CredentialsError::NoEntry {
        path: path.to_owned(),
        bucket: bucket.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn static_keys(resolved: Result<Resolved, CredentialsError>) -> Credentials {
        match resolved {
            Ok(Resolved::Static(c)) => c,
            other => panic!("expected static keys, got {other:?}"),
        }
    }

    fn temporary(resolved: Result<Resolved, CredentialsError>) -> TemporarySource {
        match resolved {
            Ok(Resolved::Temporary(t)) => t,
            other => panic!("expected a temporary source, got {other:?}"),
        }
    }

    fn write_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        let mut f = fs::File::create(&path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn passwd_file_prefers_the_bucket_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(
            dir.path(),
            "passwd",
            "# comment\nDEFKEY:defsecret\nphotos:PHOTOKEY:photo:secret\n",
            0o600,
        );
        let c = read_passwd_file(&path, "photos").unwrap();
        assert_eq!(c.access_key_id, "PHOTOKEY");
        assert_eq!(c.secret_access_key(), "photo:secret");
        let c = read_passwd_file(&path, "other").unwrap();
        assert_eq!(c.access_key_id, "DEFKEY");
    }

    #[test]
    fn passwd_file_readable_by_others_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "passwd", "KEY:topsecret\n", 0o644);
        let err = read_passwd_file(&path, "b").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("chmod 600"), "{msg}");
        assert!(!msg.contains("topsecret"));
    }

    #[test]
    fn malformed_passwd_line_names_the_line_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "passwd", "\njustakeywithnosecret\n", 0o600);
        let msg = read_passwd_file(&path, "b").unwrap_err().to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(!msg.contains("justakey"), "{msg}");
    }

    #[test]
    fn order_is_passwd_then_profile_then_env_then_files() {
        let dir = tempfile::tempdir().unwrap();
        write_file(
            dir.path(),
            ".aws/credentials",
            "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = filesecret\n\
             [work]\naws_access_key_id=WORKKEY\naws_secret_access_key=worksecret\naws_session_token=tok\n",
            0o600,
        );
        write_file(
            dir.path(),
            ".aws/config",
            "[profile work]\nregion = eu-central-003\n",
            0o600,
        );
        let mut sources = CredentialSources {
            home: Some(dir.path().to_owned()),
            ..Default::default()
        };
        assert_eq!(static_keys(sources.resolve("b")).access_key_id, "FILEKEY");

        sources
            .env
            .insert("B2_APPLICATION_KEY_ID".into(), "B2KEY".into());
        sources
            .env
            .insert("B2_APPLICATION_KEY".into(), "b2secret".into());
        assert_eq!(static_keys(sources.resolve("b")).access_key_id, "B2KEY");

        sources
            .env
            .insert("AWS_ACCESS_KEY_ID".into(), "ENVKEY".into());
        sources
            .env
            .insert("AWS_SECRET_ACCESS_KEY".into(), "envsecret".into());
        assert_eq!(static_keys(sources.resolve("b")).access_key_id, "ENVKEY");

        sources.profile = Some("work".into());
        let c = static_keys(sources.resolve("b"));
        assert_eq!(c.access_key_id, "WORKKEY");
        assert_eq!(c.session_token(), Some("tok"));
        assert_eq!(sources.profile_region().as_deref(), Some("eu-central-003"));
    }

    #[test]
    fn missing_named_profile_is_an_error_not_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let mut sources = CredentialSources {
            home: Some(dir.path().to_owned()),
            ..Default::default()
        };
        // Nothing anywhere: the instance metadata service is the last resort,
        // unless it is turned off.
        assert_eq!(
            temporary(sources.resolve("b")),
            TemporarySource::InstanceMetadata
        );
        sources
            .env
            .insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
        assert!(matches!(
            sources.resolve("b"),
            Err(CredentialsError::NotFound)
        ));
        sources.env.insert("AWS_PROFILE".into(), "nope".into());
        assert!(matches!(
            sources.resolve("b"),
            Err(CredentialsError::NoProfile { .. })
        ));
    }

    #[test]
    fn half_set_environment_is_reported() {
        let mut sources = CredentialSources::default();
        sources.env.insert("AWS_ACCESS_KEY_ID".into(), "K".into());
        let msg = sources.resolve("b").unwrap_err().to_string();
        assert!(msg.contains("AWS_SECRET_ACCESS_KEY"), "{msg}");
    }

    #[test]
    fn temporary_sources_follow_the_static_ones_in_the_sdk_order() {
        let dir = tempfile::tempdir().unwrap();
        // A default profile with only a region leaves the keys to the
        // sources after it.
        write_file(
            dir.path(),
            ".aws/config",
            "[default]\nregion = eu-west-1\n",
            0o600,
        );
        let mut sources = CredentialSources {
            home: Some(dir.path().to_owned()),
            ..Default::default()
        };
        assert_eq!(
            temporary(sources.resolve("b")),
            TemporarySource::InstanceMetadata
        );
        sources.env.insert(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI".into(),
            "/v2/credentials/x".into(),
        );
        assert_eq!(
            temporary(sources.resolve("b")),
            TemporarySource::Container {
                var: "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"
            }
        );
        sources.env.insert(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI".into(),
            "http://127.0.0.1:1/creds".into(),
        );
        assert_eq!(
            temporary(sources.resolve("b")),
            TemporarySource::Container {
                var: "AWS_CONTAINER_CREDENTIALS_FULL_URI"
            }
        );
        sources.env.insert(
            "AWS_WEB_IDENTITY_TOKEN_FILE".into(),
            "/var/run/token".into(),
        );
        let msg = sources.resolve("b").unwrap_err().to_string();
        assert!(msg.contains("AWS_ROLE_ARN"), "{msg}");
        sources
            .env
            .insert("AWS_ROLE_ARN".into(), "arn:aws:iam::1:role/r".into());
        assert_eq!(
            temporary(sources.resolve("b")).describe(),
            "web identity (AWS_WEB_IDENTITY_TOKEN_FILE, role arn:aws:iam::1:role/r)"
        );
        // Static keys in the environment come before all of them.
        sources
            .env
            .insert("AWS_ACCESS_KEY_ID".into(), "ENVKEY".into());
        sources
            .env
            .insert("AWS_SECRET_ACCESS_KEY".into(), "envsecret".into());
        assert_eq!(static_keys(sources.resolve("b")).access_key_id, "ENVKEY");
    }

    #[test]
    fn profiles_naming_temporary_keys_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        write_file(
            dir.path(),
            ".aws/config",
            "[profile role]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = base\n\
             [profile base]\naws_access_key_id = BASE\naws_secret_access_key = s\n\
             [profile proc]\ncredential_process = /bin/creds --json\n\
             [profile sso]\nsso_session = corp\nsso_account_id = 1\nsso_role_name = r\n\
             [profile bare]\nregion = us-east-1\n",
            0o600,
        );
        let mut sources = CredentialSources {
            home: Some(dir.path().to_owned()),
            ..Default::default()
        };
        for (name, kind) in [
            ("role", "assumed role"),
            ("proc", "credential_process"),
            ("sso", "SSO"),
        ] {
            sources.profile = Some(name.into());
            match temporary(sources.resolve("b")) {
                TemporarySource::Profile {
                    name: n,
                    kind: k,
                    config_file,
                    ..
                } => {
                    assert_eq!((n.as_str(), k), (name, kind));
                    assert_eq!(config_file, Some(dir.path().join(".aws/config")));
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        sources.profile = Some("base".into());
        assert_eq!(static_keys(sources.resolve("b")).access_key_id, "BASE");
        // Named on the command line, a profile without keys is an error;
        // named by AWS_PROFILE, the chain goes on.
        sources.profile = Some("bare".into());
        let msg = sources.resolve("b").unwrap_err().to_string();
        assert!(msg.contains("\"bare\""), "{msg}");
        sources.profile = None;
        sources.env.insert("AWS_PROFILE".into(), "bare".into());
        assert_eq!(
            temporary(sources.resolve("b")),
            TemporarySource::InstanceMetadata
        );
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let c = Credentials::new("AKID", "s3cr3t", Some("t0ken".into()), "test");
        let shown = format!("{c:?}");
        assert!(shown.contains("AKID"));
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("t0ken"),
            "{shown}"
        );
    }
}
