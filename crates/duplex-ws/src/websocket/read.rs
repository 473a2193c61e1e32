//! The read path: bytes from the socket into the connection and events out,
//! the receive buffer (none while idle; one per thread reused between
//! connections), read-ahead bounded for large frames, the message budget
//! charged as messages arrive and inflate, and the fragment rule.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use duplex_proto::{CloseCode, CloseFrame};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Event, Phase, WebSocket};
use crate::Error;

/// The most a single read reserves for the rest of a large message whose
/// header announced its size, beyond the configured read buffer size. Large
/// enough that a 1 MiB message takes a few reads, not sixty-four; small enough
/// that a header that lies about a 16 MiB frame does not reserve 16 MiB.
const MAX_READ_AHEAD: usize = 1 << 20;

/// What a connection's first read goes through before it has a receive
/// buffer, so that an idle connection holds none.
const FIRST_READ: usize = 512;

/// What a compressed message may inflate to beyond what the shared message
/// budget has left: ordinary messages (a few KiB of JSON) still go through
/// while others' large messages hold the budget, and a connection's own
/// buffers are of this order anyway.
const UNCHARGED_INFLATE: usize = 16 << 10;

thread_local! {
    /// The receive buffer that the last read on this thread made ready and
    /// found nothing for, kept for the next read of any connection on the
    /// thread while it is still in cache (see `WebSocket::poll_read_fresh`).
    static SPARE: Cell<Option<BytesMut>> = const { Cell::new(None) };
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// The heart of the reading side.
    pub(super) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if !self.open_delivered {
            self.open_delivered = true;
            return Poll::Ready(Some(Event::Open));
        }
        loop {
            match self.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::ShuttingDown => return self.poll_shutdown(cx),
                Phase::Ended => {
                    self.phase = Phase::Done;
                    return Poll::Ready(Some(self.close_event()));
                }
                Phase::Running => {}
            }
            if self.parsed_all {
                // Nothing new to parse: straight to writing and reading.
            } else if let Some(event) = self.conn.next_event() {
                match event {
                    Ok(duplex_proto::Event::Message(m)) => {
                        if self.message_started.is_some() {
                            self.message_done();
                        }
                        return Poll::Ready(Some(Event::Message(m)));
                    }
                    Ok(duplex_proto::Event::Ping(_)) => continue,
                    Ok(duplex_proto::Event::Pong(payload)) => {
                        if let Some(keepalive) = &mut self.keepalive {
                            keepalive.on_pong(&payload);
                        }
                        continue;
                    }
                    Ok(duplex_proto::Event::Close(frame)) => {
                        let (code, reason) = match frame {
                            Some(f) => (f.code, f.reason),
                            None => (CloseCode::NO_STATUS, String::new()),
                        };
                        self.close = Some((code, reason, true));
                        self.phase = Phase::ShuttingDown;
                        continue;
                    }
                    Err(e) => {
                        tracing::info!(role = ?self.conn.role(), error = %e, code = %e.close_code(),
                            "failing the connection: the peer broke the protocol");
                        self.close = Some((CloseCode::ABNORMAL, String::new(), false));
                        self.phase = Phase::ShuttingDown;
                        return Poll::Ready(Some(Event::Error(Error::Protocol(e))));
                    }
                }
            } else {
                self.parsed_all = true;
            }
            // Nothing left to parse: before waiting for the socket, write
            // what is queued (pongs and Close answers from the protocol,
            // messages fed by the application) in one go. A full socket
            // must not stop reading.
            if self.conn.wants_write()
                && let Poll::Ready(Err(e)) = self.poll_write_pending(cx)
            {
                return Poll::Ready(Some(self.abort(e)));
            }
            if let Some(timer) = &mut self.close_timer
                && timer.as_mut().poll(cx).is_ready()
            {
                tracing::debug!("closing handshake timed out");
                self.close = Some((CloseCode::ABNORMAL, String::new(), false));
                self.phase = Phase::Ended;
                continue;
            }
            // A message in progress: is it on time, and does it fit the
            // budget? Checked before each read, so a message grows by at
            // most one read past either.
            if (self.message_started.is_some() || self.conn.message_in_progress())
                && let Some(event) = self.check_partial_message()
            {
                return Poll::Ready(Some(event));
            }
            // Back-pressure on the reading side: what the protocol answers by
            // itself (Pongs, the Close) and what the application echoes
            // queue up for a peer that sends but does not read. Past the
            // write buffer, read nothing more from it until the socket
            // takes some (its writability wakes this task): a flood then
            // costs the write buffer, not memory without bound.
            // The write timeout bounds that wait as it bounds a send's.
            let over_high_water = self.conn.pending_output_len() >= self.write_high_water;
            let read = match if over_high_water {
                match self.poll_write_stalled(cx) {
                    // The connection is over; the Close event follows.
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Event::Error(e))),
                    _ => Poll::Pending,
                }
            } else {
                self.poll_read(cx)
            } {
                Poll::Ready(read) => read,
                // The socket is idle: the time to see to keepalive. (Not
                // before each read: a connection with bytes waiting is alive,
                // and the check would cost every message.)
                Poll::Pending => {
                    if self.poll_server_shutdown(cx) {
                        // The Close is queued: write it, and read on until
                        // the peer answers or the close timer runs out.
                        continue;
                    }
                    if self.poll_fragment_timer(cx) {
                        // Out of time: the check above fails it.
                        continue;
                    }
                    return match self.poll_keepalive(cx) {
                        Some(event) => Poll::Ready(Some(event)),
                        None => Poll::Pending,
                    };
                }
            };
            match read {
                Ok(0) => {
                    // The TCP connection ended without a Close frame.
                    self.eof = true;
                    self.close = Some((CloseCode::ABNORMAL, String::new(), false));
                    self.phase = Phase::Done;
                    return Poll::Ready(Some(self.close_event()));
                }
                Ok(_) => {
                    self.parsed_all = false;
                    self.set_inflate_allowance();
                }
                Err(e) => return Poll::Ready(Some(self.abort(e))),
            }
        }
    }

    /// Before parsing what a read brought: a compressed message may inflate
    /// only as far as the budget has left (plus a small allowance every
    /// connection has, so that ordinary messages go through a budget held
    /// by others' large ones), even when it arrived whole in this read and
    /// so is never seen partly received.
    fn set_inflate_allowance(&mut self) {
        if let Some(share) = &self.budget {
            let budget = share.budget();
            let left = budget.limit().saturating_sub(budget.used());
            self.conn
                .set_inflate_allowance(share.held() + left + UNCHARGED_INFLATE);
        }
    }

    /// The message in progress is whole (or gone): its clock stops and its
    /// share of the budget goes back.
    fn message_done(&mut self) {
        // The timer stays, to be reset for the next message: dropping it
        // here allocated one per large message (tests/alloc.rs). It is only
        // polled while a message is in progress; if it fires meanwhile, the
        // task wakes once for nothing.
        self.message_started = None;
        if let Some(share) = &mut self.budget {
            share.resize(0);
        }
    }

    /// Before a read in the middle of a message: fails the connection if
    /// the message is late (1008) or needs more of the budget than is left
    /// (1013).
    fn check_partial_message(&mut self) -> Option<Event> {
        if !self.conn.message_in_progress() {
            self.message_done();
            return None;
        }
        let now = tokio::time::Instant::now();
        let started = *self.message_started.get_or_insert(now);
        if let Some(timeout) = self.fragment_timeout
            && now.duration_since(started) >= timeout
        {
            return Some(self.fail_message(
                CloseCode::POLICY_VIOLATION,
                "message not finished in time",
                Error::MessageTimeout(timeout),
            ));
        }
        let held = self.conn.message_bytes_held();
        if let Some(share) = &mut self.budget
            && !share.resize(held)
        {
            let limit = share.budget().limit();
            return Some(self.fail_message(
                CloseCode::TRY_AGAIN_LATER,
                "server busy: message budget exhausted",
                Error::MessageBudget { limit, held },
            ));
        }
        None
    }

    /// Fails the connection over the message in progress: a Close with
    /// `code` goes out, the TCP connection ends, and the application sees
    /// `error` and then a Close event reported as 1006, as for any failure.
    fn fail_message(&mut self, code: CloseCode, reason: &str, error: Error) -> Event {
        tracing::info!(role = ?self.conn.role(), %error, %code, "failing the connection");
        // Fails only if a Close was sent already: then it stands.
        let _ = self.conn.send_close(Some(CloseFrame::new(code, reason)));
        self.message_started = None;
        self.fragment_timer = None;
        self.close = Some((CloseCode::ABNORMAL, String::new(), false));
        self.phase = Phase::ShuttingDown;
        Event::Error(error)
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, Error>> {
        // Room for a read buffer's worth or, inside a message whose header
        // said how large it is, for exactly the rest of it: a large message
        // then comes in few reads, and the buffer settles at the size that
        // holds one (asking for more would make `reserve` move the partial
        // message within the buffer, or grow it again later).
        let size = match self.conn.bytes_needed() {
            0 => self.read_buffer_size,
            needed => needed.min(MAX_READ_AHEAD),
        };
        let read = if self.conn.input_buffer().is_empty() {
            self.poll_read_fresh(cx, size)
        } else {
            // The rest of a frame: into the buffer that holds its start.
            self.poll_read_buffered(cx, size)
        };
        if !self.timers_made && matches!(read, Poll::Ready(Ok(n)) if n > 0) {
            self.make_timers();
        }
        read
    }

    /// A read with every byte received so far parsed: into whichever
    /// buffer is likely still in cache. That is the connection's own when
    /// its last read filled it; otherwise the thread's spare ([`SPARE`]),
    /// which the last read on this thread that found nothing left behind.
    /// So connections that take turns on a thread (an echo of 16 KiB
    /// messages to 500 clients) read, unmask and write from one buffer
    /// that stays in cache, rather than from 500 that the messages keep
    /// pushing out of it; and an idle connection holds no buffer.
    fn poll_read_fresh(&mut self, cx: &mut Context<'_>, size: usize) -> Poll<Result<usize, Error>> {
        let mut spare = SPARE.take().unwrap_or_default();
        let mut buf = self.conn.input_buffer();
        // `try_reclaim` fails while a message read earlier still refers to
        // the buffer (an echo not written yet, a message the application
        // kept): that one is not reused.
        if !(self.input_warm && buf.try_reclaim(size)) && spare.try_reclaim(size) {
            buf.swap_empty(&mut spare);
        }
        let read = if buf.capacity() == 0 {
            self.poll_read_first(cx, size)
        } else {
            self.poll_read_buffered(cx, size)
        };
        let filled = matches!(read, Poll::Ready(Ok(n)) if n > 0);
        if !filled {
            // Nothing came: the buffer just made ready becomes the
            // thread's spare, for the next read of any connection, and
            // this connection keeps what the thread had (mostly nothing).
            let mut buf = self.conn.input_buffer();
            if buf.capacity() > 0 {
                buf.swap_empty(&mut spare);
            }
        }
        self.input_warm = filled;
        if spare.capacity() > 0 {
            SPARE.set(Some(spare));
        }
        read
    }

    /// A read into the receive buffer, with room for `size` more bytes.
    fn poll_read_buffered(
        &mut self,
        cx: &mut Context<'_>,
        size: usize,
    ) -> Poll<Result<usize, Error>> {
        let mut buf = self.conn.input_buffer();
        buf.reserve(size);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut buf).map_err(Error::from)
    }

    /// A read with no receive buffer at hand: into the stack, allocating
    /// only once bytes arrived, so that an idle connection holds none.
    fn poll_read_first(&mut self, cx: &mut Context<'_>, size: usize) -> Poll<Result<usize, Error>> {
        let mut first = [MaybeUninit::<u8>::uninit(); FIRST_READ];
        let mut first = ReadBuf::uninit(&mut first);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut first))?;
        if !first.filled().is_empty() {
            let mut buf = self.conn.input_buffer();
            buf.reserve(size);
            buf.extend_from_slice(first.filled());
        }
        Poll::Ready(Ok(first.filled().len()))
    }
}
