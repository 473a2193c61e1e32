//! `duplex bench fanout` against a `duplex serve`: every publish
//! reaches every subscriber once, and the report says so.

mod common;

use common::{Server, bench};

fn fanout(server: &Server, extra: &[&str]) -> serde_json::Value {
    let pid = server.child.id().to_string();
    let url = format!("ws://{}", server.addr);
    let mut args = vec![
        "--size",
        "100",
        "--secs",
        "1",
        "--warmup",
        "0.2",
        "--settle",
        "0.3",
        "--server-pid",
        &pid,
    ];
    args.extend_from_slice(extra);
    let (out, json) = bench("fanout", &url, &args);
    assert!(out.status.success(), "{json}");
    assert_eq!(json["mode"], "fanout");
    json
}

#[test]
fn fanout_at_a_rate_loses_and_duplicates_nothing() {
    let server = Server::start(&["--api-key", "k"]);
    let json = fanout(
        &server,
        &[
            "--subscribers",
            "60",
            "--topics",
            "3",
            "--rate",
            "60",
            "--api-key",
            "k",
        ],
    );
    assert_eq!(json["publish_errors"], 0, "{json}");
    assert!(json["acked_total"].as_u64().unwrap() >= 60, "{json}");
    // Each publish goes to one topic: 20 subscribers.
    assert_eq!(
        json["expected"].as_u64().unwrap(),
        json["acked_total"].as_u64().unwrap() * 20,
        "{json}"
    );
    assert_eq!(json["lost"], 0, "{json}");
    assert_eq!(json["duplicated"], 0, "{json}");
    assert_eq!(json["misrouted"], 0, "{json}");
    assert_eq!(json["bogus"], 0, "{json}");
    assert!(json["deliveries"].as_u64().unwrap() > 0, "{json}");
    assert!(json["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["server"]["cpu_us_per_delivery"].is_number(), "{json}");
    assert!(
        json["server"]["idle_bytes_per_subscriber"].is_number(),
        "{json}"
    );
}

#[test]
fn fanout_at_max_rate_keeps_publishes_in_flight_bounded() {
    let server = Server::start(&[]);
    let json = fanout(
        &server,
        &["--subscribers", "20", "--rate", "max", "--in-flight", "2"],
    );
    assert_eq!(json["publish_errors"], 0, "{json}");
    assert_eq!(json["lost"], 0, "{json}");
    assert_eq!(json["duplicated"], 0, "{json}");
    assert!(json["deliveries_per_sec"].as_f64().unwrap() > 0.0, "{json}");
    // Counted from the deliveries: at most two publishes were ever waiting
    // for their subscribers, and the run did keep two going.
    assert_eq!(json["max_in_flight"], 2, "{json}");
}

#[test]
fn refused_publishes_are_counted_with_the_reason() {
    let server = Server::start(&["--api-key", "right"]);
    let json = fanout(
        &server,
        &["--subscribers", "5", "--rate", "20", "--api-key", "wrong"],
    );
    assert_eq!(json["acked_total"], 0, "{json}");
    assert!(json["publish_errors"].as_u64().unwrap() > 0, "{json}");
    assert!(
        json["first_publish_error"]
            .as_str()
            .unwrap()
            .contains("401"),
        "{json}"
    );
    assert_eq!(json["expected"], 0, "{json}");
    assert_eq!(json["lost"], 0, "{json}");
}
