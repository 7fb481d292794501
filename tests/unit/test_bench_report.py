"""The benchmark report: its table, and bench/README.md carrying the latest one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.__main__ import END, START, table, update_readme

ROOT = Path(__file__).resolve().parents[2]
REPORT = {"date": "2026-12-01 22:00 UTC", "quick": False, "seconds": 291.0,
          "machine": {"cpus": 2, "cpu": "AMD EPYC", "memory": "23.5 GiB", "python": "3.11.7"},
          "rows": [{"measure": "relay", "unit": "events/s", "ours": 5134.2,
                    "anchors": {"bare kafka-python producer": 6417.0},
                    "targets": [{"what": "≥ 70% of bare producer", "met": True}], "extra": {"events": 50000}},
                   {"measure": "ranking read", "unit": "ms p99", "ours": 6.2, "anchors": {},
                    "targets": [{"what": "p99 < 20 ms", "met": False}]}]}


def test_the_table_shows_each_figure_beside_its_anchor_and_the_targets():
    text = table(REPORT)
    assert "Measured 2026-12-01 22:00 UTC on 2 CPUs (AMD EPYC)" in text
    assert "| relay | 5,134 events/s | bare kafka-python producer: 6,417 events/s (ours = 80%) | events: 50000 | ✅ ≥ 70%" in text
    assert "| ranking read | 6.20 ms p99 | — | — | ❌ p99 < 20 ms |" in text
    assert "reference loop" not in text  # a report from before it was taken
    timed = table({**REPORT, "machine": {**REPORT["machine"], "reference_seconds": [0.71, 0.93]}})
    assert "a reference loop (5,000,000 additions in Python, best of 3) took 0.71 s at the start and 0.93 s" in timed


def test_the_readme_table_is_replaced_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{START}\nold table\n{END}\n\nafter\n")
    update_readme(readme, table(REPORT))
    text = readme.read_text()
    assert "old table" not in text and text.endswith(f"{END}\n\nafter\n") and "| relay | 5,134" in text
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit):
        update_readme(readme, "table")


def test_the_bench_page_carries_a_full_run_of_every_part():
    text = (ROOT / "bench" / "README.md").read_text()
    carried = text.split(START, 1)[1].split(END, 1)[0]
    assert re.search(r"Measured \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC on \d+ CPUs .* full run", carried)
    for part in ("append, SQLite", "replay 1,000,000", "ranking read", "relay:", "consumer:", "HTTP write",
                 "HTTP read", "HTTP composed", "web client:", "propagation", "live streams:"):
        assert part in carried, part


def test_a_write_is_judged_by_the_median_of_its_rounds_each_against_the_anchor_measured_just_before():
    """A write's row from its paired rounds (``bench.http.PAIRS``): its figure and the anchor's are
    the medians of the rounds' rates, and each target the median of the rounds' own ratios — a
    round in which the machine was slow for both sides does not count against ours."""
    from bench.http import WRITE_ANCHOR, _paired_into

    row = {"ours": 500.0, "anchors": {WRITE_ANCHOR: 900.0, "hello": 3000.0}, "extra": {},
           "targets": [{"what": "≥ 1.0× the eventsourcing write anchor", "met": False},
                       {"what": "p99 < 50 ms", "met": True}]}
    rounds = [{"anchor": 1000.0, "ours": 1020.0, "paused": 1100.0},  # ratios 1.02, 1.10
              {"anchor": 600.0, "ours": 630.0, "paused": 570.0},  # the machine slow for both: 1.05, 0.95
              {"anchor": 1100.0, "ours": 1000.0, "paused": 1150.0}]  # 0.91, 1.05
    _paired_into(row, rounds, 1.0)
    assert row["ours"] == 1000.0 and row["anchors"][WRITE_ANCHOR] == 1000.0 and row["anchors"]["hello"] == 3000.0
    assert row["targets"][0] == {"what": "≥ 1.0× the eventsourcing write anchor (1.02×)", "met": True}
    assert row["targets"][1] == {"what": "p99 < 50 ms", "met": True}
    assert row["targets"][2] == {"what": "pipeline paused (the anchor's work alone): ≥ 1.0× the write anchor "
                                         "(1.05×)", "met": True}
    assert row["extra"]["first peak (sets the half rate): req/s"] == 500
    assert row["extra"]["rounds (anchor, ours, ours with the pipeline paused: req/s)"] == (
        "1,000, 1,020, 1,100; 600, 630, 570; 1,100, 1,000, 1,150")
    slower = dict(row, targets=[{"what": "≥ 1.0×", "met": True}], extra={}, ours=0.0)
    _paired_into(slower, [{**r, "ours": r["ours"] * 0.9} for r in rounds], 1.0)
    assert slower["targets"][0]["met"] is False and slower["targets"][0]["what"].endswith("(0.92×)")
    assert not any(key.startswith("CPU ms per write") for key in row["extra"])  # (rounds without CPU times)
    timed = dict(row, targets=[{"what": "≥ 1.0×", "met": True}], extra={}, ours=0.0)
    cpu = [((1.6, 0.30), (1.7, 0.25)), ((2.0, 0.32), (1.9, 0.28)), ((1.5, 0.28), (1.8, 0.27))]
    _paired_into(timed, [{**r, "anchor_cpu": a, "paused_cpu": p} for r, (a, p) in zip(rounds, cpu)], 1.0)
    assert timed["extra"]["CPU ms per write in the rounds, user/system (median): the anchor's workers, ours paused"] \
        == "1.60/0.30; 1.80/0.27"


def test_cpu_per_request_is_told_apart_in_user_and_system_time_for_the_workers():
    from bench.http import cpu_per_request, cpu_text

    before = {1: (10.0, 1.0), 2: (5.0, 0.5)}
    after = {1: (10.6, 1.1), 2: (5.4, 0.6), 3: (99.0, 9.0)}  # (3: not one of the group's)
    user, system = cpu_per_request(before, after, 500)
    assert round(user, 6) == 2.0 and round(system, 6) == 0.4
    assert cpu_per_request({1: (1.0, 1.0)}, {1: (1.0, 1.0)}, 0) == (0.0, 0.0)  # nothing answered: no division by 0
    assert cpu_text({"workers": (2.05, 0.32), "pipeline": (0.7, 0.18), "broker": (0.4, 0.12)}) == (
        "workers 2.37 (user 2.05, system 0.32), pipeline 0.88, broker 0.52")


def test_a_read_is_judged_by_the_median_of_its_rounds_against_hello_world_measured_just_before():
    """A read's rounds have two legs (its anchor, ours): the target is a share of the anchor, the
    median of the rounds' shares; no paused target. One hello-world run at the start of the part,
    on a slow minute, had made a read look faster than it is (87% in a quick run, 57–62% otherwise)."""
    from bench.http import HELLO, _paired_into

    row = {"ours": 1973.0, "anchors": {HELLO: 2273.0}, "extra": {},
           "targets": [{"what": "≥ 60% of hello-world", "met": True}, {"what": "p99 < 50 ms", "met": True}]}
    rounds = [{"anchor": 3600.0, "ours": 2100.0},  # 58%
              {"anchor": 3500.0, "ours": 2150.0},  # 61%
              {"anchor": 3700.0, "ours": 2000.0}]  # 54%
    _paired_into(row, rounds, 0.60)
    assert row["ours"] == 2100.0 and row["anchors"][HELLO] == 3600.0
    assert row["targets"] == [{"what": "≥ 60% of hello-world (58%)", "met": False}, {"what": "p99 < 50 ms", "met": True}]
    assert row["extra"]["rounds (anchor, ours: req/s)"] == "3,600, 2,100; 3,500, 2,150; 3,700, 2,000"
    assert row["extra"]["first peak (sets the half rate): req/s"] == 1973


def test_instructions_are_read_from_a_callgrind_dumps_summary_and_judged_against_the_anchor():
    from bench.instructions import ratios, summary_instructions

    dump = ("# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\npid: 9412\ncmd: gunicorn\npart: 1\n"
            "events: Ir\nsummary: 483735775\n\nob=(1) libpython3.11.so\nfn=(1) _PyEval_EvalFrameDefault\n"
            "0 12\ntotals: 494460585\n")
    assert summary_instructions(dump) == 483_735_775  # the summary, not the totals line
    with pytest.raises(ValueError, match="not a callgrind dump"):
        summary_instructions("events: Ir\ntotals: 5\n")
    assert ratios({"anchor": 4_000_000, "ballot": 3_000_000, "rating": 5_000_000}) == \
        {"anchor": 1.0, "ballot": 0.75, "rating": 1.25}


def test_simulated_misses_are_read_by_the_names_of_the_dumps_events_line_and_put_beside_the_anchors():
    from bench.instructions import simulation_table, summary_counts, summary_instructions

    dump = ("# callgrind format\nversion: 1\ncmd: gunicorn\npart: 1\n"
            "events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim\n"
            "summary: 4000 900 500 100 40 10 8 9 2 700 50 60 30\n\nfn=(1) main\n0 12\n")
    counts = summary_counts(dump)
    assert counts["Ir"] == 4000 and counts["D1mr"] == 40 and counts["Bim"] == 30 and len(counts) == 13
    assert summary_instructions(dump) == 4000
    table = simulation_table({"anchor": counts, "ballot": {**counts, "Ir": 3000.0, "DLmr": 18.0}})
    lines = table.splitlines()
    assert lines[0].split() == ["per", "request", "anchor", "ballot", "ballot/anchor"]
    assert [line.split()[0] for line in lines[1:]] == ["Ir", "I1mr", "ILmr", "D1mr", "D1mw", "DLmr", "DLmw", "Bcm", "Bim"]
    assert lines[1].split() == ["Ir", "4,000", "3,000", "0.75×"] and lines[6].split() == ["DLmr", "9", "18", "2.00×"]


def test_pipeline_samples_count_for_the_innermost_frame_that_is_not_the_standard_library():
    """``python -m bench.profile_pipeline``: a thread's wait counts for the code that waits (here
    kafka-python's poll), a sample of our code for ours, one of the standard library alone as such."""
    from bench.profile_pipeline import classify

    raw = "\n".join([
        "main (services/kernel/worker.py:10);run (services/kernel/consumer.py:600);"
        "poll (kafka/consumer/group.py:700);wait (threading.py:331) 7",
        "main (services/kernel/worker.py:10);from_json (services/kernel/events.py:204);loads (json/__init__.py:346) 3",
        "main (gateway/__main__.py:5);execute (sqlalchemy/engine/base.py:1400) 2",
        "_bootstrap (threading.py:1002) 1",
        "not a sample line",
    ])
    shares, frames = classify(raw)
    assert shares == {"kafka-python": 7, "ours": 3, "SQLAlchemy": 2, "stdlib": 1}
    assert frames["ours", "from_json (services/kernel/events.py:204)"] == 3
    assert frames["kafka-python", "poll (kafka/consumer/group.py:700)"] == 7
