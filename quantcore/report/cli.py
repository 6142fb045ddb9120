"""``python -m quantcore report FOLDER -o report.html``: the standard views of a folder as one HTML file and a ZIP."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quantcore.errors import QuantcoreError
from quantcore.evaluate.speed import DEFAULT_RUNS, MAX_RUNS
from quantcore.inspect.drift import DEFAULT_IMAGES


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """The report command's arguments."""
    parser.add_argument("folder")
    parser.add_argument("-o", "--out", required=True, metavar="FILE.html", help="the HTML report to write")
    parser.add_argument("--zip", metavar="FILE.zip", help="the tables as CSV and JSON (default: beside the HTML)")
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES, help="images for the per-layer error")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"timed runs per batch size (1-{MAX_RUNS})")
    parser.add_argument(
        "--trust", action="store_true", help="let TorchScript and pickles load from outside the models root"
    )


def report_command(args: argparse.Namespace) -> int:
    """Load a folder, compute its standard views, write the HTML and the ZIP; 2 on a bad folder or option."""
    from quantcore import load_model_variants
    from quantcore.report.archive import write_zip
    from quantcore.report.contents import standard_report
    from quantcore.report.html import write_html

    if not 1 <= args.runs <= MAX_RUNS or args.images < 1:
        print(f"error: --runs must be 1 to {MAX_RUNS} and --images at least 1", file=sys.stderr)
        return 2
    out = Path(args.out)
    archive = Path(args.zip) if args.zip else out.with_suffix(".zip")
    try:
        variants = load_model_variants(args.folder, trusted=True if args.trust else None)
        report = standard_report(variants, images=args.images, runs=args.runs)
    except QuantcoreError as exc:
        print(f"error: {args.folder}: {exc}", file=sys.stderr)
        return 2
    for target in (out, archive):
        target.parent.mkdir(parents=True, exist_ok=True)
    print(write_html(report, out))
    print(write_zip(report, archive))
    return 0
