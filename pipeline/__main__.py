"""Command line: python -m pipeline COMMAND (run, one stage by name, status, predict, export,
serve)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.errors import PipelineError

STAGE_HELP = {
    "download": "fetch the review file from --source and verify it",
    "prepare": "label, clean, dedupe and split the reviews",
    "tokenize": "fit the character tokenizer on the training split; encode it and validation",
    "baseline": "fit the TF-IDF + logistic regression baseline on the same split",
    "pretrain": "pretrain the character encoder on unlabeled reviews (--unlabeled)",
    "train": "train the classifier (from the pretrained encoder if --pretrain is on; then "
    "self-train it on unlabeled reviews if --self-train-rounds is above 0)",
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


def _source_parser() -> argparse.ArgumentParser:
    """How to read the training source: its layout, columns and encoding."""
    source = argparse.ArgumentParser(add_help=False)
    source.add_argument(
        "--source-format",
        choices=["auto", "ratings", "csv", "tsv", "jsonl"],
        help="ratings (RATING<TAB>REVIEW lines) or a table; auto: a table when --text-column is "
        "given, its format from the source's name",
    )
    source.add_argument("--text-column", help="the review column of a csv, tsv or jsonl source")
    source.add_argument("--rating-column", help="its 1-5 rating column (> 3 positive, 3 dropped)")
    source.add_argument("--label-column", help="or its label column (1 positive, 0 negative)")
    source.add_argument("--encoding", help="the source's encoding (default utf-8), e.g. cp949")
    source.add_argument(
        "--unlabeled",
        action="append",
        metavar="PATH",
        help="a file of reviews without ratings, to pretrain or self-train on (one a line, or a "
        "csv, tsv or jsonl file with --unlabeled-column); repeat for several",
    )
    source.add_argument("--unlabeled-column", help="the review column of a table --unlabeled")
    source.add_argument(
        "--pretrain",
        choices=["mlm", "rtd", "none"],
        help="the pretraining objective: masked (mlm) or replaced (rtd) characters, or none",
    )
    source.add_argument(
        "--label-fraction",
        type=float,
        help="keep this stratified share of the training split's labels (default 1); the rest "
        "of its reviews are unlabeled ones for self-training",
    )
    source.add_argument(
        "--self-train-rounds",
        type=int,
        choices=[0, 1, 2, 3],
        help="rounds of self-training on the unlabeled reviews after training (default 0: off)",
    )
    source.add_argument(
        "--self-train-baseline",
        action=argparse.BooleanOptionalAction,
        help="let the TF-IDF baseline teach beside the model, its share chosen on validation "
        "(default: on)",
    )
    return source


def build_parser() -> argparse.ArgumentParser:
    common, source = _settings_parser(), _source_parser()
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Korean shopping-review sentiment: "
        + " -> ".join(STAGE_HELP)
        + ", then predict, export or serve.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", parents=[common, source], help="run every stage that is not fresh"
    )
    run.add_argument("--force", action="store_true", help="rerun every stage, fresh or not")
    run.add_argument("--strict", action="store_true", help="stop at the first malformed line")
    for name, text in STAGE_HELP.items():
        stage = commands.add_parser(name, parents=[common, source], help=f"rerun one stage: {text}")
        if name == "prepare":
            stage.add_argument(
                "--strict", action="store_true", help="stop at the first malformed line"
            )
    commands.add_parser(
        "status", parents=[common, source], help="show each stage as fresh, stale or missing"
    )

    predict = commands.add_parser("predict", parents=[common], help="label reviews")
    predict.add_argument("reviews", nargs="*", help="reviews to label")
    # strings, not Paths: with --engine spark they may be URIs (Path turns s3:// into s3:/)
    predict.add_argument(
        "--input", help="a CSV, TSV or JSONL file (with --column), or one review a line"
    )
    predict.add_argument("--output", help="where to write it with label and probability added")
    predict.add_argument("--column", help="the review column of a CSV, TSV or JSONL --input")
    predict.add_argument(
        "--format",
        choices=["csv", "tsv", "jsonl", "lines", "parquet"],
        help="the --input's format when its name does not say (.csv .tsv .jsonl .txt; "
        ".parquet with --engine spark)",
    )
    predict.add_argument(
        "--encoding", default="utf-8", help="the --input's encoding (default utf-8), e.g. cp949"
    )
    predict.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="local: this process, streaming (default); spark: a Spark job writing Spark's "
        "partitioned output folder",
    )
    predict.add_argument(
        "--master", help="Spark master with --engine spark (default local[*], or spark-submit's)"
    )

    predict.add_argument(
        "--model-engine",
        choices=["auto", "onnx", "keras"],
        help="auto (default): model.onnx on ONNX Runtime when training wrote it, else "
        "model.keras on Keras",
    )

    export = commands.add_parser(
        "export",
        parents=[common],
        help="write a TensorFlow SavedModel that scores raw review strings (for TF Serving)",
    )
    export.add_argument("--output", type=Path, required=True, help="the SavedModel folder")

    serve = commands.add_parser(
        "serve", parents=[common], help="serve /predict, /explain and a web page over HTTP"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (%(default)s)")
    serve.add_argument(
        "--model-engine", choices=["auto", "onnx", "keras"], help="as predict's (default auto)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        help="worker processes answering on the port (serve_workers; default 0: one per core)",
    )
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
        **{
            name: getattr(args, name, None)
            for name in (
                "source_format",
                "text_column",
                "rating_column",
                "label_column",
                "unlabeled",
                "unlabeled_column",
                "pretrain",
                "label_fraction",
                "self_train_rounds",
                "self_train_baseline",
                "model_engine",
            )
        },
        serve_workers=getattr(args, "workers", None),
        # predict's --encoding is its input file's, not the training source's; serve and
        # export have none
        encoding=getattr(args, "encoding", None) if args.command != "predict" else None,
    )


def cmd_status(config) -> None:
    from pipeline.stages import STAGES, stage_state

    for stage in STAGES:
        state, why = stage_state(stage, config)
        print(f"{stage.name:<9} {state:<8} {why}")


def cmd_predict(args, config) -> None:
    from pipeline.predict import Predictor
    from pipeline.score import score_file

    if bool(args.reviews) == bool(args.input):
        raise PipelineError("give reviews as arguments or one --input file, not both or neither")
    if args.engine == "spark":
        return cmd_predict_spark(args, config)
    if args.format == "parquet" or args.master:
        raise PipelineError("--format parquet and --master are for --engine spark; add it")
    if args.reviews:
        predictor = Predictor(config.artifacts_dir, engine=config.model_engine)
        results = predictor.predict_stream(args.reviews)
        for review, (label, prob) in zip(args.reviews, results, strict=True):
            print(f"{label}\t{prob:.4f}\t{review}")
        return
    counts = score_file(
        # loaded once the file has passed its checks
        lambda: Predictor(config.artifacts_dir, engine=config.model_engine),
        Path(args.input),
        Path(args.output) if args.output is not None else None,
        column=args.column,
        fmt=args.format,
        encoding=args.encoding,
        quiet=args.quiet,
    )
    if not args.quiet and args.output is not None:
        empty = counts["empty"]
        note = f" ({empty:,} empty, given the empty review's score)" if empty else ""
        print(f"{counts['rows']:,} reviews scored{note}; written to {args.output}")


def cmd_predict_spark(args, config) -> None:
    from pipeline.spark import score_path, spark_session

    if args.reviews or args.output is None:
        raise PipelineError("--engine spark scores one --input table into an --output folder")
    spark = spark_session(args.master, quiet=args.quiet)
    counts = score_path(
        spark,
        args.input,
        args.output,
        column=args.column or "review",
        fmt=args.format,
        artifacts_dir=config.artifacts_dir,
        encoding=args.encoding,
    )
    if not args.quiet:
        print(f"{counts['rows']:,} reviews scored on Spark; written to {args.output}")


# what the train extra brings: a command that needs one of them says to install it
TRAINING_PACKAGES = ("tensorflow", "keras", "onnx", "pandas", "sklearn", "requests", "matplotlib")


def main(argv: list[str] | None = None) -> int:
    # TF_CPP_MIN_LOG_LEVEL's default is set by importing pipeline (pipeline/__init__.py)
    args = build_parser().parse_args(argv)
    try:
        config = load_settings(args)
        if args.command == "status":
            cmd_status(config)
        elif args.command == "predict":
            cmd_predict(args, config)
        elif args.command == "export":
            from pipeline.export import export_savedmodel

            export_savedmodel(config, args.output, quiet=args.quiet)
        elif args.command == "serve":
            from pipeline.serve.runner import serve

            serve(config, args.host, args.port, quiet=args.quiet)
        else:
            from pipeline.stages import STAGE_NAMES, run_pipeline

            names = STAGE_NAMES if args.command == "run" else (args.command,)
            force = args.command != "run" or args.force  # a single stage command always reruns it
            done = run_pipeline(config, names, force=force, quiet=args.quiet)
            where = f"data in {config.data_dir}/, model and reports in {config.artifacts_dir}/"
            if ("train", "worker") in done:  # a multi-worker run's other workers write nothing
                where = "this worker's part of training is finished; the chief wrote the model"
            if not args.quiet:
                print(f"done: {where}")
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in TRAINING_PACKAGES:
            raise
        print(
            f"error: {args.command} needs {exc.name.split('.')[0]}, which this install lacks "
            "(a scoring-only install scores with model.onnx); for the whole pipeline install "
            "pip install 'naver-shopping-sentiment[train]'",
            file=sys.stderr,
        )
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
