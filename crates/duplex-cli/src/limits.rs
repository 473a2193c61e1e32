//! The connection limits every command shares, as flags.

use std::time::Duration;

use clap::Args;

/// Limits on what a peer may send, and timeouts.
#[derive(Debug, Clone, Args)]
pub(crate) struct LimitArgs {
    /// Largest message accepted, in bytes, after decompression.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    pub(crate) max_message_size: usize,
    /// Largest frame accepted, in bytes.
    #[arg(long, default_value_t = 16 << 20, value_name = "BYTES")]
    pub(crate) max_frame_size: usize,
    /// Largest HTTP head of the opening handshake, in bytes.
    #[arg(long, default_value_t = 16 << 10, value_name = "BYTES")]
    pub(crate) max_handshake_size: usize,
    /// Seconds the opening handshake may take.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub(crate) handshake_timeout: f64,
    /// Seconds to wait for the closing handshake.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub(crate) close_timeout: f64,
    /// Seconds between keepalive Pings; 0 turns keepalive off.
    #[arg(long, default_value_t = 20.0, value_name = "SECS")]
    pub(crate) ping_interval: f64,
    /// Seconds a keepalive Ping may wait for its Pong before the connection
    /// is failed (close code 1011).
    #[arg(long, default_value_t = 20.0, value_name = "SECS")]
    pub(crate) ping_timeout: f64,
    /// Seconds a send may wait for a peer that takes no byte (it stopped
    /// reading) before the connection is dropped; 0 waits as long as TCP
    /// does.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub(crate) write_timeout: f64,
    /// Seconds a peer may take to finish a message once its first frame
    /// began, before the connection is failed (close code 1008); 0 allows
    /// any time.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub(crate) fragment_timeout: f64,
    /// Bytes queued for a slow peer before sending waits.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub(crate) write_buffer: usize,
    /// Disable permessage-deflate.
    #[arg(long)]
    pub(crate) no_deflate: bool,
}

impl LimitArgs {
    pub(crate) fn apply(&self, config: &mut duplex_ws::Config) -> Result<(), String> {
        config.max_message_size = self.max_message_size;
        config.max_frame_size = self.max_frame_size;
        config.max_handshake_size = self.max_handshake_size;
        config.handshake_timeout = seconds("--handshake-timeout", self.handshake_timeout)?;
        config.close_timeout = seconds("--close-timeout", self.close_timeout)?;
        config.ping_interval = seconds_or_off("--ping-interval", self.ping_interval)?;
        config.ping_timeout = seconds("--ping-timeout", self.ping_timeout)?;
        config.write_timeout = seconds_or_off("--write-timeout", self.write_timeout)?;
        config.fragment_timeout = seconds_or_off("--fragment-timeout", self.fragment_timeout)?;
        config.write_buffer_high_water = self.write_buffer.max(1);
        if self.no_deflate {
            config.deflate = None;
        } else if config.deflate.is_none() {
            config.deflate = Some(duplex_ws::DeflateConfig::default());
        }
        Ok(())
    }
}

/// A positive number of seconds given to `flag`.
pub(crate) fn seconds(flag: &str, secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{flag} {secs}: must be a positive number of seconds"))
}

/// `None` for 0 (the feature is off), else [`seconds`].
fn seconds_or_off(flag: &str, secs: f64) -> Result<Option<Duration>, String> {
    if secs == 0.0 {
        Ok(None)
    } else {
        seconds(flag, secs).map(Some)
    }
}
