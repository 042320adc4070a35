"""Score reviews through every scoring entry point with TensorFlow and Keras made unimportable.

    python tests/scoring_only.py ARTIFACTS_DIR SCRATCH_DIR REVIEW...

Run by tests/test_onnx.py, under the test environment's Python and under the scoring-only
install's (`pip install .`, which has neither). Prints one JSON line: each entry point's
probabilities, the engine used, and which of tensorflow/keras got imported (none may).
"""

import csv
import importlib.util
import json
import sys
from pathlib import Path

BLOCKED = ("tensorflow", "keras", "tf_keras")
installed = {f"{name}_installed": importlib.util.find_spec(name) is not None for name in BLOCKED}
for name in BLOCKED:
    sys.modules[name] = None  # any import of it now fails: scoring must never try

artifacts, scratch, reviews = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
result: dict = dict(installed)

from pipeline import Predictor, sentiment_predict  # noqa: E402
from pipeline.labels import label_of  # noqa: E402

predictor = Predictor(artifacts)
result["engine"] = predictor.engine
result["predictor"] = predictor.predict_proba(reviews).tolist()
labels = sentiment_predict(reviews, artifacts)
assert labels == [label_of(p) for p in result["predictor"]], labels
result["sentiment_predict"] = result["predictor"]

# predict --input: a CSV in, the same CSV with label and probability out
from pipeline.__main__ import main  # noqa: E402

source, scored = scratch / "reviews.csv", scratch / "scored.csv"
with source.open("w", encoding="utf-8", newline="") as fh:
    csv.writer(fh).writerows([["review"], *([r] for r in reviews)])
args = ["predict", "--input", str(source), "--output", str(scored), "--column", "review"]
assert main([*args, "--artifacts-dir", str(artifacts), "--quiet"]) == 0
with scored.open(encoding="utf-8", newline="") as fh:
    result["predict_cli"] = [float(row["positive_probability"]) for row in csv.DictReader(fh)]

# the service's scorer, as `serve` builds it
from pipeline.config import Config  # noqa: E402
from pipeline.serve.app import create_app  # noqa: E402

app = create_app(Config(artifacts_dir=artifacts))
scorer = app.state.scorer
result["service"] = scorer.submit(reviews).result(timeout=60).tolist()
scorer.close()

# a Spark worker's UDF body (pyspark is the spark extra's: scored where it is installed)
if importlib.util.find_spec("pyspark") is not None:
    import pandas as pd

    from pipeline.spark import score_batches

    frames = list(score_batches(str(artifacts), iter([pd.Series(reviews)])))
    result["spark_udf"] = frames[0]["positive_probability"].astype(float).tolist()

result["imported"] = sorted(
    name for name, module in sys.modules.items() if name.split(".")[0] in BLOCKED and module
)
print(json.dumps(result))
