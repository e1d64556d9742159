//! Body types: the response body (empty, a buffer, or a stream of blob
//! bytes), and the request body as handlers see it, both counted for the
//! byte metrics.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::TryStreamExt;
use http_body::{Body as HttpBody, SizeHint};
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use prometheus::IntCounter;
use registry_core::blob::ByteStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;
/// A request body, counted into the received-bytes metric as it is read.
pub type ReqBody = Counted<Incoming>;

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
pub fn request_stream(body: ReqBody) -> ByteStream {
    let frames = http_body_util::BodyStream::new(body);
    Box::pin(
        TryStreamExt::map_err(frames, std::io::Error::other)
            .try_filter_map(|frame| futures::future::ready(Ok(frame.into_data().ok()))),
    )
}

/// A body that adds the size of every data frame to a counter.
pub struct Counted<B> {
    inner: B,
    counter: IntCounter,
}

impl<B> Counted<B> {
    pub fn new(inner: B, counter: IntCounter) -> Counted<B> {
        Counted { inner, counter }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.counter.inc_by(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
