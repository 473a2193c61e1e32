//! `compare-report`: turns the raw results of `bench/compare.sh` into a report.
//!
//! ```text
//! compare-report --raw target/bench/raw --out target/bench [--lock bench/Cargo.lock]
//! ```
//!
//! Input: `RAW/<scenario>/<server>/r<round>.json`, each the JSON object that
//! `duplex bench echo|idle --json` printed (`mode` `echo` or `idle`), `r<round>.failed` for a run
//! that failed, and `RAW/meta.json` written by the script (its `scenarios` object gives
//! each scenario's server threads and pipeline depth, which go into the labels). Output
//! in `OUT`:
//!
//! - `report.json`: per scenario and server, the medians over the rounds, every round's
//!   values, and the ratios duplex/peer;
//! - `report.md`: one table, scenario × server: msgs/s, p99, server CPU µs/msg, RSS per
//!   idle connection, and duplex/peer (throughput and CPU for echo, memory for idle);
//! - `report.svg`: grouped bar charts (throughput and CPU per message relative to the
//!   `tcp-echo` ceiling, and bytes per idle connection), drawn with `plotters`' SVG
//!   backend only: text is plain SVG `<text>`, so no font library is needed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;
use serde_json::Value;

/// The contender all ratios are taken for.
const DUPLEX: &str = "duplex";
/// The ceiling the chart normalises to.
const CEILING: &str = "tcp-echo";
/// Display order of servers; others follow alphabetically.
const SERVER_ORDER: &[&str] = &[
    DUPLEX,
    CEILING,
    "tungstenite",
    "fastwebsockets",
    "tokio-websockets",
    "sockudo-ws",
    "bun",
];
/// Crates whose locked versions the report names.
const PEER_CRATES: &[(&str, &str)] = &[
    ("tungstenite", "tokio-tungstenite"),
    ("fastwebsockets", "fastwebsockets"),
    ("tokio-websockets", "tokio-websockets"),
    ("sockudo-ws", "sockudo-ws"),
];

struct Args {
    raw: PathBuf,
    out: PathBuf,
    lock: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut raw = None;
    let mut out = None;
    let mut lock = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--raw" => raw = Some(PathBuf::from(val()?)),
            "--out" => out = Some(PathBuf::from(val()?)),
            "--lock" => lock = Some(PathBuf::from(val()?)),
            "-h" | "--help" => {
                return Err("usage: compare-report --raw DIR --out DIR [--lock Cargo.lock]".into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        raw: raw.ok_or("--raw is required")?,
        out: out.ok_or("--out is required")?,
        lock,
    })
}

/// One server in one scenario, all rounds.
#[derive(Serialize, Default)]
struct Entry {
    server: String,
    rounds_ok: usize,
    rounds_failed: usize,
    /// Why rounds failed, as the script recorded it.
    failures: Vec<String>,
    /// Medians over the successful rounds; `None` when no round reported the value.
    msgs_per_sec: Option<f64>,
    mib_per_sec: Option<f64>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    p999_us: Option<f64>,
    server_cpu_us_per_msg: Option<f64>,
    bytes_per_conn: Option<f64>,
    /// Sum over the rounds of the errors the load generator counted.
    errors: u64,
    /// duplex/this server: msgs/s (echo; > 1 means duplex is faster).
    duplex_ratio_msgs_per_sec: Option<f64>,
    /// duplex/this server: server CPU µs per message (echo; < 1 means duplex is leaner).
    duplex_ratio_cpu_per_msg: Option<f64>,
    /// duplex/this server: bytes per idle connection (idle; < 1 means duplex is leaner).
    duplex_ratio_bytes_per_conn: Option<f64>,
    /// Every successful round's JSON, as the load generator printed it.
    runs: Vec<Value>,
}

#[derive(Serialize)]
struct Scenario {
    id: String,
    label: String,
    mode: String,
    conns: Option<u64>,
    size: Option<u64>,
    /// Threads of every server (1: pinned to a CPU of its own).
    server_threads: u64,
    /// Messages in flight per connection (echo).
    pipeline: u64,
    servers: Vec<Entry>,
}

#[derive(Serialize)]
struct Report {
    meta: Value,
    peer_versions: BTreeMap<String, String>,
    scenarios: Vec<Scenario>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The JSON object in a load generator's output: the whole text, or else the last line
/// that is a JSON object (tolerates stray lines before it).
fn parse_result(text: &str) -> Option<Value> {
    if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(text) {
        return Some(v);
    }
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find(Value::is_object)
}

fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn server_rank(name: &str) -> (usize, String) {
    let i = SERVER_ORDER
        .iter()
        .position(|s| *s == name)
        .unwrap_or(SERVER_ORDER.len());
    (i, name.to_owned())
}

/// Single-threaded echo first, by size, then idle, then the multi-threaded scenarios.
fn scenario_rank(sc: &Scenario) -> (u64, u8, u64, u64, String) {
    (
        sc.server_threads,
        u8::from(sc.mode != "echo"),
        sc.size.unwrap_or(0),
        sc.conns.unwrap_or(0),
        sc.id.clone(),
    )
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

fn label(sc: &Scenario) -> String {
    let mut label = match (sc.mode.as_str(), sc.conns, sc.size) {
        ("echo", Some(c), Some(s)) => format!("echo {c} × {}", human_bytes(s)),
        ("idle", Some(c), _) => format!("idle {c} conns"),
        _ => sc.id.clone(),
    };
    if sc.pipeline > 1 {
        let _ = write!(label, ", {} in flight", sc.pipeline);
    }
    if sc.server_threads > 1 {
        let _ = write!(label, ", {} threads", sc.server_threads);
    }
    label
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn load(raw: &Path, meta: &Value) -> Vec<Scenario> {
    let mut scenarios = Vec::new();
    for sdir in sorted_dirs(raw) {
        let id = file_name(&sdir);
        let mut entries = Vec::new();
        let (mut mode, mut conns, mut size, mut pipeline) = (String::new(), None, None, None);
        for vdir in sorted_dirs(&sdir) {
            let mut e = Entry {
                server: file_name(&vdir),
                ..Entry::default()
            };
            let mut files: Vec<PathBuf> = std::fs::read_dir(&vdir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect();
            files.sort();
            for f in files {
                let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
                let text = std::fs::read_to_string(&f).unwrap_or_default();
                match ext {
                    "json" => match parse_result(&text) {
                        Some(v) => {
                            e.rounds_ok += 1;
                            e.runs.push(v);
                        }
                        None => {
                            e.rounds_failed += 1;
                            e.failures
                                .push(format!("{}: no JSON object", file_name(&f)));
                        }
                    },
                    "failed" | "out" => {
                        e.rounds_failed += 1;
                        e.failures
                            .push(format!("{}: {}", file_name(&f), text.trim()));
                    }
                    _ => {}
                }
            }
            let col = |k: &str| median(e.runs.iter().filter_map(|r| num(r, k)).collect());
            e.msgs_per_sec = col("msgs_per_sec");
            e.mib_per_sec = col("mib_per_sec");
            e.p50_us = col("p50_us");
            e.p99_us = col("p99_us");
            e.p999_us = col("p999_us");
            e.server_cpu_us_per_msg = col("server_cpu_us_per_msg");
            e.bytes_per_conn = col("bytes_per_conn");
            e.errors = e
                .runs
                .iter()
                .filter_map(|r| r.get("errors").and_then(Value::as_u64))
                .sum();
            if let Some(r) = e.runs.first() {
                if mode.is_empty() {
                    mode = r
                        .get("mode")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                }
                conns = conns.or(r.get("conns").and_then(Value::as_u64));
                size = size.or(r.get("size").and_then(Value::as_u64));
                pipeline = pipeline.or(r.get("pipeline").and_then(Value::as_u64));
            }
            entries.push(e);
        }
        if entries.is_empty() {
            continue;
        }
        if mode.is_empty() {
            mode = id.split('_').next().unwrap_or("").to_owned();
        }
        entries.sort_by_key(|e| server_rank(&e.server));
        let duplex = entries
            .iter()
            .find(|e| e.server == DUPLEX)
            .map(|d| (d.msgs_per_sec, d.server_cpu_us_per_msg, d.bytes_per_conn));
        if let Some((d_rate, d_cpu, d_mem)) = duplex {
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            for e in &mut entries {
                e.duplex_ratio_msgs_per_sec = ratio(d_rate, e.msgs_per_sec);
                e.duplex_ratio_cpu_per_msg = ratio(d_cpu, e.server_cpu_us_per_msg);
                e.duplex_ratio_bytes_per_conn = ratio(d_mem, e.bytes_per_conn);
            }
        }
        let spec = &meta["scenarios"][&id];
        let mut scenario = Scenario {
            label: String::new(),
            server_threads: spec["server_threads"].as_u64().unwrap_or(1),
            pipeline: pipeline.or(spec["pipeline"].as_u64()).unwrap_or(1),
            id,
            mode,
            conns,
            size,
            servers: entries,
        };
        scenario.label = label(&scenario);
        scenarios.push(scenario);
    }
    scenarios.sort_by_key(scenario_rank);
    scenarios
}

/// Locked versions of the peer crates, from the bench workspace's Cargo.lock.
fn peer_versions(lock: Option<&Path>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(text) = lock.and_then(|p| std::fs::read_to_string(p).ok()) else {
        return out;
    };
    let mut name = "";
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = n.trim_matches('"');
        } else if let Some(v) = line.strip_prefix("version = ")
            && let Some((server, krate)) = PEER_CRATES.iter().find(|(_, c)| *c == name)
        {
            out.insert(
                (*server).to_owned(),
                format!("{krate} {}", v.trim_matches('"')),
            );
        }
    }
    out
}

fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn fmt_us(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn fmt_bytes(x: f64) -> String {
    if x.abs() >= 10.0 * 1024.0 {
        format!("{:.1} KiB", x / 1024.0)
    } else {
        format!("{x:.0} B")
    }
}

fn opt(x: Option<f64>, f: fn(f64) -> String) -> String {
    x.map(f).unwrap_or_else(|| "—".into())
}

fn markdown(report: &Report) -> String {
    let mut md = String::new();
    let m = &report.meta;
    let s = |k: &str| m.get(k).map(|v| v.to_string().trim_matches('"').to_owned());
    let _ = writeln!(md, "# duplex vs peers\n");
    let _ = writeln!(
        md,
        "{} · {} · {} CPUs ({}), load average {} before · git {} · {} round(s) of {} s after {} s warm-up, medians{}",
        s("date").unwrap_or_default(),
        s("kernel").unwrap_or_default(),
        s("nproc").unwrap_or_default(),
        s("cpu").unwrap_or_default(),
        s("loadavg").unwrap_or_default(),
        s("git").unwrap_or_default(),
        s("rounds").unwrap_or_default(),
        s("secs").unwrap_or_default(),
        s("warmup").unwrap_or_default(),
        if m.get("quick") == Some(&Value::Bool(true)) {
            " · **quick run**"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "\nEach server runs single-threaded on CPU 0, the load generator (`{}`) on CPU 1, \
         except in the scenarios marked \"N threads\": there the servers and the load \
         generator each run N threads, unpinned, sharing the CPUs (compare server CPU per \
         message; msgs/s is what the pair reaches). \"K in flight\": messages in flight per \
         connection. Over loopback, binary messages. \
         Peers: {}; `tcp-echo` is the ceiling (raw frame echo, unmask only).\n",
        s("load_generator").unwrap_or_default(),
        if report.peer_versions.is_empty() {
            "—".to_owned()
        } else {
            report
                .peer_versions
                .values()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let _ = writeln!(
        md,
        "| scenario | server | msgs/s | p99 µs | server CPU µs/msg | RSS per idle conn | duplex/peer |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---|");
    for sc in &report.scenarios {
        let has_duplex = sc.servers.iter().any(|e| e.server == DUPLEX);
        for e in &sc.servers {
            let ratio = if e.rounds_ok == 0 {
                "failed".to_owned()
            } else if !has_duplex {
                "n/a (no duplex)".to_owned()
            } else if e.server == DUPLEX {
                "—".to_owned()
            } else if sc.mode == "idle" {
                opt(e.duplex_ratio_bytes_per_conn, |r| format!("{r:.2}× RSS"))
            } else {
                let mut parts = Vec::new();
                if let Some(r) = e.duplex_ratio_msgs_per_sec {
                    parts.push(format!("{r:.2}× msgs/s"));
                }
                if let Some(r) = e.duplex_ratio_cpu_per_msg {
                    parts.push(format!("{r:.2}× CPU"));
                }
                if parts.is_empty() {
                    "—".to_owned()
                } else {
                    parts.join(", ")
                }
            };
            let mut server = format!("`{}`", e.server);
            if e.rounds_failed > 0 {
                let _ = write!(
                    server,
                    " ({}/{} rounds failed)",
                    e.rounds_failed,
                    e.rounds_failed + e.rounds_ok
                );
            }
            if e.errors > 0 {
                let _ = write!(server, " ({} errors)", e.errors);
            }
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                sc.label,
                server,
                opt(e.msgs_per_sec, fmt_rate),
                opt(e.p99_us, fmt_us),
                opt(e.server_cpu_us_per_msg, fmt_us),
                opt(e.bytes_per_conn, fmt_bytes),
                ratio
            );
        }
    }
    let _ = writeln!(
        md,
        "\nduplex/peer: for echo, duplex's msgs/s over the peer's (> 1: duplex is faster) and \
         duplex's server CPU per message over the peer's (< 1: duplex is leaner); for idle, \
         duplex's RSS per connection over the peer's (< 1: duplex is leaner). Server CPU is \
         utime+stime of the server process over the measured window (10 ms ticks) divided by \
         the messages echoed; RSS per idle connection is (RSS with N open connections − RSS \
         before) / N."
    );
    md
}

/// Colour of a server's bars: duplex stands out, the ceiling is grey.
fn colour(server: &str, i: usize) -> RGBColor {
    match server {
        DUPLEX => RGBColor(0xd6, 0x27, 0x28),
        CEILING => RGBColor(0x99, 0x99, 0x99),
        _ => {
            const PALETTE: [RGBColor; 5] = [
                RGBColor(0x1f, 0x77, 0xb4),
                RGBColor(0x2c, 0xa0, 0x2c),
                RGBColor(0xff, 0x7f, 0x0e),
                RGBColor(0x94, 0x67, 0xbd),
                RGBColor(0x8c, 0x56, 0x4b),
            ];
            PALETTE[i % PALETTE.len()]
        }
    }
}

/// One bar: group index, server, bar height, label above the bar.
type Bar = (usize, String, f64, String);

/// One panel: groups on the x axis, one bar per server in each group, value labels.
struct Panel<'a> {
    title: String,
    y_desc: &'a str,
    groups: Vec<String>,
    bars: Vec<Bar>,
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel<'_>,
    servers: &[String],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let n_groups = panel.groups.len().max(1);
    let y_max = panel
        .bars
        .iter()
        .map(|b| b.2)
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.18;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n_groups as f64, 0.0..y_max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(panel.y_desc)
        .y_label_style(("sans-serif", 12))
        .draw()?;
    // Each group spans [g + 0.1, g + 0.9]: one slot per server, bars in server order.
    let slot = 0.8 / servers.len().max(1) as f64;
    let label_style = ("sans-serif", 11)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    // Group names under the axis, centred on their group (drawn by hand: the mesh's
    // labels sit on round numbers, not on group centres).
    let group_style = ("sans-serif", 14)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for (g, name) in panel.groups.iter().enumerate() {
        chart.draw_series(std::iter::once(
            EmptyElement::at((g as f64 + 0.5, 0.0))
                + Text::new(name.clone(), (0, 8), group_style.clone()),
        ))?;
    }
    for (g, server, h, text) in &panel.bars {
        let j = servers.iter().position(|s| s == server).unwrap_or(0);
        let x0 = *g as f64 + 0.1 + slot * j as f64;
        let x1 = x0 + slot * 0.88;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x0, 0.0), (x1, *h)],
            colour(server, j).filled(),
        )))?;
        chart.draw_series(std::iter::once(
            EmptyElement::at(((x0 + x1) / 2.0, *h))
                + Text::new(text.clone(), (0, -3), label_style.clone()),
        ))?;
    }
    Ok(())
}

fn svg(report: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut servers: Vec<String> = Vec::new();
    for sc in &report.scenarios {
        for e in &sc.servers {
            if !servers.contains(&e.server) {
                servers.push(e.server.clone());
            }
        }
    }
    servers.sort_by_key(|s| server_rank(s));
    let echo: Vec<&Scenario> = report
        .scenarios
        .iter()
        .filter(|s| s.mode == "echo")
        .collect();
    let idle: Vec<&Scenario> = report
        .scenarios
        .iter()
        .filter(|s| s.mode == "idle")
        .collect();

    // Throughput and CPU per message relative to the ceiling (or to the best / leanest
    // server when the ceiling is absent), so that scenarios of very different scales
    // share one axis.
    let rel =
        |pick: fn(&Entry) -> Option<f64>, best_is_max: bool| -> (Vec<String>, Vec<Bar>, bool) {
            let mut groups = Vec::new();
            let mut bars = Vec::new();
            let mut all_ceiling = true;
            for (g, sc) in echo.iter().enumerate() {
                groups.push(sc.label.clone());
                let vals: Vec<(String, f64)> = sc
                    .servers
                    .iter()
                    .filter_map(|e| pick(e).map(|v| (e.server.clone(), v)))
                    .collect();
                let base = match vals.iter().find(|(s, _)| s == CEILING) {
                    Some((_, v)) => Some(*v),
                    None => {
                        all_ceiling = false;
                        vals.iter().map(|(_, v)| *v).reduce(if best_is_max {
                            f64::max
                        } else {
                            f64::min
                        })
                    }
                };
                let Some(base) = base.filter(|b| *b > 0.0) else {
                    continue;
                };
                for (s, v) in vals {
                    bars.push((g, s, 100.0 * v / base, String::new()));
                }
            }
            (groups, bars, all_ceiling)
        };
    let (groups, mut rate_bars, rate_ceiling) = rel(|e| e.msgs_per_sec, true);
    for b in &mut rate_bars {
        let sc = echo[b.0];
        let abs = sc
            .servers
            .iter()
            .find(|e| e.server == b.1)
            .and_then(|e| e.msgs_per_sec);
        b.3 = abs.map(fmt_rate).unwrap_or_default();
    }
    let (cpu_groups, mut cpu_bars, cpu_ceiling) = rel(|e| e.server_cpu_us_per_msg, false);
    for b in &mut cpu_bars {
        let sc = echo[b.0];
        let abs = sc
            .servers
            .iter()
            .find(|e| e.server == b.1)
            .and_then(|e| e.server_cpu_us_per_msg);
        b.3 = abs.map(|x| format!("{}µs", fmt_us(x))).unwrap_or_default();
    }
    let mut idle_groups = Vec::new();
    let mut idle_bars = Vec::new();
    for (g, sc) in idle.iter().enumerate() {
        idle_groups.push(sc.label.clone());
        for e in &sc.servers {
            if let Some(b) = e.bytes_per_conn {
                idle_bars.push((g, e.server.clone(), b.max(0.0) / 1024.0, fmt_bytes(b)));
            }
        }
    }

    let panels = [
        Panel {
            title: format!(
                "Echo throughput (msgs/s), % of {}; higher is better",
                if rate_ceiling { CEILING } else { "the fastest" }
            ),
            y_desc: "% msgs/s",
            groups,
            bars: rate_bars,
        },
        Panel {
            title: format!(
                "Server CPU per message, % of {}; lower is better",
                if cpu_ceiling { CEILING } else { "the leanest" }
            ),
            y_desc: "% CPU µs/msg",
            groups: cpu_groups,
            bars: cpu_bars,
        },
        Panel {
            title: "Memory per idle connection (KiB); lower is better".into(),
            y_desc: "KiB / conn",
            groups: idle_groups,
            bars: idle_bars,
        },
    ];
    let panels: Vec<&Panel<'_>> = panels.iter().filter(|p| !p.groups.is_empty()).collect();

    let legend_h = 40u32;
    let panel_h = 340u32;
    let height = legend_h + panel_h * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (legend, body) = root.split_vertically(legend_h);
    // Legend: a swatch and the name of every server, left to right.
    let mut x = 20;
    for (j, s) in servers.iter().enumerate() {
        legend.draw(&Rectangle::new(
            [(x, 14), (x + 14, 28)],
            colour(s, j).filled(),
        ))?;
        legend.draw(&Text::new(s.clone(), (x + 20, 14), ("sans-serif", 15)))?;
        x += 34 + 9 * s.len() as i32;
    }
    let areas = body.split_evenly((panels.len().max(1), 1));
    for (area, panel) in areas.iter().zip(&panels) {
        draw_panel(area, panel, &servers)?;
    }
    root.present()?;
    Ok(())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let meta = std::fs::read_to_string(args.raw.join("meta.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let scenarios = load(&args.raw, &meta);
    let report = Report {
        meta,
        peer_versions: peer_versions(args.lock.as_deref()),
        scenarios,
    };
    if report.scenarios.is_empty() {
        return Err(format!("no results under {}", args.raw.display()).into());
    }
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    std::fs::write(args.out.join("report.md"), markdown(&report))?;
    svg(&report, &args.out.join("report.svg"))?;
    eprintln!(
        "compare-report: wrote {}/report.{{json,md,svg}}",
        args.out.display()
    );
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("compare-report: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(id: &str, mode: &str, size: Option<u64>, threads: u64, pipeline: u64) -> Scenario {
        Scenario {
            id: id.into(),
            label: String::new(),
            mode: mode.into(),
            conns: Some(100),
            size,
            server_threads: threads,
            pipeline,
            servers: Vec::new(),
        }
    }

    #[test]
    fn labels_name_threads_and_pipelining() {
        assert_eq!(
            label(&scenario("echo_100x1KiB", "echo", Some(1024), 1, 1)),
            "echo 100 × 1 KiB"
        );
        assert_eq!(
            label(&scenario("t2_echo_100x20B", "echo", Some(20), 2, 4)),
            "echo 100 × 20 B, 4 in flight, 2 threads"
        );
        assert_eq!(
            label(&scenario("idle_9", "idle", Some(0), 1, 1)),
            "idle 100 conns"
        );
    }

    #[test]
    fn multi_threaded_scenarios_come_last() {
        let mut v = [
            scenario("t2_echo_100x20B", "echo", Some(20), 2, 4),
            scenario("idle_100", "idle", Some(0), 1, 1),
            scenario("echo_100x1KiB", "echo", Some(1024), 1, 4),
            scenario("echo_100x20B", "echo", Some(20), 1, 4),
        ];
        v.sort_by_key(scenario_rank);
        let ids: Vec<_> = v.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "echo_100x20B",
                "echo_100x1KiB",
                "idle_100",
                "t2_echo_100x20B"
            ]
        );
    }
}
