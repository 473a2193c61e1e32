//! [`InputBuffer`]: the receive buffer as an I/O layer sees it, append-only.
//!
//! An I/O layer reads from its socket straight into the connection's buffer
//! (no copy through [`Connection::receive_data`](crate::Connection::receive_data)).
//! It must not be able to change bytes already there: the connection may
//! have validated some of them already (a text frame's UTF-8, checked as it
//! arrives), and [`Utf8Bytes`](crate::Utf8Bytes) hands them out as `str`
//! without checking again. So the handle gives room to write into and a
//! way to say how much was written, and no access to what is stored.
//!
//! ```compile_fail
//! use duplex_proto::{Connection, Limits, Role};
//! let mut conn = Connection::new(Role::Server, Limits::default());
//! conn.receive_data(b"\x81");
//! conn.input_buffer()[0] = 0; // no: the bytes already received are not reachable
//! ```

use bytes::buf::UninitSlice;
use bytes::{BufMut, BytesMut};

/// Room at the end of a connection's receive buffer
/// ([`Connection::input_buffer`](crate::Connection::input_buffer)): append
/// through [`BufMut`] (what `tokio_util::io::poll_read_buf` takes) or
/// [`extend_from_slice`](Self::extend_from_slice); what is stored already
/// cannot be read or changed through it.
#[derive(Debug)]
pub struct InputBuffer<'a> {
    buf: &'a mut BytesMut,
}

impl<'a> InputBuffer<'a> {
    pub(crate) fn new(buf: &'a mut BytesMut) -> Self {
        InputBuffer { buf }
    }

    /// Bytes received and not parsed yet.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no byte is waiting to be parsed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// How many bytes the buffer holds without growing; 0 before the first
    /// read, so that an idle connection holds no buffer.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Makes room for at least `additional` more bytes.
    pub fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
    }

    /// Makes room for at least `additional` more bytes if that needs no
    /// allocation ([`BytesMut::try_reclaim`]): false while a message handed
    /// out of the buffer still refers to the storage, or when it is too
    /// small.
    pub fn try_reclaim(&mut self, additional: usize) -> bool {
        self.buf.try_reclaim(additional)
    }

    /// Exchanges the storage with `other` if neither holds a byte, and
    /// says whether it did. An I/O layer keeps a spare buffer of its own
    /// this way (one still in cache, shared by the connections of a
    /// thread between their reads): with no byte on either side, nothing
    /// already checked can change.
    pub fn swap_empty(&mut self, other: &mut BytesMut) -> bool {
        if !self.buf.is_empty() || !other.is_empty() {
            return false;
        }
        std::mem::swap(self.buf, other);
        true
    }

    /// Appends `bytes`.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
}

// SAFETY: every method forwards to `BytesMut`'s own `BufMut`, which upholds
// the trait's contract: `chunk_mut` is the spare capacity past the stored
// bytes, and `advance_mut` only counts bytes the caller wrote there. So
// this handle can only append; the stored bytes stay out of reach.
unsafe impl BufMut for InputBuffer<'_> {
    fn remaining_mut(&self) -> usize {
        self.buf.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller guarantees, as `BufMut::advance_mut` requires,
        // that the next `cnt` bytes of `chunk_mut` were initialised.
        unsafe { self.buf.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.buf.chunk_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_through_buf_mut_and_by_slice_and_keeps_what_was_there() {
        let mut storage = BytesMut::from(&b"ab"[..]);
        let mut input = InputBuffer::new(&mut storage);
        assert_eq!(input.len(), 2);
        input.reserve(16);
        assert!(input.capacity() >= 18);
        // As a socket read does: write into the spare room, then advance.
        let room = input.chunk_mut();
        room[..3].copy_from_slice(b"cde");
        // SAFETY: the three bytes were just written.
        unsafe { input.advance_mut(3) };
        input.put_slice(b"f");
        input.extend_from_slice(b"g");
        assert_eq!(input.len(), 7);
        assert_eq!(&storage[..], b"abcdefg");
    }

    #[test]
    fn storage_is_exchanged_only_when_neither_side_holds_a_byte() {
        let mut storage = BytesMut::with_capacity(64);
        let mut spare = BytesMut::from(&b"x"[..]);
        assert!(!InputBuffer::new(&mut storage).swap_empty(&mut spare));
        assert_eq!(&spare[..], b"x");
        spare.clear();
        let spare_ptr = spare.as_ptr();
        storage.extend_from_slice(b"held");
        assert!(!InputBuffer::new(&mut storage).swap_empty(&mut spare));
        assert_eq!(&storage[..], b"held");
        storage.clear();
        let storage_ptr = storage.as_ptr();
        assert!(InputBuffer::new(&mut storage).swap_empty(&mut spare));
        assert_eq!((storage.as_ptr(), spare.as_ptr()), (spare_ptr, storage_ptr));
    }

    #[test]
    fn reclaims_room_only_once_nothing_refers_to_the_storage() {
        let mut storage = BytesMut::with_capacity(64);
        storage.extend_from_slice(&[1; 64]);
        let handed_out = storage.split_to(64).freeze();
        let mut input = InputBuffer::new(&mut storage);
        assert!(!input.try_reclaim(64), "a message still refers to it");
        drop(handed_out);
        assert!(input.try_reclaim(64));
        assert!(input.capacity() >= 64);
        assert!(!InputBuffer::new(&mut BytesMut::new()).try_reclaim(1));
    }
}
