"""A tuning work folder's damaged lines: dropped, reported, kept aside, later records renumbered."""

from __future__ import annotations

import json

from mnet_compile.schedule.workdir import repair_database


def test_damaged_records_are_reported_and_renumbered(tmp_path):
    """A corrupted line in a tuning work folder was dropped without a word: now reported, kept aside, and
    the records of later workloads keep pointing at their own workload."""
    workloads = ['["h0", "mod0"]\n', "{damaged\n", '["h2", "mod2"]\n']
    records = ['[0, ["t0", [1.0], {}, []]]\n', '[1, ["t1", [1.0], {}, []]]\n', '[2, ["t2", [1.0], {}, []]]\n',
               "not json\n", '[0, ["cut short"']
    (tmp_path / "database_workload.json").write_text("".join(workloads))
    (tmp_path / "database_tuning_record.json").write_text("".join(records))
    messages = repair_database(str(tmp_path))
    assert len(messages) == 2
    assert "database_workload.json: dropped 1 damaged line (line 2: not a record)" in messages[0]
    assert "dropped 3 damaged lines (line 2, 4, 5: 1 of them records of a dropped workload)" in messages[1]
    assert (tmp_path / "database_workload.json").read_text() == workloads[0] + workloads[2]
    kept = [json.loads(line) for line in (tmp_path / "database_tuning_record.json").read_text().splitlines()]
    assert kept == [[0, ["t0", [1.0], {}, []]], [1, ["t2", [1.0], {}, []]]]
    assert "{damaged" in (tmp_path / "database_workload.json.damaged").read_text()
    assert repair_database(str(tmp_path)) == []  # repaired: nothing more to say
    (tmp_path / "database_tuning_record.json").write_text('[0, ["t0", [1.0], {}, []]]\n[0, ["cut')
    assert "line 2: a write cut short by an interruption" in repair_database(str(tmp_path))[0]
