from pipeline.cleaning import clean_text, clean_texts


def test_keeps_hangul_jamo_digits_and_single_spaces():
    assert (
        clean_text("배송 빠르고 좋아요!! ㅋㅋㅋ ㅠㅠ 10점") == "배송 빠르고 좋아요 ㅋㅋㅋ ㅠㅠ 10점"
    )


def test_drops_latin_punctuation_and_emoji_without_splitting_words():
    assert clean_text("good😀좋아요...굿") == "좋아요굿"


def test_whitespace_of_any_kind_becomes_one_space_and_ends_are_stripped():
    assert clean_text("  좋아\t\t요\n최고\u3000 ") == "좋아 요 최고"


def test_text_with_nothing_to_keep_is_empty():
    assert clean_text("Great!!! 👍👍") == ""
    assert clean_texts(["", "   ", "A"]) == ["", "", ""]
