//! Sending one [`Broadcast`] to many connections: the frames are made once
//! (compressed once, with `server_no_context_takeover`) and queued by
//! reference on each; [`Fanout`] queues them from outside the connection's
//! task and writes what is queued without waiting, for a hub's fan-out that
//! must never wait on one subscriber.

use std::task::{Context, Poll};

use duplex_proto::Broadcast;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Phase, WebSocket};
use crate::Error;

/// What [`Fanout::try_write_queued`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum TrySend {
    /// Written whole.
    Sent,
    /// Not all written (or the stream failed): the connection's task must
    /// be woken to write the rest, or to meet the error.
    Partly,
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

/// Sends for a hub's fan-out, which writes messages to many connections
/// from outside their own tasks and must never wait on one of them:
/// queueing without writing, and writing what is queued as far as the
/// socket takes it at once. Kept off [`WebSocket`]'s own methods, which an application
/// uses; `duplex-hub` uses these.
pub trait Fanout {
    /// The synchronous half of [`feed_broadcast`](WebSocket::feed_broadcast),
    /// for code that polls (after [`Sink::poll_ready`](futures_sink::Sink::poll_ready) was ready): queues
    /// `broadcast` without writing it.
    fn start_send_broadcast(&mut self, broadcast: &Broadcast) -> Result<(), Error>;

    /// Queues `broadcast` from outside the connection's own task without
    /// writing it, if the connection is open, sends bytes every connection
    /// shares, and has room (less queued than its write high-water mark,
    /// where [`feed`](WebSocket::feed) would wait). `false`: nothing was
    /// done, send it the usual way.
    ///
    /// A hub corks its fan-out with it: each subscriber's output takes
    /// every message published before the hub's flush pass comes round, and
    /// [`try_write_queued`](Self::try_write_queued) then writes them all in
    /// one write, as uWebSockets' corked publish does.
    fn try_queue_broadcast(&mut self, broadcast: &Broadcast) -> bool;

    /// Writes and flushes what is queued, from outside the connection's own
    /// task, as far as the socket takes it at once; never waits.
    /// [`TrySend::Partly`]: bytes are left (or the stream is failing), and
    /// the connection's task must be woken to finish with
    /// [`flush`](WebSocket::flush) (over plain TCP [`next`](WebSocket::next)
    /// finishes it too, as it writes what is queued before reading; a TLS
    /// stream may hold accepted bytes until it is flushed).
    fn try_write_queued(&mut self) -> TrySend;
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

    fn try_queue_broadcast(&mut self, broadcast: &Broadcast) -> bool {
        self.phase == Phase::Running
            && !self.conn.close_sent()
            && self.conn.pending_output_len() < self.write_high_water
            && !self.conn.compresses_alone(broadcast)
            && self.conn.send_broadcast(broadcast).is_ok()
    }

    fn try_write_queued(&mut self) -> TrySend {
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
