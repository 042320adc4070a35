"""Memory and speed of `predict --input FILE.csv`: does memory stay flat as the file grows?

Writes the reviews of --source as a CSV (id, review, a note column) of --small and --large rows,
then in fresh processes measures peak RSS and rows/s of
  file      pipeline.score.score_file on the CSV (streams, --chunk-rows at a time)
  in-memory the same reviews read into a list and scored by Predictor.predict_proba at once
            (what a script without streaming does: memory grows with the file)
The model is the default architecture with untrained weights and a tokenizer fit on the
reviews: scoring costs the same whatever the weights are, and no training is needed.

    python benchmarks/score_file.py                        # 20,000 and 200,000 rows
    python benchmarks/score_file.py --small 2000 --large 20000   # a quick check
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import DEFAULT_SOURCE, REPO, child_env, machine, save_default_model, source_reviews

# Peak RSS read inside the child (VmHWM: ru_maxrss would carry the parent's peak).
CHILD = """
import json, sys, time
from pathlib import Path
from benchmarks.common import peak_rss_kib

mode, folder, path, chunk = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
from pipeline.predict import Predictor
from pipeline.score import score_file
predictor = Predictor(folder)
predictor.predict_proba(["배송 빠르고 좋아요"])  # load and trace before timing
before = peak_rss_kib()
start = time.perf_counter()
if mode == "file":
    rows = score_file(predictor, path, path.with_name("scored.csv"), column="review",
                      chunk_rows=chunk, quiet=True)["rows"]
else:
    import csv
    with path.open(encoding="utf-8", newline="") as fh:
        reviews = [row[1] for row in list(csv.reader(fh))[1:]]
    rows = len(predictor.predict_proba(reviews))
seconds = time.perf_counter() - start
print(json.dumps({"rows": rows, "seconds": seconds, "peak_mib": peak_rss_kib() / 1024,
                  "loaded_mib": before / 1024}))
"""


def write_csv(path: Path, reviews: list[str], rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "review", "note"])
        for i in range(rows):
            writer.writerow([i, reviews[i % len(reviews)], f"batch {i // 1000}"])


def child(mode: str, folder: Path, path: Path, chunk: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(folder), str(path), str(chunk)],
        cwd=REPO, env=child_env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--large", type=int, default=200_000)
    parser.add_argument("--chunk-rows", type=int, default=8192)
    args = parser.parse_args()

    reviews = source_reviews(args.source)
    results = {"machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_default_model(tmp, reviews)
        for rows in (args.small, args.large):
            path = tmp / f"reviews_{rows}.csv"
            write_csv(path, reviews, rows)
            size = path.stat().st_size / 2**20
            for mode in ("file", "in-memory"):
                r = child(mode, tmp, path, args.chunk_rows)
                results[f"{mode} {rows}"] = {**r, "file_mib": round(size, 1)}
                print(
                    f"{mode:<9} {rows:>8,} rows ({size:5.1f} MiB): {r['rows'] / r['seconds']:8,.0f}"
                    f" rows/s, peak RSS {r['peak_mib']:6.0f} MiB (after loading the model: "
                    f"{r['loaded_mib']:.0f} MiB)",
                    flush=True,
                )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
