//! What the store remembers about an upload between requests (kept by the
//! registry in the upload's index row, opaque to it).
//!
//! Object stores take a multipart upload's parts at 5 MiB or more (only the
//! last may be smaller), while clients send chunks of any size. So an
//! acknowledged chunk is stored as its own small object until enough bytes
//! are waiting to make a part; then those objects are read back, joined
//! with the new bytes into one part of `part_size`, and uploaded. Every
//! chunk is durable in the bucket when its request is answered, and the
//! bytes that pass through twice are bounded by one part.

use serde::{Deserialize, Serialize};

use registry_core::{Error, Result};

/// Parts of a multipart upload, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Multipart {
    /// The object store's id of the multipart upload.
    pub id: String,
    /// Each part's entity tag, part `i` at index `i`.
    pub parts: Vec<String>,
    /// Bytes the parts hold.
    pub bytes: u64,
}

/// An acknowledged chunk stored as its own object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    pub multipart: Option<Multipart>,
    /// Chunks not yet in a part, in order; they follow the parts. An empty
    /// one marks an upload whose bytes are all in parts, so that every
    /// upload holding data has an object a listing shows.
    pub pending: Vec<Chunk>,
}

impl UploadState {
    pub fn decode(b: &[u8]) -> Result<UploadState> {
        if b.is_empty() {
            return Ok(UploadState::default());
        }
        postcard::from_bytes(b)
            .map_err(|e| Error::Storage(format!("unreadable object store upload state: {e}")))
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("upload state serializes")
    }

    /// Bytes waiting in chunk objects.
    pub fn pending_bytes(&self) -> u64 {
        self.pending.iter().map(|c| c.len).sum()
    }

    /// Bytes the upload holds.
    pub fn bytes(&self) -> u64 {
        self.multipart.as_ref().map_or(0, |m| m.bytes) + self.pending_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_counts() {
        let s = UploadState {
            multipart: Some(Multipart {
                id: "m".into(),
                parts: vec!["e1".into()],
                bytes: 8,
            }),
            pending: vec![Chunk { offset: 8, len: 3 }, Chunk { offset: 11, len: 2 }],
        };
        assert_eq!(UploadState::decode(&s.encode()).unwrap(), s);
        assert_eq!(s.bytes(), 13);
        assert_eq!(UploadState::decode(&[]).unwrap(), UploadState::default());
        assert!(UploadState::decode(&[0xff, 0xff, 0xff]).is_err());
    }
}
