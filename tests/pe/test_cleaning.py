import pytest

from spti.text import clean_caption


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("A red car parked in a garage.", "A red car parked in a garage."),
        ('"a red car parked in a garage"', "A red car parked in a garage."),
        ("Sure! Here is a caption:\nA red car parked in a garage.", "A red car parked in a garage."),
        ("Caption: A red car parked in a garage.", "A red car parked in a garage."),
        ("Sure! A red car parked in a garage.", "A red car parked in a garage."),
        ("Certainly. Here is one: a red car parked in a garage.", "A red car parked in a garage."),
        ("Here's the rephrased caption: a red car parked in a garage", "A red car parked in a garage."),
        ("**A red car parked in a garage.**<|im_end|>", "A red car parked in a garage."),
        ("A red car parked in a garage.\nNote: I changed the colour.", "A red car parked in a garage."),
    ],
)
def test_cleans_wrappers(raw, expected):
    assert clean_caption(raw) == (expected, "ok")


@pytest.mark.parametrize(
    "raw,reason",
    [
        ("", "empty"),
        (None, "empty"),
        ("   \n ", "empty"),
        ("I'm sorry, but I cannot help with that.", "refusal"),
        ("As an AI language model I can't see images.", "refusal"),
        ("A car.", "too_short"),
        ("A red _ parked in a _ garage.", "unfilled_blanks"),
        ("the the the the the the the the the the", "degenerate"),
        ("red car red car red car red car red car red car", "degenerate"),
        ("1234 5678 9012 #### $$$$", "not_text"),
    ],
)
def test_rejects_garbage_with_reason(raw, reason):
    assert clean_caption(raw) == (None, reason)


def test_too_long():
    assert clean_caption(" ".join(["word"] * 10 + ["other"] * 200), max_words=50)[1] in ("too_long", "degenerate")
    assert clean_caption(" ".join(("alpha", "beta", "gamma", "delta", "omega")[i % 5] + "x" * (i % 7) for i in range(200)), max_words=50) == (None, "too_long")
