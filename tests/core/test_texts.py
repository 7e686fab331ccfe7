import json

import pytest

from spti.data.texts import read_texts
from spti.errors import InputError


def test_jsonl_csv_parquet(tmp_path):
    rows = [{"text": "a red car", "user_id": "u1"}, {"text": "a blue dog", "user_id": "u2"}, {"text": "a cat", "user_id": "u1"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "a.csv").write_text("text,user_id\n" + "\n".join(f"{r['text']},{r['user_id']}" for r in rows))
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    for name in ("a.jsonl", "a.csv", "a.parquet"):
        t = read_texts(tmp_path / name, user_column="user_id")
        assert t.texts == ["a red car", "a blue dog", "a cat"]
        assert t.user_ids == ["u1", "u2", "u1"] and t.num_units == 2
        assert t.owners("user") == ["u1", "u2", "u1"] and t.owners("record") is None


def test_malformed_input_names_the_line_but_not_the_content(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "fine"}\n{"text": "secret diagnosis" \n')
    with pytest.raises(InputError) as e:
        read_texts(p)
    assert "line 2" in str(e.value) and "secret" not in str(e.value)
    p.write_text('{"text": "fine"}\n{"caption": "secret"}\n')
    with pytest.raises(InputError, match="line 2: no 'text' column"):
        read_texts(p)
    p.write_text('{"text": 5}\n')
    with pytest.raises(InputError, match="must be a string"):
        read_texts(p)


def test_empty_and_missing(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(InputError, match="empty"):
        read_texts(tmp_path / "e.jsonl")
    with pytest.raises(InputError, match="not found"):
        read_texts(tmp_path / "nope.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="unsupported"):
        read_texts(tmp_path / "x.txt")
    (tmp_path / "u.jsonl").write_text('{"text": "a"}\n')
    with pytest.raises(InputError, match="user id"):
        read_texts(tmp_path / "u.jsonl", user_column="user_id")
