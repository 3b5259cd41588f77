import json

import pytest

from wmtp.data.records import DataError, Record, fingerprint, read_records, write_records


def _record(i: int, correct: bool = True) -> Record:
    return Record(
        id=f"p{i}/c0", problem_id=f"p{i}", prompt=f"def f{i}():\n", completion="    return 1\n",
        is_correct=correct, source="test", tests=["assert f() == 1"], entry_point=f"f{i}",
    )


def test_write_read_round_trip(tmp_path):
    records = [_record(0), _record(1, correct=False), Record(
        id="u/c0", problem_id="u", prompt="# ünïcode ✓\n", completion="\tx = '\\n'\n", is_correct=True, source="s",
    )]
    path = tmp_path / "sub" / "train.jsonl"
    write_records(path, records)
    assert read_records(path) == records
    assert [p.name for p in path.parent.iterdir()] == ["train.jsonl"]  # no temporary file left behind


def test_write_replaces_existing_file(tmp_path):
    path = tmp_path / "x.jsonl"
    write_records(path, [_record(0), _record(1)])
    write_records(path, [_record(2)])
    assert read_records(path) == [_record(2)]


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "x.jsonl"
    line = _record(0).model_dump_json()
    path.write_text(f"{line}\n\n{line}\n")
    assert len(read_records(path)) == 2


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl"):
        read_records(tmp_path / "nope.jsonl")


def test_bad_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(_record(0).model_dump_json() + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid JSON"):
        read_records(path)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda row: row.pop("completion"), "completion: Field required"),
        (lambda row: row.update(is_correct="maybe"), "is_correct"),
        (lambda row: row.update(colour="red"), "colour: Extra inputs are not permitted"),
    ],
)
def test_schema_error_names_file_line_and_field(tmp_path, change, problem):
    row = _record(0).model_dump()
    change(row)
    path = tmp_path / "bad.jsonl"
    path.write_text(_record(1).model_dump_json() + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid record") as info:
        read_records(path)
    assert problem in str(info.value)


def test_fingerprint_depends_on_content_and_order():
    a, b = _record(0), _record(1)
    assert fingerprint([a, b]) == fingerprint([_record(0), _record(1)])
    assert len(fingerprint([a, b])) == 16
    assert fingerprint([a, b]) != fingerprint([b, a])
    assert fingerprint([a, b]) != fingerprint([a, _record(1, correct=False)])
    assert fingerprint([a, b]) != fingerprint([a])


def test_fingerprint_survives_a_file_round_trip(tmp_path):
    records = [_record(0), _record(1, correct=False)]
    write_records(tmp_path / "x.jsonl", records)
    assert fingerprint(read_records(tmp_path / "x.jsonl")) == fingerprint(records)
