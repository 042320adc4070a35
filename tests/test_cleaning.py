import pytest

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


# -- the exact character class: [ㄱ-ㅎㅏ-ㅣ가-힣0-9] and whitespace, nothing else ----------------
# ㄱ-ㅎ (U+3131-U+314E) and ㅏ-ㅣ (U+314F-U+3163) meet: together one block of 51 jamo.
KEPT_RANGES = ((0x3131, 0x3163), (0xAC00, 0xD7A3), (ord("0"), ord("9")))


def kept(code: int) -> bool:
    return any(low <= code <= high for low, high in KEPT_RANGES)


def test_every_code_point_is_kept_exactly_when_it_is_compatibility_jamo_a_syllable_or_0_to_9():
    """All 1,114,112 code points at once: the class is exactly the notebook's, edge to edge."""
    others = "".join(chr(c) for c in range(0x110000) if not chr(c).isspace())
    assert clean_text(others) == "".join(ch for ch in others if kept(ord(ch)))


def test_every_whitespace_character_separates_words_as_one_space():
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    assert len(spaces) == 29  # \t..\r, \x1c..\x1f, space, NEL, NBSP, U+2000..U+200A, U+3000, ...
    for space in spaces:
        assert clean_text(f"좋아{space}요{space * 3}") == "좋아 요", hex(ord(space))


@pytest.mark.parametrize(
    "char",
    ["ㄱ", "ㅎ", "ㅏ", "ㅣ", "가", "힣", "0", "9", "ㅋ", "ㅠ", "뷁"],
    ids=lambda c: f"U+{ord(c):04X}",
)
def test_range_ends_and_common_jamo_are_kept(char):
    assert clean_text(f"a{char}b") == char


def neighbour(char: str, what: str):
    return pytest.param(char, what, id=f"U+{ord(char):04X}")  # ASCII ids: mutmut reruns by id


@pytest.mark.parametrize(
    "char,what",
    [
        neighbour("\u3130", "unassigned, just before ㄱ"),
        neighbour("\u3164", "Hangul filler, just after ㅣ"),
        neighbour("\u3165", "old jamo ㅥ, after ㅣ"),
        neighbour("\u318d", "ㆍ arae-a, compatibility jamo outside the class"),
        neighbour("\uabff", "unassigned, just before 가"),
        neighbour("\ud7a4", "unassigned, just after 힣"),
        neighbour("\ud7b0", "Hangul Jamo Extended-B"),
        neighbour("\u1100", "Hangul Jamo block: choseong ㄱ"),
        neighbour("\u1161", "Hangul Jamo block: jungseong ㅏ"),
        neighbour("\u11a8", "Hangul Jamo block: jongseong ㄱ"),
        neighbour("\ua960", "Hangul Jamo Extended-A"),
        neighbour("\uffa1", "halfwidth ㄱ"),
        neighbour("\u3200", "parenthesized ㄱ"),
        neighbour("/", "just before 0"),
        neighbour(":", "just after 9"),
        neighbour("\uff10", "fullwidth 0"),
        neighbour("\uff19", "fullwidth 9"),
        neighbour("\u0663", "Arabic-Indic 3"),
        neighbour("²", "superscript 2"),
        neighbour("A", "Latin capital"),
        neighbour("z", "Latin small"),
        neighbour("é", "Latin with accent"),
        neighbour("漢", "Han"),
        neighbour("か", "Hiragana"),
        neighbour("😀", "emoji"),
        neighbour("\u200b", "zero-width space, not whitespace"),
        neighbour("!", "punctuation"),
        neighbour("\ud800", "lone surrogate"),
    ],
)
def test_neighbours_and_look_alikes_are_dropped(char, what):
    assert clean_text(f"가{char}나") == "가나", what


def test_decomposed_hangul_is_dropped_not_recomposed():
    """NFD Hangul (U+1100 jamo, as macOS may send) is outside the class: pinned as it is."""
    assert clean_text("\u1100\u1161 좋아") == "좋아"
