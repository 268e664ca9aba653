"""The ``tunedeck`` command line: serve, stop, demo, and a few read-outs of the API."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tunedeck", description="Fine-tune language models locally, Model Training API style.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "serve", help="run the training service (for a shared server; notebooks start one on their own)", add_help=False
    )
    stop = sub.add_parser("stop", help="stop the service of the state dir (it starts again on the next API call)")
    stop.add_argument("--home", type=Path, default=None, help="state dir (default: $TUNEDECK_HOME or ~/.tunedeck)")
    demo = sub.add_parser("demo", help="fine-tune the demo model on a small example dataset, end to end")
    demo.add_argument(
        "--model", default=None, help="model to fine-tune (default: SmolLM2-135M-Instruct if installed, else a tiny model)"
    )
    demo.add_argument("--duration", default=None, help="training_duration (default chosen for the model)")
    demo.add_argument("--adapter", default=None, choices=["lora"], help="train LoRA adapters instead of every weight")
    sub.add_parser("models", help="list the models this machine can train")
    runs = sub.add_parser("runs", help="list runs")
    runs.add_argument("--limit", type=int, default=20)
    events = sub.add_parser("events", help="show a run's events")
    events.add_argument("run")
    events.add_argument("--follow", "-f", action="store_true", help="wait for the run to end, with a progress bar")
    cancel = sub.add_parser("cancel", help="cancel a run")
    cancel.add_argument("run")

    args, rest = parser.parse_known_args(argv)
    if args.command == "serve":
        from tunedeck.service.__main__ import main as serve_main

        serve_main(rest)
        return 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    from tunedeck import foundation_model as fm
    from tunedeck.errors import TunedeckError

    try:
        if args.command == "stop":
            from tunedeck import config
            from tunedeck.client.launcher import stop_local_service

            print(stop_local_service((args.home or config.home()).expanduser()))
        elif args.command == "demo":
            from tunedeck.demo import run_demo

            return run_demo(model=args.model, duration=args.duration, adapter=args.adapter)
        if args.command == "models":
            _print(fm.get_models().to_pandas())
        elif args.command == "runs":
            _print(fm.list(limit=args.limit).to_pandas())
        elif args.command == "events":
            found = fm.get_events(args.run, follow=args.follow)
            if not args.follow:
                _print(found.to_pandas())
        elif args.command == "cancel":
            print(f"cancelled {fm.cancel(args.run)} run(s)")
    except TunedeckError as exc:
        print(f"tunedeck: {exc}", file=sys.stderr)
        return 1
    return 0


def _print(df) -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", 200, "display.max_columns", 20, "display.width", 200, "display.max_colwidth", 80):
        print(df.to_string(index=False) if len(df) else "(none)")


if __name__ == "__main__":
    sys.exit(main())
