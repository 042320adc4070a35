"""Pretrain the character encoder on reviews without ratings, before `train` fine-tunes it.

The encoder (embeddings, convolution, stacked RNN) learns from text alone: the training split's
own reviews, and any files given as `unlabeled`. Two objectives, chosen by `pretrain`:

- mlm: hide `mask_rate` of the characters (BERT's 80% a mask, 10% a random character, 10%
  unchanged) and predict them from both sides. The mask is the OOV index, so a character the
  tokenizer never saw reads, at prediction time, like a hidden one the encoder learned to fill.
- rtd: replace `mask_rate` of the characters by others drawn from the training split's
  character frequencies and tell, for every character, whether it was replaced (ELECTRA's
  task, with the generator's samples replaced by frequency draws: no second network to train).

The tokenizer stays the training split's: characters it does not know are OOV. Unlabeled
reviews that are also in validation or test (after cleaning) are left out, so pretraining never
sees a review the model is judged on.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from pathlib import Path

import numpy as np

from pipeline import loop
from pipeline.batches import distributed_batches, lengths_of, load_encoded
from pipeline.cleaning import clean_texts
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.files import atomic_path, write_json_atomic
from pipeline.plots import plot_curves
from pipeline.tables import decode_source, format_from_name, read_table, text_of
from pipeline.tokenizer import OOV_INDEX, CharTokenizer, trim_padding

MASK_INDEX = OOV_INDEX  # what a hidden character reads as
KEEP_SHARE, RANDOM_SHARE = 0.1, 0.1  # of the chosen characters (mlm): left as they are, random


def pretrain(config: Config, quiet: bool = False) -> dict:
    """Run the stage: training texts + unlabeled files in; pretrained.keras, history, curves out."""
    if config.pretrain == "none":
        return {"objective": "none"}
    import keras
    import tensorflow as tf

    from pipeline.model import build_pretrainer
    from pipeline.prepare import read_split

    tokenizer = CharTokenizer.load(config.tokenizer_path)
    data = load_encoded(config.encoded_path, ("x_train", "x_val"))
    known = {
        name: set(read_split(config.split_path(name))["text"]) for name in ("train", "val", "test")
    }
    rows, counts = [data["x_train"]], {"training_texts": len(data["x_train"])}
    for path in config.unlabeled:
        texts, file_counts = unlabeled_texts(Path(path), config, known)
        rows.append(tokenizer.encode(texts))
        counts[Path(path).name] = file_counts
    x = np.concatenate(rows)
    counts["texts"] = len(x)
    if not quiet:
        _print_counts(counts)

    keras.utils.set_random_seed(config.seed)
    strategy = tf.distribute.get_strategy()  # one process: the unlabeled files are local
    frequencies = character_frequencies(data["x_train"], tokenizer.vocab_size)
    part, signature, task = objective(config, tokenizer, frequencies)
    train_data = distributed_batches(
        lengths_of(x), config.pretrain_batch_size, config.seed, strategy, part(x), signature
    )
    val_data = distributed_batches(
        lengths_of(data["x_val"]),
        config.pretrain_batch_size,
        None,
        strategy,
        part(data["x_val"], fixed_seed=config.seed),
        signature,
    )
    jamo_table = tokenizer.jamo_table() if config.jamo_features else None
    model = build_pretrainer(config, tokenizer.vocab_size, train_data[1], jamo_table)
    epoch_seconds: list[float] = []
    started = time.perf_counter()
    history = loop.fit(
        model,
        strategy,
        task,
        train_data,
        val_data,
        config.pretrain_epochs,
        [loop.epoch_timer(epoch_seconds)],
        verbose=not quiet,
    )
    seconds = time.perf_counter() - started
    # without the optimizer's state: fine-tuning starts its own
    with atomic_path(config.pretrained_path) as tmp:
        keras.Model(model.inputs, model.outputs, name=model.name).save(tmp)

    summary = {
        "objective": config.pretrain,
        **counts,
        "epochs": len(history["loss"]),
        "val_loss": history["val_loss"][-1],
        "val_accuracy": history["val_accuracy"][-1],
        "pretrain_seconds": round(seconds, 1),
        "texts_per_second": round(len(x) / min(epoch_seconds)),
        "parameters": model.count_params(),
    }
    write_json_atomic(config.pretrain_history_path, {**summary, "history": history})
    what = {"mlm": "hidden characters", "rtd": "replaced or not, per character"}
    plot_curves(
        history,
        config.pretrain_curves_path,
        f"pretraining loss ({config.pretrain}: {what[config.pretrain]})",
    )
    return summary


def unlabeled_texts(path: Path, config: Config, known: dict[str, set[str]]) -> tuple[list, dict]:
    """The file's reviews, cleaned, without empty ones, repeats, or reviews of any split.

    A review in validation or test would let pretraining see what the model is judged on; one
    in the training split is already pretrained on.
    """
    decoded = decode_source(path.read_bytes(), config.unlabeled_encoding, path)
    fmt = format_from_name(path) or "lines"
    if fmt == "lines":
        if config.unlabeled_column is not None:
            raise PipelineError(
                f"{path} is read as plain text, one review per line; --unlabeled-column needs "
                "a csv, tsv or jsonl file"
            )
        raw = decoded.text.splitlines()
    else:
        table = read_table(io.StringIO(decoded.text, newline=""), fmt, path)
        cell = table.getter(config.unlabeled_column, path, "--unlabeled-column")
        raw = [text_of(cell(row)) for _, row in table.rows if row is not None]
    counts = Counter(read=len(raw))
    texts, seen = [], set()
    for text in clean_texts(raw):
        if not text:
            counts["empty_after_cleaning"] += 1
        elif text in known["val"] or text in known["test"]:
            counts["in_validation_or_test"] += 1
        elif text in known["train"] or text in seen:
            counts["duplicates"] += 1
        else:
            seen.add(text)
            texts.append(text)
    counts["kept"] = len(texts)
    return texts, dict(counts)


def character_frequencies(x: np.ndarray, vocab_size: int) -> np.ndarray:
    """How often each index occurs in the training rows; 0 for padding and OOV."""
    counts = np.bincount(x.ravel(), minlength=vocab_size)[:vocab_size].astype(np.float64)
    counts[: OOV_INDEX + 1] = 0
    return counts / counts.sum()


def objective(config: Config, tokenizer: CharTokenizer, frequencies: np.ndarray):
    """(part maker, tf.data signature, task) of `config.pretrain`.

    `part(x)` draws new characters to hide or replace every epoch; `part(x, fixed_seed=s)`
    draws the same ones every epoch (for validation, so its loss is comparable over epochs).
    """
    import tensorflow as tf

    from pipeline.model import pool_size

    padding, rate, pool = tokenizer.padding, config.mask_rate, pool_size(config)
    make = _masked_part if config.pretrain == "mlm" else _replaced_part
    shared = np.random.default_rng(config.seed)

    def part(x: np.ndarray, fixed_seed: int | None = None):
        def rng_for(index: np.ndarray):
            if fixed_seed is None:
                return shared
            return np.random.default_rng((fixed_seed, int(index[0]), len(index)))

        return make(x, padding, rate, pool, frequencies, rng_for)

    ids = tf.TensorSpec((None, None), tf.int32)
    weights = tf.TensorSpec((None, None), tf.float32)
    if config.pretrain == "mlm":
        return part, ((ids, ids), ids, weights), mlm_task
    return part, (ids, weights, weights), rtd_task


def _choose(x, lengths, index, padding: str, rate: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """The batch's rows (a copy, trimmed to its longest text) and which of their characters to
    hide or replace: each real one (not padding or OOV) with `rate`."""
    rows = trim_padding(x[index], int(lengths[index].max()), padding).copy()
    return rows, (rows > OOV_INDEX) & (rng.random(rows.shape) < rate)


def _text_offset(rows: np.ndarray, lengths: np.ndarray, padding: str) -> np.ndarray:
    """Per row, the column of its text's first character."""
    return rows.shape[1] - lengths if padding == "pre" else np.zeros_like(lengths)


def _token_weights(chosen: np.ndarray, weight: np.float32) -> np.ndarray:
    """Each chosen place's weight: the part's share of its global batch, spread evenly."""
    rows = len(chosen)
    return (chosen * (weight * rows / max(int(chosen.sum()), 1))).astype(np.float32)


def _masked_part(x, padding, rate, pool, frequencies, rng_for):
    lengths = lengths_of(x)

    def make_part(index: np.ndarray, weight: np.float32) -> tuple:
        rng = rng_for(index)
        rows, chosen = _choose(x, lengths, index, padding, rate, rng)
        # the chosen columns of each row first, in order, then padding places of weight 0
        k = max(int(chosen.sum(axis=1).max()), 1)
        columns = np.argsort(~chosen, axis=1, kind="stable")[:, :k]
        picked = np.take_along_axis(chosen, columns, axis=1)
        targets = np.where(picked, np.take_along_axis(rows, columns, axis=1), 0)
        places = columns - _text_offset(rows, lengths[index], padding)[:, None]
        places = np.where(picked, places, 0)
        draw = rng.random(rows.shape)
        rows[chosen & (draw < 1 - KEEP_SHARE - RANDOM_SHARE)] = MASK_INDEX
        swap = chosen & (draw >= 1 - KEEP_SHARE - RANDOM_SHARE) & (draw < 1 - KEEP_SHARE)
        rows[swap] = rng.choice(len(frequencies), size=int(swap.sum()), p=frequencies)
        weights = _token_weights(picked, weight)
        return (rows.astype(np.int32), places.astype(np.int32)), targets.astype(np.int32), weights

    return make_part


def _replaced_part(x, padding, rate, pool, frequencies, rng_for):
    lengths = lengths_of(x)

    def make_part(index: np.ndarray, weight: np.float32) -> tuple:
        rng = rng_for(index)
        rows, chosen = _choose(x, lengths, index, padding, rate, rng)
        drawn = rng.choice(len(frequencies), size=int(chosen.sum()), p=frequencies)
        replaced = np.zeros_like(chosen)
        replaced[chosen] = drawn != rows[chosen]  # a draw of the same character is no change
        rows[chosen] = drawn
        # labels and weights in text order, one per place of the encoder's steps
        width = -(-rows.shape[1] // pool) * pool
        offset = _text_offset(rows, lengths[index], padding)
        columns = np.arange(width)[None, :] + offset[:, None]
        real = np.arange(width)[None, :] < lengths[index][:, None]
        columns = np.minimum(columns, rows.shape[1] - 1)
        labels = np.where(real, np.take_along_axis(replaced, columns, axis=1), 0)
        weights = _token_weights(real & (np.take_along_axis(rows, columns, axis=1) > 0), weight)
        return rows.astype(np.int32), labels.astype(np.float32), weights

    return make_part


def mlm_task(model, inputs, targets, training: bool):
    """Per hidden character: cross-entropy of the vocabulary logits, and whether it was guessed."""
    import tensorflow as tf

    logits = model(inputs, training=training)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), targets), tf.float32)
    return losses, correct


def rtd_task(model, inputs, targets, training: bool):
    """Per character: cross-entropy of "replaced?", and whether it was told right."""
    import tensorflow as tf

    logits = model(inputs, training=training)[:, : tf.shape(targets)[1]]
    losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    correct = tf.cast(tf.equal(tf.cast(logits > 0, tf.float32), targets), tf.float32)
    return losses, correct


def _print_counts(counts: dict) -> None:
    print_unlabeled_counts(counts, "pretrain")
    print(
        f"pretrain: {counts['texts']:,} texts ({counts['training_texts']:,} of the training split)"
    )


def print_unlabeled_counts(counts: dict, stage: str) -> None:
    """One line per unlabeled file: reviews read, kept, and why the others were left out."""
    for name, file_counts in counts.items():
        if isinstance(file_counts, dict):
            skipped = ", ".join(
                f"{file_counts[k]:,} {k.replace('_', ' ')}"
                for k in ("empty_after_cleaning", "duplicates", "in_validation_or_test")
                if file_counts.get(k)
            )
            print(
                f"{stage}: {name}: {file_counts['read']:,} reviews read, "
                f"{file_counts['kept']:,} kept" + (f" ({skipped} left out)" if skipped else "")
            )
