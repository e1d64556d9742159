//! A regular file's bytes, in shared chunks so that taking a durable copy at
//! `fsync` costs one reference per chunk, and a later write copies only the
//! chunk it touches.

use std::sync::Arc;

/// Size of a chunk; the last chunk of a file may be shorter.
const CHUNK: usize = 16 * 1024;

#[derive(Clone, Default, Debug)]
pub struct Data {
    len: u64,
    /// Chunks covering exactly `len` bytes: every chunk but the last holds
    /// `CHUNK` bytes.
    chunks: Vec<Arc<Vec<u8>>>,
}

impl Data {
    pub fn from_bytes(bytes: &[u8]) -> Data {
        let mut d = Data::default();
        d.write(0, bytes);
        d
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `size` bytes from `offset` (fewer at the end of the file).
    pub fn read(&self, offset: u64, size: usize) -> Vec<u8> {
        let end = self.len.min(offset.saturating_add(size as u64));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        while pos < end {
            let (i, at) = ((pos / CHUNK as u64) as usize, (pos % CHUNK as u64) as usize);
            let chunk = &self.chunks[i];
            let n = (chunk.len() - at).min((end - pos) as usize);
            out.extend_from_slice(&chunk[at..at + n]);
            pos += n as u64;
        }
        out
    }

    /// Writes `bytes` at `offset`, extending the file (with zeros between
    /// the old end and `offset`) as needed.
    pub fn write(&mut self, offset: u64, bytes: &[u8]) {
        let end = offset + bytes.len() as u64;
        if end > self.len {
            self.set_len(end);
        }
        let mut pos = offset;
        let mut rest = bytes;
        while !rest.is_empty() {
            let (i, at) = ((pos / CHUNK as u64) as usize, (pos % CHUNK as u64) as usize);
            let chunk = Arc::make_mut(&mut self.chunks[i]);
            let n = (chunk.len() - at).min(rest.len());
            chunk[at..at + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            pos += n as u64;
        }
    }

    /// Truncates or extends (with zeros) to `len` bytes.
    pub fn set_len(&mut self, len: u64) {
        let chunks = len.div_ceil(CHUNK as u64) as usize;
        self.chunks.truncate(chunks);
        // Resize the last kept chunk, then add full chunks of zeros.
        let last_len = |i: usize| {
            if i + 1 < chunks {
                CHUNK
            } else {
                (len - (i * CHUNK) as u64) as usize
            }
        };
        let kept = self.chunks.len();
        if let Some(last) = self.chunks.last_mut() {
            let want = last_len(kept - 1);
            if last.len() != want {
                Arc::make_mut(last).resize(want, 0);
            }
        }
        while self.chunks.len() < chunks {
            let want = last_len(self.chunks.len());
            self.chunks.push(Arc::new(vec![0; want]));
        }
        self.len = len;
    }

    /// Whether `other` is the same content, judged by sharing: chunks
    /// written since `other` was copied from `self` count as different.
    pub fn same_as(&self, other: &Data) -> bool {
        self.len == other.len
            && self
                .chunks
                .iter()
                .zip(&other.chunks)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }

    /// Bytes held in chunks not shared with `other`.
    pub fn bytes_not_in(&self, other: &Data) -> u64 {
        self.chunks
            .iter()
            .enumerate()
            .filter(|(i, c)| other.chunks.get(*i).is_none_or(|o| !Arc::ptr_eq(c, o)))
            .map(|(_, c)| c.len() as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reads_and_resizes_across_chunks() {
        let mut d = Data::default();
        d.write(10, b"abc");
        assert_eq!(d.len(), 13);
        assert_eq!(d.read(0, 100), [&[0u8; 10][..], b"abc"].concat());
        let big: Vec<u8> = (0..3 * CHUNK + 5).map(|i| (i % 251) as u8).collect();
        d.write(0, &big);
        assert_eq!(d.read(0, big.len() + 10), big);
        assert_eq!(d.read(CHUNK as u64 - 2, 4), &big[CHUNK - 2..CHUNK + 2]);
        d.set_len(CHUNK as u64 + 1);
        assert_eq!(d.read(0, usize::MAX), &big[..CHUNK + 1]);
        d.set_len(CHUNK as u64 + 4);
        assert_eq!(&d.read(CHUNK as u64, 10), &[big[CHUNK], 0, 0, 0]);
        d.set_len(0);
        assert!(d.is_empty() && d.read(0, 10).is_empty());
    }

    #[test]
    fn a_copy_shares_chunks_until_written() {
        let mut d = Data::from_bytes(&vec![7; 3 * CHUNK]);
        let synced = d.clone();
        assert!(d.same_as(&synced));
        d.write(CHUNK as u64 + 1, b"x");
        assert!(!d.same_as(&synced));
        assert_eq!(d.bytes_not_in(&synced), CHUNK as u64);
        assert_eq!(synced.read(CHUNK as u64 + 1, 1), [7]);
        d.set_len(4 * CHUNK as u64);
        assert_eq!(d.bytes_not_in(&synced), 2 * CHUNK as u64);
    }
}
