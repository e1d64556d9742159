//! The byte ranges of the blob API, read from header text: the
//! `Content-Range` of an upload chunk and the `Range` of a blob GET. Pure
//! functions of the header value, so the fuzz targets run the code the
//! server runs.

use registry_core::Error;

/// `Content-Range: <start>-<end>` of an upload chunk, as inclusive bounds.
/// `None` when the value is malformed or `start > end` (a 416 per the spec).
pub fn content_range(value: &str) -> Option<(u64, u64)> {
    // Tolerate the RFC 9110 form some clients send ("bytes 0-9/*").
    let text = value.strip_prefix("bytes ").unwrap_or(value);
    let text = text.split('/').next().unwrap_or("");
    let (a, b) = text.split_once('-')?;
    let (a, b) = (a.parse::<u64>().ok()?, b.parse::<u64>().ok()?);
    (a <= b).then_some((a, b))
}

/// The part of a blob of `size` bytes a GET with `Range: value` is
/// answered with, as inclusive bounds (`start <= end < size`). `Ok(None)`
/// means the whole blob; a value that is malformed, asks for more than one
/// range or lies past the end is a 416.
pub fn blob_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, Error> {
    let one = std::num::NonZeroUsize::MIN;
    let ranges = http_range_header::parse_range_header_with_max_ranges(value, one)
        .and_then(|r| r.validate(size))
        .map_err(|_| Error::BlobRangeNotSatisfiable { size })?;
    Ok(ranges.into_iter().next().map(|r| (*r.start(), *r.end())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_ranges() {
        assert_eq!(content_range("0-9"), Some((0, 9)));
        assert_eq!(content_range("bytes 10-19/*"), Some((10, 19)));
        assert_eq!(content_range("5-5/100"), Some((5, 5)));
        for bad in ["", "9-0", "a-b", "0-", "-9", "bytes=0-9", "0-9-10"] {
            assert_eq!(content_range(bad), None, "{bad:?} must be refused");
        }
    }

    #[test]
    fn blob_ranges() {
        assert_eq!(blob_range("bytes=0-9", 100).unwrap(), Some((0, 9)));
        assert_eq!(blob_range("bytes=90-", 100).unwrap(), Some((90, 99)));
        assert_eq!(blob_range("bytes=-10", 100).unwrap(), Some((90, 99)));
        assert_eq!(blob_range("bytes=0-1000", 100).unwrap(), Some((0, 99)));
        for bad in ["bytes=100-", "bytes=0-1,5-6", "items=0-1", "bytes=5-2", ""] {
            assert!(
                matches!(
                    blob_range(bad, 100),
                    Err(Error::BlobRangeNotSatisfiable { size: 100 })
                ),
                "{bad:?} must be refused"
            );
        }
    }
}
