//! Keep a value alive for exactly as long as a response body streams: per-call
//! credentials (calls without a session) are revoked when the guard drops.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{BoxError, ProxyBody};

struct Guarded<G> {
    inner: ProxyBody,
    _guard: G,
}

impl<G: Unpin> Body for Guarded<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pub fn guard<G: Send + Unpin + 'static>(inner: ProxyBody, guard: G) -> ProxyBody {
    Guarded {
        inner,
        _guard: guard,
    }
    .boxed_unsync()
}
