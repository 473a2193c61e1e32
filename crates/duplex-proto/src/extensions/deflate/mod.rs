//! permessage-deflate (RFC 7692): negotiating its four parameters (§7.1) in
//! both roles, and compressing and decompressing messages with them (§7.2).
//!
//! Negotiation is [`DeflateConfig`]: [`client_offer`](DeflateConfig::client_offer)
//! and [`client_accept`](DeflateConfig::client_accept) for a client,
//! [`server_accept`](DeflateConfig::server_accept) for a server. Both produce
//! the [`DeflateParams`] that [`Deflate`], the codec, runs with. Framing is
//! not here: the connection sets RSV1 on the first frame of each message it
//! compresses and feeds this module the payloads of messages that had it.
//!
//! Decisions the RFC leaves to implementations:
//!
//! - **The client's offer.** It holds two alternatives, most preferred first
//!   (§5): the configured one, which always carries a bare
//!   `client_max_window_bits` (as browsers send it: "you may limit my
//!   window"), then the same with `client_no_context_takeover`. An RFC 7692
//!   server takes the first and may still answer `client_no_context_takeover`
//!   (§7.1.1.2). The second exists for servers that read the parameter as
//!   draft versions defined it, "the client supports it", and only ask for it
//!   when offered: Autobahn's fuzzing server is one. If the server picks it
//!   without answering the parameter (nothing in the response tells which
//!   one it picked), the client keeps its context, as for the first.
//! - **A server declines, never fails.** An offer with an unknown or repeated
//!   parameter or a bad value is skipped (§7 "MUST decline") and the next one
//!   considered; a server whose limit on the client's window cannot be
//!   expressed (the offer has no `client_max_window_bits`) still accepts, and
//!   inflates with a 32 KiB window, as Python websockets does by default.
//! - **Window bits 8.** zlib (since 1.2.9) and zlib-rs refuse an 8-bit window
//!   for a raw deflate stream, and flate2 only accepts 9 to 15; for zlib
//!   streams zlib quietly uses 9 ("until 256-byte window bug fixed"). Its
//!   encoder cannot use matches further back than the window size minus 262
//!   bytes of lookahead (`MAX_DIST`), which is what breaks a 256-byte window,
//!   and that same limit makes a 9-bit encoder safe for an 8-bit peer: it
//!   never emits a
//!   distance above 512 - 262 = 250, within 256 (a test decodes its output at
//!   every level to check). So 8 is negotiated as asked and compressed with
//!   9. Inflating, 8 becomes 9 too; that is only what flate2 is told, as
//!   zlib-rs always inflates with a 32 KiB window and so accepts any peer
//!   window, including one larger than negotiated (harmless: accepting it
//!   costs no memory beyond that window).
//! - **Empty messages.** A sync flush with nothing to flush may produce no
//!   bytes at all, but §7.2.1 wants the payload to end inside a block header.
//!   Such a message is sent as the single byte `0x00`: with the receiver's
//!   appended `00 00 ff ff` it is an empty stored block (§7.2.3.3 shape). A
//!   compressed message received with no payload at all (some encoders send
//!   that) is taken as empty without feeding the inflater, whose state would
//!   otherwise be left inside a half-read block.
//! - **BFINAL.** A peer may end its DEFLATE stream in a message (§7.2.3.4);
//!   what follows the final block in that message is ignored and the inflater
//!   starts afresh for the next message.
//! - **Memory.** Compressor and decompressor state are allocated on first use.
//!   With no context takeover in a direction, that direction's state is freed
//!   after each message instead of being reset, so an idle connection holds
//!   none. With context takeover, by default
//!   ([`DeflateConfig::keep_zlib_state`]) the state is freed too and only
//!   the window is kept: the last `2^window_bits` bytes of what was sent,
//!   and of what was received, so far. The next message rebuilds the state
//!   from it as a preset dictionary (RFC 1951 distances reach back into it
//!   exactly as into a kept state's window). Measured with zlib-rs at level
//!   6: a compressor holds about 370 KiB at 15 window bits, 260 KiB at 12
//!   and 245 KiB at 8 or 9 (a 128 KiB hash table at any window, and flate2
//!   does not let zlib's memory level be lowered); a decompressor about
//!   46 KiB at any window. What is kept of the received bytes is at most
//!   32 KiB at 15 bits and 4 KiB at 12, of the sent bytes at most 8 KiB
//!   (a smaller dictionary than the window is always valid), and never more
//!   than went through.
//!   A peer that refers back further than the window it negotiated is
//!   caught as corrupt data (1007) when its message starts from a rebuilt
//!   state, and accepted when it does not (see "Window bits 8").
//! - **Bounded inflation.** Output grows by doubling but never past the
//!   caller's limit plus one byte, so a small message that inflates to
//!   gigabytes fails with [`DeflateError::TooLarge`] having allocated no more
//!   than the limit.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tracing::debug;

use super::{ExtensionError, ExtensionOffer, parse_header, serialize_header};
use crate::Role;

/// The extension's registered name (RFC 7692 §7).
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

const SERVER_NO_CONTEXT_TAKEOVER: &str = "server_no_context_takeover";
const CLIENT_NO_CONTEXT_TAKEOVER: &str = "client_no_context_takeover";
const SERVER_MAX_WINDOW_BITS: &str = "server_max_window_bits";
const CLIENT_MAX_WINDOW_BITS: &str = "client_max_window_bits";

/// RFC 7692 §7.1.2: the smallest and largest LZ77 window, as base-2 logarithms.
const MIN_WINDOW_BITS: u8 = 8;
const MAX_WINDOW_BITS: u8 = 15;

/// The smallest window flate2 and zlib-rs accept for raw deflate; see the
/// module docs for why 9 stands in for 8.
const MIN_ZLIB_WINDOW_BITS: u8 = 9;

/// RFC 7692 §7.2.1: a sync flush ends with an empty stored block whose last
/// four bytes are these; the sender removes them and the receiver (§7.2.2)
/// appends them again.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The most a direction whose compressor is freed between messages keeps of
/// what it sent: rebuilding the compressor indexes all of it, about 1 ns a
/// byte, and matches further back than this gain a JSON stream little (see
/// [`DeflateConfig::keep_zlib_state`]). Any amount up to the negotiated
/// window is valid: the peer's inflater holds at least as much.
const MAX_SENT_WINDOW: usize = 8 << 10;

/// Inflated output grows by at least this much at a time.
const MIN_GROWTH: usize = 1024;

/// How one end negotiates permessage-deflate and compresses with it.
///
/// The same fields serve both roles. Each `server_*` field is about what the
/// server sends and each `client_*` field about what the client sends: a
/// server grants the client's requests and adds its own config, a client
/// requests its config in its offer.
///
/// Start from [`Default`] and set fields: the struct is non-exhaustive, so
/// that a later setting is not a breaking change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// The server resets its compressor after each message (§7.1.1.1).
    /// Default `false`: context takeover is where permessage-deflate earns its
    /// keep on chatty small messages (a repeated JSON shape compresses to a
    /// few bytes), at the price of keeping compressor state per connection.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message (§7.1.1.2).
    /// Default `false`, for the same reason.
    pub client_no_context_takeover: bool,
    /// Largest window, in bits (8 to 15), the server compresses with
    /// (§7.1.2.1). Default 15: the best ratio, and what every peer accepts.
    /// Memory between messages does not depend on it unless
    /// `keep_zlib_state` is set (about 370 KiB of compressor state at 15,
    /// 260 KiB at 12, the value Python websockets chooses for its servers);
    /// `server_no_context_takeover` saves that too.
    pub server_max_window_bits: u8,
    /// Largest window, in bits (8 to 15), the client compresses with
    /// (§7.1.2.2). Default 15. A server can only impose a smaller one on a
    /// client whose offer has `client_max_window_bits`; it then keeps that
    /// much less of what it received between messages (32 KiB at 15, 4 KiB
    /// at 12), once that much has come.
    pub client_max_window_bits: u8,
    /// zlib level, 0 (store) to 9 (smallest). Default 6: zlib's own default,
    /// which `ws` and Python websockets also use, so sizes compare like for
    /// like; levels above it cost much more time for a few percent.
    pub compression_level: u32,
    /// Keep the zlib compressor and decompressor of a direction with context
    /// takeover from one message to the next. Default `false`: between
    /// messages such a direction keeps only the bytes the next message may
    /// refer back to, and rebuilds the zlib state from them (a preset
    /// dictionary) when it next compresses or inflates. The peer cannot
    /// tell: those bytes are all its inflater and our compressor share
    /// (RFC 7692 §7.2.3.2). Received, that is the peer's whole window
    /// (`2^max_window_bits` bytes, fewer if fewer came); sent, at most the
    /// last 8 KiB, as indexing them again costs about 1 ns a byte.
    ///
    /// Why: zlib-rs allocates about 370 KiB for a compressor at 15 window
    /// bits and 260 KiB at 12 (its hash table alone is 128 KiB at any window
    /// and memory level, and flate2 does not expose the memory level
    /// anyway), and 46 KiB for a decompressor. Kept, that was about 348 KiB
    /// per connection that had sent one message; freed, 32 KiB, against
    /// 75 KiB for a Python websockets server (`bench/deflate_memory.sh`).
    /// On a stream of JSON updates (the `deflate_ratio` example of this
    /// crate) it costs about 5% of the ratio (6.20× to 5.87×; 12-bit
    /// windows, as Python websockets' server answers, give 5.28×) and no
    /// compression time, as rebuilding from 8 KiB costs what a smaller
    /// window saves; inflating takes 1 to 2 µs more a message. Set it when
    /// memory per connection matters less than those 5%.
    pub keep_zlib_state: bool,
    /// Messages shorter than this many bytes are sent uncompressed. Default
    /// 0, every message compressed, as browsers and Python websockets do:
    /// with context takeover even short repetitive messages shrink, and some
    /// peers (the Autobahn runner among them) expect an echo to come back
    /// compressed. Raise it (`ws` uses 1024) to trade ratio for CPU when
    /// messages are short and unrelated.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
            compression_level: 6,
            keep_zlib_state: false,
            threshold: 0,
        }
    }
}

/// What a handshake agreed on: the four parameters of RFC 7692 §7.1, with
/// absent window parameters as 15.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// The window, in bits, the server compresses with at most.
    pub server_max_window_bits: u8,
    /// The window, in bits, the client compresses with at most.
    pub client_max_window_bits: u8,
}

impl Default for DeflateParams {
    /// What a bare `permessage-deflate` agrees on: context takeover and
    /// 15-bit windows both ways.
    fn default() -> Self {
        DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
        }
    }
}

/// The parameters of one permessage-deflate offer or response as written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct WireParams {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: given without a value, which only an offer may do.
    client_max_window_bits: Option<Option<u8>>,
}

/// Whether a parameter list comes from an offer (a client's) or a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Offer,
    Response,
}

impl WireParams {
    /// Reads the parameters of one permessage-deflate entry, applying every
    /// rule of RFC 7692 §7 that does not depend on the other side.
    fn parse(extension: &ExtensionOffer, side: Side) -> Result<Self, ExtensionError> {
        let mut params = WireParams::default();
        for (name, value) in &extension.params {
            let value = value.as_deref();
            match name.as_str() {
                SERVER_NO_CONTEXT_TAKEOVER => {
                    flag(
                        &mut params.server_no_context_takeover,
                        SERVER_NO_CONTEXT_TAKEOVER,
                        value,
                    )?;
                }
                CLIENT_NO_CONTEXT_TAKEOVER => {
                    flag(
                        &mut params.client_no_context_takeover,
                        CLIENT_NO_CONTEXT_TAKEOVER,
                        value,
                    )?;
                }
                SERVER_MAX_WINDOW_BITS => {
                    if params.server_max_window_bits.is_some() {
                        return Err(ExtensionError::DuplicateParameter {
                            param: SERVER_MAX_WINDOW_BITS,
                        });
                    }
                    // §7.1.2.1: this parameter always has a value.
                    let value = value.ok_or(ExtensionError::MissingValue {
                        param: SERVER_MAX_WINDOW_BITS,
                    })?;
                    params.server_max_window_bits =
                        Some(window_bits(SERVER_MAX_WINDOW_BITS, value)?);
                }
                CLIENT_MAX_WINDOW_BITS => {
                    if params.client_max_window_bits.is_some() {
                        return Err(ExtensionError::DuplicateParameter {
                            param: CLIENT_MAX_WINDOW_BITS,
                        });
                    }
                    params.client_max_window_bits = Some(match (value, side) {
                        (Some(value), _) => Some(window_bits(CLIENT_MAX_WINDOW_BITS, value)?),
                        // §7.1.2.2: bare in an offer means "you may limit
                        // me"; a response has to say to what.
                        (None, Side::Offer) => None,
                        (None, Side::Response) => {
                            return Err(ExtensionError::MissingValue {
                                param: CLIENT_MAX_WINDOW_BITS,
                            });
                        }
                    });
                }
                _ => {
                    return Err(ExtensionError::UnknownParameter {
                        extension: extension.name.clone(),
                        param: name.clone(),
                    });
                }
            }
        }
        Ok(params)
    }

    fn to_extension(self) -> ExtensionOffer {
        let mut extension = ExtensionOffer::new(PERMESSAGE_DEFLATE);
        if self.server_no_context_takeover {
            extension = extension.with_param(SERVER_NO_CONTEXT_TAKEOVER, None);
        }
        if self.client_no_context_takeover {
            extension = extension.with_param(CLIENT_NO_CONTEXT_TAKEOVER, None);
        }
        if let Some(bits) = self.server_max_window_bits {
            extension = extension.with_param(SERVER_MAX_WINDOW_BITS, Some(&bits.to_string()));
        }
        if let Some(bits) = self.client_max_window_bits {
            let value = bits.map(|b| b.to_string());
            extension = extension.with_param(CLIENT_MAX_WINDOW_BITS, value.as_deref());
        }
        extension
    }
}

/// RFC 7692 §7.1.1: a no_context_takeover parameter, given once, without value.
fn flag(seen: &mut bool, param: &'static str, value: Option<&str>) -> Result<(), ExtensionError> {
    if *seen {
        return Err(ExtensionError::DuplicateParameter { param });
    }
    if let Some(value) = value {
        return Err(ExtensionError::UnexpectedValue {
            param,
            value: value.to_owned(),
        });
    }
    *seen = true;
    Ok(())
}

/// RFC 7692 §7.1.2: "a decimal integer value without leading zeroes between
/// 8 to 15, inclusive".
fn window_bits(param: &'static str, value: &str) -> Result<u8, ExtensionError> {
    let bits = match value {
        "8" => 8,
        "9" => 9,
        "10" => 10,
        "11" => 11,
        "12" => 12,
        "13" => 13,
        "14" => 14,
        "15" => 15,
        _ => {
            return Err(ExtensionError::InvalidWindowBits {
                param,
                value: value.to_owned(),
            });
        }
    };
    Ok(bits)
}

/// A configured window size, kept within what RFC 7692 allows.
fn clamp_bits(bits: u8) -> u8 {
    bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS)
}

impl DeflateConfig {
    /// The client's `Sec-WebSocket-Extensions` value: alternatives, most
    /// preferred first (see the module docs for why two).
    ///
    /// ```
    /// # use duplex_proto::extensions::DeflateConfig;
    /// assert_eq!(
    ///     DeflateConfig::default().client_offer(),
    ///     "permessage-deflate; client_max_window_bits, \
    ///      permessage-deflate; client_no_context_takeover; client_max_window_bits",
    /// );
    /// ```
    pub fn client_offer(&self) -> String {
        let offers: Vec<ExtensionOffer> = self
            .client_offers()
            .into_iter()
            .map(WireParams::to_extension)
            .collect();
        serialize_header(&offers)
    }

    fn client_offers(&self) -> Vec<WireParams> {
        let server_bits = clamp_bits(self.server_max_window_bits);
        let client_bits = clamp_bits(self.client_max_window_bits);
        let preferred = WireParams {
            server_no_context_takeover: self.server_no_context_takeover,
            client_no_context_takeover: self.client_no_context_takeover,
            // §7.1.2.1: only a limit below the default is worth asking for.
            server_max_window_bits: (server_bits < MAX_WINDOW_BITS).then_some(server_bits),
            // §7.1.2.2: always present, so the server may limit our window;
            // with a value if we limit it ourselves.
            client_max_window_bits: Some((client_bits < MAX_WINDOW_BITS).then_some(client_bits)),
        };
        let mut offers = vec![preferred];
        if !preferred.client_no_context_takeover {
            offers.push(WireParams {
                client_no_context_takeover: true,
                ..preferred
            });
        }
        offers
    }

    /// Checks the server's `Sec-WebSocket-Extensions` values (every line)
    /// against [`client_offer`](Self::client_offer): the agreed parameters,
    /// `None` if the server accepted no extension, or the rule it broke. Any
    /// error must fail the handshake (RFC 6455 §4.1).
    pub fn client_accept(
        &self,
        response_values: &[&str],
    ) -> Result<Option<DeflateParams>, ExtensionError> {
        let mut accepted = None;
        for extension in parse_header(response_values)? {
            if extension.name != PERMESSAGE_DEFLATE {
                return Err(ExtensionError::NotOffered {
                    name: extension.name,
                });
            }
            if accepted.is_some() {
                return Err(ExtensionError::DuplicateExtension {
                    name: extension.name,
                });
            }
            accepted = Some(extension);
        }
        let Some(extension) = accepted else {
            return Ok(None);
        };
        let response = WireParams::parse(&extension, Side::Response)?;
        // The response answers one of the alternatives without saying which:
        // it is valid if it answers any, and the first it answers decides.
        let mut first_error = None;
        for offer in self.client_offers() {
            match check_response(&offer, &response) {
                Ok(params) => return Ok(Some(params)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.expect("client_offers is never empty"))
    }

    /// Picks the first acceptable permessage-deflate offer among the
    /// client's (RFC 7692 §5), ignoring other extensions: the agreed
    /// parameters and the response's `Sec-WebSocket-Extensions` value, or
    /// `None` to answer without the extension.
    pub fn server_accept(&self, offers: &[ExtensionOffer]) -> Option<(DeflateParams, String)> {
        for extension in offers.iter().filter(|e| e.name == PERMESSAGE_DEFLATE) {
            match WireParams::parse(extension, Side::Offer) {
                Ok(offer) => {
                    let (params, response) = self.answer(&offer);
                    return Some((params, response.to_extension().to_string()));
                }
                // §7: a server MUST decline an offer it cannot parse.
                Err(e) => {
                    debug!(offer = %extension, error = %e, "declining permessage-deflate offer")
                }
            }
        }
        None
    }

    /// The server's answer to a valid offer.
    fn answer(&self, offer: &WireParams) -> (DeflateParams, WireParams) {
        let ours_server = clamp_bits(self.server_max_window_bits);
        let ours_client = clamp_bits(self.client_max_window_bits);
        // §7.1.2.1: answer with the offered value or a smaller one.
        let server_bits = offer
            .server_max_window_bits
            .map_or(ours_server, |asked| asked.min(ours_server));
        // §7.1.2.2: the client's window can only be limited if it said so.
        let client_bits = match offer.client_max_window_bits {
            None => MAX_WINDOW_BITS,
            Some(None) => ours_client,
            Some(Some(asked)) => asked.min(ours_client),
        };
        let params = DeflateParams {
            // §7.1.1: requests for no context takeover are always granted.
            server_no_context_takeover: offer.server_no_context_takeover
                || self.server_no_context_takeover,
            client_no_context_takeover: offer.client_no_context_takeover
                || self.client_no_context_takeover,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
        };
        let response = WireParams {
            server_no_context_takeover: params.server_no_context_takeover,
            client_no_context_takeover: params.client_no_context_takeover,
            // §7.1.2.1: MUST answer it if offered, MAY if not.
            server_max_window_bits: (offer.server_max_window_bits.is_some()
                || server_bits < MAX_WINDOW_BITS)
                .then_some(server_bits),
            // §7.1.2.2: MUST NOT answer it unless offered.
            client_max_window_bits: (offer.client_max_window_bits.is_some()
                && client_bits < MAX_WINDOW_BITS)
                .then_some(Some(client_bits)),
        };
        (params, response)
    }
}

/// Whether `response` is a valid answer to `offer` (RFC 7692 §7.1), and the
/// parameters it agrees on if so.
fn check_response(
    offer: &WireParams,
    response: &WireParams,
) -> Result<DeflateParams, ExtensionError> {
    // §7.1.1.1: a server accepting an offer with server_no_context_takeover
    // includes it; it may include it unasked.
    if offer.server_no_context_takeover && !response.server_no_context_takeover {
        return Err(ExtensionError::MissingParameter {
            param: SERVER_NO_CONTEXT_TAKEOVER,
        });
    }
    // §7.1.2.1: if offered, answered with the same or a smaller value; may be
    // answered unasked.
    let server_bits = match (
        offer.server_max_window_bits,
        response.server_max_window_bits,
    ) {
        (Some(_), None) => {
            return Err(ExtensionError::MissingParameter {
                param: SERVER_MAX_WINDOW_BITS,
            });
        }
        (Some(offered), Some(answered)) if answered > offered => {
            return Err(ExtensionError::WindowBitsTooLarge {
                param: SERVER_MAX_WINDOW_BITS,
                offered,
                answered,
            });
        }
        (_, answered) => answered.unwrap_or(MAX_WINDOW_BITS),
    };
    // §7.1.2.2: only answered if offered, then with no more than offered.
    let client_bits = match (
        offer.client_max_window_bits,
        response.client_max_window_bits,
    ) {
        (None, Some(_)) => {
            return Err(ExtensionError::ParameterNotOffered {
                param: CLIENT_MAX_WINDOW_BITS,
            });
        }
        (Some(Some(offered)), Some(Some(answered))) if answered > offered => {
            return Err(ExtensionError::WindowBitsTooLarge {
                param: CLIENT_MAX_WINDOW_BITS,
                offered,
                answered,
            });
        }
        (_, Some(Some(answered))) => answered,
        (Some(Some(offered)), _) => offered,
        _ => MAX_WINDOW_BITS,
    };
    Ok(DeflateParams {
        server_no_context_takeover: response.server_no_context_takeover,
        // §7.1.1.2: answered or not, an offered client_no_context_takeover
        // is a promise the client keeps.
        client_no_context_takeover: response.client_no_context_takeover
            || offer.client_no_context_takeover,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits,
    })
}

/// Why a message could not be compressed or decompressed.
///
/// Non-exhaustive: a rule or failure added later is a new variant, not a
/// breaking change.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum DeflateError {
    /// The message inflates to more than the allowed size (a connection
    /// closes with 1009).
    #[error("decompressed message exceeds the size limit")]
    TooLarge,
    /// The compressed data is not valid DEFLATE, or uses a window larger
    /// than negotiated (a connection closes with 1007).
    #[error("invalid compressed data: {0}")]
    Corrupt(String),
    /// The compressor failed; not the peer's fault (a connection closes with
    /// 1011).
    #[error("compression failed: {0}")]
    CompressFailed(String),
}

/// The permessage-deflate codec of one connection end (RFC 7692 §7.2).
///
/// It compresses whole messages and decompresses frame by frame: feed each
/// frame's payload of a message that had RSV1 to [`decompress`](Self::decompress),
/// then call [`finish_message`](Self::finish_message) after its final frame.
#[derive(Debug)]
pub struct Deflate {
    role: Role,
    params: DeflateParams,
    level: Compression,
    threshold: usize,
    /// See [`DeflateConfig::keep_zlib_state`].
    keep_zlib_state: bool,
    /// Allocated on first use; freed after each message without context
    /// takeover, and with it unless `keep_zlib_state`.
    compressor: Option<Compress>,
    decompressor: Option<Decompress>,
    /// The window of a direction with context takeover whose zlib state was
    /// freed: the last bytes sent, or received, that the next message may
    /// refer back to. Empty while the state is kept.
    sent_window: Vec<u8>,
    received_window: Vec<u8>,
    /// Where the current message's output starts in the caller's buffer.
    output_start: Option<usize>,
    /// Compressed bytes received so far in the current message.
    received: usize,
    /// The peer ended its DEFLATE stream (BFINAL) in the current message.
    stream_ended: bool,
    /// The most a received message may inflate to besides the message
    /// limit: what the I/O layer's shared budget has left for it
    /// ([`Connection::set_inflate_allowance`](crate::Connection::set_inflate_allowance)).
    pub(crate) inflate_allowance: usize,
}

impl Deflate {
    /// A codec for `role` with negotiated `params`, compressing at zlib
    /// `level` (0 to 9) messages of at least `threshold` bytes.
    pub fn new(role: Role, params: DeflateParams, level: u32, threshold: usize) -> Self {
        Deflate {
            role,
            params,
            level: Compression::new(level.min(9)),
            threshold,
            keep_zlib_state: DeflateConfig::default().keep_zlib_state,
            compressor: None,
            decompressor: None,
            sent_window: Vec::new(),
            received_window: Vec::new(),
            output_start: None,
            received: 0,
            stream_ended: false,
            inflate_allowance: usize::MAX,
        }
    }

    /// Keeps, or frees, the zlib state of a direction with context takeover
    /// between messages (see [`DeflateConfig::keep_zlib_state`]).
    pub fn keep_zlib_state(mut self, keep: bool) -> Self {
        self.keep_zlib_state = keep;
        self
    }

    /// The negotiated parameters.
    pub fn params(&self) -> DeflateParams {
        self.params
    }

    /// Whether a message of `len` bytes should be compressed: not below the
    /// threshold.
    pub fn should_compress(&self, len: usize) -> bool {
        len >= self.threshold
    }

    /// Context takeover and window bits of what this end sends.
    fn own_direction(&self) -> (bool, u8) {
        match self.role {
            Role::Server => (
                self.params.server_no_context_takeover,
                self.params.server_max_window_bits,
            ),
            Role::Client => (
                self.params.client_no_context_takeover,
                self.params.client_max_window_bits,
            ),
        }
    }

    /// Context takeover and window bits of what the peer sends.
    fn peer_direction(&self) -> (bool, u8) {
        match self.role {
            Role::Server => (
                self.params.client_no_context_takeover,
                self.params.client_max_window_bits,
            ),
            Role::Client => (
                self.params.server_no_context_takeover,
                self.params.server_max_window_bits,
            ),
        }
    }

    /// Whether a message of `len` bytes that this end sends may go out as
    /// the bytes compressed once for every connection (see
    /// [`Broadcast`](crate::Broadcast)): only without context takeover in
    /// this direction, where each message starts from an empty window
    /// (§7.1.1), and only where no match of a 32 KiB window can reach
    /// further back than the negotiated one (15 bits, or a message that fits
    /// the window).
    pub fn can_share(&self, len: usize) -> bool {
        let (no_context_takeover, bits) = self.own_direction();
        no_context_takeover
            && self.should_compress(len)
            && (bits >= MAX_WINDOW_BITS || len <= 1 << bits)
    }

    /// The zlib level this codec compresses at.
    pub fn level(&self) -> u32 {
        self.level.level()
    }

    /// Appends `payload` compressed as one message to `out` (RFC 7692
    /// §7.2.1): raw DEFLATE, sync-flushed, without the final `00 00 ff ff`.
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), DeflateError> {
        let (no_context_takeover, bits) = self.own_direction();
        let compressor = match &mut self.compressor {
            Some(compressor) => compressor,
            none => {
                let mut compressor =
                    Compress::new_with_window_bits(self.level, false, zlib_window_bits(bits));
                if !self.sent_window.is_empty() {
                    // The peer's inflater holds these bytes as its window:
                    // matches into them are what context takeover means.
                    compressor
                        .set_dictionary(&self.sent_window)
                        .map_err(|e| DeflateError::CompressFailed(e.to_string()))?;
                }
                none.insert(compressor)
            }
        };
        let result = compress_message(compressor, payload, out);
        if result.is_err() || no_context_takeover {
            // §7.1.1: no context takeover: the next message starts from an
            // empty window, so nothing needs keeping.
            self.compressor = None;
            self.sent_window = Vec::new();
        } else if !self.keep_zlib_state {
            self.compressor = None;
            let len = window_len(bits).min(MAX_SENT_WINDOW);
            remember(&mut self.sent_window, payload, len);
        }
        result
    }

    /// Appends the decompressed data of one frame's payload to `out`. Fails
    /// with [`DeflateError::TooLarge`] as soon as `out` would grow past
    /// `max_output` bytes, never having grown its capacity past
    /// `max_output + 1`; with [`DeflateError::Corrupt`] if the data is not
    /// DEFLATE.
    pub fn decompress(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_output: usize,
    ) -> Result<(), DeflateError> {
        if self.stream_ended {
            // §7.2.3.4: data after a final block is ignored.
            return Ok(());
        }
        self.received += input.len();
        self.output_start.get_or_insert(out.len());
        self.inflate(input, out, max_output)
    }

    /// Ends the current message: feeds the inflater the tail the sender
    /// removed (RFC 7692 §7.2.2), so it emits everything, and frees or keeps
    /// its state as the peer's context takeover says.
    pub fn finish_message(
        &mut self,
        out: &mut Vec<u8>,
        max_output: usize,
    ) -> Result<(), DeflateError> {
        // An empty payload never touched the inflater (see the module docs).
        let result = if self.received == 0 || self.stream_ended {
            Ok(())
        } else {
            self.inflate(&TAIL, out, max_output)
        };
        let (no_context_takeover, bits) = self.peer_direction();
        if no_context_takeover || self.stream_ended || result.is_err() {
            self.decompressor = None;
            self.received_window = Vec::new();
        } else if !self.keep_zlib_state {
            self.decompressor = None;
            let start = self.output_start.unwrap_or(out.len()).min(out.len());
            remember(&mut self.received_window, &out[start..], window_len(bits));
        }
        self.output_start = None;
        self.received = 0;
        self.stream_ended = false;
        result
    }

    fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_output: usize,
    ) -> Result<(), DeflateError> {
        let (_, bits) = self.peer_direction();
        let decompressor = match &mut self.decompressor {
            Some(decompressor) => decompressor,
            none => {
                let mut decompressor =
                    Decompress::new_with_window_bits(false, zlib_window_bits(bits));
                if !self.received_window.is_empty() {
                    // What the peer's compressor may still refer back to.
                    decompressor
                        .set_dictionary(&self.received_window)
                        .map_err(|e| DeflateError::Corrupt(e.to_string()))?;
                }
                none.insert(decompressor)
            }
        };
        match inflate_into(decompressor, input, out, max_output) {
            Ok(stream_ended) => {
                self.stream_ended = stream_ended;
                Ok(())
            }
            Err(e) => {
                // The connection is failing: free the state now.
                self.decompressor = None;
                self.received_window = Vec::new();
                self.output_start = None;
                Err(e)
            }
        }
    }
}

/// Inflates `input` into `out`, which may not grow past `max_output`;
/// `Ok(true)` if the stream ended with a final block.
fn inflate_into(
    decompressor: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    max_output: usize,
) -> Result<bool, DeflateError> {
    // One byte of room past the limit tells "exactly at the limit" from
    // "over it", and is all the allocation a bomb gets past the limit.
    let limit = max_output.saturating_add(1);
    loop {
        if out.len() > max_output {
            return Err(DeflateError::TooLarge);
        }
        if out.len() == out.capacity() {
            // Double, as a Vec would, but never past the limit.
            let guess = input.len().saturating_mul(4).max(MIN_GROWTH);
            let target = out
                .capacity()
                .saturating_mul(2)
                .max(out.len().saturating_add(guess))
                .min(limit);
            out.reserve_exact(target - out.len());
        }
        let (in_before, out_before) = (decompressor.total_in(), out.len());
        let status = decompressor.decompress_vec(input, out, FlushDecompress::None);
        // Output past the limit came before the fault in the stream: it is
        // the first thing wrong, whichever call the fault shows up in.
        if out.len() > max_output {
            return Err(DeflateError::TooLarge);
        }
        let status = status.map_err(|e| DeflateError::Corrupt(e.to_string()))?;
        let consumed = (decompressor.total_in() - in_before) as usize;
        input = &input[consumed..];
        if out.len() > max_output {
            return Err(DeflateError::TooLarge);
        }
        if status == Status::StreamEnd {
            return Ok(true);
        }
        let progress = consumed > 0 || out.len() > out_before;
        // Room left in `out` means the inflater took all it could.
        if out.len() < out.capacity() && (input.is_empty() || !progress) {
            return Ok(false);
        }
    }
}

/// The window flate2 is asked for: `bits`, except 9 for 8 (module docs).
/// `payload` compressed as one message from an empty 32 KiB window at zlib
/// `level`: what a sender without context takeover sends (§7.2.1), the same
/// for every connection that [`can_share`](Deflate::can_share) it.
pub(crate) fn compress_once(payload: &[u8], level: u32) -> Result<Vec<u8>, DeflateError> {
    let mut compressor =
        Compress::new_with_window_bits(Compression::new(level.min(9)), false, MAX_WINDOW_BITS);
    let mut out = Vec::new();
    compress_message(&mut compressor, payload, &mut out)?;
    Ok(out)
}

/// Appends `payload` compressed as one message to `out`: sync-flushed, the
/// final `00 00 ff ff` removed (§7.2.1), an empty result made `00` (see the
/// module docs). On error `out` is as it was.
fn compress_message(
    compressor: &mut Compress,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), DeflateError> {
    let start = out.len();
    if let Err(e) = deflate_into(compressor, payload, out) {
        out.truncate(start);
        return Err(e);
    }
    let produced = &out[start..];
    if produced.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    } else if !produced.is_empty() {
        out.truncate(start);
        return Err(DeflateError::CompressFailed(
            "sync flush did not end with an empty stored block".into(),
        ));
    }
    if out.len() == start {
        // Nothing to flush: an empty stored block once the receiver
        // appends the tail.
        out.push(0x00);
    }
    Ok(())
}

fn deflate_into(
    compressor: &mut Compress,
    mut input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), DeflateError> {
    loop {
        if out.capacity() - out.len() < 64 {
            // Half the input is a fair guess for text; the Vec doubles
            // when it is not enough.
            out.reserve((input.len() / 2).max(256));
        }
        let (in_before, out_before) = (compressor.total_in(), out.len());
        compressor
            .compress_vec(input, out, FlushCompress::Sync)
            .map_err(|e| DeflateError::CompressFailed(e.to_string()))?;
        let consumed = (compressor.total_in() - in_before) as usize;
        input = &input[consumed..];
        // zlib is done once it consumed everything and left output room.
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(());
        }
        if consumed == 0 && out.len() == out_before {
            return Err(DeflateError::CompressFailed("no progress".into()));
        }
    }
}

fn zlib_window_bits(bits: u8) -> u8 {
    clamp_bits(bits).max(MIN_ZLIB_WINDOW_BITS)
}

/// How many bytes of a direction's history a rebuilt zlib state needs: the
/// whole window zlib is told about (for 8 bits, 9; see the module docs).
fn window_len(bits: u8) -> usize {
    1 << zlib_window_bits(bits)
}

/// Appends `data` to `window`, keeping only its last `len` bytes, and no
/// more capacity than that.
fn remember(window: &mut Vec<u8>, data: &[u8], len: usize) {
    let data = &data[data.len().saturating_sub(len)..];
    let keep = len - data.len();
    if window.len() > keep {
        window.drain(..window.len() - keep);
    }
    window.reserve_exact(data.len());
    window.extend_from_slice(data);
}

#[cfg(test)]
mod rfc1951;

#[cfg(test)]
mod tests {
    use super::rfc1951::*;
    use super::*;
    use proptest::prelude::*;

    // ---- negotiation: helpers ----

    fn offers(header: &str) -> Vec<ExtensionOffer> {
        parse_header(&[header]).unwrap()
    }

    fn params(snct: bool, cnct: bool, sbits: u8, cbits: u8) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: snct,
            client_no_context_takeover: cnct,
            server_max_window_bits: sbits,
            client_max_window_bits: cbits,
        }
    }

    fn server_answer(config: &DeflateConfig, header: &str) -> Option<(DeflateParams, String)> {
        config.server_accept(&offers(header))
    }

    // ---- negotiation: the client's offer ----

    #[test]
    fn default_offer_has_a_fallback_with_client_no_context_takeover() {
        assert_eq!(
            DeflateConfig::default().client_offer(),
            "permessage-deflate; client_max_window_bits, \
             permessage-deflate; client_no_context_takeover; client_max_window_bits"
        );
    }

    #[test]
    fn offer_requests_what_the_config_limits() {
        let config = DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 10,
            client_max_window_bits: 12,
            ..DeflateConfig::default()
        };
        assert_eq!(
            config.client_offer(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=12"
        );
    }

    #[test]
    fn offer_clamps_window_bits_into_range() {
        let config = DeflateConfig {
            server_max_window_bits: 3,
            client_max_window_bits: 200,
            client_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        assert_eq!(
            config.client_offer(),
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=8; \
             client_max_window_bits"
        );
    }

    // ---- negotiation: the client checks the response ----

    #[test]
    fn no_extension_in_response_means_none() {
        let config = DeflateConfig::default();
        assert_eq!(config.client_accept(&[]), Ok(None));
        assert_eq!(config.client_accept(&[""]), Ok(None));
    }

    #[test]
    fn plain_response_agrees_on_defaults() {
        let config = DeflateConfig::default();
        assert_eq!(
            config.client_accept(&["permessage-deflate"]),
            Ok(Some(DeflateParams::default()))
        );
    }

    #[test]
    fn client_honours_what_the_server_imposes() {
        let config = DeflateConfig::default();
        // The four answers Autobahn's 13.x server cases give the default offer.
        let cases = [
            (
                "permessage-deflate; client_no_context_takeover",
                params(false, true, 15, 15),
            ),
            (
                "permessage-deflate; client_max_window_bits=9",
                params(false, false, 15, 9),
            ),
            (
                "permessage-deflate; client_max_window_bits=15",
                params(false, false, 15, 15),
            ),
            (
                "permessage-deflate; client_no_context_takeover; client_max_window_bits=9",
                params(false, true, 15, 9),
            ),
            // §7.1.1.1, §7.1.2.1: the server may limit itself unasked.
            (
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=8",
                params(true, false, 8, 15),
            ),
        ];
        for (response, expected) in cases {
            assert_eq!(
                config.client_accept(&[response]),
                Ok(Some(expected)),
                "{response}"
            );
        }
    }

    #[test]
    fn client_keeps_its_own_limits() {
        let config = DeflateConfig {
            client_no_context_takeover: true,
            client_max_window_bits: 10,
            ..DeflateConfig::default()
        };
        assert_eq!(
            config.client_accept(&["permessage-deflate"]),
            Ok(Some(params(false, true, 15, 10)))
        );
        assert_eq!(
            config.client_accept(&["permessage-deflate; client_max_window_bits=9"]),
            Ok(Some(params(false, true, 15, 9)))
        );
    }

    #[test]
    fn response_over_the_offered_client_window_is_rejected() {
        let config = DeflateConfig {
            client_max_window_bits: 10,
            ..DeflateConfig::default()
        };
        assert_eq!(
            config.client_accept(&["permessage-deflate; client_max_window_bits=11"]),
            Err(ExtensionError::WindowBitsTooLarge {
                param: CLIENT_MAX_WINDOW_BITS,
                offered: 10,
                answered: 11
            })
        );
    }

    #[test]
    fn requested_server_parameters_must_be_answered() {
        let config = DeflateConfig {
            server_no_context_takeover: true,
            server_max_window_bits: 10,
            ..DeflateConfig::default()
        };
        assert_eq!(
            config.client_accept(&["permessage-deflate; server_max_window_bits=10"]),
            Err(ExtensionError::MissingParameter {
                param: SERVER_NO_CONTEXT_TAKEOVER
            })
        );
        assert_eq!(
            config.client_accept(&["permessage-deflate; server_no_context_takeover"]),
            Err(ExtensionError::MissingParameter {
                param: SERVER_MAX_WINDOW_BITS
            })
        );
        assert_eq!(
            config.client_accept(&[
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=11"
            ]),
            Err(ExtensionError::WindowBitsTooLarge {
                param: SERVER_MAX_WINDOW_BITS,
                offered: 10,
                answered: 11
            })
        );
        assert_eq!(
            config.client_accept(&[
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=9"
            ]),
            Ok(Some(params(true, false, 9, 15)))
        );
    }

    #[test]
    fn client_window_answered_without_offer_is_rejected() {
        // Our own offers always carry client_max_window_bits, so the rule is
        // checked against an offer without it.
        let offer = WireParams::default();
        let response = WireParams {
            client_max_window_bits: Some(Some(10)),
            ..WireParams::default()
        };
        assert_eq!(
            check_response(&offer, &response),
            Err(ExtensionError::ParameterNotOffered {
                param: CLIENT_MAX_WINDOW_BITS
            })
        );
        assert_eq!(
            check_response(&offer, &WireParams::default()),
            Ok(DeflateParams::default())
        );
    }

    #[test]
    fn response_breaking_a_rule_fails_the_handshake() {
        let config = DeflateConfig::default();
        let cases = [
            (
                "x-webkit-deflate-frame",
                ExtensionError::NotOffered {
                    name: "x-webkit-deflate-frame".into(),
                },
            ),
            (
                "permessage-deflate, foo",
                ExtensionError::NotOffered { name: "foo".into() },
            ),
            (
                "permessage-deflate, permessage-deflate",
                ExtensionError::DuplicateExtension {
                    name: PERMESSAGE_DEFLATE.into(),
                },
            ),
            (
                "permessage-deflate; foo",
                ExtensionError::UnknownParameter {
                    extension: PERMESSAGE_DEFLATE.into(),
                    param: "foo".into(),
                },
            ),
            (
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                ExtensionError::DuplicateParameter {
                    param: SERVER_NO_CONTEXT_TAKEOVER,
                },
            ),
            (
                "permessage-deflate; client_max_window_bits=9; client_max_window_bits=9",
                ExtensionError::DuplicateParameter {
                    param: CLIENT_MAX_WINDOW_BITS,
                },
            ),
            (
                "permessage-deflate; client_no_context_takeover=1",
                ExtensionError::UnexpectedValue {
                    param: CLIENT_NO_CONTEXT_TAKEOVER,
                    value: "1".into(),
                },
            ),
            (
                "permessage-deflate; client_max_window_bits",
                ExtensionError::MissingValue {
                    param: CLIENT_MAX_WINDOW_BITS,
                },
            ),
            (
                "permessage-deflate; server_max_window_bits",
                ExtensionError::MissingValue {
                    param: SERVER_MAX_WINDOW_BITS,
                },
            ),
            (
                "permessage-deflate; server_max_window_bits=16",
                ExtensionError::InvalidWindowBits {
                    param: SERVER_MAX_WINDOW_BITS,
                    value: "16".into(),
                },
            ),
            (
                "permessage-deflate; client_max_window_bits=\"7\"",
                ExtensionError::InvalidWindowBits {
                    param: CLIENT_MAX_WINDOW_BITS,
                    value: "7".into(),
                },
            ),
            (
                "permessage-deflate;",
                ExtensionError::Syntax {
                    line: 0,
                    at: 19,
                    expected: "a parameter name",
                },
            ),
        ];
        for (response, error) in cases {
            assert_eq!(config.client_accept(&[response]), Err(error), "{response}");
        }
    }

    #[test]
    fn window_bits_are_8_to_15_without_leading_zeros() {
        for bits in 8..=15u8 {
            assert_eq!(
                window_bits(SERVER_MAX_WINDOW_BITS, &bits.to_string()),
                Ok(bits)
            );
        }
        for bad in [
            "7", "16", "0", "08", "010", "+9", "9.0", " 9", "", "1e1", "255", "256",
        ] {
            assert!(
                matches!(
                    window_bits(SERVER_MAX_WINDOW_BITS, bad),
                    Err(ExtensionError::InvalidWindowBits { .. })
                ),
                "{bad:?}"
            );
        }
    }

    // ---- negotiation: the server picks an offer ----

    #[test]
    fn server_accepts_a_plain_offer() {
        let (agreed, response) =
            server_answer(&DeflateConfig::default(), "permessage-deflate").unwrap();
        assert_eq!(agreed, DeflateParams::default());
        assert_eq!(response, "permessage-deflate");
    }

    #[test]
    fn server_declines_broken_offers_and_takes_the_next() {
        let config = DeflateConfig::default();
        let fallback = ", permessage-deflate; client_no_context_takeover";
        for broken in [
            "permessage-deflate; foo",
            "permessage-deflate; foo=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate; client_max_window_bits; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=08",
            "permessage-deflate; server_no_context_takeover=yes",
        ] {
            assert_eq!(server_answer(&config, broken), None, "{broken}");
            let (agreed, response) =
                server_answer(&config, &format!("{broken}{fallback}")).unwrap();
            assert_eq!(agreed, params(false, true, 15, 15), "{broken}");
            assert_eq!(response, "permessage-deflate; client_no_context_takeover");
        }
    }

    #[test]
    fn server_takes_the_first_acceptable_offer_and_skips_other_extensions() {
        let header = "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=10, \
                      permessage-deflate";
        let (agreed, response) = server_answer(&DeflateConfig::default(), header).unwrap();
        assert_eq!(agreed, params(false, false, 10, 15));
        assert_eq!(response, "permessage-deflate; server_max_window_bits=10");
        assert_eq!(server_answer(&DeflateConfig::default(), "foo, bar"), None);
        assert_eq!(DeflateConfig::default().server_accept(&[]), None);
    }

    #[test]
    fn server_grants_no_context_takeover_requests() {
        let (agreed, response) = server_answer(
            &DeflateConfig::default(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        )
        .unwrap();
        assert_eq!(agreed, params(true, true, 15, 15));
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn server_adds_its_own_no_context_takeover() {
        let config = DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        let (agreed, response) = server_answer(&config, "permessage-deflate").unwrap();
        assert_eq!(agreed, params(true, true, 15, 15));
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn server_window_is_the_smaller_of_asked_and_configured() {
        let config = DeflateConfig {
            server_max_window_bits: 12,
            ..DeflateConfig::default()
        };
        let cases = [
            ("permessage-deflate; server_max_window_bits=10", 10, "=10"),
            ("permessage-deflate; server_max_window_bits=8", 8, "=8"),
            ("permessage-deflate; server_max_window_bits=15", 12, "=12"),
            // §7.1.2.1: the server may limit itself unasked.
            ("permessage-deflate", 12, "=12"),
        ];
        for (offer, bits, answered) in cases {
            let (agreed, response) = server_answer(&config, offer).unwrap();
            assert_eq!(agreed.server_max_window_bits, bits, "{offer}");
            assert_eq!(
                response,
                format!("permessage-deflate; server_max_window_bits{answered}")
            );
        }
        // Asked for, at the default: still answered (§7.1.2.1 "MUST").
        let (_, response) = server_answer(
            &DeflateConfig::default(),
            "permessage-deflate; server_max_window_bits=15",
        )
        .unwrap();
        assert_eq!(response, "permessage-deflate; server_max_window_bits=15");
    }

    #[test]
    fn server_limits_the_client_window_only_when_offered() {
        let config = DeflateConfig {
            client_max_window_bits: 10,
            ..DeflateConfig::default()
        };
        let cases = [
            // Bare: we choose.
            (
                "permessage-deflate; client_max_window_bits",
                10,
                "; client_max_window_bits=10",
            ),
            // With a value: the smaller.
            (
                "permessage-deflate; client_max_window_bits=9",
                9,
                "; client_max_window_bits=9",
            ),
            (
                "permessage-deflate; client_max_window_bits=12",
                10,
                "; client_max_window_bits=10",
            ),
            // Absent: §7.1.2.2 forbids answering it; the client uses 15.
            ("permessage-deflate", 15, ""),
        ];
        for (offer, bits, answered) in cases {
            let (agreed, response) = server_answer(&config, offer).unwrap();
            assert_eq!(agreed.client_max_window_bits, bits, "{offer}");
            assert_eq!(response, format!("permessage-deflate{answered}"), "{offer}");
        }
        // At the default, a bare offer needs no answer.
        let (agreed, response) = server_answer(
            &DeflateConfig::default(),
            "permessage-deflate; client_max_window_bits",
        )
        .unwrap();
        assert_eq!(agreed.client_max_window_bits, 15);
        assert_eq!(response, "permessage-deflate");
    }

    #[test]
    fn server_answers_autobahn_offers() {
        // The shape of the offers Autobahn's 13.x client cases send.
        let header = "permessage-deflate; client_no_context_takeover; client_max_window_bits; \
                      server_no_context_takeover; server_max_window_bits=9";
        let (agreed, response) = server_answer(&DeflateConfig::default(), header).unwrap();
        assert_eq!(agreed, params(true, true, 9, 15));
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=9"
        );
    }

    fn config_strategy() -> impl Strategy<Value = DeflateConfig> {
        (any::<bool>(), any::<bool>(), 8u8..=15, 8u8..=15).prop_map(|(s, c, sb, cb)| {
            DeflateConfig {
                server_no_context_takeover: s,
                client_no_context_takeover: c,
                server_max_window_bits: sb,
                client_max_window_bits: cb,
                ..DeflateConfig::default()
            }
        })
    }

    proptest! {
        /// Whatever both ends want, our client and our server agree, and on
        /// nothing looser than either asked for.
        #[test]
        fn client_and_server_agree(client in config_strategy(), server in config_strategy()) {
            let offer = client.client_offer();
            let offers = parse_header(&[&offer]).unwrap();
            let (server_params, response) = server.server_accept(&offers).unwrap();
            let client_params = client.client_accept(&[&response]).unwrap().unwrap();
            prop_assert_eq!(client_params, server_params);
            let p = client_params;
            prop_assert!(p.server_no_context_takeover >= client.server_no_context_takeover);
            prop_assert!(p.server_no_context_takeover >= server.server_no_context_takeover);
            prop_assert!(p.client_no_context_takeover >= client.client_no_context_takeover);
            prop_assert!(p.client_no_context_takeover >= server.client_no_context_takeover);
            prop_assert!(p.server_max_window_bits <= client.server_max_window_bits);
            prop_assert!(p.server_max_window_bits <= server.server_max_window_bits);
            prop_assert!(p.client_max_window_bits <= client.client_max_window_bits);
            prop_assert!(p.client_max_window_bits <= server.client_max_window_bits);
        }
    }

    // ---- the codec: helpers ----

    const LIMIT: usize = 1 << 20;

    fn compress(d: &mut Deflate, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        d.compress(payload, &mut out).unwrap();
        out
    }

    /// Decompresses one message given as frame payloads.
    fn decompress(d: &mut Deflate, frames: &[&[u8]], max: usize) -> Result<Vec<u8>, DeflateError> {
        let mut out = Vec::new();
        for frame in frames {
            d.decompress(frame, &mut out, max)?;
        }
        d.finish_message(&mut out, max)?;
        Ok(out)
    }

    fn client_and_server(params: DeflateParams) -> (Deflate, Deflate) {
        (
            Deflate::new(Role::Client, params, 6, 0),
            Deflate::new(Role::Server, params, 6, 0),
        )
    }

    /// Text that compresses the way chat or JSON does.
    fn json(i: usize) -> Vec<u8> {
        format!(
            r#"{{"id":{i},"user":"user{}","text":"message number {i}","tags":["a","b"]}}"#,
            i % 7
        )
        .into_bytes()
    }

    /// Bytes that do not compress, from a fixed-seed generator.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    // ---- the codec: RFC 7692 §7.2.3 examples ----

    pub(super) const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    #[test]
    fn rfc_7_2_3_1_hello_compresses_to_the_rfc_bytes() {
        let (_, mut server) = client_and_server(DeflateParams::default());
        assert_eq!(compress(&mut server, b"Hello"), HELLO);
    }

    #[test]
    fn rfc_7_2_3_2_context_takeover_shortens_the_second_hello() {
        let (mut client, mut server) = client_and_server(DeflateParams::default());
        assert_eq!(compress(&mut server, b"Hello"), HELLO);
        assert_eq!(
            compress(&mut server, b"Hello"),
            [0xf2, 0x00, 0x11, 0x00, 0x00]
        );
        assert_eq!(decompress(&mut client, &[&HELLO], LIMIT).unwrap(), b"Hello");
        assert_eq!(
            decompress(&mut client, &[&[0xf2, 0x00, 0x11, 0x00, 0x00]], LIMIT).unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn rfc_7_2_3_2_without_context_takeover_both_hellos_are_whole() {
        let (mut client, mut server) = client_and_server(params(true, false, 15, 15));
        for _ in 0..3 {
            assert_eq!(compress(&mut server, b"Hello"), HELLO);
            assert_eq!(decompress(&mut client, &[&HELLO], LIMIT).unwrap(), b"Hello");
        }
    }

    #[test]
    fn rfc_7_2_3_1_fragmented_hello() {
        let (mut client, _) = client_and_server(DeflateParams::default());
        let message = decompress(&mut client, &[&HELLO[..3], &HELLO[3..]], LIMIT).unwrap();
        assert_eq!(message, b"Hello");
    }

    #[test]
    fn rfc_7_2_3_3_stored_block() {
        let (mut client, _) = client_and_server(DeflateParams::default());
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(
            decompress(&mut client, &[&stored], LIMIT).unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn rfc_7_2_3_4_final_block_and_what_follows_it() {
        let (mut client, _) = client_and_server(DeflateParams::default());
        let last = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(decompress(&mut client, &[&last], LIMIT).unwrap(), b"Hello");
        // Whatever follows the final block is ignored, and the next message
        // starts a new stream.
        let trailing: &[u8] = &[0xde, 0xad];
        assert_eq!(
            decompress(&mut client, &[&last, trailing], LIMIT).unwrap(),
            b"Hello"
        );
        assert!(client.decompressor.is_none());
        assert_eq!(decompress(&mut client, &[&HELLO], LIMIT).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7_2_3_5_two_blocks_in_one_message() {
        let (mut client, _) = client_and_server(DeflateParams::default());
        let two = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(decompress(&mut client, &[&two], LIMIT).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7_2_3_6_flushed_message_then_empty_fragment() {
        // The whole flush sent in the first frame, and a last frame holding
        // only the header of an empty stored block.
        let (mut client, _) = client_and_server(DeflateParams::default());
        let first = [
            0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x00, 0xff, 0xff,
        ];
        assert_eq!(
            decompress(&mut client, &[&first, &[0x00]], LIMIT).unwrap(),
            b"Hello"
        );
    }

    // ---- the codec: round trips ----

    fn kept(pair: (Deflate, Deflate)) -> (Deflate, Deflate) {
        (pair.0.keep_zlib_state(true), pair.1.keep_zlib_state(true))
    }

    #[test]
    fn many_messages_round_trip_with_context_takeover() {
        let mut sizes = Vec::new();
        for keep in [true, false] {
            let (client, server) = client_and_server(DeflateParams::default());
            let (mut client, mut server) =
                (client.keep_zlib_state(keep), server.keep_zlib_state(keep));
            let mut wire = 0;
            for i in 0..300 {
                let m = json(i);
                let c = compress(&mut client, &m);
                wire += c.len();
                assert_eq!(decompress(&mut server, &[&c], LIMIT).unwrap(), m);
                let c = compress(&mut server, &m);
                assert_eq!(decompress(&mut client, &[&c], LIMIT).unwrap(), m);
            }
            let plain: usize = (0..300).map(|i| json(i).len()).sum();
            // Each message mostly repeats the previous one.
            assert!(wire * 4 < plain, "{wire} of {plain}");
            assert_eq!(client.compressor.is_some(), keep);
            assert_eq!(client.decompressor.is_some(), keep);
            // Only the freed state keeps a window, and never more than one.
            assert_eq!(client.sent_window.is_empty(), keep);
            assert_eq!(server.received_window.is_empty(), keep);
            assert!(client.sent_window.capacity() <= MAX_SENT_WINDOW);
            assert!(server.received_window.capacity() <= 1 << 15);
            sizes.push(wire);
        }
        // A state rebuilt from the window compresses as well as a kept one.
        assert!(sizes[1] * 100 <= sizes[0] * 101, "{sizes:?}");
    }

    #[test]
    fn a_freed_state_keeps_only_the_last_window() {
        // Messages longer than a 9-bit window, each unlike the last but
        // the final one, which repeats the end of the one before.
        let (mut client, mut server) = client_and_server(params(false, false, 9, 9));
        let first = noise(2000, 1);
        let c = compress(&mut client, &first);
        assert_eq!(decompress(&mut server, &[&c], LIMIT).unwrap(), first);
        assert_eq!(client.sent_window, first[2000 - 512..]);
        assert_eq!(server.received_window, first[2000 - 512..]);
        let again = first[2000 - 200..].to_vec();
        let c = compress(&mut client, &again);
        // One match into the window, not 200 literals.
        assert!(c.len() < 20, "{}", c.len());
        assert_eq!(decompress(&mut server, &[&c], LIMIT).unwrap(), again);
        let mut expected = first[2000 - 312..].to_vec();
        expected.extend_from_slice(&again);
        assert_eq!(client.sent_window, expected);
        assert_eq!(server.received_window, expected);
    }

    #[test]
    fn a_freed_state_interoperates_with_a_kept_one() {
        // Either end may free its state without the other knowing.
        for p in [
            DeflateParams::default(),
            params(false, false, 8, 8),
            params(false, false, 12, 10),
        ] {
            let (mut client, server) = client_and_server(p);
            let mut server = server.keep_zlib_state(true);
            let mut m = Vec::new();
            for i in 0..200 {
                m.extend_from_slice(&json(i));
                let c = compress(&mut client, &m);
                let frames: Vec<&[u8]> = c.chunks(7).collect();
                assert_eq!(decompress(&mut server, &frames, LIMIT).unwrap(), m);
                let c = compress(&mut server, &m);
                assert_eq!(decompress(&mut client, &[&c], LIMIT).unwrap(), m);
            }
            assert!(client.compressor.is_none() && client.decompressor.is_none());
            let window = window_len(p.client_max_window_bits);
            assert_eq!(client.sent_window.len(), window.min(MAX_SENT_WINDOW));
            assert_eq!(
                client.received_window.len(),
                window_len(p.server_max_window_bits)
            );
        }
    }

    #[test]
    fn a_peer_reaching_past_a_freed_window_is_corrupt() {
        // The server compresses with 15 bits but the client expects 9:
        // a match 1000 bytes back cannot be served from a 512-byte window.
        let mut server = Deflate::new(Role::Server, params(false, false, 15, 15), 6, 0);
        let mut client = Deflate::new(Role::Client, params(false, false, 9, 15), 6, 0);
        let m = noise(1000, 9);
        let c = compress(&mut server, &m);
        assert_eq!(decompress(&mut client, &[&c], LIMIT).unwrap(), m);
        let c = compress(&mut server, &m[..100]);
        let result = decompress(&mut client, &[&c], LIMIT);
        assert!(
            matches!(result, Err(DeflateError::Corrupt(_))),
            "{result:?}"
        );
        assert!(client.decompressor.is_none() && client.received_window.is_empty());
    }

    #[test]
    fn many_messages_round_trip_without_context_takeover() {
        let (mut client, mut server) = client_and_server(params(true, true, 15, 15));
        let mut wire = 0;
        for i in 0..300 {
            let m = json(i);
            let c = compress(&mut client, &m);
            wire += c.len();
            assert_eq!(decompress(&mut server, &[&c], LIMIT).unwrap(), m);
            let c = compress(&mut server, &m);
            assert_eq!(decompress(&mut client, &[&c], LIMIT).unwrap(), m);
            // §7.1.1: nothing is kept between messages.
            assert!(client.compressor.is_none() && client.decompressor.is_none());
            assert!(server.compressor.is_none() && server.decompressor.is_none());
        }
        let with_context = {
            let (mut client, _) = client_and_server(DeflateParams::default());
            (0..300)
                .map(|i| compress(&mut client, &json(i)).len())
                .sum::<usize>()
        };
        assert!(with_context * 2 < wire, "{with_context} vs {wire}");
    }

    #[test]
    fn each_direction_follows_its_own_context_takeover() {
        // Only the server resets: the client keeps its compressor and the
        // server its decompressor.
        let (mut client, mut server) = kept(client_and_server(params(true, false, 15, 15)));
        for i in 0..5 {
            let c = compress(&mut client, &json(i));
            assert_eq!(decompress(&mut server, &[&c], LIMIT).unwrap(), json(i));
            let c = compress(&mut server, &json(i));
            assert_eq!(decompress(&mut client, &[&c], LIMIT).unwrap(), json(i));
            assert!(client.compressor.is_some() && server.decompressor.is_some());
            assert!(server.compressor.is_none() && client.decompressor.is_none());
        }
    }

    #[test]
    fn state_is_allocated_on_first_use() {
        let (mut client, mut server) = kept(client_and_server(DeflateParams::default()));
        assert!(client.compressor.is_none() && client.decompressor.is_none());
        let c = compress(&mut client, b"first message");
        assert!(client.compressor.is_some() && client.decompressor.is_none());
        assert!(server.decompressor.is_none());
        decompress(&mut server, &[&c], LIMIT).unwrap();
        assert!(server.decompressor.is_some() && server.compressor.is_none());
    }

    #[test]
    fn a_message_split_at_every_byte_decompresses() {
        let m = b"Hello, hello, hello! A short message that repeats itself, hello.";
        let (mut client, mut server) = client_and_server(DeflateParams::default());
        let first = compress(&mut server, m);
        let second = compress(&mut server, m);
        assert!(second.len() < first.len());
        assert_eq!(decompress(&mut client, &[&first], LIMIT).unwrap(), m);
        // The second message refers to the first: split it at every point,
        // each time on a fresh copy of the receiver's state.
        for at in 0..=second.len() {
            let mut receiver = Deflate::new(Role::Client, DeflateParams::default(), 6, 0);
            decompress(&mut receiver, &[&first], LIMIT).unwrap();
            let (a, b) = second.split_at(at);
            assert_eq!(
                decompress(&mut receiver, &[a, b], LIMIT).unwrap(),
                m,
                "split at {at}"
            );
        }
        // And one byte per frame.
        let mut receiver = Deflate::new(Role::Client, DeflateParams::default(), 6, 0);
        let bytes: Vec<&[u8]> = first.chunks(1).collect();
        assert_eq!(decompress(&mut receiver, &bytes, LIMIT).unwrap(), m);
        let bytes: Vec<&[u8]> = second.chunks(1).collect();
        assert_eq!(decompress(&mut receiver, &bytes, LIMIT).unwrap(), m);
    }

    #[test]
    fn empty_message_is_one_byte_on_the_wire() {
        let (mut client, mut server) = client_and_server(DeflateParams::default());
        // Fresh compressor, and after a message with nothing left to flush.
        assert_eq!(compress(&mut server, b""), [0x00]);
        assert_eq!(decompress(&mut client, &[&[0x00]], LIMIT).unwrap(), b"");
        let c = compress(&mut server, b"Hello");
        assert_eq!(decompress(&mut client, &[&c], LIMIT).unwrap(), b"Hello");
        assert_eq!(compress(&mut server, b""), [0x00]);
        assert_eq!(decompress(&mut client, &[&[0x00]], LIMIT).unwrap(), b"");
        // The context survives both.
        let c = compress(&mut server, b"Hello");
        assert_eq!(c, [0xf2, 0x00, 0x11, 0x00, 0x00]);
        assert_eq!(decompress(&mut client, &[&c], LIMIT).unwrap(), b"Hello");
    }

    #[test]
    fn empty_compressed_payload_is_an_empty_message() {
        let (mut client, _) = client_and_server(DeflateParams::default());
        assert_eq!(decompress(&mut client, &[&HELLO], LIMIT).unwrap(), b"Hello");
        assert_eq!(decompress(&mut client, &[], LIMIT).unwrap(), b"");
        assert_eq!(decompress(&mut client, &[&[]], LIMIT).unwrap(), b"");
        // The inflater was not disturbed: the context still holds "Hello".
        let back_reference = [0xf2, 0x00, 0x11, 0x00, 0x00];
        assert_eq!(
            decompress(&mut client, &[&back_reference], LIMIT).unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn incompressible_and_large_messages_round_trip() {
        let (mut client, mut server) = client_and_server(DeflateParams::default());
        for (i, len) in [1, 100, 65_535, 65_536, 300_000].into_iter().enumerate() {
            let m = noise(len, i as u64);
            let c = compress(&mut client, &m);
            // Stored blocks: a few bytes of overhead per 64 KiB.
            assert!(
                c.len() <= len + 5 * (len / 16_384 + 2),
                "{} for {len}",
                c.len()
            );
            let frames: Vec<&[u8]> = c.chunks(4096).collect();
            assert_eq!(decompress(&mut server, &frames, LIMIT).unwrap(), m);
        }
    }

    #[test]
    fn every_level_round_trips() {
        for level in 0..=12 {
            let mut client = Deflate::new(Role::Client, DeflateParams::default(), level, 0);
            let mut server = Deflate::new(Role::Server, DeflateParams::default(), 0, 0);
            for i in 0..20 {
                let c = compress(&mut client, &json(i));
                assert_eq!(
                    decompress(&mut server, &[&c], LIMIT).unwrap(),
                    json(i),
                    "level {level}"
                );
            }
        }
    }

    #[test]
    fn threshold_decides_what_is_compressed() {
        let d = Deflate::new(Role::Server, DeflateParams::default(), 6, 32);
        assert!(!d.should_compress(0));
        assert!(!d.should_compress(31));
        assert!(d.should_compress(32));
        assert!(Deflate::new(Role::Server, DeflateParams::default(), 6, 0).should_compress(0));
    }

    // ---- the codec: window bits ----

    /// 4 KiB of noise, twice: the repeat is only found with a window over
    /// 4 KiB.
    fn far_repeat() -> Vec<u8> {
        let half = noise(4096, 7);
        [half.as_slice(), half.as_slice()].concat()
    }

    #[test]
    fn window_9_output_inflates_with_a_window_9_inflater() {
        let m = far_repeat();
        let (mut client, mut server) = client_and_server(params(false, false, 9, 9));
        for _ in 0..3 {
            let c = compress(&mut server, &m);
            assert_eq!(decompress(&mut client, &[&c], LIMIT).unwrap(), m);
            let c = compress(&mut client, &m);
            assert_eq!(decompress(&mut server, &[&c], LIMIT).unwrap(), m);
        }
        assert!(max_distance(&compress(&mut server, &m)) <= 512);
    }

    #[test]
    fn window_8_output_never_reaches_back_more_than_256_bytes() {
        // Each chunk of noise repeated right after itself: a match at every
        // distance from 100 to 400 bytes is on offer.
        let mut m = Vec::new();
        for d in (100..400).step_by(7) {
            let chunk = noise(d, d as u64);
            m.extend_from_slice(&chunk);
            m.extend_from_slice(&chunk);
        }
        for level in 1..=9 {
            let (mut client, mut server) = client_and_server(params(false, false, 8, 8));
            server.level = Compression::new(level);
            let mut furthest = 0;
            for _ in 0..2 {
                let c = compress(&mut server, &m);
                furthest = furthest.max(max_distance(&c));
                assert_eq!(decompress(&mut client, &[&c], LIMIT).unwrap(), m);
            }
            // zlib's MAX_DIST for a 512-byte window is 512 - 262 = 250; the
            // lower bound shows far matches were on offer and taken.
            assert!((200..=256).contains(&furthest), "level {level}: {furthest}");
        }
    }

    // ---- the codec: bad input ----

    #[test]
    fn invalid_deflate_is_corrupt() {
        let (mut client, _) = client_and_server(DeflateParams::default());
        // BTYPE 11 is reserved (RFC 1951 §3.2.3).
        let result = decompress(&mut client, &[&[0xff, 0xff, 0xff]], LIMIT);
        assert!(
            matches!(result, Err(DeflateError::Corrupt(_))),
            "{result:?}"
        );
        assert!(client.decompressor.is_none());
        // A stored block whose length check fails.
        let (mut client, _) = client_and_server(DeflateParams::default());
        let result = decompress(&mut client, &[&[0x00, 0x05, 0x00, 0x00, 0x00]], LIMIT);
        assert!(
            matches!(result, Err(DeflateError::Corrupt(_))),
            "{result:?}"
        );
    }

    #[test]
    fn limit_is_exact() {
        let m = noise(1000, 3);
        let (mut client, mut server) = client_and_server(params(true, true, 15, 15));
        let c = compress(&mut server, &m);
        assert_eq!(decompress(&mut client, &[&c], 1000).unwrap(), m);
        assert!(matches!(
            decompress(&mut client, &[&c], 999),
            Err(DeflateError::TooLarge)
        ));
        assert!(client.decompressor.is_none());
        // Across frames, the limit is on the whole message.
        let frames: Vec<&[u8]> = c.chunks(10).collect();
        assert!(matches!(
            decompress(&mut client, &frames, 999),
            Err(DeflateError::TooLarge)
        ));
    }

    #[test]
    fn a_bomb_fails_before_it_is_inflated() {
        const MAX: usize = 64 << 20;
        // 1 GiB of zeros in ~6.5 MB of DEFLATE.
        let bomb = zeros_bomb(1 << 30);
        let mut client = Deflate::new(Role::Client, DeflateParams::default(), 6, 0);
        let mut out = Vec::new();
        let mut fed = 0;
        let mut result = Ok(());
        for frame in bomb.chunks(64 << 10) {
            fed += frame.len();
            result = client.decompress(frame, &mut out, MAX);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(DeflateError::TooLarge)), "{result:?}");
        assert!(out.capacity() <= MAX + 1, "capacity {}", out.capacity());
        // It stopped as soon as the limit was crossed: 64 MiB of zeros is
        // about 1/16 of the input.
        assert!(fed < bomb.len() / 8, "fed {fed} of {}", bomb.len());
    }

    #[test]
    fn a_bomb_in_one_frame_fails_the_same() {
        const MAX: usize = 1 << 20;
        let bomb = zeros_bomb(64 << 20);
        let (mut client, _) = client_and_server(DeflateParams::default());
        let mut out = Vec::with_capacity(10);
        assert!(matches!(
            client.decompress(&bomb, &mut out, MAX),
            Err(DeflateError::TooLarge)
        ));
        assert!(out.capacity() <= MAX + 1);
        // Exactly at the limit is fine, one byte over is not.
        let small = zeros_bomb(1000);
        let size = 1 + 258 * 1000usize.div_ceil(258);
        let (mut client, _) = client_and_server(params(false, true, 15, 15));
        assert_eq!(
            decompress(&mut client, &[&small], size).unwrap(),
            vec![0; size]
        );
        assert!(matches!(
            decompress(&mut client, &[&small], size - 1),
            Err(DeflateError::TooLarge)
        ));
    }

    #[test]
    fn output_over_the_limit_before_a_fault_is_too_large() {
        // Found by the `inflate` fuzz target: a block of 17+ bytes of output,
        // then a corrupt block header. Whether the inflater reached the
        // fault in the call that crossed the 16-byte limit depended on how
        // the payload was cut into frames, and with it the close code (1007
        // or 1009); the limit was crossed first, so it is 1009 either way.
        let mut payload = vec![0xf2; 17];
        payload.extend_from_slice(&[0x07, 0x10, 0xff, 0x2b, 0xc9, 0x48, 0x4b, 0x01, 0x00]);
        for frame_len in [payload.len(), 7, 1] {
            let mut server = Deflate::new(Role::Server, params(false, false, 15, 10), 6, 0);
            let frames: Vec<&[u8]> = payload.chunks(frame_len).collect();
            let result = decompress(&mut server, &frames, 16);
            assert!(
                matches!(result, Err(DeflateError::TooLarge)),
                "frames of {frame_len}: {result:?}"
            );
        }
    }

    // ---- the codec: properties ----

    fn payload() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..700),
            prop::collection::vec(0u8..3, 0..3000),
            "[ab ]{0,300}".prop_map(String::into_bytes),
        ]
    }

    fn params_strategy() -> impl Strategy<Value = DeflateParams> {
        (any::<bool>(), any::<bool>(), 8u8..=15, 8u8..=15)
            .prop_map(|(s, c, sb, cb)| params(s, c, sb, cb))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any messages, any parameters, any level, any frame size, state
        /// kept or rebuilt at either end: what one end compresses the other
        /// inflates, in both directions.
        #[test]
        fn round_trip(
            messages in prop::collection::vec(payload(), 1..8),
            p in params_strategy(),
            level in 0u32..=9,
            frame in 1usize..200,
            keep in any::<(bool, bool)>(),
        ) {
            let mut client = Deflate::new(Role::Client, p, level, 0).keep_zlib_state(keep.0);
            let mut server = Deflate::new(Role::Server, p, level, 0).keep_zlib_state(keep.1);
            for m in &messages {
                let c = compress(&mut client, m);
                prop_assert!(!c.is_empty());
                let frames: Vec<&[u8]> = c.chunks(frame).collect();
                prop_assert_eq!(&decompress(&mut server, &frames, LIMIT).unwrap(), m);
                let c = compress(&mut server, m);
                let frames: Vec<&[u8]> = c.chunks(frame).collect();
                prop_assert_eq!(&decompress(&mut client, &frames, LIMIT).unwrap(), m);
            }
        }

        /// Garbage never panics and never outgrows the limit.
        #[test]
        fn garbage_is_an_error_not_a_panic(
            data in prop::collection::vec(any::<u8>(), 0..300),
            max in 0usize..2000,
        ) {
            let mut client = Deflate::new(Role::Client, DeflateParams::default(), 6, 0);
            let mut out = Vec::new();
            let result = client
                .decompress(&data, &mut out, max)
                .and_then(|()| client.finish_message(&mut out, max));
            prop_assert!(out.capacity() <= max + 1 || result.is_ok());
            prop_assert!(out.len() <= max || result.is_err());
        }
    }
}
