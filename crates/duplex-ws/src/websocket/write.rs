//! The write path: queued frames to the socket in vectored writes, bounded
//! by the write buffer, and the write timeout that fails a connection whose
//! peer stopped taking bytes.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use duplex_proto::{CloseCode, Connection};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Phase, WebSocket};
use crate::Error;

/// The most slices one vectored write takes: a few frames whose large
/// payloads were queued by reference, each between two runs of headers.
const MAX_WRITE_SLICES: usize = 16;

/// The error of a poll that may still be pending (pending is fine: the
/// write finishes later, before the next read).
pub(super) fn ready_now(poll: Poll<Result<(), Error>>) -> Result<(), Error> {
    match poll {
        Poll::Ready(result) => result,
        Poll::Pending => Ok(()),
    }
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Room to queue a message: waits, writing, while the pending output
    /// is over the high-water mark.
    #[inline]
    pub(super) fn poll_ready_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.conn.close_sent() || self.phase != Phase::Running {
            return Poll::Ready(Err(Error::Closed));
        }
        let high_water = self.write_high_water;
        if self.conn.pending_output_len() < high_water {
            // The path of nearly every message: kept small enough to inline.
            return Poll::Ready(Ok(()));
        }
        self.poll_write_until(cx, |conn| conn.pending_output_len() < high_water)
    }

    /// Everything queued written and flushed, for the application.
    pub(super) fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        ready!(self.poll_write_until(cx, |conn| !conn.wants_write()))?;
        Pin::new(&mut self.stream)
            .poll_flush(cx)
            .map_err(Error::from)
    }

    /// Writes until `done`, on behalf of the application, bounded by the
    /// write timeout: the wait fails when the socket takes no byte for that
    /// long. (The reading side needs no such bound: it never waits on a
    /// write, and keepalive covers a silent peer.)
    fn poll_write_until(
        &mut self,
        cx: &mut Context<'_>,
        done: impl Fn(&Connection) -> bool,
    ) -> Poll<Result<(), Error>> {
        while !done(&self.conn) {
            match self.poll_write_some(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    self.write_mark = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return self.poll_write_stalled(cx),
            }
        }
        self.write_mark = None;
        Poll::Ready(Ok(()))
    }

    /// The socket is full: start the write timer, or restart it if bytes
    /// went out since it started, and fail the connection when it runs out.
    pub(super) fn poll_write_stalled(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let Some(timeout) = self.write_timeout else {
            return Poll::Pending;
        };
        let written = self.written;
        let deadline = tokio::time::Instant::now() + timeout;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if self.write_mark != Some(written) {
            // Started, or bytes went out since: the wait starts again.
            self.write_mark = Some(written);
            timer.as_mut().reset(deadline);
        }
        ready!(timer.as_mut().poll(cx));
        self.write_mark = None;
        tracing::info!(role = ?self.conn.role(), ?timeout,
            "failing the connection: the peer stopped reading");
        // No Close frame: the socket would not take it.
        self.close = Some((CloseCode::ABNORMAL, String::new(), false));
        self.phase = Phase::Ended;
        Poll::Ready(Err(Error::WriteTimeout(timeout)))
    }

    /// Writes once from the pending output: one vectored write when large
    /// payloads were queued by reference between frame headers.
    fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // Only with a payload queued by reference is the output in more
        // than one piece: small echoes skip gathering slices.
        let whole = self.conn.pending_output().len() == self.conn.pending_output_len();
        let n = if whole || !self.stream.is_write_vectored() {
            ready!(Pin::new(&mut self.stream).poll_write(cx, self.conn.pending_output()))?
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_WRITE_SLICES];
            let count = self.conn.pending_output_vectored(&mut slices);
            ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, &slices[..count]))?
        };
        if n == 0 {
            return Poll::Ready(Err(Error::Io(std::io::ErrorKind::WriteZero.into())));
        }
        self.conn.advance_output(n);
        self.written = self.written.wrapping_add(n as u64);
        Poll::Ready(Ok(()))
    }

    /// Writes all pending output and flushes the stream.
    pub(super) fn poll_write_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while self.conn.wants_write() {
            ready!(self.poll_write_some(cx))?;
        }
        ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }
}
