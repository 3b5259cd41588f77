"""CodeContests (Li et al., 2022) as training records: correct and incorrect human solutions per problem.

Source: the hub dataset (`deepmind/code_contests`; needs `datasets`, the `hf` extra) or a local copy: a
`.parquet` / `.arrow` file, or a directory of them (the hub layout `data/<split>-*.parquet`, or the
`save_to_disk` layout `<split>/data-*.arrow`). A row is one problem: `name`, `description`, `source`,
`difficulty` (class-label ids), `solutions` / `incorrect_solutions` (`{"language": [id], "solution": [text]}`).
Only the columns needed are read, so the (large) test columns are never loaded.

Each kept solution becomes one record (DESIGN §3): prompt = the statement and an instruction ending in an open
code fence (for Python 3 exactly the `wmtp eval --bench codecontests` prompt), completion = the solution and
the closing fence. Per problem, solutions are deduplicated after whitespace normalisation; a text that is
both correct and incorrect is dropped. Problems go to train / valid / test by a seeded hash of their name
(never by solution), then a fixed-seed uniform subsample keeps at most `max_records` (bottom-k of a seeded
hash: the same records whatever the row order, in O(max_records) memory).
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from wmtp.config import _Strict
from wmtp.data.records import DataError, Record, write_records

# Class labels of the hub dataset, in id order (difficulty: the dataset's names; 0, unknown, is None).
LANGUAGES = ("unknown", "python2", "cpp", "python3", "java")
SOURCES = ("unknown", "codechef", "codeforces", "hackerearth", "codejam", "atcoder", "aizu")
DIFFICULTIES = (None, "EASY", "MEDIUM", "HARD", "HARDER", "HARDEST", "EXTERNAL",
                *"ABCDEFGHIJKLMNOPQRSTUV")
COLUMNS = ("name", "description", "source", "difficulty", "solutions", "incorrect_solutions")
PROMPT_LANGUAGE = {"python3": ("Python 3", "python"), "python2": ("Python 2", "python"), "cpp": ("C++", "cpp"),
                   "java": ("Java", "java")}
SPLITS = ("train", "valid", "test")


class CodeContestsConfig(_Strict):
    """What `wmtp data codecontests` reads and keeps."""

    source: str = Field("deepmind/code_contests", description="Hub dataset name, or a local parquet/arrow file or "
                        "directory.")
    split: str = Field("train", description="Split of the source that is read (then split again by problem).")
    languages: list[Literal["python2", "cpp", "python3", "java"]] = Field(
        default_factory=lambda: ["python3"], description="Solution languages kept.")
    max_records: int | None = Field(100_000, ge=1, description="Uniform fixed-seed subsample size; None keeps all.")
    max_per_problem: int | None = Field(
        None, ge=1, description="At most this many correct and this many incorrect solutions per problem.")
    valid_fraction: float = Field(0.05, ge=0, lt=0.5, description="Fraction of problems in the valid split.")
    test_fraction: float = Field(0.0, ge=0, lt=0.5, description="Fraction of problems in the test split.")
    seed: int = Field(0, description="Seeds the problem split and the subsample.")


def _unit(seed: int, text: str) -> float:
    """A seeded hash of `text` as a float in [0, 1)."""
    digest = hashlib.sha256(f"{seed}\0{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def normalize_code(text: str) -> str:
    """CRLF → LF, trailing whitespace of every line and leading/trailing blank lines dropped."""
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip("\n")


def prompt(description: str, language: str) -> str:
    """The statement, the instruction, an open fence (Python 3: the evaluation prompt, character for character)."""
    name, fence = PROMPT_LANGUAGE[language]
    return (f"{description.strip()}\n\nWrite a {name} program that solves the problem above. It reads the input "
            f"from standard input and writes the answer to standard output.\n\n```{fence}\n")


def split_of(problem: str, cfg: CodeContestsConfig) -> str:
    u = _unit(cfg.seed, f"split:{problem}")
    return "test" if u < cfg.test_fraction else "valid" if u < cfg.test_fraction + cfg.valid_fraction else "train"


def _label(values: tuple[str | None, ...], index: Any, field: str) -> str | None:
    """The name of a class-label id (the hub stores ids, not names)."""
    if not isinstance(index, int) or not 0 <= index < len(values):
        raise DataError(f"codecontests: {field} id {index!r} is not one of 0..{len(values) - 1}")
    return values[index]


def problem_records(row: Mapping[str, Any], cfg: CodeContestsConfig, counts: Counter) -> list[Record]:
    """The records of one problem row (deduplicated, capped per label); `counts` collects what was dropped."""
    try:
        name, description = str(row["name"]), row["description"]
        source = _label(SOURCES, row.get("source") or 0, "source")
        difficulty = _label(DIFFICULTIES, row.get("difficulty") or 0, "difficulty")
        groups = {True: row["solutions"] or {}, False: row["incorrect_solutions"] or {}}
        candidates: dict[tuple[str, str], list[tuple[bool, int]]] = {}  # (language, code) → [(correct, index)]
        for correct, group in groups.items():
            langs, codes = group.get("language") or [], group.get("solution") or []
            if len(langs) != len(codes):
                raise ValueError(f"{len(langs)} languages but {len(codes)} solutions")
            for index, (lang, code) in enumerate(zip(langs, codes)):
                language = _label(LANGUAGES, lang, "language")
                if language not in cfg.languages:
                    counts["other_language"] += 1
                    continue
                counts["candidates"] += 1
                candidates.setdefault((language, normalize_code(code)), []).append((correct, index))
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"codecontests: bad row {row.get('name', '?')!r}: {err!r}") from None
    kept: dict[bool, list[tuple[float, Record]]] = {True: [], False: []}
    for (language, code), where in candidates.items():
        counts["duplicates"] += len(where) - 1
        if len({correct for correct, _ in where}) > 1:
            counts["conflicting"] += 1
            continue
        correct, index = where[0]
        record_id = f"codecontests/{name}/{language}/{'c' if correct else 'i'}{index}"
        kept[correct].append((_unit(cfg.seed, f"per-problem:{record_id}"), Record(
            id=record_id, problem_id=name, prompt=prompt(description, language), completion=f"{code}\n```",
            is_correct=correct, source=f"codecontests/{source}", difficulty=difficulty,
        )))
    out = []
    for items in kept.values():
        items.sort(key=lambda item: item[0])
        if cfg.max_per_problem is not None:
            counts["over_per_problem_cap"] += max(0, len(items) - cfg.max_per_problem)
            items = items[: cfg.max_per_problem]
        out.extend(record for _, record in items)
    return out


# --- reading rows ------------------------------------------------------------------------------------------


def iter_rows(source: str, split: str) -> Iterator[dict[str, Any]]:
    """Problem rows (only COLUMNS) from a local parquet/arrow file or directory, or from the hub."""
    path = Path(source)
    if path.exists():
        yield from _local_rows(path, split)
    else:
        yield from _hub_rows(source, split)


def _data_files(path: Path, split: str) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix in (".parquet", ".arrow") and p.is_file())
    def is_of(p: Path, name: str) -> bool:
        return p.name.startswith(f"{name}-") or p.parent.name == name

    of_split = [p for p in files if is_of(p, split)]
    if of_split:
        return of_split
    if files and not any(is_of(p, name) for p in files for name in SPLITS):
        return files  # a directory holding one split
    raise DataError(f"codecontests: no .parquet/.arrow file of split {split!r} under {path}")


def _local_rows(path: Path, split: str) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for file in _data_files(path, split):
        try:
            if file.suffix == ".parquet":
                reader = pq.ParquetFile(file)
                missing = [c for c in COLUMNS if c not in reader.schema_arrow.names]
                if missing:
                    raise DataError(f"codecontests: {file} lacks columns {missing}")
                batches = reader.iter_batches(batch_size=64, columns=list(COLUMNS))
            else:
                batches = _arrow_batches(file)
            for batch in batches:
                missing = [c for c in COLUMNS if c not in batch.schema.names]
                if missing:
                    raise DataError(f"codecontests: {file} lacks columns {missing}")
                yield from batch.select(list(COLUMNS)).to_pylist()
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"codecontests: {file} is not readable: {err}") from None


def _arrow_batches(file: Path) -> Iterator[Any]:
    """Record batches of an Arrow IPC file in the stream format (datasets' files) or the file format."""
    import pyarrow as pa

    with pa.memory_map(str(file)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_file(source)
            yield from (reader.get_batch(i) for i in range(reader.num_record_batches))
            return
        yield from reader


def _hub_rows(name: str, split: str) -> Iterator[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"{name!r} is not a local path; reading it from the hub needs `datasets` "
                        "(`pip install -e '.[hf]'`)") from None
    try:
        loaded = datasets.load_dataset(name, split=split).select_columns(list(COLUMNS))
    except Exception as err:  # the hub raises many types (connection, missing split, missing column)
        raise DataError(f"could not load dataset {name!r} (split {split!r}): {err}") from err
    yield from loaded


# --- the whole preparation ---------------------------------------------------------------------------------


def prepare_codecontests(cfg: CodeContestsConfig, out_dir: str | Path) -> dict[str, Any]:
    """Write `out_dir/{train,valid,test}.jsonl` (test only when test_fraction > 0) and return the report
    (also written to `out_dir/prepare.json`): counts read, dropped, kept, and per split records, problems and
    the correct ratio."""
    counts: Counter = Counter()
    heap: list[tuple[float, int, Record]] = []  # max-heap (negated keys) of the max_records smallest keys
    problems = 0
    for row in iter_rows(cfg.source, cfg.split):
        problems += 1
        for record in problem_records(row, cfg, counts):
            item = (-_unit(cfg.seed, f"sample:{record.id}"), counts["pushed"], record)
            counts["pushed"] += 1
            if cfg.max_records is None or len(heap) < cfg.max_records:
                heapq.heappush(heap, item)
            elif item[0] > heap[0][0]:
                heapq.heapreplace(heap, item)
    if problems == 0:
        raise DataError(f"codecontests: no rows in {cfg.source} (split {cfg.split!r})")
    splits: dict[str, list[Record]] = {name: [] for name in SPLITS}
    for _, _, record in heap:
        splits[split_of(record.problem_id, cfg)].append(record)
    if not splits["train"] or (cfg.valid_fraction > 0 and not splits["valid"]):
        raise DataError(f"codecontests: {len(heap)} records from {problems} problems leave an empty train or valid "
                        "split; use more data, other languages or another valid_fraction")
    out_dir = Path(out_dir)
    report: dict[str, Any] = {
        "config": cfg.model_dump(mode="json"),
        "problems_read": problems,
        "solutions_in_languages": counts["candidates"],
        "solutions_in_other_languages": counts["other_language"],
        "duplicates_dropped": counts["duplicates"],
        "conflicting_dropped": counts["conflicting"],
        "over_per_problem_cap": counts["over_per_problem_cap"],
        "records_before_subsample": counts["pushed"],
        "records": len(heap),
        "splits": {},
    }
    for name, records in splits.items():
        if name == "test" and cfg.test_fraction == 0:
            continue
        records.sort(key=lambda r: (r.problem_id, r.id))
        write_records(out_dir / f"{name}.jsonl", records)
        report["splits"][name] = {
            "records": len(records),
            "problems": len({r.problem_id for r in records}),
            "correct_ratio": sum(r.is_correct for r in records) / len(records) if records else None,
        }
    (out_dir / "prepare.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
