//! Where things live in the bucket, under an optional prefix:
//!
//! - `blobs/<algorithm>/<hex>`: committed blobs, one object each;
//! - `uploads/<id>/chunk-<offset>`: acknowledged chunks smaller than a
//!   multipart part, waiting to be joined into one;
//! - `uploads/<id>/data`: a chunked upload's multipart object, completed
//!   when the upload is, then copied to its content address;
//! - `quarantine/<algorithm>-<hex>`: blobs an integrity check found corrupt.

use object_store::path::Path;
use registry_core::{Digest, Error, Result};

/// A bucket and a key prefix within it: `s3://BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    pub prefix: String,
}

impl std::str::FromStr for Location {
    type Err = Error;

    fn from_str(s: &str) -> Result<Location> {
        let rest = s.strip_prefix("s3://").ok_or_else(|| {
            Error::Unsupported(format!("{s:?}: a blob store is s3://BUCKET[/PREFIX]"))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Unsupported(format!("{s:?}: no bucket")));
        }
        Ok(Location {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.prefix.as_str() {
            "" => write!(f, "s3://{}", self.bucket),
            p => write!(f, "s3://{}/{p}", self.bucket),
        }
    }
}

impl Location {
    fn key(&self, rest: &str) -> Path {
        match self.prefix.as_str() {
            "" => Path::from(rest),
            p => Path::from(format!("{p}/{rest}")),
        }
    }

    pub fn blobs(&self) -> Path {
        self.key("blobs")
    }

    pub fn blob(&self, d: &Digest) -> Path {
        self.key(&format!("blobs/{}/{}", d.algorithm().as_str(), d.encoded()))
    }

    /// The digest a blob key names.
    pub fn digest_of(&self, key: &Path) -> Option<Digest> {
        let mut parts: Vec<String> = key.parts().map(|p| p.as_ref().to_owned()).collect();
        let hex = parts.pop()?;
        let algorithm = parts.pop()?;
        (parts.pop()? == "blobs")
            .then(|| format!("{algorithm}:{hex}").parse().ok())
            .flatten()
    }

    pub fn uploads(&self) -> Path {
        self.key("uploads")
    }

    pub fn upload_dir(&self, id: &str) -> Path {
        self.key(&format!("uploads/{id}"))
    }

    pub fn chunk(&self, id: &str, offset: u64) -> Path {
        self.key(&format!("uploads/{id}/chunk-{offset:016x}"))
    }

    pub fn upload_data(&self, id: &str) -> Path {
        self.key(&format!("uploads/{id}/data"))
    }

    /// The upload id an upload key belongs to.
    pub fn upload_of(&self, key: &Path) -> Option<String> {
        let parts: Vec<String> = key.parts().map(|p| p.as_ref().to_owned()).collect();
        let at = parts.iter().rposition(|p| p == "uploads")?;
        parts.get(at + 1).cloned()
    }

    pub fn quarantine(&self, d: &Digest) -> Path {
        self.key(&format!(
            "quarantine/{}-{}",
            d.algorithm().as_str(),
            d.encoded()
        ))
    }

    /// A key nothing writes: asking for it shows whether the bucket answers.
    pub fn probe(&self) -> Path {
        self.key(".berth-ready")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_keys_round_trip() {
        let l: Location = "s3://reg/team/berth/".parse().unwrap();
        assert_eq!(l.bucket, "reg");
        assert_eq!(l.prefix, "team/berth");
        assert_eq!(l.to_string(), "s3://reg/team/berth");
        let d = Digest::sha256_of(b"x");
        let key = l.blob(&d);
        assert_eq!(
            key.as_ref(),
            format!("team/berth/blobs/sha256/{}", d.encoded())
        );
        assert_eq!(l.digest_of(&key), Some(d));
        assert_eq!(l.upload_of(&l.chunk("abc", 5)), Some("abc".into()));
        let bare: Location = "s3://reg".parse().unwrap();
        assert_eq!(bare.upload_data("u").as_ref(), "uploads/u/data");
        assert!("s3://".parse::<Location>().is_err());
        assert!("http://x".parse::<Location>().is_err());
    }
}
