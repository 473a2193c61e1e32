//! Sending one [`Broadcast`] to many connections: the frames are made once
//! (compressed once, with `server_no_context_takeover`) and queued by
//! reference on each; `try_send_broadcast` writes only to an idle
//! connection, for a hub's fan-out that must never wait on one subscriber.

use std::task::{Context, Poll};

use duplex_proto::Broadcast;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Phase, WebSocket};
use crate::Error;

/// What [`Fanout::try_send_broadcast`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum TrySend {
    /// Written whole.
    Sent,
    /// Queued, and not all written: the connection's task must be woken to
    /// write the rest.
    Partly,
    /// Nothing done: the connection is busy (something is queued already),
    /// closing, or compresses for itself. Send it the usual way.
    Busy,
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Sends a message that many connections send, compressing it at most
    /// once for all of them (see [`Broadcast`]): the way to fan one message
    /// out to many subscribers with permessage-deflate.
    pub async fn send_broadcast(&mut self, broadcast: &Broadcast) -> Result<(), Error> {
        self.feed_broadcast(broadcast).await?;
        self.flush().await
    }

    /// [`feed`](Self::feed) for a [`Broadcast`].
    pub async fn feed_broadcast(&mut self, broadcast: &Broadcast) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.poll_ready_inner(cx)).await?;
        self.conn.send_broadcast(broadcast)?;
        Ok(())
    }
}

/// Sends for a hub's fan-out, which writes one message to many
/// connections from outside their own tasks and must never wait on one
/// of them: queueing without writing, and writing only to an idle
/// connection. Kept off [`WebSocket`]'s own methods, which an application
/// uses; `duplex-hub` uses these.
pub trait Fanout {
    /// The synchronous half of [`feed_broadcast`](WebSocket::feed_broadcast),
    /// for code that polls (after [`Sink::poll_ready`](futures_sink::Sink::poll_ready) was ready): queues
    /// `broadcast` without writing it.
    fn start_send_broadcast(&mut self, broadcast: &Broadcast) -> Result<(), Error>;

    /// Sends `broadcast` from outside the connection's own task, if the
    /// connection is idle: open, with nothing queued, and sending bytes
    /// that every connection shares (no compression of its own). Writes
    /// what the socket takes at once and never waits.
    ///
    /// This is how a publisher fans a message out to thousands of
    /// subscribers in one pass, as uWebSockets' publish does, instead of
    /// waking each subscriber's task to write one frame: an idle
    /// subscriber costs its write and little else. What the socket did not
    /// take stays queued ([`TrySend::Partly`]): the connection's own task
    /// must then be woken to finish the write with [`flush`](WebSocket::flush).
    /// (Over a stream that does not buffer, plain TCP, [`next`](WebSocket::next)
    /// finishes it too, as it writes what is queued before reading; a TLS
    /// stream may hold accepted bytes until it is flushed.)
    fn try_send_broadcast(&mut self, broadcast: &Broadcast) -> TrySend;
}

impl<S> Fanout for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn start_send_broadcast(&mut self, broadcast: &Broadcast) -> Result<(), Error> {
        if self.phase != Phase::Running {
            return Err(Error::Closed);
        }
        self.conn.send_broadcast(broadcast)?;
        Ok(())
    }

    fn try_send_broadcast(&mut self, broadcast: &Broadcast) -> TrySend {
        if self.phase != Phase::Running
            || self.conn.close_sent()
            || self.conn.wants_write()
            || self.conn.compresses_alone(broadcast)
            || self.conn.send_broadcast(broadcast).is_err()
        {
            return TrySend::Busy;
        }
        // Not the caller's task: nobody is to be woken from here (the
        // caller wakes the connection's task if bytes are left), and the
        // caller's cooperative budget must not make the write look full.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut write = std::pin::pin!(tokio::task::unconstrained(std::future::poll_fn(
            |cx| self.poll_write_pending(cx)
        )));
        match write.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(())) => TrySend::Sent,
            // An error stays for the connection's task to meet at its next
            // write or read, which ends the connection.
            Poll::Ready(Err(_)) | Poll::Pending => TrySend::Partly,
        }
    }
}
