//! The ceiling: the least work any WebSocket server can do, single-threaded.
//!
//! After a real opening handshake (`bench_peers::raw_handshake`) it echoes frames
//! byte-for-byte, changed only as the protocol forces: masked client frames go back as
//! unmasked server frames (header rewritten 4 bytes shorter, payload unmasked in place),
//! a ping goes back as a pong, and a close frame is echoed and then the TCP connection
//! is shut down (the close handshake). It parses only frame headers: no message
//! reassembly, no UTF-8 check, no limits. Payloads stream through a fixed buffer, so a
//! 1 MiB frame is never held whole. A read that holds one frame (the usual case in a
//! ping-pong benchmark) is echoed with no copy: the new header is written right-aligned
//! against the payload and the same bytes go back out. An idle connection holds no
//! buffer at all.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BUF: usize = 256 * 1024;

#[derive(Clone, Copy)]
enum State {
    /// Waiting for (the rest of) a frame header.
    Header,
    /// Inside a payload: bytes still to come, the mask key rotated to the next byte,
    /// and whether this is a close frame.
    Payload {
        remaining: u64,
        key: [u8; 4],
        close: bool,
    },
}

/// XORs `data` with the 4-byte mask `key` (key[0] applies to data[0]), 8 bytes at a time.
fn unmask(data: &mut [u8], key: [u8; 4]) {
    let k = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().expect("8 bytes")) ^ k;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// What one pass over the buffer produced.
struct Pass {
    /// The bytes to write back are `buf[out.0..out.1]`.
    out: (usize, usize),
    /// Bytes of input consumed; the rest is an incomplete header.
    consumed: usize,
    /// A close frame was echoed completely: shut down after writing.
    closed: bool,
}

/// Turns the client frames in `buf` into server frames, in place.
fn process(buf: &mut [u8], state: &mut State) -> Pass {
    let mut pos = 0;
    let mut out: Option<(usize, usize)> = None;
    loop {
        match *state {
            State::Header => {
                let avail = &buf[pos..];
                if avail.len() < 2 {
                    break;
                }
                let (b0, b1) = (avail[0], avail[1]);
                let masked = b1 & 0x80 != 0;
                let ext = match b1 & 0x7f {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                let h = 2 + ext + if masked { 4 } else { 0 };
                if avail.len() < h {
                    break;
                }
                let len = match ext {
                    0 => u64::from(b1 & 0x7f),
                    2 => u64::from(u16::from_be_bytes([avail[2], avail[3]])),
                    _ => u64::from_be_bytes(avail[2..10].try_into().expect("8 bytes")),
                };
                let key = if masked {
                    [avail[h - 4], avail[h - 3], avail[h - 2], avail[h - 1]]
                } else {
                    [0; 4]
                };
                let opcode = b0 & 0x0f;
                let new_b0 = if opcode == 0x9 { (b0 & 0xf0) | 0xa } else { b0 };
                let new_h = 2 + ext;
                // First frame of this pass: right-align the new header against its
                // payload so that nothing needs to move.
                let (start, mut w) = out.unwrap_or((pos + h - new_h, pos + h - new_h));
                buf.copy_within(pos + 2..pos + 2 + ext, w + 2);
                buf[w] = new_b0;
                buf[w + 1] = b1 & 0x7f;
                w += new_h;
                out = Some((start, w));
                pos += h;
                *state = State::Payload {
                    remaining: len,
                    key,
                    close: opcode == 0x8,
                };
            }
            State::Payload {
                remaining,
                key,
                close,
            } => {
                let (start, mut w) = out.unwrap_or((pos, pos));
                let take = remaining.min((buf.len() - pos) as u64) as usize;
                if take == 0 && remaining > 0 {
                    break;
                }
                unmask(&mut buf[pos..pos + take], key);
                if w != pos {
                    buf.copy_within(pos..pos + take, w);
                }
                w += take;
                pos += take;
                out = Some((start, w));
                let remaining = remaining - take as u64;
                if remaining > 0 {
                    let r = take % 4;
                    *state = State::Payload {
                        remaining,
                        key: [key[r], key[(r + 1) % 4], key[(r + 2) % 4], key[(r + 3) % 4]],
                        close,
                    };
                    break;
                }
                *state = State::Header;
                if close {
                    return Pass {
                        out: (start, w),
                        consumed: pos,
                        closed: true,
                    };
                }
            }
        }
    }
    Pass {
        out: out.unwrap_or((0, 0)),
        consumed: pos,
        closed: false,
    }
}

async fn handle(mut stream: TcpStream) {
    let Ok(rest) = bench_peers::raw_handshake(&mut stream).await else {
        return;
    };
    // An idle connection holds no buffer: it is allocated when the first frame arrives.
    if rest.is_empty() && stream.readable().await.is_err() {
        return;
    }
    let mut buf = vec![0u8; BUF.max(rest.len())];
    buf[..rest.len()].copy_from_slice(&rest);
    let mut filled = rest.len();
    let mut state = State::Header;
    loop {
        let pass = process(&mut buf[..filled], &mut state);
        let (start, end) = pass.out;
        if end > start && stream.write_all(&buf[start..end]).await.is_err() {
            return;
        }
        if pass.closed {
            let _ = stream.shutdown().await;
            return;
        }
        buf.copy_within(pass.consumed..filled, 0);
        filled -= pass.consumed;
        match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
    }
}

fn main() {
    bench_peers::serve(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(b0: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut f = vec![b0];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![b0];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// Feeds `input` in chunks of `chunk` bytes through `process`, as the server does.
    fn run(input: &[u8], chunk: usize) -> (Vec<u8>, bool) {
        let mut state = State::Header;
        let mut buf = vec![0u8; 64];
        let mut filled = 0;
        let mut output = Vec::new();
        for piece in input.chunks(chunk) {
            if buf.len() < filled + piece.len() {
                buf.resize(filled + piece.len(), 0);
            }
            buf[filled..filled + piece.len()].copy_from_slice(piece);
            filled += piece.len();
            let pass = process(&mut buf[..filled], &mut state);
            output.extend_from_slice(&buf[pass.out.0..pass.out.1]);
            if pass.closed {
                return (output, true);
            }
            buf.copy_within(pass.consumed..filled, 0);
            filled -= pass.consumed;
        }
        (output, false)
    }

    #[test]
    fn frames_in_any_chunking() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
        let mid: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut input = client_frame(0x81, b"hello", key);
        input.extend(client_frame(0x82, &mid, key));
        input.extend(client_frame(0x89, b"ping", key));
        input.extend(client_frame(0x82, &big, key));
        input.extend(client_frame(0x02, b"frag", key));
        input.extend(client_frame(0x80, b"", key));
        input.extend(client_frame(0x88, &[0x03, 0xe8], key));
        input.extend(client_frame(0x81, b"after close", key));
        let mut want = server_frame(0x81, b"hello");
        want.extend(server_frame(0x82, &mid));
        want.extend(server_frame(0x8a, b"ping"));
        want.extend(server_frame(0x82, &big));
        want.extend(server_frame(0x02, b"frag"));
        want.extend(server_frame(0x80, b""));
        want.extend(server_frame(0x88, &[0x03, 0xe8]));
        for chunk in [1, 2, 3, 5, 13, 64, 1000, 4096, input.len()] {
            let (got, closed) = run(&input, chunk);
            assert!(closed, "chunk {chunk}");
            assert!(got == want, "chunk {chunk}");
        }
    }
}
