"""Training records (DESIGN §3): the schema, JSONL reading and atomic writing, and a content fingerprint.

A record is one (problem, solution) pair. Every consumer reads records through `read_records`, so a
malformed file fails here, naming the file and line, and not later as a shape error in a batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator


class DataError(ValueError):
    """Data that cannot be used; the message names the file (and line) and the problem."""


class Record(BaseModel):
    """One (problem, solution) pair; `prompt + completion` is the text a model sees.

    `decisive_spans`: ground truth of which characters of `completion` decide its correctness, as `[start, end)`
    character offsets (sorted, disjoint; `start == end` marks the point where text was deleted). None: not
    annotated (CodeContests, user data, `wmtp label` output); []: annotated, no decisive region. The embedded
    task fills it (`wmtp.data.synthetic.spans`). Records without it are written without the key, so their files
    and fingerprints do not change.
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    problem_id: str
    prompt: str
    completion: str
    is_correct: bool
    source: str
    difficulty: str | None = None
    tests: list[str] | None = None
    entry_point: str | None = None
    decisive_spans: list[tuple[int, int]] | None = None

    @model_validator(mode="after")
    def _spans_within_completion(self) -> Record:
        previous_end = 0
        for start, end in self.decisive_spans or []:
            if not previous_end <= start <= end <= len(self.completion):
                raise ValueError(f"decisive_spans must be sorted, disjoint [start, end) offsets within the "
                                 f"{len(self.completion)}-character completion; got {self.decisive_spans}")
            previous_end = end
        return self


def _row(record: Record) -> dict:
    """The record as a JSON object; `decisive_spans` only when annotated."""
    return record.model_dump(mode="json", exclude={"decisive_spans"} if record.decisive_spans is None else None)


def _canonical(record: Record) -> str:
    return json.dumps(_row(record), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def read_records(path: str | Path) -> list[Record]:
    """Read a JSONL file of records; blank lines are skipped. Raises DataError naming file:line on any problem."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    records = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: invalid JSON: {err.msg} (column {err.colno})") from None
            try:
                records.append(Record.model_validate(row))
            except ValidationError as err:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or '<record>'}: {e['msg']}" for e in err.errors()
                )
                raise DataError(f"{path}:{lineno}: invalid record: {problems}") from None
    return records


def write_records(path: str | Path, records: Iterable[Record]) -> None:
    """Write records as JSONL, atomically: readers see the old file or the complete new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary file lives in the target directory so that os.replace is a same-filesystem rename.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(_row(record), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fingerprint(records: Iterable[Record]) -> str:
    """sha256 (first 16 hex) of the canonical JSON of the records, in order: equal iff the data is equal."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(_canonical(record).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]
