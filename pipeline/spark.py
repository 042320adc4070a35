"""Score a review column of a Spark DataFrame or table with the trained model, on Spark's terms.

    from pipeline.spark import score
    scored = score(spark.read.parquet("reviews.parquet"), column="review")  # + label, probability

Executors load the artifacts folder (model.keras + tokenizer.json) with `Predictor`, once per
Python worker process, and score each Arrow batch of the column through `predict_proba`: the
cleaning, encoding and threshold are training's own code, not a second copy. The artifacts
folder, not the SavedModel export, because executors run Python anyway (the UDF is Python), so
the package must be there and Predictor is the tested reference; the export is a second
implementation of cleaning in TensorFlow ops, no smaller (99 MB against 100 MB), and one more
step to run and ship. Each task's TensorFlow uses as many threads as the task has cores
(`spark.task.cpus`, 1 by default): Spark gives each core its own task and Python worker, so more
threads would only fight over the same cores.

Only the review column crosses into Python, so every other column, whatever its type, stays as
Spark had it, in the same order, with the same rows in the same order.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd  # the spark extra's; the UDF's type hints must resolve at run time

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.labels import label_of
from pipeline.predict import DEFAULT_ARTIFACTS, Predictor, get_predictor
from pipeline.score import ADDED
from pipeline.tables import codec_of, format_from_name

if TYPE_CHECKING:  # pyspark is an optional extra: imported only when Spark is used
    from pyspark import Accumulator
    from pyspark.sql import DataFrame, SparkSession

SPARK_FORMATS = ("csv", "tsv", "jsonl", "parquet")
_PARQUET_SUFFIXES = (".parquet", ".pq")
INSTALL_SPARK = "pip install 'naver-shopping-sentiment[spark]'"
INSTALL_JAVA = "apt-get install default-jre-headless"
_LOG_CONFIG = Path(__file__).resolve().parent / "spark-log4j2.properties"
# pyspark 4 warns about pandas 3 on every import; the tests hold the one path we use (a string
# column in, a string and a float out) equal to Predictor's
_PANDAS_WARNING = "PySpark does not yet fully support pandas >= 3"


def require_pyspark() -> None:
    """Raise one sentence saying how to install pyspark when it is missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise PipelineError(
            f"scoring on Spark needs pyspark, which is not installed; install it with "
            f"`{INSTALL_SPARK}` (it also needs Java 17 or newer)"
        ) from None
    warnings.filterwarnings("ignore", message=_PANDAS_WARNING, category=FutureWarning)


def require_java() -> None:
    """Raise one sentence when there is no Java for Spark, found the way spark-submit finds it."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if java and os.access(java, os.X_OK):
        return
    where = f"JAVA_HOME={home} has no bin/java" if home else "there is no java on PATH"
    raise PipelineError(
        f"Spark needs a Java runtime (17 or newer) and {where}; install one (`{INSTALL_JAVA}` "
        "on Debian or Ubuntu) or set JAVA_HOME to one"
    )


def spark_session(
    master: str | None = None, quiet: bool = False, conf: dict[str, str] | None = None
) -> SparkSession:
    """The running SparkSession, or a new one on `master` (local[*] unless spark-submit says).

    A new local session runs its Python workers on this interpreter, so they import this package
    and its TensorFlow; Spark's own logging is cut to fatal errors, which the CLI words itself.
    """
    require_pyspark()
    require_java()
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("pipeline-predict")
    if master or "PYSPARK_GATEWAY_PORT" not in os.environ:  # not started by spark-submit
        master = master or "local[*]"
        builder = builder.master(master)
    if master and master.startswith("local"):
        # Local workers run this interpreter (pyspark would take `python3` on PATH); on a
        # cluster the executors' Python is theirs to set (PYSPARK_PYTHON, spark.pyspark.python).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = builder.config(
        "spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={_LOG_CONFIG.as_uri()}"
    ).config("spark.ui.showConsoleProgress", str(not quiet).lower())
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    try:
        return builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: pyspark says only that the gateway exited
        raise PipelineError(
            f"Spark did not start ({type(exc).__name__}: {_first_line(exc)}); it needs Java 17 or "
            f"newer (`java -version` says which you have; `{INSTALL_JAVA}`)"
        ) from None


def score(
    df: DataFrame, column: str = "review", artifacts_dir: str | Path = DEFAULT_ARTIFACTS
) -> DataFrame:
    """`df` with `label` and `positive_probability` of its `column` added, scored lazily."""
    return _scored(df, column, artifacts_dir, "the DataFrame", "column=")


def _scored(
    df: DataFrame,
    column: str,
    artifacts_dir: str | Path,
    name: str,
    flag: str,
    counter: Accumulator | None = None,
) -> DataFrame:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    shown = ", ".join(repr(c) for c in df.columns) or "none"
    if column not in df.columns:
        raise PipelineError(
            f"{name} has no column {column!r}; its columns are {shown}: pass one of them as {flag}"
        )
    # Spark matches names regardless of case, so 'Label' would collide as well.
    clash = [c for c in df.columns if c.lower() in ADDED]
    if clash:
        raise PipelineError(
            f"{name} already has a column named {clash[0]!r}, where the scores go; rename it"
        )
    kind = df.schema[column].dataType
    if not isinstance(kind, T.StringType):
        raise PipelineError(
            f"column {column!r} of {name} holds {kind.simpleString()}, not text; cast it to "
            "string first"
        )
    folder = _driver_artifacts(artifacts_dir)
    scores_of = _scores_udf(folder, counter)
    hidden = f"__scores_{uuid.uuid4().hex}"  # a name no column of the input can already have
    scored = df.withColumn(hidden, scores_of(F.col(_quoted(column))))
    return scored.select(
        *(F.col(_quoted(c)) for c in df.columns),
        *(F.col(hidden)[field].alias(field) for field in ADDED),
    )


def _quoted(name: str) -> str:
    """A column name Spark takes literally, dots and backticks included."""
    return "`" + name.replace("`", "``") + "`"


def _driver_artifacts(artifacts_dir: str | Path) -> str:
    """The folder executors load: checked and made absolute when the driver has it.

    A folder the driver does not have may still be on the executors (shipped with --archives):
    they look for it there and say so if it is missing.
    """
    folder = Path(artifacts_dir)
    if not folder.is_dir():
        return str(folder)
    paths = Config(artifacts_dir=folder)
    model = paths.onnx_path if paths.onnx_path.is_file() else paths.model_path
    for needed in (model, paths.tokenizer_path):
        if not needed.is_file():
            raise PipelineError(
                f"{needed} is missing; train a model with `python -m pipeline run` first"
            )
    return str(folder.resolve())


def _scores_udf(folder: str, counter: Accumulator | None):
    from pyspark.sql import functions as F

    schema = f"{ADDED[0]} string, {ADDED[1]} float"

    @F.pandas_udf(schema)
    def scores(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        return score_batches(folder, batches, counter)

    return scores


def worker_predictor(folder: str) -> Predictor:
    """This worker's Predictor of `folder`: loaded by its first task, reloaded if a file changes.

    Spark reuses a Python worker across tasks and jobs, so get_predictor's cache keeps it; its
    model calls get the task's cores.
    """
    from pyspark import TaskContext

    context = TaskContext.get()
    return get_predictor(_worker_artifacts(folder), threads=context.cpus() if context else 1)


def score_batches(
    folder: str, batches: Iterator[pd.Series], counter: Accumulator | None = None
) -> Iterator[pd.DataFrame]:
    """Label and probability of each review of each Arrow batch (a null is an empty review)."""
    predictor = worker_predictor(folder)
    for reviews in batches:
        texts = [text if isinstance(text, str) else "" for text in reviews]
        probabilities = predictor.predict_proba(texts)
        if counter is not None:
            counter.add(len(texts))
        yield pd.DataFrame(
            {ADDED[0]: [label_of(p) for p in probabilities], ADDED[1]: probabilities}
        )


def _worker_artifacts(folder: str) -> Path:
    """The artifacts folder on this executor: as given, or shipped with the job (--archives)."""
    path = Path(folder)
    if path.is_dir():
        return path
    from pyspark import SparkFiles

    for shipped in (Path(SparkFiles.getRootDirectory()) / path.name, Path.cwd() / path.name):
        if shipped.is_dir():
            return shipped
    raise PipelineError(
        f"the artifacts folder {folder} is neither on this executor nor shipped with the job; "
        "put it where every executor can read it, or ship it with --archives"
    )


def format_of(path: str, fmt: str | None = None) -> str:
    """csv, tsv, jsonl or parquet: `fmt` if given, else told by the path's suffix."""
    found = fmt or format_from_name(path)
    if found is None and str(path).rstrip("/").lower().endswith(_PARQUET_SUFFIXES):
        found = "parquet"
    if found == "lines":
        raise PipelineError(
            f"--engine spark scores a column of a csv, tsv, jsonl or parquet table; {path} is "
            "read as one review a line: score it without --engine spark"
        )
    if found not in SPARK_FORMATS:
        raise PipelineError(
            f"cannot tell from its name whether {path} is csv, tsv, jsonl or parquet; name it so, "
            "or pass --format"
        )
    return found


def score_path(
    spark: SparkSession,
    input: str,
    output: str,
    column: str = "review",
    fmt: str | None = None,
    artifacts_dir: str | Path = DEFAULT_ARTIFACTS,
    encoding: str = "utf-8",
) -> dict:
    """Score the table at `input` into a Spark output folder at `output`; return its row count.

    The output is written beside `output` under a hidden name and renamed into place once the
    whole job has succeeded, so nothing appears under `output` on failure. Its format is its
    suffix's, else the input's.
    """
    input, output = str(input), str(output)
    in_fmt = format_of(input, fmt)
    out_fmt = format_of(output) if _named_format(output) else in_fmt
    if codec_of(encoding) != "utf-8-sig":
        raise PipelineError(
            f"--engine spark reads and writes UTF-8, not {encoding}; convert {input} to UTF-8 "
            f"first (`iconv -f {encoding} -t utf-8`), or score it without --engine spark"
        )
    counter = spark.sparkContext.accumulator(0)
    try:
        table = _read(spark, input, in_fmt)
        scored = _scored(table, column, artifacts_dir, input, "--column", counter)
        with _atomic_output(spark, output) as temporary:
            _write(scored, temporary, out_fmt)
    except PipelineError:
        raise
    except Exception as exc:
        if not _from_spark(exc):
            raise
        raise _spark_error(exc, input) from None
    return {"rows": counter.value}


def _named_format(path: str) -> bool:
    try:
        format_of(path)
    except PipelineError:
        return False
    return True


def _read(spark: SparkSession, path: str, fmt: str) -> DataFrame:
    reader = spark.read
    if fmt == "parquet":
        return reader.parquet(path)
    if fmt == "jsonl":  # FAILFAST: a line that is not a JSON object stops the job, named
        return reader.options(mode="FAILFAST").json(path)
    # Line by line, so a big file splits across cores; RFC 4180 quotes ("" inside a quoted
    # cell); every cell a string, as written. FAILFAST: a row Spark cannot split is refused.
    return reader.options(
        header=True,
        sep="\t" if fmt == "tsv" else ",",
        quote='"',
        escape='"',
        mode="FAILFAST",
    ).csv(path)


def _write(df: DataFrame, path: str, fmt: str) -> None:
    writer = df.write.mode("errorifexists")
    if fmt == "parquet":
        writer.parquet(path)
    elif fmt == "jsonl":
        writer.json(path)
    else:  # keep cells as they were: Spark's CSV writer trims spaces unless told not to
        writer.options(
            header=True,
            sep="\t" if fmt == "tsv" else ",",
            quote='"',
            escape='"',
            ignoreLeadingWhiteSpace=False,
            ignoreTrailingWhiteSpace=False,
        ).csv(path)


@contextlib.contextmanager
def _atomic_output(spark: SparkSession, output: str) -> Iterator[str]:
    """Yield a hidden folder beside `output`; swap it in only if the block succeeds.

    Through Hadoop's FileSystem, so it works wherever Spark writes (local disk, HDFS, object
    stores). A previous output is replaced only if it is a Spark output folder (has _SUCCESS)
    or a file, never an unrelated folder.
    """
    jvm = spark.sparkContext._jvm
    Path_ = jvm.org.apache.hadoop.fs.Path
    final = Path_(output)
    fs = final.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    final = fs.makeQualified(final)
    if fs.exists(final) and fs.getFileStatus(final).isDirectory():
        if not fs.exists(Path_(final, "_SUCCESS")):
            raise PipelineError(
                f"{output} is a folder that is not a Spark output (it has no _SUCCESS); give "
                "--output a new name or remove that folder"
            )
    parent = final.getParent()
    fs.mkdirs(parent)
    temporary = Path_(parent, f".{final.getName()}.{uuid.uuid4().hex}.tmp")
    old = Path_(parent, f".{final.getName()}.{uuid.uuid4().hex}.old")
    try:
        yield temporary.toString()
        if fs.exists(final) and not fs.rename(final, old):
            raise PipelineError(f"could not move the previous {output} aside; nothing replaced")
        if not fs.rename(temporary, final):
            if fs.exists(old):
                fs.rename(old, final)
            raise PipelineError(f"could not rename the scores into {output}; nothing replaced")
        fs.delete(old, True)
    finally:
        fs.delete(temporary, True)


def _from_spark(exc: Exception) -> bool:
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    return isinstance(exc, (Py4JError, PySparkException))


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")


def _spark_error(exc: Exception, input: str) -> PipelineError:
    """One sentence for a failed Spark job: our own error from a worker, or Spark's reason."""
    text = str(exc)
    ours = re.search(r"PipelineError: (.+)", text)
    if ours:
        return PipelineError(ours.group(1).strip())
    if "PATH_NOT_FOUND" in text:
        return PipelineError(f"input {input} does not exist")
    record = re.search(r"Malformed records are detected in \w+ parsing: (.*?)\.?\s*$", text, re.M)
    if record or "MALFORMED" in text:
        shown = f" ({record.group(1)[:200]})" if record else ""
        return PipelineError(
            f"{input} has a record Spark cannot read{shown}: in CSV or TSV a row with more or "
            "fewer cells than the header, or a quoted line break (Spark reads such files line by "
            "line), in JSON Lines a line that is not an object; fix it, or convert the file to "
            "Parquet"
        )
    reason = re.search(r"\[[A-Z_.]+\][^\n]*", text)
    return PipelineError(
        f"Spark could not score {input}: {reason.group(0) if reason else _first_line(exc)}"
    )
