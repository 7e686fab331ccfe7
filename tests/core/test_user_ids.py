"""User ids are normalised the same way for private texts (``spti evolve``) and image listings: a person
written " alice" here and "alice" there, or 12 here and 12.0 there, is one user (issue 9, point 11)."""

from __future__ import annotations

import decimal
import json

import numpy as np
import pytest

from spti.data.texts import read_texts
from spti.data.users import clean_user_id
from spti.errors import InputError


@pytest.mark.parametrize(
    "value, want",
    [(" alice", "alice"), ("alice ", "alice"), (12, "12"), (12.0, "12"), (np.int64(12), "12"),
     (np.float64(12.0), "12"), (" 12 ", "12"), (1.5, "1.5"), (True, "True"), (None, None), ("", None),
     ("  ", None), (float("nan"), None), (np.float32("nan"), None), ("nan", None), ("NaN", None), ("<NA>", None),
     (decimal.Decimal("NaN"), None)],
)
def test_clean_user_id(value, want):
    assert clean_user_id(value) == want


def test_listing_and_texts_share_one_normalisation():
    from spti.data import listing

    assert listing.clean_user_id is clean_user_id


def test_jsonl_user_ids_are_normalised(tmp_path):
    p = tmp_path / "t.jsonl"
    rows = [{"text": "a", "u": " alice"}, {"text": "b", "u": "alice"}, {"text": "c", "u": 12},
            {"text": "d", "u": 12.0}, {"text": "e", "u": "bob"}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t = read_texts(p, user_column="u")
    assert t.user_ids == ["alice", "alice", "12", "12", "bob"] and t.num_units == 3


def test_nan_user_ids_are_missing(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"text": "a", "u": "x"}\n{"text": "secret words", "u": NaN}\n')
    with pytest.raises(InputError, match="line 2: missing user id") as e:
        read_texts(p, user_column="u")
    assert "secret" not in str(e.value)
    c = tmp_path / "t.csv"
    c.write_text("text,u\na,x\nb,nan\n")
    with pytest.raises(InputError, match="line 3: missing user id"):
        read_texts(c, user_column="u")


def test_parquet_float_user_ids(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c"], "u": [12.0, 12.0, 7.0]}), p)
    t = read_texts(p, user_column="u")
    assert t.user_ids == ["12", "12", "7"] and t.num_units == 2


def test_fingerprint_follows_the_content(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"text": "a"}\n')
    a = read_texts(p).fingerprint
    assert a == read_texts(p).fingerprint and len(a) == 64
    assert read_texts(p, text_column="text", user_column=None).fingerprint == a
    p.write_text('{"text": "b"}\n')
    assert read_texts(p).fingerprint != a
