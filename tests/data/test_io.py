"""spti.data.io: JSON Lines reading, strict (ingestion, listings) and lenient (the report)."""

from __future__ import annotations

import pytest

from spti.data.io import iter_jsonl, read_jsonl
from spti.errors import InputError


def test_iter_jsonl_strict_and_lenient(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_text('{"a": 1}\n\nnot json\n[1, 2]\n{"b": 2}\n', encoding="utf-8")
    with pytest.raises(InputError, match="line 3: not valid JSON") as e:
        read_jsonl(p)
    assert "not json" not in str(e.value)  # the line's content may be private
    bad: list[tuple[int, str]] = []
    rows = list(iter_jsonl(p, on_bad_line=lambda n, what: bad.append((n, what))))
    assert rows == [{"a": 1}, {"b": 2}]
    assert bad == [(3, "is not valid JSON"), (4, "is not a JSON object")]
