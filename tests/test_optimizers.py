"""SparseAdam: Adam's update on the rows a batch touched, nothing on the others."""

import keras
import numpy as np
import tensorflow as tf

from pipeline.optimizers import SparseAdam


def _table(seed=0):
    return keras.Variable(np.random.default_rng(seed).normal(size=(50, 3)).astype("float32"))


def _rows(indices, values):
    return tf.IndexedSlices(
        tf.constant(values, tf.float32), tf.constant(indices), tf.constant([50, 3])
    )


def test_touched_rows_get_adams_update_and_the_others_never_move():
    sparse_table, dense_table = _table(), _table()
    sparse, dense = SparseAdam(0.01), keras.optimizers.Adam(0.01)
    sparse.build([sparse_table])
    dense.build([dense_table])
    rng = np.random.default_rng(1)
    # step 1 touches rows 3, 7 (twice) and 9; step 2 touches row 3 only
    first = ([3, 7, 9, 7], rng.normal(size=(4, 3)))
    sparse.apply([_rows(*first)], [sparse_table])
    dense.apply([tf.convert_to_tensor(_rows(*first))], [dense_table])
    np.testing.assert_allclose(sparse_table.numpy(), dense_table.numpy(), atol=1e-6)

    before = sparse_table.numpy().copy()
    second = ([3], rng.normal(size=(1, 3)))
    sparse.apply([_rows(*second)], [sparse_table])
    dense.apply([tf.convert_to_tensor(_rows(*second))], [dense_table])
    after = sparse_table.numpy()
    moved = np.flatnonzero((after != before).any(axis=1)).tolist()
    assert moved == [3]  # dense Adam's momentum would also move rows 7 and 9 again
    assert not np.allclose(dense_table.numpy()[[7, 9]], before[[7, 9]])
    # row 3 has seen the same gradients under both rules: the same weights
    np.testing.assert_allclose(after[3], dense_table.numpy()[3], atol=1e-6)


def test_dense_gradients_take_plain_adam():
    a, b = _table(), _table()
    sparse, dense = SparseAdam(0.01), keras.optimizers.Adam(0.01)
    sparse.build([a])
    dense.build([b])
    gradient = np.random.default_rng(2).normal(size=(50, 3)).astype("float32")
    for _ in range(3):
        sparse.apply([tf.constant(gradient)], [a])
        dense.apply([tf.constant(gradient)], [b])
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_training_reaches_the_sparse_path_for_the_ngram_table(monkeypatch):
    """In a real fit the n-gram table's gradient arrives as rows, not as a dense matrix."""
    from pipeline.config import Config
    from pipeline.model import build_model

    seen = {}
    original = SparseAdam.update_step

    def update_step(self, gradient, variable, learning_rate):
        seen[variable.name] = type(gradient).__name__
        return original(self, gradient, variable, learning_rate)

    monkeypatch.setattr(SparseAdam, "update_step", update_step)
    config = Config(embedding_dim=4, rnn_units=(4,), jamo_features=0, ngram_order=2, ngram_dim=4)
    model = build_model(config, vocab_size=20)
    x = np.random.default_rng(3).integers(0, 20, size=(16, 9)).astype("int32")
    model.fit(x, np.arange(16) % 2, epochs=1, batch_size=8, verbose=0)
    table = [path for path in seen if "ngram_embedding" in path]
    assert table and seen[table[0]] == "IndexedSlices"
    assert isinstance(model.optimizer, SparseAdam)


def test_the_saved_model_carries_no_optimizer_state(tmp_path):
    """model.keras is for prediction: Adam's two moments per weight would triple its size."""
    from pipeline.config import Config
    from pipeline.model import build_model
    from pipeline.train import for_inference

    config = Config(embedding_dim=4, rnn_units=(4,), jamo_features=0, ngram_order=2, ngram_dim=8)
    model = build_model(config, vocab_size=20)
    x = np.random.default_rng(3).integers(0, 20, size=(16, 9)).astype("int32")
    model.fit(x, np.arange(16) % 2, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "compiled.keras")
    for_inference(model).save(tmp_path / "model.keras")
    again = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert getattr(again, "optimizer", None) is None
    answer = model(x).numpy()[:, :1]  # the model's own answer; the branches' follow in training
    np.testing.assert_allclose(again(x).numpy(), answer, atol=1e-6)
    saved, compiled = (
        (tmp_path / "model.keras").stat().st_size,
        (tmp_path / "compiled.keras").stat().st_size,
    )
    assert saved < compiled / 2


def test_slow_layers_take_their_share_of_the_learning_rate():
    """Adam's first step moves every weight by the learning rate: slow layers by their share."""
    slow, fast = keras.layers.Dense(3, name="encoder"), keras.layers.Dense(3, name="head")
    for layer in (slow, fast):
        layer.build((None, 4))
    variables = [slow.kernel, fast.kernel]
    before = [v.numpy().copy() for v in variables]
    optimizer = SparseAdam(0.01, slow_layers=("encoder",), slow_scale=0.25)
    optimizer.build(variables)
    grads = [tf.constant(np.random.default_rng(0).normal(size=(4, 3)), tf.float32)] * 2
    optimizer.apply(grads, variables)
    moved = [np.abs(v.numpy() - b) for v, b in zip(variables, before, strict=True)]
    np.testing.assert_allclose(moved[0], 0.0025, rtol=1e-3)
    np.testing.assert_allclose(moved[1], 0.01, rtol=1e-3)
    assert SparseAdam.from_config(optimizer.get_config()).slow_scale == 0.25
