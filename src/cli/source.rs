//! The `BUCKET[:/PREFIX]` argument.

use crate::s3::endpoint::validate_bucket;

/// A bucket and the key prefix under it that is mounted or listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub bucket: String,
    /// Empty, or a prefix ending in `/` (`photos/2026/`).
    pub prefix: String,
}

impl std::str::FromStr for Source {
    type Err = String;

    /// Accepts `bucket`, `bucket:/some/prefix` (as s3fs writes it) and
    /// `bucket:some/prefix`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (bucket, prefix) = match s.split_once(':') {
            Some((bucket, prefix)) => (bucket, prefix),
            None => (s, ""),
        };
        validate_bucket(bucket).map_err(|e| e.to_string())?;
        let trimmed = prefix.trim_matches('/');
        if trimmed.split('/').any(|seg| seg == "." || seg == "..")
            || (!trimmed.is_empty() && trimmed.split('/').any(str::is_empty))
        {
            return Err(format!(
                "invalid prefix {prefix:?}: empty, '.' or '..' path segment"
            ));
        }
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        };
        Ok(Source {
            bucket: bucket.to_owned(),
            prefix,
        })
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            f.write_str(&self.bucket)
        } else {
            write!(f, "{}:/{}", self.bucket, self.prefix.trim_end_matches('/'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_of_source() {
        let s: Source = "photos".parse().unwrap();
        assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("photos", ""));
        let s: Source = "photos:/2026/summer".parse().unwrap();
        assert_eq!(s.prefix, "2026/summer/");
        assert_eq!(s.to_string(), "photos:/2026/summer");
        let s: Source = "photos:2026/".parse().unwrap();
        assert_eq!(s.prefix, "2026/");
        let s: Source = "photos:/".parse().unwrap();
        assert_eq!(s.prefix, "");
        assert!("photos:/a//b".parse::<Source>().is_err());
        assert!("photos:/../x".parse::<Source>().is_err());
        assert!("x".parse::<Source>().is_err());
    }
}
