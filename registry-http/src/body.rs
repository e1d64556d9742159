//! Body types: the response body (empty, a buffer, or a stream of blob
//! bytes), and the request body as handlers see it, both counted for the
//! byte metrics; lending a request body to the store, and draining what is
//! left of a refused one so its client reads the refusal.

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

/// Most of a refused request's body that is read (and dropped) so that the
/// client gets to read the refusal instead of a broken pipe; the connection
/// of a longer one is cut off.
pub const DRAIN_LIMIT: u64 = 64 << 20;

/// Reads and drops what is left of a request body, up to `limit` bytes.
pub async fn drain<B: HttpBody<Data = Bytes> + Unpin>(mut body: B, limit: u64) {
    let mut read = 0u64;
    while read <= limit {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => break,
        }
    }
}

/// A request body lent to the store as a byte stream. When the store stops
/// reading early (a full disk, a limit, a refusal before the first byte),
/// what it left comes back through [`Unread`], so the handler can drain it
/// before it answers.
pub fn lend(body: ReqBody) -> (ByteStream, Unread) {
    let (back, unread) = tokio::sync::oneshot::channel();
    let lent = Lent {
        body: Some(body),
        back: Some(back),
    };
    (Box::pin(lent), Unread(unread))
}

/// The part of a lent body the store did not read.
pub struct Unread(tokio::sync::oneshot::Receiver<ReqBody>);

impl Unread {
    /// Drains it (up to [`DRAIN_LIMIT`]) if the call that had the body
    /// failed; the stream has been dropped by then, so the body is back.
    pub async fn drain_if_failed<T, E>(mut self, result: &Result<T, E>) {
        if result.is_err()
            && let Ok(body) = self.0.try_recv()
        {
            drain(body, DRAIN_LIMIT).await;
        }
    }
}

struct Lent {
    body: Option<ReqBody>,
    back: Option<tokio::sync::oneshot::Sender<ReqBody>>,
}

impl futures::Stream for Lent {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            return match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(data))),
                    Err(_) => continue, // trailers
                },
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let (Some(body), Some(back)) = (self.body.take(), self.back.take()) {
            let _ = back.send(body);
        }
    }
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
