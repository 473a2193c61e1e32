//! Test-only DEFLATE (RFC 1951) tools, to check the encoder from outside
//! and to make inputs zlib would not: a bit writer and reader, canonical
//! Huffman codes, a reader of dynamic blocks' codes, a decompression bomb,
//! and the longest match distance a compressed message uses.

use super::TAIL;
use super::tests::HELLO;

/// LSB-first bit writer.
#[derive(Default)]
pub(super) struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    pub(super) fn bits(&mut self, value: u32, n: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += n;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// Huffman codes go most significant bit first (RFC 1951 §3.1.1).
    pub(super) fn code(&mut self, code: u32, len: u32) {
        self.bits(code.reverse_bits() >> (32 - len), len);
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// A message that inflates to `1 + 258 * ceil(size / 258)` zeros: one
/// fixed-Huffman block of a literal zero and length-258 copies at
/// distance 1, then an empty stored block's header as a sync flush
/// leaves it (its `00 00 ff ff` removed).
pub(super) fn zeros_bomb(size: usize) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.bits(0, 1); // BFINAL
    w.bits(1, 2); // BTYPE 01: fixed Huffman
    w.code(0x30, 8); // literal 0
    for _ in 0..size.div_ceil(258) {
        w.code(0xc5, 8); // symbol 285: length 258
        w.code(0, 5); // distance code 0: distance 1
    }
    w.code(0, 7); // end of block
    w.bits(0, 3); // stored block header
    w.finish()
}

pub(super) struct BitReader<'a> {
    data: &'a [u8],
    bit: usize,
}

impl BitReader<'_> {
    pub(super) fn bits(&mut self, n: u32) -> u32 {
        let mut v = 0;
        for i in 0..n {
            let byte = self.data[self.bit / 8];
            v |= u32::from((byte >> (self.bit % 8)) & 1) << i;
            self.bit += 1;
        }
        v
    }
}

/// A canonical Huffman code from code lengths (RFC 1951 §3.2.2).
pub(super) struct Huffman {
    counts: [i32; 16],
    symbols: Vec<u16>,
}

impl Huffman {
    pub(super) fn new(lengths: &[u8]) -> Self {
        let mut counts = [0; 16];
        for &l in lengths {
            counts[usize::from(l)] += 1;
        }
        counts[0] = 0;
        let mut symbols: Vec<u16> = (0..lengths.len() as u16)
            .filter(|&s| lengths[usize::from(s)] != 0)
            .collect();
        symbols.sort_by_key(|&s| lengths[usize::from(s)]);
        Huffman { counts, symbols }
    }

    pub(super) fn decode(&self, r: &mut BitReader<'_>) -> usize {
        let (mut code, mut first, mut index) = (0, 0, 0);
        for len in 1..16 {
            code |= r.bits(1) as i32;
            let count = self.counts[len];
            if code - first < count {
                return usize::from(self.symbols[(index + code - first) as usize]);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        panic!("invalid Huffman code");
    }
}

const LENGTH_EXTRA: [u32; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DISTANCE_BASE: [usize; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DISTANCE_EXTRA: [u32; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// The largest match distance in one message as `compress` wrote it.
pub(super) fn max_distance(message: &[u8]) -> usize {
    let data = [message, &TAIL].concat();
    let mut r = BitReader {
        data: &data,
        bit: 0,
    };
    let mut furthest = 0;
    while r.bit < data.len() * 8 {
        let last = r.bits(1);
        let (literals, distances) = match r.bits(2) {
            0 => {
                r.bit = r.bit.div_ceil(8) * 8;
                let len = r.bits(16) as usize;
                r.bits(16);
                r.bit += len * 8;
                continue;
            }
            1 => {
                let mut lengths = [8u8; 288];
                lengths[144..256].fill(9);
                lengths[256..280].fill(7);
                (Huffman::new(&lengths), Huffman::new(&[5; 30]))
            }
            2 => dynamic_codes(&mut r),
            _ => panic!("reserved block type"),
        };
        loop {
            let symbol = literals.decode(&mut r);
            if symbol < 256 {
                continue;
            }
            if symbol == 256 {
                break;
            }
            r.bits(LENGTH_EXTRA[symbol - 257]);
            let d = distances.decode(&mut r);
            furthest = furthest.max(DISTANCE_BASE[d] + r.bits(DISTANCE_EXTRA[d]) as usize);
        }
        assert_eq!(last, 0, "compress never ends the stream");
    }
    furthest
}

/// RFC 1951 §3.2.7: a dynamic block's codes.
pub(super) fn dynamic_codes(r: &mut BitReader<'_>) -> (Huffman, Huffman) {
    const ORDER: [usize; 19] = [
        16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
    ];
    let literals = r.bits(5) as usize + 257;
    let distances = r.bits(5) as usize + 1;
    let code_lengths = r.bits(4) as usize + 4;
    let mut lengths = [0u8; 19];
    for &i in &ORDER[..code_lengths] {
        lengths[i] = r.bits(3) as u8;
    }
    let lengths_code = Huffman::new(&lengths);
    let mut lengths = Vec::new();
    while lengths.len() < literals + distances {
        match lengths_code.decode(r) {
            l @ 0..=15 => lengths.push(l as u8),
            16 => {
                let previous = *lengths.last().unwrap();
                let n = 3 + r.bits(2) as usize;
                lengths.extend(std::iter::repeat_n(previous, n));
            }
            17 => lengths.extend(std::iter::repeat_n(0, 3 + r.bits(3) as usize)),
            _ => lengths.extend(std::iter::repeat_n(0, 11 + r.bits(7) as usize)),
        }
    }
    (
        Huffman::new(&lengths[..literals]),
        Huffman::new(&lengths[literals..]),
    )
}

#[test]
fn test_tools_read_the_rfc_examples() {
    assert_eq!(max_distance(&HELLO), 0);
    assert_eq!(max_distance(&[0xf2, 0x00, 0x11, 0x00, 0x00]), 5);
    let bomb = zeros_bomb(1000);
    assert_eq!(max_distance(&bomb), 1);
}
