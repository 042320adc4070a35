import json

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.tokenizer import CharTokenizer, trim_padding

TEXTS = ["배송 빠르고 좋아요", "별로에요 다시는 안 사요", "좋아요 좋아요", "ABC abc 123", ""]


def legacy():
    """Keras' own legacy Tokenizer and pad_sequences (tf-keras), the reference we must match."""
    tf_keras = pytest.importorskip("tf_keras")
    return tf_keras.preprocessing.text.Tokenizer, tf_keras.preprocessing.sequence.pad_sequences


@pytest.fixture(scope="module")
def review_texts(sample_path):
    from pipeline.cleaning import clean_texts

    lines = sample_path.read_text(encoding="utf-8").splitlines()
    return clean_texts(line.split("\t", 1)[1] for line in lines)


def test_index_order_follows_the_legacy_rule():
    tok = CharTokenizer(oov_token="<OOV>").fit(["bab", "cca", "d"])
    # a: 2, b: 2, c: 2 tie -> first seen b, a, c; d: 1
    assert tok.word_index_ == {"<OOV>": 1, "b": 2, "a": 3, "c": 4, "d": 5}
    assert tok.vocab_size == 6


@pytest.mark.parametrize("num_words", [None, 50, 400])
@pytest.mark.parametrize("padding,truncating", [("pre", "pre"), ("post", "post"), ("pre", "post")])
def test_matches_legacy_tokenizer_on_real_reviews(review_texts, num_words, padding, truncating):
    Tokenizer, pad_sequences = legacy()
    train, unseen = review_texts[:1500], review_texts[1500:] + ["외계어 ☃ 문자"]
    reference = Tokenizer(char_level=True, oov_token="<OOV>", num_words=num_words)
    reference.fit_on_texts(train)
    ours = CharTokenizer(maxlen=40, num_words=num_words, padding=padding, truncating=truncating)
    ours.fit(train)

    assert ours.word_index_ == reference.word_index
    expected = pad_sequences(
        reference.texts_to_sequences(unseen), maxlen=40, padding=padding, truncating=truncating
    )
    np.testing.assert_array_equal(ours.encode(unseen), expected)


def test_lowercases_like_legacy_by_default():
    Tokenizer, _ = legacy()
    reference = Tokenizer(char_level=True, oov_token="<OOV>")
    reference.fit_on_texts(TEXTS)
    assert CharTokenizer().fit(TEXTS).word_index_ == reference.word_index


def test_unseen_characters_become_oov_and_empty_is_all_padding():
    tok = CharTokenizer(maxlen=5).fit(["가나"])
    out = tok.encode(["가다", ""])
    assert out.tolist() == [[0, 0, 0, 2, 1], [0, 0, 0, 0, 0]]
    assert out.dtype == np.int32


def test_truncating_keeps_the_configured_side():
    tok = CharTokenizer(maxlen=3, truncating="pre").fit(["abcdef"])
    assert tok.encode(["abcdef"]).tolist() == [[5, 6, 7]]
    tok.truncating = "post"
    assert tok.encode(["abcdef"]).tolist() == [[2, 3, 4]]


def test_json_round_trip_encodes_identically(tmp_path, review_texts):
    tok = CharTokenizer(maxlen=60, num_words=300, padding="post").fit(review_texts[:1000])
    tok.save(tmp_path / "tok.json")
    again = CharTokenizer.load(tmp_path / "tok.json")
    assert again.get_config() == tok.get_config()
    np.testing.assert_array_equal(again.encode(review_texts), tok.encode(review_texts))


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (lambda c: c.update(format_version=99), "format version 99 is not supported"),
        (lambda c: c.update(format="something-else"), "not a char-tokenizer file"),
        (lambda c: c.update(maxlen="100"), "'maxlen' is missing or not a int"),
        (lambda c: c["word_index"].update({"가": 1}), "number its entries 1, 2, 3"),
        (lambda c: c["word_index"].update({"가나": len(c["word_index"]) + 1}), "single characters"),
        (lambda c: c.pop("padding"), "'padding' is missing"),
    ],
)
def test_load_rejects_invalid_files_with_the_reason(tmp_path, corrupt, message):
    config = CharTokenizer().fit(["가나다"]).get_config()
    corrupt(config)
    path = tmp_path / "tok.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(PipelineError, match=message):
        CharTokenizer.load(path)


def test_load_reports_missing_and_unparsable_files(tmp_path):
    with pytest.raises(PipelineError, match="missing; run `python -m pipeline tokenize`"):
        CharTokenizer.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(PipelineError, match="not a readable tokenizer file"):
        CharTokenizer.load(tmp_path / "bad.json")


def test_trim_padding_keeps_the_text_side():
    batch = np.array([[0, 0, 3, 4], [0, 5, 6, 7]])
    assert trim_padding(batch, 3, "pre").tolist() == [[0, 3, 4], [5, 6, 7]]
    assert trim_padding(np.array([[3, 4, 0, 0]]), 2, "post").tolist() == [[3, 4]]
    assert trim_padding(np.zeros((2, 4), dtype=int), 0, "pre").shape == (2, 1)


def test_jamo_unit_splits_syllables_and_round_trips(tmp_path):
    tok = CharTokenizer(maxlen=8, unit="jamo").fit(["각가", "ㅋㅋ"])
    # 각 = ᄀ + ᅡ + ᆨ, 가 = ᄀ + ᅡ: initials and medials are shared, the final is its own
    assert set(tok.word_index_) == {"<OOV>", "\u1100", "\u1161", "\u11a8", "ㅋ"}
    assert tok.encode(["각"]).tolist() == tok.encode(["\u1100\u1161\u11a8"]).tolist()
    assert int((tok.encode(["각"]) > 0).sum()) == 3
    tok.save(tmp_path / "tok.json")
    again = CharTokenizer.load(tmp_path / "tok.json")
    assert again.unit == "jamo" and again.encode(["가각"]).tolist() == tok.encode(["가각"]).tolist()


def test_jamo_table_shares_jamo_between_syllables():
    tok = CharTokenizer().fit(["각가나 1"])
    table, count = tok.jamo_table()
    row = {ch: table[i].tolist() for ch, i in tok.word_index_.items()}
    assert row["각"][:2] == row["가"][:2] and row["각"][2] > 0 and row["가"][2] == 0
    assert row["나"][1] == row["가"][1] and row["나"][0] != row["가"][0]  # same vowel ㅏ
    assert row["1"][1:] == [0, 0] and row["<OOV>"][1:] == [0, 0]
    assert table.shape == (tok.vocab_size, 3) and count == int(table.max())


def test_bad_sides_and_units_are_refused_when_made():
    with pytest.raises(ValueError, match="^padding and truncating must be 'pre' or 'post'$"):
        CharTokenizer(padding="middle")
    with pytest.raises(ValueError, match="^padding and truncating must be 'pre' or 'post'$"):
        CharTokenizer(truncating="middle")
    with pytest.raises(ValueError, match=r"^unit must be one of \('char', 'jamo'\)$"):
        CharTokenizer(unit="word")


def test_an_unfitted_tokenizer_says_to_fit_or_load():
    message = "^the tokenizer is not fitted; call fit\\(\\) or load a saved one$"
    for use in (lambda t: t.encode(["가"]), lambda t: t.vocab_size, lambda t: t.save("x.json")):
        with pytest.raises(PipelineError, match=message):
            use(CharTokenizer())


def test_num_words_keeps_the_most_frequent_characters_and_caps_the_vocabulary():
    tok = CharTokenizer(maxlen=6, num_words=4).fit(["가가가나나다"])  # 가: 2, 나: 3, 다: 4
    assert tok.vocab_size == 4
    assert tok.encode(["다나가"]).tolist() == [[0, 0, 0, 1, 3, 2]]
    assert CharTokenizer(num_words=100).fit(["가나"]).vocab_size == 4


def test_lower_false_keeps_case_apart():
    tok = CharTokenizer(maxlen=2, lower=False).fit(["aA"])
    assert tok.word_index_ == {"<OOV>": 1, "a": 2, "A": 3}
    assert CharTokenizer(maxlen=2).fit(["aA"]).encode(["Aa"]).tolist() == [[2, 2]]


def test_long_and_short_texts_mixed_are_each_cut_and_padded_on_their_sides():
    tok = CharTokenizer(maxlen=3, padding="post", truncating="pre").fit(["abcdef"])
    out = tok.encode(["abcdef", "a", "", "abcd", "xyz"]).tolist()
    assert out == [[5, 6, 7], [2, 0, 0], [0, 0, 0], [3, 4, 5], [1, 1, 1]]
    tok = CharTokenizer(maxlen=3, padding="pre", truncating="post").fit(["abcdef"])
    assert tok.encode(["abcdef", "a", "abcd"]).tolist() == [[2, 3, 4], [0, 0, 2], [2, 3, 4]]


NUM_WORDS = "tokenizer setting 'num_words' must be an integer or null"
SIDES = "tokenizer padding and truncating must be 'pre' or 'post'"
OOV = "tokenizer word_index must map the OOV token to 1"
NUMBERING = "tokenizer word_index must number its entries 1, 2, 3, ... once each"


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (lambda c: c.update(num_words="5"), NUM_WORDS),
        (lambda c: c.update(num_words=True), NUM_WORDS),
        (lambda c: c.pop("num_words"), NUM_WORDS),
        (lambda c: c.update(lower=1), "tokenizer setting 'lower' is missing or not a bool"),
        (
            lambda c: c.update(oov_token=None),
            "tokenizer setting 'oov_token' is missing or not a str",
        ),
        (
            lambda c: c.update(word_index=[]),
            "tokenizer setting 'word_index' is missing or not a dict",
        ),
        (lambda c: c.update(padding="middle"), SIDES),
        (lambda c: c.update(truncating="x"), SIDES),
        (lambda c: c.update(unit="word"), "tokenizer unit must be one of char, jamo"),
        (lambda c: c.update(word_index={"가": 1}), OOV),
        (lambda c: c["word_index"].update({"<OOV>": 2, "가": 1}), OOV),
        (lambda c: c["word_index"].update({"가": 2.0}), NUMBERING),
        (lambda c: c["word_index"].update({"가": 5}), NUMBERING),
        (
            lambda c: c["word_index"].update({"가나": len(c["word_index"]) + 1}),
            "tokenizer word_index keys must be single characters",
        ),
        (lambda c: c.clear(), "not a char-tokenizer file"),
    ],
    ids=lambda v: None,
)
def test_load_rejects_each_invalid_setting_with_the_reason(tmp_path, corrupt, message):
    config = CharTokenizer().fit(["가나다"]).get_config()
    corrupt(config)
    path = tmp_path / "tok.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(PipelineError) as info:
        CharTokenizer.load(path)
    assert str(info.value) == f"{path}: {message}"


def test_files_without_a_unit_are_char_tokenizers(tmp_path):
    config = CharTokenizer().fit(["가나다"]).get_config()
    del config["unit"]
    (tmp_path / "tok.json").write_text(json.dumps(config), encoding="utf-8")
    assert CharTokenizer.load(tmp_path / "tok.json").unit == "char"


def test_a_file_that_is_not_json_text_is_unreadable(tmp_path):
    (tmp_path / "bytes.json").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "folder.json").mkdir()
    for name in ("bytes.json", "folder.json"):
        with pytest.raises(PipelineError, match=f"{name} is not a readable tokenizer file: "):
            CharTokenizer.load(tmp_path / name)


def test_saved_file_holds_everything_encoding_needs(tmp_path):
    tok = CharTokenizer(maxlen=7, num_words=9, padding="post", truncating="post", unit="jamo")
    tok.fit(["가나다"]).save(tmp_path / "tok.json")
    saved = json.loads((tmp_path / "tok.json").read_text(encoding="utf-8"))
    assert {k: v for k, v in saved.items() if k != "word_index"} == {
        "format": "char-tokenizer",
        "format_version": 1,
        "maxlen": 7,
        "oov_token": "<OOV>",
        "num_words": 9,
        "lower": True,
        "padding": "post",
        "truncating": "post",
        "unit": "jamo",
    }


def test_the_tokenize_stage_reports_its_vocabulary_and_lengths(tmp_path, capsys):
    import pandas as pd

    from pipeline.config import Config
    from pipeline.prepare import write_split
    from pipeline.tokenizer import tokenize

    config = Config(data_dir=tmp_path, artifacts_dir=tmp_path, maxlen=4)
    for name, texts in (("train", ["가나다라마", "가나", "다"]), ("val", ["바"]), ("test", ["가"])):
        frame = pd.DataFrame({"label": [1] * len(texts), "rating": [5] * len(texts), "text": texts})
        write_split(frame, config.split_path(name))
    summary = tokenize(config)
    assert summary == {"vocab_size": 7, "mean_length": 2.3, "share_at_maxlen": 0.3333}
    assert capsys.readouterr().out == "tokenize: 7 indices, mean review length 2.3 characters\n"
    arrays = np.load(config.encoded_path)
    assert arrays["y_train"].dtype == np.int8 and arrays["y_val"].tolist() == [1]
    assert arrays["x_train"].dtype == np.int32 and arrays["x_val"].tolist() == [[0, 0, 0, 1]]
    assert sorted(arrays) == ["x_train", "x_val", "y_train", "y_val"]  # nothing reads test's
    tokenize(config, quiet=True)
    assert capsys.readouterr().out == ""


def test_jamo_table_gives_the_oov_token_and_capped_indices_their_own_rows(tmp_path):
    tok = CharTokenizer(oov_token="<>", num_words=4).fit(["각각각가가나"])  # 각 2, 가 3, 나 cut
    table, count = tok.jamo_table()
    assert table.dtype == np.int32 and table.shape == (4, 3)
    assert table[0].tolist() == [0, 0, 0]  # padding
    assert table[1].tolist() == [1, 0, 0]  # the OOV token, however short, is one jamo
    assert table[2].tolist() == [2, 3, 4] and table[3].tolist() == [2, 3, 0]  # 각 = ㄱ ㅏ ㄱ
    assert count == 4
    # a file with its index in another order numbers the jamo otherwise, but fills every row
    config = tok.get_config()
    config["word_index"] = dict(reversed(config["word_index"].items()))
    (tmp_path / "tok.json").write_text(json.dumps(config), encoding="utf-8")
    again, again_count = CharTokenizer.load(tmp_path / "tok.json").jamo_table()
    assert (again > 0).tolist() == (table > 0).tolist() and again_count == count


def test_lone_surrogates_and_code_points_past_the_index_encode_without_error():
    tok = CharTokenizer(maxlen=4).fit(["가", "\ud800"])
    assert tok.encode(["가\ud800\ud801", "각"]).tolist() == [[0, 2, 3, 1], [0, 0, 0, 1]]
    assert CharTokenizer(maxlen=2).fit([""]).encode(["가"]).tolist() == [[0, 1]]  # all OOV


def test_a_custom_oov_token_and_case_survive_a_round_trip(tmp_path):
    tok = CharTokenizer(maxlen=3, oov_token="[UNK]", lower=False).fit(["aA"])
    tok.save(tmp_path / "tok.json")
    again = CharTokenizer.load(tmp_path / "tok.json")
    assert again.get_config() == tok.get_config()
    assert again.encode(["Aab"]).tolist() == [[3, 2, 1]]


def test_the_tokenize_stage_builds_the_tokenizer_its_settings_describe(tmp_path):
    import pandas as pd

    from pipeline.config import Config
    from pipeline.prepare import write_split
    from pipeline.tokenizer import tokenize

    settings = dict(
        maxlen=5,
        num_words=4,
        oov_token="[UNK]",
        token_unit="jamo",
        padding="post",
        truncating="post",
    )
    config = Config(data_dir=tmp_path, artifacts_dir=tmp_path, **settings)
    for name in ("train", "val", "test"):
        frame = pd.DataFrame({"label": [1, 0], "rating": [5, 1], "text": ["각각가", "나"]})
        write_split(frame, config.split_path(name))
    tokenize(config, quiet=True)
    saved = CharTokenizer.load(config.tokenizer_path).get_config()
    assert {k: saved[k] for k in ("maxlen", "num_words", "oov_token", "padding", "truncating")} == {
        k: settings[k] for k in ("maxlen", "num_words", "oov_token", "padding", "truncating")
    }
    assert saved["unit"] == "jamo" and saved["word_index"]["[UNK]"] == 1
    # jamo by count: ᅡ 2, ᄀ 3, then ᆨ and ᄂ fall past num_words (OOV); cut and padded after
    assert np.load(config.encoded_path)["x_val"].tolist() == [[3, 2, 1, 3, 2], [1, 2, 0, 0, 0]]


@pytest.mark.parametrize("unit", ["char", "jamo"])
@pytest.mark.parametrize("truncating", ["pre", "post"])
def test_kept_span_is_the_least_of_the_text_that_encodes_as_the_whole(unit, truncating):
    """Occlusion explains what the model read: exactly the characters encode keeps, any part of."""
    texts = ["배송 빠르고 좋아요 123", "별로에요 다시는 안 사요", "가", "ㅋㅋㅋ 좋아요"]
    for maxlen in (1, 2, 4, 7, 40):
        tok = CharTokenizer(maxlen=maxlen, truncating=truncating, unit=unit).fit(texts)
        for text in texts:
            start, end = tok.kept_span(text)
            assert 0 <= start <= end <= len(text)
            whole = tok.encode([text]).tolist()
            assert tok.encode([text[start:end]]).tolist() == whole, (text, maxlen)
            if truncating == "pre":
                assert end == len(text) and tok.encode([text[start + 1 : end]]).tolist() != whole
            else:
                assert start == 0 and tok.encode([text[start : end - 1]]).tolist() != whole
