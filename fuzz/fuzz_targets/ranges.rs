//! The byte ranges of the blob API (`registry_http::ranges`): an upload
//! chunk's `Content-Range` and a blob GET's `Range`. The input is
//! `<blob size>\n<header value>`; without a size line the value is tried
//! against a few sizes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_http::ranges::{blob_range, content_range};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (sizes, value) = match text.split_once('\n') {
        Some((size, value)) => match size.parse::<u64>() {
            Ok(size) => (vec![size], value),
            Err(_) => return,
        },
        None => (vec![0, 1, 100, u64::MAX], text),
    };
    if let Some((start, end)) = content_range(value) {
        assert!(start <= end);
        assert_eq!(content_range(&format!("{start}-{end}")), Some((start, end)));
    }
    for size in sizes {
        check_blob_range(value, size);
    }
});

/// A range the GET answers lies inside the blob, so `end + 1 - start` is
/// the length it sends and nothing overflows.
fn check_blob_range(value: &str, size: u64) {
    match blob_range(value, size) {
        Ok(Some((start, end))) => {
            assert!(start <= end && end < size, "{start}-{end} of {size}");
            let again = blob_range(&format!("bytes={start}-{end}"), size);
            assert_eq!(again.ok(), Some(Some((start, end))));
        }
        Ok(None) => {}
        Err(registry_core::Error::BlobRangeNotSatisfiable { size: s }) => assert_eq!(s, size),
        Err(e) => panic!("unexpected error {e:?}"),
    }
}
