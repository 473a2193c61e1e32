#!/usr/bin/env python3
"""Strict judge of a kosoku (Autobahn TestSuite) report.

    judge.py REPORT_DIR ROLE [--cases "1.* 2.* ..."] [--wall-seconds S]

Reads REPORT_DIR/index.json (`{agent: {case_id: {behavior, behaviorClose, ...}}}`)
and judges every case by the worse of its `behavior` and its `behaviorClose`:

  OK, INFORMATIONAL                              pass
  NON-STRICT, UNIMPLEMENTED, FAILED              fail
  behaviorClose WRONG CODE / FAILED BY CLIENT    = NON-STRICT (fail)
  behaviorClose UNCLEAN                          = FAILED
  anything else                                  = FAILED

kosoku's own exit status counts NON-STRICT as a pass; this judge does not.

It also fails when the report does not hold exactly the cases of the selection
(an empty, truncated or mixed report), so a run that died half-way never passes.

The selection is a space-separated list of kosoku patterns, taken from --cases or
else from the environment variable DUPLEX_AUTOBAHN_CASES (empty = every case,
1.* to 13.*). Patterns work as kosoku's `-i`: with a `*` they are a glob anchored
at the start only (`1.*` is category 1, `1*` also takes 10, 12 and 13); without
one they are an exact case id. A pattern with a leading `!` excludes (kosoku's `-x`).
`autobahn_cases_args` in scripts/test.sh turns the same list into kosoku flags.

Exit status: 0 if every case passed and the case set is the expected one, else 1
(2 for a usage error or an unreadable report).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

# Every case of kosoku 0.1.0, as "group: number of cases" (ids GROUP.1 .. GROUP.N).
# 1.*-10.* = 301 cases, 12.* = 90, 13.* = 126; 517 in all (there is no 8 or 11).
CASE_GROUPS: dict[str, int] = {
    "1.1": 8, "1.2": 8, "2": 11, "3": 7, "4.1": 5, "4.2": 5, "5": 20,
    "6.1": 3, "6.2": 4, "6.3": 2, "6.4": 4, "6.5": 5, "6.6": 11, "6.7": 4,
    "6.8": 2, "6.9": 4, "6.10": 3, "6.11": 5, "6.12": 8, "6.13": 5,
    "6.14": 10, "6.15": 1, "6.16": 3, "6.17": 5, "6.18": 5, "6.19": 5,
    "6.20": 7, "6.21": 8, "6.22": 34, "6.23": 7,
    "7.1": 6, "7.3": 6, "7.5": 1, "7.7": 13, "7.9": 9, "7.13": 2,
    "9.1": 6, "9.2": 6, "9.3": 9, "9.4": 9, "9.5": 6, "9.6": 6, "9.7": 6,
    "9.8": 6, "10.1": 1,
    "12.1": 18, "12.2": 18, "12.3": 18, "12.4": 18, "12.5": 18,
    "13.1": 18, "13.2": 18, "13.3": 18, "13.4": 18, "13.5": 18, "13.6": 18,
    "13.7": 18,
}
ALL_CASES = [f"{g}.{i}" for g, n in CASE_GROUPS.items() for i in range(1, n + 1)]
assert len(ALL_CASES) == 517

# Worst last. Every verdict after INFORMATIONAL fails the run.
SEVERITY = ["OK", "INFORMATIONAL", "NON-STRICT", "UNIMPLEMENTED", "FAILED"]
PASSING = {"OK", "INFORMATIONAL"}
CLOSE_ALIASES = {
    "WRONG CODE": "NON-STRICT",
    "FAILED BY CLIENT": "NON-STRICT",
    "UNCLEAN": "FAILED",
}
ROLES = ("server", "client")


def case_key(case_id: str) -> list[int]:
    try:
        return [int(p) for p in case_id.split(".")]
    except ValueError:
        return [10**9]


def category(case_id: str) -> str:
    return case_id.split(".", 1)[0]


def normalize(value: object, *, close: bool) -> str:
    """One of SEVERITY; unknown or missing values are FAILED."""
    if not isinstance(value, str):
        return "FAILED"
    v = value.strip().upper()
    if close and v in CLOSE_ALIASES:
        return CLOSE_ALIASES[v]
    return v if v in SEVERITY else "FAILED"


def verdict(entry: object) -> str:
    if not isinstance(entry, dict):
        return "FAILED"
    b = normalize(entry.get("behavior"), close=False)
    c = normalize(entry.get("behaviorClose"), close=True)
    return max(b, c, key=SEVERITY.index)


def pattern_matches(pattern: str, case_id: str) -> bool:
    if "*" in pattern:
        rx = re.escape(pattern).replace(r"\*", ".*")
        return re.match(rx, case_id) is not None
    return pattern == case_id


def select(patterns: list[str]) -> list[str]:
    include = [p for p in patterns if not p.startswith("!")]
    exclude = [p[1:] for p in patterns if p.startswith("!")]
    return [
        c
        for c in ALL_CASES
        if (not include or any(pattern_matches(p, c) for p in include))
        and not any(pattern_matches(p, c) for p in exclude)
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report_dir", type=Path)
    ap.add_argument("role", choices=ROLES)
    ap.add_argument(
        "--cases",
        default=None,
        help="selection (default: $DUPLEX_AUTOBAHN_CASES, empty = all)",
    )
    ap.add_argument("--wall-seconds", type=float, default=None,
                    help="wall time of the kosoku run, to print")
    ap.add_argument("--agent", default=None,
                    help="require this agent name in the report")
    args = ap.parse_args()

    spec = args.cases if args.cases is not None else os.environ.get("DUPLEX_AUTOBAHN_CASES", "")
    patterns = spec.split()
    expected = select(patterns)
    title = f"autobahn {args.role} role ({args.report_dir})"
    print(f"== judge: {title}")
    print(f"selection: {' '.join(patterns) or 'all (1.* .. 13.*)'} -> {len(expected)} cases expected")
    if args.wall_seconds is not None:
        print(f"wall time of the run: {args.wall_seconds:.1f} s")
    if not expected:
        print("FAIL: the selection matches no case", file=sys.stderr)
        return 2

    index = args.report_dir / "index.json"
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        print(f"FAIL: cannot read {index}: {e}", file=sys.stderr)
        print("FAIL: 0 cases judged (no report)")
        return 2
    if not isinstance(data, dict) or not data:
        print(f"FAIL: {index} holds no agent", file=sys.stderr)
        return 1

    problems: list[str] = []
    if len(data) != 1:
        problems.append(f"expected one agent in the report, found {len(data)}: {sorted(data)}")
    if args.agent is not None and args.agent not in data:
        problems.append(f"agent {args.agent!r} not in the report (found {sorted(data)})")

    verdicts: Counter[str] = Counter()
    per_cat: dict[str, Counter[str]] = {}
    bad: list[tuple[str, str, str, dict]] = []
    seen: set[str] = set()
    durations: list[tuple[float, str]] = []
    for agent, cases in sorted(data.items()):
        if not isinstance(cases, dict):
            problems.append(f"agent {agent!r}: cases are not an object")
            continue
        for cid in sorted(cases, key=case_key):
            entry = cases[cid]
            v = verdict(entry)
            verdicts[v] += 1
            per_cat.setdefault(category(cid), Counter())[v] += 1
            seen.add(cid)
            if isinstance(entry, dict):
                d = entry.get("duration")
                if isinstance(d, (int, float)):
                    durations.append((float(d), cid))
                rf = entry.get("reportfile")
                if isinstance(rf, str) and rf and not (args.report_dir / rf).is_file():
                    problems.append(f"case {cid}: report file {rf} is missing")
            if v not in PASSING:
                bad.append((cid, v, agent, entry if isinstance(entry, dict) else {}))

    total = sum(verdicts.values())
    missing = [c for c in expected if c not in seen]
    extra = sorted(seen - set(expected), key=case_key)
    if total != len(expected):
        problems.append(f"{total} cases in the report, {len(expected)} expected")
    if missing:
        more = " ..." if len(missing) > 20 else ""
        problems.append(f"{len(missing)} selected cases missing: {' '.join(missing[:20])}{more}")
    if extra:
        more = " ..." if len(extra) > 20 else ""
        problems.append(f"{len(extra)} cases not in the selection: {' '.join(extra[:20])}{more}")

    print("verdicts: " + ", ".join(f"{v} {verdicts[v]}" for v in SEVERITY if verdicts[v])
          + f" (total {total})")
    print("per category:")
    for cat in sorted(per_cat, key=lambda c: case_key(c)):
        cnt = per_cat[cat]
        line = ", ".join(f"{v} {cnt[v]}" for v in SEVERITY if cnt[v])
        print(f"  {cat + '.*':<6} {sum(cnt.values()):>4}  {line}")
    if durations:
        slow = sorted(durations, reverse=True)[:5]
        print("slowest cases (ms): " + ", ".join(f"{c} {d:.0f}" for d, c in slow))
    if bad:
        print(f"not passing ({len(bad)}):")
        for cid, v, agent, e in bad:
            print(
                f"  {cid:<8} {v:<13} behavior={e.get('behavior')!s} "
                f"behaviorClose={e.get('behaviorClose')!s} "
                f"remoteCloseCode={e.get('remoteCloseCode')!s} "
                f"report={args.report_dir / str(e.get('reportfile', ''))}"
            )
    for p in problems:
        print(f"problem: {p}")

    ok = not bad and not problems
    passed = sum(verdicts[v] for v in PASSING)
    print(f"{'PASS' if ok else 'FAIL'}: {title}: {passed} of {len(expected)} expected cases OK or INFORMATIONAL"
          + (f", {len(bad)} not passing" if bad else "")
          + (f", {len(problems)} report problem(s)" if problems else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
