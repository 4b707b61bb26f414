//! The response body the layer returns: a stored body, the inner body untouched, or the part
//! of the inner body read while trying to store it followed by the rest, streamed.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response that went through [`HttpCache`](crate::HttpCache).
    ///
    /// Its data are [`Bytes`] whatever the inner body's data type, and its errors are the
    /// inner body's. Hits and stored misses are one buffer; every other response streams the
    /// inner body as it comes.
    pub struct CacheBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProjection]
    enum Kind<B: Body> {
        Full { data: Option<Bytes> },
        Streaming { #[pin] body: B },
        Resumed {
            read: VecDeque<Frame<Bytes>>,
            error: Option<B::Error>,
            rest: Option<Pin<Box<B>>>,
        },
    }
}

impl<B: Body> CacheBody<B> {
    /// A body of these bytes (nothing for an empty buffer).
    pub(crate) fn full(data: Bytes) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self {
            kind: Kind::Full { data },
        }
    }

    /// The inner body as it comes.
    pub(crate) fn streaming(body: B) -> Self {
        Self {
            kind: Kind::Streaming { body },
        }
    }

    /// What was read of `rest` (frames, then possibly its error), then the rest of it.
    pub(crate) fn resumed(
        read: VecDeque<Frame<Bytes>>,
        error: Option<B::Error>,
        rest: Option<Pin<Box<B>>>,
    ) -> Self {
        Self {
            kind: Kind::Resumed { read, error, rest },
        }
    }
}

fn to_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
}

impl<B: Body> Body for CacheBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProjection::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProjection::Streaming { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map(to_bytes))),
            KindProjection::Resumed { read, error, rest } => {
                if let Some(frame) = read.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                if let Some(error) = error.take() {
                    return Poll::Ready(Some(Err(error)));
                }
                match rest {
                    Some(body) => body
                        .as_mut()
                        .poll_frame(cx)
                        .map(|frame| frame.map(|frame| frame.map(to_bytes))),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Streaming { body } => body.is_end_stream(),
            Kind::Resumed { read, error, rest } => {
                read.is_empty()
                    && error.is_none()
                    && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Streaming { body } => body.size_hint(),
            Kind::Resumed { read, rest, .. } => {
                let read: u64 = read
                    .iter()
                    .filter_map(|frame| frame.data_ref().map(|d| d.len() as u64))
                    .sum();
                let rest = rest
                    .as_ref()
                    .map_or(SizeHint::with_exact(0), |b| b.size_hint());
                let mut hint = SizeHint::new();
                hint.set_lower(read.saturating_add(rest.lower()));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(read.saturating_add(upper));
                }
                hint
            }
        }
    }
}

impl<B: Body> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Full { .. } => "full",
            Kind::Streaming { .. } => "streaming",
            Kind::Resumed { .. } => "resumed",
        };
        f.debug_struct("CacheBody")
            .field("kind", &kind)
            .field("size_hint", &self.size_hint())
            .finish()
    }
}
