//! [`WebSocket::split`]'s halves, for reading and writing from two tasks,
//! and [`WebSocketWriter::reunite`].

use std::pin::Pin;
use std::task::{Context, Poll};

use duplex_proto::Message;
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Event, WebSocket};
use crate::Error;

/// The writing half of a split [`WebSocket`].
pub struct WebSocketWriter<S> {
    sink: futures_util::stream::SplitSink<WebSocket<S>, Message>,
}

impl<S> WebSocketWriter<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Sends a message.
    pub async fn send(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        futures_util::SinkExt::send(&mut self.sink, message.into()).await
    }

    /// Sends a Close frame with 1000; the reading half sees the `Close` event.
    pub async fn close(&mut self) -> Result<(), Error> {
        futures_util::SinkExt::close(&mut self.sink).await
    }

    /// Puts the halves back together.
    pub fn reunite(self, reader: WebSocketReader<S>) -> WebSocket<S> {
        self.sink
            .reunite(reader.stream)
            .expect("halves of the same WebSocket")
    }
}

impl<S> Sink<Message> for WebSocketWriter<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Error = Error;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.sink).poll_ready(cx)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        Pin::new(&mut self.sink).start_send(item)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.sink).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.sink).poll_close(cx)
    }
}

/// The reading half of a split [`WebSocket`].
pub struct WebSocketReader<S> {
    stream: futures_util::stream::SplitStream<WebSocket<S>>,
}

impl<S> WebSocketReader<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// The next event; `None` after the `Close` event.
    pub async fn next(&mut self) -> Option<Event> {
        futures_util::StreamExt::next(&mut self.stream).await
    }
}

impl<S> Stream for WebSocketReader<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        Pin::new(&mut self.stream).poll_next(cx)
    }
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Splits into a reading half and a writing half that can be used from
    /// different tasks.
    pub fn split(self) -> (WebSocketWriter<S>, WebSocketReader<S>) {
        let (sink, stream) = futures_util::StreamExt::split(self);
        (WebSocketWriter { sink }, WebSocketReader { stream })
    }
}
