"""The mission's rules, one test each, named after the rule it pins, on every input path.

They run the stages users run (`download`, `prepare`, `tokenize`, then `Predictor`) on the
fixture's real lines, plus lines a test adds where a rule needs a case the sample lacks (ratings
of 3, reviews that differ only before cleaning, characters that occur once). Each rule test runs
once per way a user can hand the reviews over (`SOURCES`: RATING<TAB>REVIEW lines, CSV, TSV and
JSON Lines with a rating or a 0/1 label column, UTF-8 with and without Excel's BOM, CP949 with
`--encoding`), with the same assertions, so a rule broken on one path fails there. Where a rule
needs an exact probability, a real Keras model with hand-set weights stands in for a trained one
(tests/known_model.py): no model is trained here. Each rule is checked through what a stage
writes or what `Predictor` answers, so the tests hold whatever the code behind them becomes.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from pipeline.cleaning import clean_text
from pipeline.prepare import SPLITS, read_split
from pipeline.records import read_record
from pipeline.stages import run_pipeline
from pipeline.tokenizer import OOV_INDEX, CharTokenizer
from tests.conftest import tiny_config
from tests.known_model import save_known_model

POSITIVE, NEGATIVE = "긍정", "부정"
RATINGS = (1, 2, 4, 5)  # the usable ratings; anything else (3, 0, 6, 4.5, ...) is dropped


# -- the input paths -------------------------------------------------------------------------------
# A row is (rating, review), the rating as the sample gives it or one a test made up (3, 0, 6, 4.5).
# Each source writes the rows its own way: ratings in the spellings its format allows (`5`, ` 5 `,
# `5.0`, `"5"`), or, for a label source, the label the rating stands for (1 above 3, 0 below)
# and a value that is not a label (blank, 2, 0.5, yes, ...) for a rating that is not usable.
def usable(rating) -> bool:
    return rating in RATINGS and not isinstance(rating, float)


def cp949_text(text: str) -> str:
    """`text` as a CP949 file can hold it: the few characters CP949 lacks (emoji, accented Latin,
    NBSP) are dropped, whitespace among them kept as a space, so it cleans to the same text."""
    out = []
    for ch in text:
        try:
            ch.encode("cp949")
            out.append(ch)
        except UnicodeEncodeError:
            out.append(" " if ch.isspace() else "")
    return "".join(out)


def _spell(value, spellings: list[Callable], i: int):
    return spellings[i % len(spellings)](value)


TEXT_RATINGS = [str, lambda r: f" {r} "]  # RATING<TAB>REVIEW: digits, padding allowed
CELL_RATINGS = [str, lambda r: f"{r}.0" if isinstance(r, int) else str(r), lambda r: f" {r}"]
JSON_RATINGS = [
    lambda r: r,
    str,
    lambda r: float(r),
    lambda r: f"{r}.0" if isinstance(r, int) else str(r),
]
CELL_LABELS = [str, lambda y: f"{y}.0"]
JSON_LABELS = [lambda y: y, str, lambda y: float(y)]
CELL_NOT_LABELS = ["", "2", "0.5", "-1", "yes", "3"]
JSON_NOT_LABELS = [None, 2, 0.5, "yes", True, -1, "", "1.5"]


@dataclass(frozen=True)
class Source:
    """One way a user hands over reviews: a file name, how rows are written, what to pass."""

    id: str
    name: str
    write: Callable[[list], bytes]
    settings: dict = field(default_factory=dict)
    labels: bool = False  # the source gives 0/1 labels, not ratings

    def expected(self, rating) -> tuple[int, int] | None:
        """(label, rating in the split files) for a row rated `rating`, or None if dropped."""
        if not usable(rating):
            return None
        return int(rating > 3), 0 if self.labels else rating


def lines_source(encoding: str = "utf-8", newline: str = "\n"):
    def write(rows) -> bytes:
        text = "".join(
            f"{_spell(r, TEXT_RATINGS, i)}\t{review}{newline}" for i, (r, review) in enumerate(rows)
        )
        return text.encode(encoding) if "utf-8" in encoding else cp949_text(text).encode(encoding)

    return write


def table_source(fmt: str, header: list[str], labels: bool, encoding="utf-8", newline="\n"):
    """Columns: an id, the review, then the rating or label (or as `header` orders them)."""

    def cells(i: int, rating, review: str) -> dict:
        if labels:
            not_labels = JSON_NOT_LABELS if fmt == "jsonl" else CELL_NOT_LABELS
            score = (
                _spell(int(rating > 3), JSON_LABELS if fmt == "jsonl" else CELL_LABELS, i)
                if usable(rating)
                else not_labels[i % len(not_labels)]
            )
        else:
            score = _spell(rating, JSON_RATINGS if fmt == "jsonl" else CELL_RATINGS, i)
        if encoding != "utf-8" and encoding != "utf-8-sig":
            review = cp949_text(review)
        return {"id": i, "review": review, "score": score}

    def write(rows) -> bytes:
        out = io.StringIO(newline="")
        records = [cells(i, r, review) for i, (r, review) in enumerate(rows)]
        if fmt == "jsonl":
            for record in records:
                if record["score"] is None and record["id"] % 16 == 8:
                    # a missing key reads like null: not a label (never on the first line,
                    # whose keys are the table's columns)
                    del record["score"]
                named = dict(zip(header, record.values(), strict=False))  # 2 cells if no score
                out.write(json.dumps(named, ensure_ascii=False))
                out.write(newline)
        else:
            writer = csv.writer(
                out, delimiter="," if fmt == "csv" else "\t", lineterminator=newline
            )
            writer.writerow(header)
            writer.writerows(
                [record["id"], record["review"], record["score"]] for record in records
            )
        return out.getvalue().encode(encoding)

    return write


def table(fmt, header, labels=False, encoding="utf-8", newline="\n", **settings) -> dict:
    """A table source's writer and settings (an `encoding` other than UTF-8 is passed on)."""
    column = "label_column" if labels else "rating_column"
    if encoding not in ("utf-8", "utf-8-sig"):
        settings["encoding"] = encoding
    return dict(
        write=table_source(fmt, header, labels, encoding, newline),
        settings={"text_column": header[1], column: header[2], **settings},
        labels=labels,
    )


SOURCES = [
    Source("lines", "reviews.txt", lines_source()),
    # Notepad's "UTF-8 with BOM"
    Source("lines-bom", "reviews.txt", lines_source("utf-8-sig")),
    Source("lines-cp949-crlf", "reviews.txt", lines_source("cp949", "\r\n"), {"encoding": "cp949"}),
    Source("csv-rating", "reviews.csv", **table("csv", ["id", "review", "stars"])),
    # Excel's "CSV UTF-8": a BOM before the header, CRLF line ends
    Source(
        "csv-rating-excel-utf8",
        "reviews.csv",
        **table("csv", ["id", "review", "stars"], encoding="utf-8-sig", newline="\r\n"),
    ),
    # Excel's CSV on a Korean Windows: CP949, Korean column names, CRLF
    Source(
        "csv-rating-cp949",
        "리뷰.csv",
        **table("csv", ["번호", "리뷰", "평점"], encoding="cp949", newline="\r\n"),
    ),
    Source("tsv-rating", "reviews.tsv", **table("tsv", ["id", "review", "stars"])),
    Source("jsonl-rating", "reviews.jsonl", **table("jsonl", ["id", "body", "stars"])),
    Source("csv-label", "labelled.csv", **table("csv", ["id", "review", "y"], labels=True)),
    # a name that says nothing: the format is passed
    Source(
        "tsv-label",
        "export",
        **table("tsv", ["id", "text", "label"], labels=True, source_format="tsv"),
    ),
    Source("jsonl-label", "labelled.ndjson", **table("jsonl", ["id", "text", "y"], labels=True)),
]


@pytest.fixture(scope="module", params=SOURCES, ids=[s.id for s in SOURCES])
def source(request) -> Source:
    return request.param


@pytest.fixture(scope="module")
def real_lines(sample_path) -> list[tuple[int, str]]:
    lines = sample_path.read_text(encoding="utf-8").splitlines()
    return [(int(rating), review) for rating, review in (line.split("\t", 1) for line in lines)]


def run_stages(root, source: Source, rows, *names, **settings):
    """Write `rows` as `source` would hold them and run download, prepare and the named stages
    on it, as the CLI does."""
    path = root / source.name
    root.mkdir(parents=True, exist_ok=True)
    path.write_bytes(source.write(rows))
    config = tiny_config(root, path, **{**source.settings, **settings})
    run_pipeline(config, names=("download", "prepare", *names), force=True, quiet=True)
    return config


def read_splits(config) -> dict[str, pd.DataFrame]:
    return {name: read_split(config.split_path(name)) for name in SPLITS}


def read_tokenizer(config) -> dict:
    return json.loads(config.tokenizer_path.read_text(encoding="utf-8"))


def unused_syllables(lines, count):
    """Syllables that occur nowhere in `lines`: each marks one review as the only one with it."""
    seen = set("".join(review for _, review in lines))
    return [chr(c) for c in range(0xAC00, 0xD7A4) if chr(c) not in seen][:count]


def rare_lines(real_lines):
    """40 reviews that each hold a syllable found nowhere else: about 8 land in val or test."""
    return [
        (5 if i % 2 else 1, f"{ch}{ch} 배송 {i}번")
        for i, ch in enumerate(unused_syllables(real_lines, 40))
    ]


@pytest.fixture(scope="module")
def project(tmp_path_factory, source, real_lines):
    """The real lines plus the rare ones, through download, prepare and tokenize (defaults)."""
    lines = real_lines + rare_lines(real_lines)
    config = run_stages(tmp_path_factory.mktemp(f"rules-{source.id}"), source, lines, "tokenize")
    return config, lines, read_splits(config)


# -- labels --------------------------------------------------------------------------------------
def relabel(real_lines):
    """The real lines with every 7th rated 3 and every 11th else rated 0, 6 or 4.5."""
    unusable = (0, 6, 4.5)
    return [
        (3 if i % 7 == 0 else unusable[i // 11 % 3] if i % 11 == 0 else r, review)
        for i, (r, review) in enumerate(real_lines)
    ]


@pytest.fixture(scope="module")
def relabelled(tmp_path_factory, source, real_lines):
    lines = relabel(real_lines)
    config = run_stages(tmp_path_factory.mktemp(f"ratings-{source.id}"), source, lines)
    return lines, pd.concat(read_splits(config).values())


@pytest.mark.parametrize(
    "rating", [1, 2, 3, 4, 5, 0, 6, 4.5], ids=lambda r: f"rating-{r}"
)  # ASCII ids: mutmut reruns tests by id
def test_rating_above_3_is_positive_below_3_is_negative_and_3_is_dropped(
    source, relabelled, rating
):
    """On a label source the label stands for the rating (1 above 3, 0 below) and a row whose
    rating is not usable carries a value that is not a label: the same rows must come out."""
    lines, rows = relabelled
    texts = {clean_text(review) for r, review in lines if r == rating}
    elsewhere = {clean_text(review) for r, review in lines if r != rating}
    only_this = texts - elsewhere - {""}  # a review also rated otherwise is kept under that rating
    assert len(only_this) >= (20 if rating in (1, 2, 3, 4, 5) else 10)
    found = rows[rows["text"].isin(only_this)]
    expected = source.expected(rating)
    if expected is None:
        assert found.empty, f"reviews rated {rating} must not reach any split"
    else:
        label, split_rating = expected
        assert len(found) == len(only_this)
        assert found["label"].tolist() == [label] * len(found)
        assert found["rating"].tolist() == [split_rating] * len(found)


# -- cleaning and duplicates ---------------------------------------------------------------------
NOISE = [
    "!!",
    " ABC",
    "😀",
    "\t",
    "\u00a0",
    "\u3000",
    " ~ ",
    "ｆ",
    "漢",
    "é",
    "\u1100\u1161",
    "...",
]


def test_every_review_is_cleaned_by_the_one_cleaning_function(tmp_path, source, real_lines):
    """Noise of every kind cleaning drops or folds, on every path: the splits hold exactly the
    cleaned reviews, jamo, digits and single spaces, nothing the source wrote around them."""
    lines = [
        (r, f"{NOISE[i % len(NOISE)]}{review}{NOISE[(i * 5) % len(NOISE)]}ㄱㅣ 힣 09")
        for i, (r, review) in enumerate(real_lines[:240])
    ]
    rows = pd.concat(read_splits(run_stages(tmp_path, source, lines)).values())
    expected = {clean_text(review) for _, review in lines}
    assert len(expected) > 200 and all(t.endswith("ㄱㅣ 힣 09") for t in expected)
    assert sorted(rows["text"]) == sorted(expected)


def test_duplicates_are_judged_after_cleaning_and_the_first_one_is_kept(
    tmp_path, source, real_lines
):
    originals = real_lines[:120]
    # Each later copy differs before cleaning only (punctuation, Latin, emoji, spacing), and has
    # the opposite label: a kept copy would show as a second row or a flipped label.
    copies = [
        (1 if r > 3 else 5, variant)
        for r, review in originals[:40]
        for variant in (f"  {review}!! ok 😀", review.replace(" ", "   ") + "\u3000")
    ]
    # Reviews that differ after cleaning are different reviews, however close.
    near = [(5, "정말 좋아요"), (1, "정말좋아요"), (4, "좋아요 1"), (2, "좋아요 2")]
    lines = originals + copies + near
    config = run_stages(tmp_path, source, lines)
    rows = pd.concat(read_splits(config).values())

    first_label = {}
    for r, review in lines:
        first_label.setdefault(clean_text(review), int(r > 3))
    first_label.pop("", None)
    assert rows["text"].is_unique
    assert sorted(rows["text"]) == sorted(first_label)
    assert dict(zip(rows["text"], rows["label"], strict=True)) == first_label


# -- the split -----------------------------------------------------------------------------------
def test_split_is_stratified_80_10_10_with_no_review_in_two_splits(project):
    config, lines, splits = project
    distinct = {clean_text(review) for _, review in lines} - {""}
    total = len(distinct)
    positive_share = sum(f["label"].sum() for f in splits.values()) / total
    sizes = {name: len(frame) for name, frame in splits.items()}

    assert sum(sizes.values()) == total
    assert set().union(*(set(f["text"]) for f in splits.values())) == distinct
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        assert not set(splits[a]["text"]) & set(splits[b]["text"]), f"{a} and {b} share a review"
    # val and test are rounded up from 10%; train takes the rest
    assert abs(sizes["val"] - 0.1 * total) < 1 and abs(sizes["test"] - 0.1 * total) < 1
    assert abs(sizes["train"] - 0.8 * total) < 2
    for name, frame in splits.items():
        # stratified: each split holds its share of positives, to within one row
        assert abs(frame["label"].sum() - positive_share * len(frame)) <= 1, name
    shares = [frame["label"].mean() for frame in splits.values()]
    assert max(shares) - min(shares) < 0.02
    # and the prepare stage's record counts what it wrote
    counts = read_record(config.data_dir, "prepare")["result"]
    assert sum(sizes.values()) == counts["kept"]
    assert counts["splits"]["test"]["positive"] == int(splits["test"]["label"].sum())


# -- the tokenizer -------------------------------------------------------------------------------
def test_tokenizer_indexes_exactly_the_characters_of_the_training_split(project):
    config, _, splits = project
    index = read_tokenizer(config)["word_index"]
    assert set(index) - {config.oov_token} == set("".join(splits["train"]["text"]))


def test_a_character_only_in_validation_or_test_encodes_as_oov(project):
    config, _, splits = project
    tokenizer = read_tokenizer(config)
    index, maxlen = tokenizer["word_index"], tokenizer["maxlen"]
    assert tokenizer["truncating"] == "pre"  # the default: a review's last maxlen characters
    train_chars = set("".join(splits["train"]["text"]))
    encoded = np.load(config.encoded_path)
    saved = CharTokenizer.load(config.tokenizer_path)
    for name in ("val", "test"):
        texts = splits[name]["text"].tolist()
        unseen = set("".join(texts)) - train_chars
        assert unseen, f"the {name} split should hold characters the training split lacks"
        assert not unseen & set(index)
        # validation as training reads it; test as evaluate scores it (the saved tokenizer)
        rows = encoded["x_val"] if name == "val" else saved.encode(texts)
        for text, row in zip(texts, rows, strict=True):
            ids = row[row != 0].tolist()
            assert ids == [index.get(ch, OOV_INDEX) for ch in text[-maxlen:]]
        # counted in this split alone: each of its unseen characters is one OOV id
        unseen_here = sum(ch in unseen for text in texts for ch in text[-maxlen:])
        assert unseen_here and int((rows == OOV_INDEX).sum()) == unseen_here, name
    assert encoded["x_train"].min() == 0 and OOV_INDEX not in encoded["x_train"]


@pytest.fixture(scope="module")
def short_reviews(tmp_path_factory, source, real_lines):
    """150 real lines through download and prepare, once per source: tokenize reruns on them."""
    return run_stages(tmp_path_factory.mktemp(f"short-{source.id}"), source, real_lines[:150])


@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize("truncating", ["pre", "post"])
def test_reviews_are_padded_and_truncated_to_maxlen_on_the_configured_sides(
    short_reviews, padding, truncating
):
    maxlen = 12
    config = short_reviews.replace(maxlen=maxlen, padding=padding, truncating=truncating)
    run_pipeline(config, names=("prepare", "tokenize"), quiet=True)  # prepare is fresh: skipped
    index = read_tokenizer(config)["word_index"]
    encoded = np.load(config.encoded_path)
    lengths = set()
    for name, frame in read_splits(config).items():
        rows = []
        for text in frame["text"]:
            ids = [index.get(ch, OOV_INDEX) for ch in text]
            kept = ids[-maxlen:] if truncating == "pre" else ids[:maxlen]
            pad = [0] * (maxlen - len(kept))
            rows.append(pad + kept if padding == "pre" else kept + pad)
            lengths.add(len(text))
        if name == "test":  # not in encoded.npz: evaluate encodes it with the saved tokenizer
            assert (
                CharTokenizer.load(config.tokenizer_path).encode(frame["text"].tolist()).tolist()
                == rows
            )
            continue
        assert encoded[f"x_{name}"].tolist() == rows, name
        assert encoded[f"y_{name}"].tolist() == frame["label"].tolist(), name
    assert min(lengths) < maxlen < max(lengths)  # both padding and truncation were exercised


# -- the same rows, every format ------------------------------------------------------------------
def zero_ratings(split: bytes) -> bytes:
    """A split file as a label source writes it: the rating column 0 (the source has none)."""
    header, *rows = split.decode().splitlines(keepends=True)
    cells = (row.split("\t", 2) for row in rows)
    return (header + "".join(f"{label}\t0\t{text}" for label, _, text in cells)).encode()


def test_the_same_rows_in_every_format_give_byte_identical_splits(tmp_path, real_lines):
    """Every rule at once: ratings, drops, cleaning, duplicates and split, format by format."""
    originals = relabel(real_lines) + rare_lines(real_lines)
    noisy = [(r, f"{NOISE[i % len(NOISE)]}{review}") for i, (r, review) in enumerate(originals)]
    lines = originals + noisy[::3] + [(1, "!!!"), (5, "")]
    written = {}
    for source in SOURCES:
        config = run_stages(tmp_path / source.id, source, lines, "tokenize")
        splits = {name: config.split_path(name).read_bytes() for name in SPLITS}
        written[source.id] = (source, splits, config)

    lines_splits = written["lines"][1]
    assert len(lines_splits["train"].splitlines()) > 400
    tokenizer = written["lines"][2].tokenizer_path.read_bytes()
    encoded = dict(np.load(written["lines"][2].encoded_path))
    for source, splits, config in written.values():
        expected = {
            name: zero_ratings(split) if source.labels else split
            for name, split in lines_splits.items()
        }
        assert splits == expected, source.id
        assert config.tokenizer_path.read_bytes() == tokenizer, source.id
        got = np.load(config.encoded_path)
        assert set(got) == set(encoded), source.id
        for key, array in encoded.items():
            np.testing.assert_array_equal(got[key], array, err_msg=f"{source.id} {key}")


# -- prediction ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def known_predictor(project):
    """A Predictor over the project's tokenizer and a model whose every score is known."""
    from pipeline.predict import Predictor

    config, _, _ = project
    tokenizer = read_tokenizer(config)
    rng = np.random.default_rng(0)
    chars = [ch for ch in tokenizer["word_index"] if ch != config.oov_token]
    scores = dict(zip(chars, rng.uniform(-20, 20, len(chars)).round(3).tolist(), strict=True))
    save_known_model(config.artifacts_dir, scores, oov_score=7.0)
    return Predictor(config.artifacts_dir), scores


def test_prediction_cleans_a_raw_review_exactly_as_training_did(project, known_predictor):
    """Every raw line's score equals the score of the row training made of it."""
    config, lines, splits = project
    predictor, scores = known_predictor
    encoded = np.load(config.encoded_path)
    tokenizer = read_tokenizer(config)
    index = tokenizer["word_index"]
    by_id = {i: scores.get(ch, 7.0) for ch, i in index.items()}
    trained_row = {}
    for name in ("train", "val"):  # the rows training read
        trained_row.update(zip(splits[name]["text"], encoded[f"x_{name}"], strict=True))
    width = tokenizer["maxlen"]  # the known model averages over every padded position
    assert encoded["x_train"].shape[1] == width

    raw = [review for _, review in lines if clean_text(review) in trained_row]
    assert len(raw) > 500 and any(r != clean_text(r) for r in raw)
    expected = [
        1 / (1 + np.exp(-sum(by_id.get(int(i), 0.0) for i in trained_row[clean_text(r)]) / width))
        for r in raw
    ]
    np.testing.assert_allclose(predictor.predict_proba(raw), expected, rtol=0, atol=1e-6)


def test_reviews_that_differ_only_before_cleaning_score_the_same(known_predictor, real_lines):
    predictor, _ = known_predictor
    for _, review in real_lines[:30]:
        variants = [
            review,
            clean_text(review),
            f"  {review} !!! ABC 😀",
            review.replace(" ", " \t\u3000 ") + "\n",
            "".join(f"{ch}~" for ch in review),
        ]
        probs = predictor.predict_proba(variants)
        assert probs.tolist() == [probs[0]] * len(variants), review
    # and a review that cleans differently scores differently: cleaning is not a no-op
    assert predictor.predict_proba("좋아요")[0] != predictor.predict_proba("좋아 요")[0]


@pytest.fixture(scope="module")
def threshold_predictor(tmp_path_factory, project):
    """Over the tokenizer this source trained: two of its training characters score just above
    and just below 0.5, every other character and padding 0, so a pair cancels to exactly 0.5."""
    from pipeline.predict import Predictor

    config, _, splits = project
    train_chars = sorted(set("".join(splits["train"]["text"])) - {" "})
    up, down, zero = train_chars[:3]
    folder = tmp_path_factory.mktemp("threshold")
    shutil.copy(config.tokenizer_path, folder / "tokenizer.json")
    save_known_model(folder, {up: 0.001, down: -0.001})
    return Predictor(folder), folder, (up, down, zero)


def test_probability_above_half_is_positive_and_half_or_below_is_negative(threshold_predictor):
    from pipeline.predict import sentiment_predict

    predictor, folder, (up, down, zero) = threshold_predictor
    reviews = [up, down, up + down, "", zero, f"{up}!! ok"]
    probs = predictor.predict_proba(reviews)
    assert probs[0] > 0.5 > probs[1]
    assert probs[2] == probs[3] == probs[4] == 0.5  # exactly: the rule is p > 0.5
    expected = [POSITIVE, NEGATIVE, NEGATIVE, NEGATIVE, NEGATIVE, POSITIVE]
    assert predictor.predict(reviews) == expected
    assert [label for label, _ in predictor.predict_stream(reviews)] == expected
    assert sentiment_predict(reviews, folder) == expected
    assert predictor.predict(up) == POSITIVE and predictor.predict(up + down) == NEGATIVE


def test_each_source_is_written_the_way_its_users_write_it(source, real_lines):
    """The paths above are real ones: each spelling, encoding and line end is in the file."""
    data = source.write(relabel(real_lines))
    encoding = source.settings.get("encoding", "utf-8")
    text = data.decode(encoding)
    assert (encoding == "cp949") != ("cp949" not in source.id)
    if encoding == "cp949":
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")  # a UTF-8 reading would be refused: --encoding is needed
    assert text.startswith("\ufeff") == ("excel-utf8" in source.id or "bom" in source.id)
    assert ("\r\n" in text) == ("crlf" in source.id or "excel" in source.id or "cp949" in source.id)
    if source.id.startswith("lines"):
        assert " 5 \t" in text and "\n4.5\t" in text
    elif source.id.startswith("jsonl") and not source.labels:
        assert all(f'"stars": {s}' in text for s in ("5", '"5"', "5.0", '"5.0"'))
    elif source.id.startswith("jsonl"):
        assert all(f'"y": {s}' in text for s in ("1", '"1"', "1.0", "null", "true", '"yes"'))
        assert text.count('"y"') < len(real_lines)  # some lines lack the key
    else:  # the last cell of each CSV or TSV row
        last = {line[line.rfind(",") :] for line in text.replace("\t", ",").splitlines()}
        cells = {",1.0", ",yes", ",", ",0.5"} if source.labels else {",5.0", ", 5", ",5", ",4.5"}
        assert cells <= last
