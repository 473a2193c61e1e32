#!/usr/bin/env python3
"""The report of bench/fanout.sh: medians over the rounds of every scenario and server,
ratios to the floor, and the issue's targets checked for duplex.

    fanout_report.py --raw DIR --out DIR --half-rate R --low-rate R

Reads DIR/meta.json and DIR/<scenario>/<server>/r<round>.json (`duplex bench
fanout --json` objects); writes OUT/report.json and OUT/report.md.
"""

import argparse
import glob
import json
import os
import statistics

SCENARIOS = ("sat", "half", "low")
SERVERS = ("floor", "duplex", "duplex-v1", "duplex-t2", "bun", "ws", "sockudo", "duplex-redis")


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs):
    """Medians of the rates, latencies, CPU and memory; sums of the losses."""
    lat = lambda key: median(r["latency_ms"][key] for r in runs)
    srv = lambda key: median(r["server"][key] for r in runs)
    return {
        "rounds": len(runs),
        "deliveries_per_sec": median(r["deliveries_per_sec"] for r in runs),
        "publishes_per_sec": median(r["publishes_per_sec"] for r in runs),
        "p50_ms": lat("p50"),
        "p99_ms": lat("p99"),
        "p999_ms": lat("p999"),
        "lost": sum(r["lost"] for r in runs),
        "duplicated": sum(r["duplicated"] for r in runs),
        "misrouted": sum(r["misrouted"] for r in runs),
        "bogus": sum(r["bogus"] for r in runs),
        "publish_errors": sum(r["publish_errors"] for r in runs),
        "dropped_subscribers": sum(r["dropped_subscribers"] for r in runs),
        "cpu_us_per_delivery": srv("cpu_us_per_delivery"),
        "rss_end_mib": (lambda v: v / 1048576 if v is not None else None)(srv("rss_end_bytes")),
        "idle_bytes_per_subscriber": srv("idle_bytes_per_subscriber"),
    }


def fmt(value, spec=".0f", none="-"):
    return none if value is None else format(value, spec)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--half-rate", type=float, required=True)
    ap.add_argument("--low-rate", type=float, required=True)
    args = ap.parse_args()
    meta = json.load(open(os.path.join(args.raw, "meta.json")))
    results, failures = {}, {}
    for scenario in SCENARIOS:
        for server_dir in sorted(glob.glob(os.path.join(args.raw, scenario, "*"))):
            server = os.path.basename(server_dir)
            runs = [json.load(open(f)) for f in sorted(glob.glob(server_dir + "/r*.json"))]
            failed = [open(f).read().strip() for f in sorted(glob.glob(server_dir + "/r*.failed"))]
            if runs:
                results.setdefault(scenario, {})[server] = summarize(runs)
            if failed:
                failures.setdefault(scenario, {})[server] = failed
    floor = {s: results.get(s, {}).get("floor") for s in SCENARIOS}
    for scenario, by_server in results.items():
        for r in by_server.values():
            f = floor[scenario]
            r["deliveries_vs_floor"] = (
                r["deliveries_per_sec"] / f["deliveries_per_sec"]
                if f and f["deliveries_per_sec"] else None)
            r["p99_vs_floor"] = (
                r["p99_ms"] / f["p99_ms"] if f and f["p99_ms"] and r["p99_ms"] is not None else None)

    def target(server):
        sat = results.get("sat", {}).get(server)
        half = results.get("half", {}).get(server)
        low = results.get("low", {}).get(server)
        below = [r for r in (half, low) if r]
        bun = results.get("sat", {}).get("bun")
        return {
            "saturation_at_least_1.0x_floor": None if not sat or sat["deliveries_vs_floor"] is None
            else sat["deliveries_vs_floor"] >= 1.0,
            "saturation_at_least_bun": None if not sat or not bun
            else sat["deliveries_per_sec"] >= bun["deliveries_per_sec"],
            "half_p99_within_1.2x_floor": None if not half or half["p99_vs_floor"] is None
            else half["p99_vs_floor"] <= 1.2,
            "zero_lost_and_duplicated_below_saturation": None if not below
            else all(r["lost"] == 0 and r["duplicated"] == 0 for r in below),
        }

    targets = {s: target(s) for s in ("duplex", "duplex-v1", "duplex-t2", "duplex-redis") if any(
        s in results.get(sc, {}) for sc in SCENARIOS)}
    report = {"meta": meta, "half_rate": args.half_rate, "low_rate": args.low_rate,
              "results": results, "failures": failures, "targets": targets}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")

    titles = {
        "sat": "saturation (rate max)",
        "half": f"half of the floor's saturation ({args.half_rate:g} publishes/s)",
        "low": f"low rate ({args.low_rate:g} publishes/s)",
    }
    lines = [
        "# Fan-out: "
        + ("one topic, " if meta.get("topics", 1) == 1 else f"{meta['topics']:,} topics, ")
        + f"{meta['subscribers']:,} subscribers, {meta['size']}-byte messages",
        "",
        f"{meta['date']}, {meta['cpu']} ({meta['nproc']} CPUs), {meta['kernel']}; git "
        f"{meta['git']}; load average before {meta['loadavg']}; {meta['rounds']} round(s) of "
        f"{meta['secs']} s (+{meta['warmup']} s warm-up); server on CPU 0, load on CPU 1"
        f"{'' if meta['pinned'] else ' (NOT pinned)'}; node {meta['node']}, ws {meta['ws']}, "
        f"{meta['sockudo']}, bun {meta.get('bun', 'none')}, redis {meta['redis']}. Medians "
        "over the rounds; lost and "
        "duplicated are sums."
        + (" **Quick run: not for quoting.**" if meta["quick"] else ""),
        "",
    ]
    order = [s for s in SERVERS] + sorted(
        {s for by in results.values() for s in by} - set(SERVERS))
    for scenario in SCENARIOS:
        by_server = results.get(scenario, {})
        if not by_server and not failures.get(scenario):
            continue
        lines += [f"## {titles[scenario]}", "",
                  "| server | deliveries/s | vs floor | publishes/s | p50 ms | p99 ms | p99.9 ms "
                  "| p99 vs floor | lost | dup | server CPU µs/delivery | RSS MiB "
                  "| idle B/subscriber |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for server in order:
            r = by_server.get(server)
            if not r:
                continue
            lines.append(
                f"| {server} | {fmt(r['deliveries_per_sec'])} | "
                f"{fmt(r['deliveries_vs_floor'], '.2f')}x | {fmt(r['publishes_per_sec'], '.1f')} | "
                f"{fmt(r['p50_ms'], '.1f')} | {fmt(r['p99_ms'], '.1f')} | "
                f"{fmt(r['p999_ms'], '.1f')} | {fmt(r['p99_vs_floor'], '.2f')}x | {r['lost']} | "
                f"{r['duplicated']} | {fmt(r['cpu_us_per_delivery'], '.2f')} | "
                f"{fmt(r['rss_end_mib'], '.1f')} | {fmt(r['idle_bytes_per_subscriber'])} |")
        for server, why in failures.get(scenario, {}).items():
            lines.append(f"| {server} | failed: {'; '.join(why)} |")
        lines.append("")
    if targets:
        lines += ["## Targets (issue 23)", "",
                  "| server | saturation ≥ 1.0x floor | saturation ≥ bun | p99 at half ≤ 1.2x floor "
                  "| zero lost/dup below saturation |", "|---|---|---|---|---|"]
        yes = lambda v: "-" if v is None else ("yes" if v else "**no**")
        for server, t in targets.items():
            lines.append(f"| {server} | {yes(t['saturation_at_least_1.0x_floor'])} | "
                         f"{yes(t['saturation_at_least_bun'])} | "
                         f"{yes(t['half_p99_within_1.2x_floor'])} | "
                         f"{yes(t['zero_lost_and_duplicated_below_saturation'])} |")
        lines.append("")
    lines += ["Idle B/subscriber: the servers' RSS once every subscriber is connected and idle, "
              "minus before, per subscriber (duplex-redis: both servers and redis).", ""]
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
