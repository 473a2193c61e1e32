//! The flags of `duplex bench fanout` and the plan they make: where each
//! subscriber connects, where each topic's publishes go, how fast.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::stamp::{MAX_TOPICS, MAX_TS, STAMP_LEN};
use crate::bench::client::{Dialer, parse_url, resolve};
use crate::bench::error::BenchError;
use crate::bench::flags::{MAX_SIZE, seconds};
use crate::bench::proc::Sampler;
use crate::bench::report::Output;

/// The most subscribers one run may open.
pub(super) const MAX_SUBSCRIBERS: usize = 1_000_000;
/// The most publishes in flight.
pub(super) const MAX_IN_FLIGHT: usize = 4096;
/// File descriptors needed besides the subscribers.
pub(super) const SPARE_FDS: u64 = 64 + MAX_IN_FLIGHT as u64;

/// How subscribers subscribe and the publisher publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Dialect {
    /// duplex serve: WebSocket on /topics/{topic}, POST /topics/{topic}.
    Duplex,
    /// duplex serve's duplex.v1: a WebSocket on /topics with the
    /// duplex.v1 subprotocol that subscribes to its topic; POST
    /// /topics/{topic}.
    V1,
    /// A Pusher server (Sockudo): /app/{key}, pusher:subscribe, the signed
    /// events API.
    Pusher,
    /// Raw WebSockets on the URLs as given and POST to --publish-url;
    /// `{topic}` in them is replaced by the topic's name.
    Plain,
}

/// Flags of `duplex bench fanout`.
#[derive(Debug, Clone, Args)]
pub(crate) struct FanoutArgs {
    /// The first node: a duplex server's ws:// URL (its topics are under
    /// /topics/), a Pusher server's, or with --dialect plain the
    /// subscribers' URL, where `{topic}` is replaced.
    pub(super) url: String,
    /// Payload size of each publish, in bytes (a stamp of 18 bytes, then
    /// padding).
    #[arg(long, default_value_t = 20, value_name = "BYTES")]
    pub(super) size: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub(super) secs: f64,
    /// Seconds of publishing before measuring starts.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub(super) warmup: f64,
    /// Seconds to wait once every subscriber is in before publishing (the
    /// servers' idle RSS is read then).
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub(super) settle: f64,
    /// Subscribers to open.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub(super) subscribers: usize,
    /// Topics (subscriber i subscribes to topic i mod T, named
    /// fanout-0, fanout-1...).
    #[arg(long, default_value_t = 1, value_name = "T")]
    pub(super) topics: usize,
    /// Publishes a second, or 0 or "max" for as fast as delivery
    /// allows (at most --in-flight publishes not yet delivered to all).
    #[arg(long, default_value = "max", value_name = "R")]
    pub(super) rate: String,
    /// Publishes in flight at most (and HTTP connections of the
    /// publisher).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub(super) in_flight: usize,
    /// Another node to spread subscribers over (repeatable); the
    /// URL given first is the first node.
    #[arg(long = "url", value_name = "URL")]
    pub(super) nodes: Vec<String>,
    /// Where to POST publishes (http://); `{topic}` is replaced.
    /// Default: the first node's /topics/{topic} (duplex) or
    /// /apps/{id}/events (pusher); required for --dialect plain.
    #[arg(long, value_name = "URL")]
    pub(super) publish_url: Option<String>,
    /// How to subscribe and publish.
    #[arg(long, value_enum, default_value_t = Dialect::Duplex)]
    pub(super) dialect: Dialect,
    /// --dialect duplex: the server's --api-key, sent as a bearer token.
    #[arg(long, value_name = "KEY")]
    pub(super) api_key: Option<String>,
    /// --dialect pusher: the app id.
    #[arg(long, default_value = "bench-app", value_name = "ID")]
    pub(super) app_id: String,
    /// --dialect pusher: the app key.
    #[arg(long, default_value = "bench-key", value_name = "KEY")]
    pub(super) app_key: String,
    /// --dialect pusher: the app secret that signs publishes.
    #[arg(long, default_value = "bench-secret", value_name = "SECRET")]
    pub(super) app_secret: String,
    /// More server processes whose CPU and RSS count, comma
    /// separated (with --server-pid).
    #[arg(long, value_delimiter = ',', value_name = "PIDS")]
    pub(super) server_pids: Vec<u32>,
    /// Seconds a publish may take to reach every subscriber before
    /// it leaves the in-flight count (rate max).
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub(super) deliver_timeout: f64,
    /// Seconds to wait after publishing ends for deliveries still
    /// on their way, before counting lost ones.
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    pub(super) drain: f64,
    /// The server's process id: its CPU time per delivery and its RSS.
    #[arg(long, value_name = "PID")]
    pub(super) server_pid: Option<u32>,
    #[command(flatten)]
    pub(crate) output: Output,
}

/// The rate of publishing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Rate {
    /// As fast as delivery allows.
    Max,
    /// Publishes a second.
    Fixed(f64),
}

pub(super) fn parse_rate(rate: &str) -> Result<Rate, BenchError> {
    let rate = rate.trim();
    if rate.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    match rate.parse::<f64>() {
        Ok(0.0) => Ok(Rate::Max),
        Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000_000.0 => Ok(Rate::Fixed(r)),
        _ => Err(BenchError::Usage(format!(
            "--rate {rate}: expected \"max\", 0, or publishes a second (at most 10,000,000)"
        ))),
    }
}

/// Where one topic's publishes go.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) uri: http::Uri,
    pub(super) addr: std::net::SocketAddr,
}

/// The validated settings of a fan-out run.
#[derive(Debug)]
pub(super) struct FanoutPlan {
    pub(super) dialect: Dialect,
    pub(super) subscribers: usize,
    pub(super) topics: usize,
    pub(super) size: usize,
    pub(super) rate: Rate,
    pub(super) in_flight: usize,
    /// Per node and per topic, where its subscribers connect.
    pub(super) targets: Vec<Vec<Dialer>>,
    /// Per topic, where its publishes go.
    pub(super) publish: Vec<Target>,
    pub(super) api_key: Option<String>,
    #[cfg(feature = "pusher")]
    pub(super) app: PusherApp,
    pub(super) secs: Duration,
    pub(super) warmup: Duration,
    pub(super) settle: Duration,
    pub(super) deliver_timeout: Duration,
    pub(super) drain: Duration,
    pub(super) sampler: Sampler,
    pub(super) json: bool,
}

/// The Pusher app the publisher signs for.
#[cfg(feature = "pusher")]
#[derive(Debug, Clone)]
pub(super) struct PusherApp {
    pub(super) key: String,
    pub(super) secret: String,
}

pub(super) fn topic_name(topic: usize) -> String {
    format!("fanout-{topic}")
}

pub(super) fn plan(fan: &FanoutArgs) -> Result<FanoutPlan, BenchError> {
    let usage = |s: String| Err(BenchError::Usage(s));
    if fan.subscribers == 0 || fan.subscribers > MAX_SUBSCRIBERS {
        return usage(format!("--subscribers must be 1 to {MAX_SUBSCRIBERS}"));
    }
    if fan.topics == 0 || fan.topics > MAX_TOPICS.min(fan.subscribers) {
        return usage(format!(
            "--topics must be 1 to {MAX_TOPICS} (and at most --subscribers)"
        ));
    }
    if fan.in_flight == 0 || fan.in_flight > MAX_IN_FLIGHT {
        return usage(format!("--in-flight must be 1 to {MAX_IN_FLIGHT}"));
    }
    if fan.size < STAMP_LEN || fan.size > MAX_SIZE {
        return usage(format!(
            "--size {}: fanout needs {STAMP_LEN} to {} bytes",
            fan.size, MAX_SIZE
        ));
    }
    let secs = seconds("--secs", fan.secs, false)?;
    let warmup = seconds("--warmup", fan.warmup, true)?;
    let settle = seconds("--settle", fan.settle, true)?;
    let deliver_timeout = seconds("--deliver-timeout", fan.deliver_timeout, false)?;
    let drain = seconds("--drain", fan.drain, true)?;
    // A stamp holds 78 hours of nanoseconds; a run is far shorter.
    if (warmup + secs + settle + deliver_timeout + drain).as_nanos() >= u128::from(MAX_TS) / 2 {
        return usage("the run is too long for the payload's clock (39 hours)".into());
    }
    let rate = parse_rate(&fan.rate)?;
    let names: Vec<String> = (0..fan.topics).map(topic_name).collect();
    let mut targets = Vec::new();
    for node in std::iter::once(&fan.url).chain(&fan.nodes) {
        let per_topic = names
            .iter()
            .map(|name| {
                let dialer = Dialer::plain(fanout_url(&subscriber_url(node, name, fan)?)?)?;
                Ok::<_, BenchError>(
                    dialer.protocol((fan.dialect == Dialect::V1).then_some("duplex.v1")),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        targets.push(per_topic);
    }
    let publish_template = match (&fan.publish_url, fan.dialect) {
        (Some(url), _) => url.clone(),
        (None, Dialect::Plain) => return usage("--dialect plain needs --publish-url".into()),
        (None, Dialect::Duplex | Dialect::V1) => {
            format!("http://{}/topics/{{topic}}", authority(&fan.url)?)
        }
        #[cfg(not(feature = "pusher"))]
        (None, Dialect::Pusher) => {
            return usage(
                "publishing to a Pusher server needs a duplex built with the pusher feature \
                 (cargo build --release -p duplex-cli --features pusher)"
                    .into(),
            );
        }
        #[cfg(feature = "pusher")]
        (None, Dialect::Pusher) => {
            format!("http://{}/apps/{}/events", authority(&fan.url)?, fan.app_id)
        }
    };
    let publish = names
        .iter()
        .map(|name| {
            let url = publish_template.replace("{topic}", name);
            let uri = fanout_url(&url)?;
            match uri.scheme_str() {
                Some("http") => Ok(Target {
                    addr: resolve(&uri)?,
                    uri,
                }),
                _ => Err(BenchError::Usage(format!(
                    "--publish-url {url}: expected an http:// URL"
                ))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut pids: Vec<u32> = fan.server_pid.into_iter().collect();
    pids.extend(&fan.server_pids);
    Ok(FanoutPlan {
        dialect: fan.dialect,
        subscribers: fan.subscribers,
        topics: fan.topics,
        size: fan.size,
        rate,
        in_flight: fan.in_flight,
        targets,
        publish,
        api_key: fan.api_key.clone(),
        #[cfg(feature = "pusher")]
        app: PusherApp {
            key: fan.app_key.clone(),
            secret: fan.app_secret.clone(),
        },
        secs,
        warmup,
        settle,
        deliver_timeout,
        drain,
        sampler: Sampler::new(pids)?,
        json: fan.output.json,
    })
}

/// `host:port` of a URL.
pub(super) fn authority(url: &str) -> Result<String, BenchError> {
    let uri = parse_url(url)?;
    Ok(uri.authority().map(|a| a.to_string()).unwrap_or_default())
}

/// The ws:// URL a subscriber of `topic` opens on the node `node`.
pub(super) fn subscriber_url(
    node: &str,
    topic: &str,
    fan: &FanoutArgs,
) -> Result<String, BenchError> {
    if node.contains("{topic}") || fan.dialect == Dialect::Plain {
        return Ok(node.replace("{topic}", topic));
    }
    let authority = authority(node)?;
    Ok(match fan.dialect {
        Dialect::Pusher => format!(
            "ws://{authority}/app/{}?protocol=7&client=duplex-bench&version=0.1",
            fan.app_key
        ),
        Dialect::Duplex | Dialect::Plain => format!("ws://{authority}/topics/{topic}"),
        Dialect::V1 => format!("ws://{authority}/topics"),
    })
}

/// A URL of the run: ws:// (subscribers) or http:// (publish).
pub(super) fn fanout_url(url: &str) -> Result<http::Uri, BenchError> {
    let uri = parse_url(url)?;
    match uri.scheme_str() {
        Some("ws" | "http") => Ok(uri),
        _ => Err(BenchError::Usage(format!(
            "{url}: fanout wants ws:// (subscribers) and http:// (publish) URLs"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("max").unwrap(), Rate::Max);
        assert_eq!(parse_rate("0").unwrap(), Rate::Max);
        assert_eq!(parse_rate("5").unwrap(), Rate::Fixed(5.0));
        assert_eq!(parse_rate("0.5").unwrap(), Rate::Fixed(0.5));
        for bad in ["-1", "nan", "inf", "fast", "", "1e9"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_follow_the_dialect() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: FanoutArgs,
        }
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
            plan(&cli.args).map_err(|e| e.to_string())
        };
        let p = parse(&[
            "ws://127.0.0.1:9/x",
            "--size",
            "100",
            "--topics",
            "2",
            "--url",
            "ws://127.0.0.1:10",
        ])
        .unwrap();
        assert_eq!(p.targets.len(), 2);
        assert_eq!(p.targets[1][1].uri, "ws://127.0.0.1:10/topics/fanout-1");
        assert_eq!(p.publish[0].uri, "http://127.0.0.1:9/topics/fanout-0");
        let pusher = parse(&[
            "ws://127.0.0.1:9",
            "--dialect",
            "pusher",
            "--app-id",
            "a1",
            "--app-key",
            "k1",
        ]);
        #[cfg(feature = "pusher")]
        {
            let p = pusher.unwrap();
            assert_eq!(
                p.targets[0][0].uri,
                "ws://127.0.0.1:9/app/k1?protocol=7&client=duplex-bench&version=0.1"
            );
            assert_eq!(p.publish[0].uri, "http://127.0.0.1:9/apps/a1/events");
        }
        #[cfg(not(feature = "pusher"))]
        assert!(pusher.is_err_and(|e| e.contains("--features pusher")));
        let p = parse(&[
            "ws://127.0.0.1:9/t/{topic}",
            "--dialect",
            "plain",
            "--publish-url",
            "http://127.0.0.1:9/t/{topic}",
        ])
        .unwrap();
        assert_eq!(p.targets[0][0].uri, "ws://127.0.0.1:9/t/fanout-0");
        assert_eq!(p.publish[0].uri, "http://127.0.0.1:9/t/fanout-0");
        for bad in [
            &["ws://127.0.0.1:9", "--dialect", "plain"][..],
            &["ws://127.0.0.1:9", "--size", "10"],
            &["ws://127.0.0.1:9", "--subscribers", "0"],
            &[
                "ws://127.0.0.1:9",
                "--topics",
                "2000",
                "--subscribers",
                "10",
            ],
            &["ws://127.0.0.1:9", "--rate", "-3"],
            &["ws://127.0.0.1:9", "--in-flight", "0"],
            &["ws://127.0.0.1:9", "--publish-url", "ws://127.0.0.1:9/"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
