"""Self-training: the calibrated teacher labels unlabeled reviews; a noisy student learns from
the rated reviews and the teacher's probabilities, and replaces the teacher only if it wins.

The unlabeled reviews are pretrain's (`unlabeled` files, read by the same function) and the
training split's reviews whose labels `label_fraction` left out; reviews also in validation or
test are left out and counted. Each round, the student (the same architecture, its own start)
learns from the rated reviews and the teacher's calibrated probabilities as soft targets, each
teacher-labelled review's loss weighted by `self_train_weight`, under noise the teacher did not
have: characters of teacher-labelled reviews read as unknown, more dropout (Xie et al.'s noisy
student). With `self_train_baseline` the TF-IDF baseline, fitted on the same rated reviews,
teaches beside the model: their logits are mixed, its share chosen on validation log loss (0
keeps the model alone), because with few labels the baseline is the stronger of the two. A
student that beats its teacher model on validation accuracy teaches the next round; one that
does not ends the rounds. Nothing is written here but the record and its curves: `train`
saves the winner, so a killed run leaves the last good model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import loop
from pipeline.batches import distributed_batches, labelled_batches, labelled_signature, lengths_of
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.files import write_json_atomic
from pipeline.labels import is_positive
from pipeline.plots import plot_curves
from pipeline.prepare import read_split
from pipeline.tokenizer import OOV_INDEX, CharTokenizer, trim_padding

MAX_DROPOUT = 0.5  # the student's raised dropout stops here: more leaves it nothing to learn
BASELINE_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)  # the baseline's share of the teacher, tried in turn


@dataclass
class Candidate:
    """A calibrated model, its temperature and its validation accuracy."""

    model: object
    temperature: float
    val_logits: np.ndarray
    val_accuracy: float
    history: dict | None = None  # the student's epochs (None for the first teacher)
    weight: float | None = None


def self_train(
    config: Config,
    teacher,
    temperature: float,
    val_logits: np.ndarray,
    data: dict,
    tokenizer: CharTokenizer,
    strategy,
    quiet: bool = False,
) -> tuple[object, dict]:
    """The better of the teacher (`for_inference`'s model, its validation logits `val_logits`)
    and its students, and the summary.

    Writes self_training.json (every student's history and score) and its curves.
    """
    from pipeline.pretrain import print_unlabeled_counts
    from pipeline.train import answer_logits

    splits = {name: read_split(config.split_path(name)) for name in ("train", "val", "test")}
    texts, counts = unlabeled_pool(config, splits)
    pool = tokenizer.encode(texts)
    if not quiet:
        print_unlabeled_counts(counts, "self-training")
        print(f"self-training: {len(pool):,} reviews for the teacher to label")
    if not len(pool):
        raise PipelineError(
            "self-training has no unlabeled reviews to learn from; pass --unlabeled files or a "
            "--label-fraction below 1"
        )
    baseline = BaselineTeacher.fit(config, splits, texts) if config.self_train_baseline else None
    best = Candidate(
        teacher, temperature, val_logits, val_accuracy(val_logits, temperature, data["y_val"])
    )
    first, rounds, chosen, best_round = best.val_accuracy, [], [], 0
    started = time.perf_counter()
    for round_no in range(1, config.self_train_rounds + 1):
        taught = teacher_mix(best, baseline, data["y_val"])
        model_logits = None
        if taught.share < 1:  # at share 1 the baseline alone teaches: no need to score the pool
            raw = answer_logits(best.model, pool, tokenizer.padding, config.mask_padding)
            model_logits = raw / best.temperature
        targets = sigmoid(taught.logits(model_logits, baseline.pool_logits if baseline else None))
        if not quiet:
            print(
                f"self-training: round {round_no}, teacher: the baseline's share {taught.share:g}, "
                f"validation accuracy {taught.val_accuracy:.4f} (the model alone "
                f"{best.val_accuracy:.4f})"
            )
        students = []
        for weight in config.self_train_weight:
            if not quiet:
                print(f"self-training: round {round_no}, student with weight {weight:g}")
            students.append(
                train_student(
                    config, pool, targets, weight, data, tokenizer, strategy, round_no, quiet
                )
            )
        student = max(students, key=lambda s: s.val_accuracy)  # the weight chosen on validation
        won = student.val_accuracy > best.val_accuracy
        rounds.append(
            {
                "round": round_no,
                "teacher_val_accuracy": best.val_accuracy,
                "teacher": taught.record(),
                "students": [
                    {
                        "weight": s.weight,
                        "val_accuracy": s.val_accuracy,
                        "temperature": round(s.temperature, 4),
                        "epochs": len(s.history["loss"]),
                        "history": s.history,
                    }
                    for s in students
                ],
                "chosen_weight": student.weight,
                "student_val_accuracy": student.val_accuracy,
                "student_won": won,
            }
        )
        chosen.append(student.history)
        if not won:
            break  # the same teacher would label the same way: another round learns nothing new
        best, best_round = student, round_no
    winner = f"student of round {best_round}" if best_round else "teacher"
    summary = {
        "winner": winner,
        "teacher_val_accuracy": first,
        "final_val_accuracy": best.val_accuracy,
        "gain_points": round(100 * (best.val_accuracy - first), 3),
        "final_temperature": round(best.temperature, 4),
        "rounds_run": len(rounds),
        "pseudo_labelled": len(pool),
        "rated": len(data["y_train"]),
        "unlabeled": counts,
        "baseline": baseline.record() if baseline else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(config.self_training_path, {**summary, "rounds": rounds})
    plot_curves(
        {k: sum((h[k] for h in chosen), []) for k in chosen[0]},
        config.self_training_curves_path,
        f"student loss, rounds 1-{len(chosen)} back to back (winner: {winner})",
    )
    return best.model, summary


def unlabeled_pool(config: Config, splits: dict) -> tuple[list[str], dict]:
    """The reviews to label: the training split's left-out ones and the unlabeled files',
    without repeats or reviews of any of the `splits` (train, val, test frames); and what was
    kept and left out of each file."""
    from pipeline.pretrain import unlabeled_texts

    known = {name: set(frame["text"]) for name, frame in splits.items()}
    texts, counts = [], {}
    if config.label_fraction < 1:
        left_out = config.train_unlabeled_path.read_text("utf-8").splitlines()
        texts += left_out
        counts[config.train_unlabeled_path.name] = {"read": len(left_out), "kept": len(left_out)}
        known["train"] |= set(left_out)  # a file's review also left out here is a repeat
    for path in map(Path, config.unlabeled):
        kept, counts[path.name] = unlabeled_texts(path, config, known)
        texts += kept
        known["train"] |= set(kept)  # and so is one in an earlier file
    return texts, counts


@dataclass
class BaselineTeacher:
    """The TF-IDF baseline fitted on the rated reviews (C chosen on validation, as the baseline
    stage does), as logits for validation and the pool."""

    c: float
    val_accuracy: float
    val_logits: np.ndarray
    pool_logits: np.ndarray

    @classmethod
    def fit(cls, config: Config, splits: dict, pool_texts: list[str]) -> BaselineTeacher:
        from pipeline.baseline import fit_baseline

        val = splits["val"]
        fitted = fit_baseline(splits["train"], val, config.baseline_c)
        return cls(
            fitted.c,
            fitted.val_accuracy[fitted.c],
            logit(fitted.predict_proba(val["text"])),
            logit(fitted.predict_proba(pool_texts)),
        )

    def record(self) -> dict:
        return {"c": self.c, "val_accuracy": self.val_accuracy}


@dataclass
class TeacherMix:
    """The teacher's logit: (1 - share) x the model's calibrated logit + share x the baseline's,
    scaled by a temperature fitted on validation."""

    share: float
    temperature: float
    val_accuracy: float
    val_log_loss: float

    def logits(self, model_logits: np.ndarray | None, baseline_logits: np.ndarray | None):
        return mixed_logits(self.share, model_logits, baseline_logits) / self.temperature

    def record(self) -> dict:
        return {
            "baseline_share": self.share,
            "val_accuracy": self.val_accuracy,
            "val_log_loss": round(self.val_log_loss, 5),
        }


def mixed_logits(share: float, model_logits, baseline_logits):
    """(1 - share) x the model's logit + share x the baseline's (the other one is not needed
    at share 0 or 1)."""
    if share == 0:
        return model_logits
    if share == 1:
        return baseline_logits
    return (1 - share) * model_logits + share * baseline_logits


def teacher_mix(
    model: Candidate, baseline: BaselineTeacher | None, labels: np.ndarray
) -> TeacherMix:
    """The mix of the model and the baseline with the lowest validation log loss (the smaller
    share on ties); the model alone without a baseline."""
    from pipeline.train import fit_temperature, log_loss

    model_logits = model.val_logits / model.temperature
    mixes = []
    for share in BASELINE_SHARES if baseline else (0.0,):
        raw = mixed_logits(share, model_logits, baseline.val_logits if baseline else None)
        temperature = fit_temperature(raw, labels)
        mixes.append(
            TeacherMix(
                share,
                temperature,
                val_accuracy(raw, temperature, labels),
                log_loss(raw / temperature, labels),
            )
        )
    return min(mixes, key=lambda mix: mix.val_log_loss)


def noisy_part(x, y, weights, noisy, padding: str, trim: bool, noise: float, seed: int):
    """Like batches.labelled_part, with per-row loss weights, and `noise` of the characters of
    `noisy` rows read as unknown (new ones every epoch)."""
    lengths, rng = lengths_of(x), np.random.default_rng(seed)

    def make_part(index: np.ndarray, weight: np.float32) -> tuple:
        batch = x[index]  # a copy: the noise never reaches x
        if trim:
            batch = trim_padding(batch, int(lengths[index].max()), padding).copy()
        hidden = (batch > OOV_INDEX) & noisy[index][:, None] & (rng.random(batch.shape) < noise)
        batch[hidden] = OOV_INDEX
        return (
            batch.astype(np.int32),
            y[index].astype(np.float32),
            (weights[index] * weight).astype(np.float32),
        )

    return make_part


def train_student(
    config: Config,
    pool,
    targets,
    weight: float,
    data: dict,
    tokenizer: CharTokenizer,
    strategy,
    round_no: int,
    quiet: bool,
) -> Candidate:
    """A new model of the same architecture, trained on rated + teacher-labelled reviews under
    noise, early-stopped on validation loss and calibrated on validation."""
    import keras

    from pipeline.model import build_model
    from pipeline.train import answer_task, calibrated

    student_config = config.replace(
        spatial_dropout=min(config.spatial_dropout + config.self_train_noise, MAX_DROPOUT),
        head_dropout=min(config.head_dropout + config.self_train_noise, MAX_DROPOUT),
    )
    rated = len(data["y_train"])
    x = np.concatenate([data["x_train"], pool])
    y = np.concatenate([data["y_train"].astype(np.float32), targets.astype(np.float32)])
    weights = np.concatenate([np.ones(rated), np.full(len(pool), weight)])
    noisy = np.arange(len(x)) >= rated
    seed = config.seed + round_no
    keras.utils.set_random_seed(seed)
    part = noisy_part(
        x, y, weights, noisy, tokenizer.padding, config.mask_padding, config.self_train_noise, seed
    )
    train_data = distributed_batches(
        lengths_of(x), config.batch_size, seed, strategy, part, labelled_signature()
    )
    val_data = labelled_batches(
        data["x_val"],
        data["y_val"],
        config.batch_size,
        tokenizer.padding,
        config.mask_padding,
        None,
        strategy,
    )
    with strategy.scope():
        jamo_table = tokenizer.jamo_table() if config.jamo_features else None
        model = build_model(student_config, tokenizer.vocab_size, train_data[1], jamo_table)
    early = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )
    history = loop.fit(
        model,
        strategy,
        answer_task,
        train_data,
        val_data,
        config.epochs,
        [early],
        verbose=not quiet,
    )
    final, temperature, logits = calibrated(
        model, data["x_val"], data["y_val"], tokenizer.padding, config.mask_padding
    )
    score = val_accuracy(logits, temperature, data["y_val"])
    return Candidate(final, temperature, logits, score, history, weight)


def val_accuracy(logits: np.ndarray, temperature: float, labels: np.ndarray) -> float:
    """Validation accuracy of the calibrated model from its logits, at the one threshold."""
    return float(np.mean(is_positive(sigmoid(logits / temperature)) == labels.astype(bool)))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)  # a probability of exactly 0 or 1 has no finite logit
    return np.log(p) - np.log1p(-p)
