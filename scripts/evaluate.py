"""``insession evaluate``: replay a snapshot or a session data set through the engine offline and
report next-item quality, click-model quality and speed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "format_report"]

_QUALITY_ROWS = (
    "hr@20",
    "mrr@20",
    "hr@10",
    "mrr@10",
    "hr@5",
    "mrr@5",
    "coverage@20",
    "popularity_bias@20",
    "logloss",
    "auc",
)


def add_parser(sub: Any) -> None:
    """Register the sub-command."""
    parser = sub.add_parser(
        "evaluate",
        help="replay a snapshot or session data set through the engine offline; report quality",
        description="Run recorded events through the engine in-process (no Kafka) and score "
        "every next-item list against what the user did next (HitRate/MRR@5,10,20, coverage, "
        "popularity bias), the ranker's labels prequentially (log loss, AUC) and the speed.",
    )
    parser.add_argument(
        "input",
        help="test events: a snapshot (.avro), a session TSV file, or a session-rec directory "
        "(*_train_full.txt + *_test.txt [+ reference-recs-*.csv])",
    )
    parser.add_argument("--format", choices=("session-tsv", "snapshot"), help="default: by suffix")
    parser.add_argument("--train", help="training events (same format); default: split INPUT")
    parser.add_argument(
        "--train-fraction",
        type=float,
        default=0.8,
        help="without --train: share of sessions (by first appearance) that train (0.8)",
    )
    parser.add_argument(
        "--mode",
        choices=("frozen", "streaming"),
        default="frozen",
        help="frozen: learn from training only; streaming: keep learning from test events",
    )
    parser.add_argument(
        "--predictor",
        choices=("engine", "trending", "popular"),
        default="engine",
        help="engine next-item list (default), or a popularity baseline",
    )
    parser.add_argument("--seed", type=int, default=7, help="engine seed (7)")
    parser.add_argument(
        "--no-pages",
        action="store_true",
        help="skip building a page per event (quality is unchanged; events/s rises)",
    )
    parser.add_argument("--limit-sessions", type=int, help="evaluate only the first N sessions")
    parser.add_argument(
        "--reference-dir", help="compare with reference-recs-*.csv lists at the same positions"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the report."""
    import orjson

    from stream.offline import evaluate, resolve_input

    try:
        source = resolve_input(
            args.input, fmt=args.format, train=args.train, reference_dir=args.reference_dir
        )
    except (OSError, ValueError) as error:
        print(f"insession evaluate: {error}", file=sys.stderr)
        return 2
    report = evaluate(
        source,
        mode=args.mode,
        predictor=args.predictor,
        seed=args.seed,
        pages=not args.no_pages,
        limit_sessions_n=args.limit_sessions,
        train_fraction=args.train_fraction,
    )
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_SORT_KEYS).decode() + "\n")
    else:
        sys.stdout.write(format_report(report))
    return 0


def format_report(report: dict[str, Any]) -> str:
    """The report as aligned text for a terminal."""
    lines = [
        f"{report['format']} {report['input']} (train: {report['train'] or 'split'}) "
        f"mode={report['mode']} predictor={report['predictor']} seed={report['seed']} "
        f"pages={report['pages']}",
        f"train events {report['train_events']}, test events {report['test_events']} in "
        f"{report['test_sessions']} sessions, predictions {report['predictions']}",
    ]
    for key in _QUALITY_ROWS:
        if report.get(key) is not None:
            lines.append(f"  {key:<20} {report[key]:.4f}")
    lines.append(
        f"  latency per prediction p50 {report['p50_ms']} ms, p90 {report['p90_ms']} ms; "
        f"per event p50 {report['event_p50_ms']} ms; {report['events_per_s']} events/s"
    )
    for row in report.get("reference", ()):
        if row is report["reference"][0]:
            lines.append(
                f"reference lists, same positions ({row['predictions']} predictions):"
                f"\n  {'name':<10} {'hr@20':>7} {'mrr@20':>7} {'hr@10':>7} {'hr@5':>7}"
            )
        lines.append(
            f"  {row['name']:<10} {row['hr@20']:>7.3f} {row['mrr@20']:>7.3f} "
            f"{row['hr@10']:>7.3f} {row['hr@5']:>7.3f}"
        )
    return "\n".join(lines) + "\n"
