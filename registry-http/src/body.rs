//! The response body type: empty, a buffer, or a stream of blob bytes.

use bytes::Bytes;
use futures::TryStreamExt;
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use registry_core::blob::ByteStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn stream(s: ByteStream) -> Body {
    StreamBody::new(s.map_ok(Frame::data).map_err(BoxError::from)).boxed_unsync()
}

/// A request body as a byte stream for the blob store.
pub fn request_stream(body: hyper::body::Incoming) -> ByteStream {
    let frames = http_body_util::BodyStream::new(body);
    Box::pin(
        TryStreamExt::map_err(frames, std::io::Error::other)
            .try_filter_map(|frame| futures::future::ready(Ok(frame.into_data().ok()))),
    )
}
