"""Command line: python -m pipeline COMMAND (run, one stage by name, predict, serve, status)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.errors import PipelineError

STAGE_HELP = {
    "download": "fetch the review file from --source and verify it",
    "prepare": "label, clean, dedupe and split the reviews",
    "tokenize": "fit the character tokenizer on the training split and encode every split",
    "baseline": "fit the TF-IDF + logistic regression baseline on the same split",
    "train": "train the stacked RNN",
    "evaluate": "score the test split and write metrics.json",
}


def _settings_parser() -> argparse.ArgumentParser:
    """Options every command shares: where things are and the settings worth a flag."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML file of settings (flags win over it)")
    common.add_argument("--data-dir", type=Path, help="raw and processed data (default: data)")
    common.add_argument("--artifacts-dir", type=Path, help="model and reports (default: artifacts)")
    common.add_argument("--source", help="URL (http, https, file) or path of naver_shopping.txt")
    common.add_argument("--sha256", help="expected sha256 of a non-official --source")
    common.add_argument(
        "--epochs", type=int, help="most training epochs (early stopping may end sooner)"
    )
    common.add_argument("--batch-size", type=int, help="training batch size")
    common.add_argument("--seed", type=int, help="seed for the split and the training")
    common.add_argument(
        "--distribute",
        choices=["none", "mirrored", "multi-worker"],
        help="train with tf.distribute: all local GPUs/CPUs, or a TF_CONFIG cluster",
    )
    common.add_argument("--quiet", action="store_true", help="print only errors")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _settings_parser()
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Korean shopping-review sentiment: download -> prepare -> tokenize -> train "
        "-> evaluate, then predict.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", parents=[common], help="run every stage that is not fresh")
    run.add_argument("--force", action="store_true", help="rerun every stage, fresh or not")
    run.add_argument("--strict", action="store_true", help="stop at the first malformed line")
    for name, text in STAGE_HELP.items():
        stage = commands.add_parser(name, parents=[common], help=f"rerun one stage: {text}")
        if name == "prepare":
            stage.add_argument(
                "--strict", action="store_true", help="stop at the first malformed line"
            )
    commands.add_parser(
        "status", parents=[common], help="show each stage as fresh, stale or missing"
    )

    predict = commands.add_parser("predict", parents=[common], help="label reviews")
    predict.add_argument("reviews", nargs="*", help="reviews to label")
    predict.add_argument("--input", type=Path, help="file with one review per line")
    predict.add_argument("--output", type=Path, help="write label and probability as TSV here")

    serve = commands.add_parser(
        "serve", parents=[common], help="serve /predict, /explain and a web page over HTTP"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (%(default)s)")
    return parser


def load_settings(args: argparse.Namespace):
    from pipeline.config import load_config

    return load_config(
        args.config,
        data_dir=args.data_dir,
        artifacts_dir=args.artifacts_dir,
        source=args.source,
        sha256=args.sha256,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        distribute=args.distribute,
        strict=getattr(args, "strict", False) or None,
    )


def cmd_status(config) -> None:
    from pipeline.stages import STAGES, stage_state

    for stage in STAGES:
        state, why = stage_state(stage, config)
        print(f"{stage.name:<9} {state:<8} {why}")


def cmd_predict(args, config) -> None:
    from tqdm.auto import tqdm

    from pipeline.files import atomic_path
    from pipeline.predict import Predictor

    if bool(args.reviews) == bool(args.input):
        raise PipelineError("give reviews as arguments or one --input file, not both or neither")
    predictor = Predictor(config.artifacts_dir)
    if args.reviews:
        results = predictor.predict_stream(args.reviews)
        for review, (label, prob) in zip(args.reviews, results, strict=True):
            print(f"{label}\t{prob:.4f}\t{review}")
        return
    if not args.input.is_file():
        raise PipelineError(f"input file {args.input} does not exist")
    with args.input.open(encoding="utf-8", errors="replace") as fh:
        lines = (
            line.rstrip("\r\n")
            for line in tqdm(
                fh, desc="predict", unit=" reviews", disable=args.quiet or args.output is None
            )
        )
        results = predictor.predict_stream(lines)
        if args.output is None:
            for label, prob in results:
                print(f"{label}\t{prob:.4f}")
            return
        with atomic_path(args.output) as tmp, tmp.open("w", encoding="utf-8") as out:
            out.write("label\tprobability\n")
            for label, prob in results:
                out.write(f"{label}\t{prob:.6f}\n")
    if not args.quiet:
        print(f"predictions written to {args.output}")


def main(argv: list[str] | None = None) -> int:
    # Fewer TensorFlow C++ logs (TF 2.21 still prints a few start-up lines).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        config = load_settings(args)
        if args.command == "status":
            cmd_status(config)
        elif args.command == "predict":
            cmd_predict(args, config)
        elif args.command == "serve":
            from pipeline.serve import serve

            serve(config, args.host, args.port, quiet=args.quiet)
        else:
            from pipeline.stages import STAGE_NAMES, run_pipeline

            names = STAGE_NAMES if args.command == "run" else (args.command,)
            force = args.command != "run" or args.force  # a single stage command always reruns it
            run_pipeline(config, names, force=force, quiet=args.quiet)
            if not args.quiet:
                where = f"data in {config.data_dir}/, model and reports in {config.artifacts_dir}/"
                print(f"done: {where}")
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted; finished files are intact, unfinished ones were discarded",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
