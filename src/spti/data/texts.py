"""Private text input for ``spti evolve``: JSONL, CSV or Parquet with a text column (and optional user id).

Errors name the file and line number, never the content (which is private).

User ids are normalised as image ingestion normalises them (:func:`spti.data.users.clean_user_id`):
" alice" / "alice" and 12 / 12.0 are one user, NaN-like values are missing. The file's content hash
(:attr:`PrivateTexts.fingerprint`) binds a run to its input, so that a resumed run cannot silently switch
to another file (:func:`spti.stages.budget.bind_private_input`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from spti.data.io import check_utf8, iter_jsonl, iter_text_lines
from spti.data.users import clean_user_id
from spti.errors import InputError
from spti.hashing import content_key, sha256_file


@dataclass
class PrivateTexts:
    texts: list[str]
    user_ids: list[str] | None
    fingerprint: str | None = None  # sha256 of the file's bytes and the columns read (private: never released)

    @property
    def num_units(self) -> int:
        return len(set(self.user_ids)) if self.user_ids is not None else len(self.texts)

    def owners(self, unit: str) -> list[str] | None:
        """Who each row belongs to for vote weighting: None (one row = one record) or the user ids."""
        return self.user_ids if unit == "user" else None


def read_texts(path: str | Path, *, text_column: str = "text", user_column: str | None = None) -> PrivateTexts:
    p = Path(path)
    if not p.exists():
        raise InputError(f"private text file not found: {p}")
    if p.is_dir():
        raise InputError(f"{p} is a folder; give a .jsonl, .csv or .parquet file")
    from spti.data.decode import regular_file_reason

    if regular_file_reason(p) is not None:  # a FIFO or device would block the read forever
        raise InputError(f"{p} is not a regular file (a pipe, socket or device); give a .jsonl, .csv or .parquet file")
    suffix = p.suffix.lower()
    rows: list[tuple[int, dict]] = []
    if suffix in (".jsonl", ".json", ".ndjson"):
        lines = [i for i, ln in iter_text_lines(p) if ln.strip()]  # InputError naming a line that is not UTF-8
        rows = list(zip(lines, iter_jsonl(p)))
    elif suffix in (".csv", ".tsv"):
        check_utf8(p)  # names the line that is not UTF-8; csv decodes in chunks and could not
        with open(p, encoding="utf-8-sig", newline="") as f:  # -sig: a byte-order mark is not part of the header
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            try:
                if reader.fieldnames is None:
                    raise InputError(f"{p}: empty file")
                rows = [(i + 2, r) for i, r in enumerate(reader)]
            except csv.Error as e:  # a NUL byte, an oversized field ...: the message quotes no content
                raise InputError(f"{p}: line {reader.line_num}: not readable as CSV ({e})") from None
    elif suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError("reading Parquet needs pyarrow: pip install 'spti[parquet]'") from None
        try:
            table = pq.read_table(p)
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types
            raise InputError(f"{p}: not a readable Parquet file ({type(e).__name__})") from None
        rows = [(i + 1, r) for i, r in enumerate(table.to_pylist())]
    else:
        raise InputError(f"{p}: unsupported extension {suffix!r}; use .jsonl, .csv or .parquet")
    texts: list[str] = []
    users: list[str] | None = [] if user_column else None
    where = "row" if suffix in (".parquet", ".pq") else "line"
    for lineno, r in rows:
        if text_column not in r:
            raise InputError(f"{p}: {where} {lineno}: no {text_column!r} column (columns: {', '.join(sorted(map(str, r)))})")
        t = r[text_column]
        if not isinstance(t, str):
            raise InputError(f"{p}: {where} {lineno}: {text_column!r} must be a string, got {type(t).__name__}")
        if not t.strip():
            raise InputError(f"{p}: {where} {lineno}: empty {text_column!r}")
        texts.append(t.strip())
        if users is not None:
            u = clean_user_id(r.get(user_column))
            if u is None:
                raise InputError(f"{p}: {where} {lineno}: missing user id column {user_column!r}")
            users.append(u)
    if not texts:
        raise InputError(f"{p}: no records: the private data set is empty")
    return PrivateTexts(texts, users, content_key("spti.private-texts/v1", sha256_file(p), text_column, user_column or ""))
