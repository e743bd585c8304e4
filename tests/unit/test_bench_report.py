"""The benchmark report, from raw JSON lines: targets, floor multiples, database growth.

The lines are written here the way ``bench.suite`` writes them, so these tests need
no peers, no services and no run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import budget, report
from bench.stats import load
from bench.targets import GOALS, growth, judge


def run(system: str, broker: str, results: str, **fields) -> dict:
    rec = {
        "type": "run", "kind": "core", "round": 1, "system": system, "broker": broker,
        "results": results, "n": 1000, "concurrency": 2, "queued": 1000, "complete": True,
        "completed": 1000, "enqueue_mode": "plain", "enqueue_rate": 1000.0, "throughput": 500.0,
        "span_s": 2.0, "cpu_ms_per_task": 0.5, "peak_rss_mb": 200.0, "peak_pss_mb": 100.0,
        "worker_processes": 3, "seconds": 8.0,
    }  # fmt: skip
    rec.update(fields)
    return rec


@pytest.fixture
def results_file(tmp_path: Path) -> Path:
    lines = [
        {"type": "meta", "mode": "quick", "rounds": 1, "n": 1000, "started": "20260101T000000Z",
         "titles": {"tasks_q": "django-tasks-q", "huey": "Huey", "celery": "Celery"}},
        run("tasks_q", "redis", "off", enqueue_rate=9000.0, throughput=3000.0, peak_rss_mb=150.0),
        run("huey", "redis", "off", enqueue_rate=10000.0, throughput=1000.0),
        run("celery", "redis", "off", enqueue_rate=2000.0, throughput=800.0, peak_rss_mb=200.0),
        run("tasks_q", "redis", "redis", enqueue_mode="bulk", enqueue_rate=30000.0,
            throughput=2000.0, rt_p50_ms=2.0, rt_p99_ms=3.0, rt_n=100, rt_mean_ms=2.1),
        run("huey", "redis", "redis", enqueue_rate=10000.0, throughput=900.0, rt_p50_ms=1.5, rt_p99_ms=4.0, rt_n=100,
            rt_mean_ms=1.6),
        run("tasks_q", "redis", "off", kind="scale-c", concurrency=1, throughput=2000.0),
        run("tasks_q", "redis", "off", kind="scale-c", concurrency=4, throughput=4500.0),
        run("tasks_q", "redis", "off", kind="scale-n", n=100000, queued=100000, throughput=2900.0),
        {"type": "floor", "results": {
            "LPUSH, one round trip each": {"us_per_op": 50.0},
            "LPUSH, pipelined 100 per round trip": {"us_per_op": 5.0},
            "encode + decode inside a JSON envelope": {"us_per_op": 20.0},
            "RPOP count=100 (100 messages per round trip)": {"us_per_op": 3.0},
            "2 processes: LMPOP 100 per round trip": {"ops_per_s": 100000.0},
            "[backlog 0] claim 1 + ack (DELETE), per message": {"us_per_op": 400.0},
            "[backlog 0] INSERT one message": {"us_per_op": 200.0}}},
        {"type": "dbscale", "op": "claim 1 + ack, per message", "rows": 0, "us_per_op": 500.0,
         "ops": 300},
        {"type": "dbscale", "op": "claim 1 + ack, per message", "rows": 1000000,
         "us_per_op": 540.0, "ops": 300},
        {"type": "dbscale", "op": "result write: one result per upsert", "rows": 0,
         "us_per_op": 300.0, "ops": 300},
        {"type": "dbscale", "op": "result write: one result per upsert", "rows": 1000000,
         "us_per_op": 900.0, "ops": 300},
        {"type": "timing", "name": "floor", "seconds": 20.0},
        {"type": "timing", "name": "db_scaling", "seconds": 40.0},
    ]  # fmt: skip
    path = tmp_path / "20260101T000000Z-quick.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def goal(label_start: str):
    return next(g for g in GOALS if g.label.startswith(label_start))


def test_each_target_is_judged_against_the_best_peer(results_file):
    res = load(results_file)
    plain = judge(res, goal("Enqueue rate, Redis: one"))
    assert (plain.peer, plain.theirs, round(plain.ratio, 2), plain.met) == (
        "huey",
        10000,
        0.9,
        False,
    )
    bulk = judge(res, goal("Enqueue rate, Redis: bulk"))
    assert (bulk.peer, bulk.ratio, bulk.met) == ("huey", 3.0, True)  # Huey's best: plain
    off = judge(res, goal("Throughput, Redis, results off"))
    assert (off.peer, off.ratio, off.met) == ("huey", 3.0, True)
    rtt = judge(res, goal("Round-trip p50"))
    assert (rtt.peer, rtt.ratio, rtt.met) == ("huey", 0.75, False)  # less is better
    rss = judge(res, goal("Worker peak RSS"))
    assert (rss.peer, round(rss.ratio, 2), rss.met) == ("celery", 1.33, True)
    amqp = judge(res, goal("Throughput, RabbitMQ"))
    assert amqp.met is None  # not measured in this file


def test_report_shows_targets_floor_and_growth(results_file):
    text = report.render(load(results_file), [])
    targets = text[text.index("## Targets") : text.index("## Enqueue rate")]
    assert (
        "| Enqueue rate, Redis: one `delay()` per task | ≥ 1× the best peer | 9,000 tasks/s | Huey: 10,000 tasks/s | 0.90× | ❌ not met |"
        in targets
    )
    assert (
        "| Throughput, Redis, results off | ≥ 1.5× the best peer | 3,000 tasks/s | Huey: 1,000 tasks/s | 3.00× | ✅ met |"
        in targets
    )
    assert "p99 ≤ 2× our p50 | 3.00 ms | our p50: 2.00 ms | 1.50× | ✅ met |" in targets
    assert "not measured" in targets  # RabbitMQ and PostgreSQL targets have no runs here
    floor = text[text.index("## Cost against the floor") :]
    # one delay(): 1e6 / 9,000 = 111 µs against LPUSH 50 + envelope 20 = 70 µs
    assert "| Enqueue, Redis, one `delay()` (wall time per task) | 111 µs | 70 µs | 1.6× |" in floor
    growth_rows = text[text.index("## Database costs") : text.index("## Cost against the floor")]
    assert "| claim 1 + ack, per message | 500 | 540 | flat (×1.08) |" in growth_rows
    assert "| result write: one result per upsert | 300 | 900 | grows ×3.0 |" in growth_rows
    assert "Median of 3 passes of 300 operations" in growth_rows


def test_scaling_tables_say_how_throughput_grows(results_file):
    text = report.render(load(results_file), [])
    scaling = text[text.index("## Scaling") : text.index("## Database costs")]
    assert "| django-tasks-q | 2,000 | 3,000 | 4,500 | ×2.25 |" in scaling
    assert "| django-tasks-q | 3,000 | 2,900 | ×0.97 |" in scaling


def test_growth_wording():
    assert growth(100, 110) == "flat (×1.10)"
    assert growth(100, 250) == "grows ×2.5"
    assert growth(100, 50) == "no growth (×0.50)"


def test_budget_estimates_a_full_run_from_a_quick_one(results_file):
    est = budget.estimate(results_file)
    assert est["core_s"] > 0 and est["floor_s"] >= 20 and est["db_scaling_s"] >= 40
    assert est["total_s"] <= est["budget_s"]  # scaling runs are only added while they fit
    assert est["total_s"] == pytest.approx(
        est["fixed_s"] + est["core_s"] + est["floor_s"] + est["db_scaling_s"] + est["scaling_s"]
    )


def test_the_summary_page_gets_this_runs_targets_between_its_markers(results_file, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nintro\n\n{report.TARGETS_BEGIN}\nold table\n{report.TARGETS_END}\n\nrest\n")
    assert report.splice_targets(load(results_file), doc)
    text = doc.read_text()
    assert "old table" not in text and text.startswith("# Benchmarks\n\nintro\n") and "rest" in text
    assert "### Targets: `make bench-quick` of 20260101T000000Z UTC (1 round(s), 1,000 tasks" in text
    assert "| Throughput, Redis, results off | ≥ 1.5× the best peer | 3,000 tasks/s |" in text
    report.splice_targets(load(results_file), doc)  # again: still one table
    assert doc.read_text().count("### Targets") == 1
    no_markers = tmp_path / "plain.md"
    no_markers.write_text("# nothing to replace\n")
    assert not report.splice_targets(load(results_file), no_markers)


def test_profile_summary_counts_only_the_consuming_children(tmp_path):
    from bench.profile_worker import top_frames

    raw = tmp_path / "stacks.txt"
    raw.write_text(
        "process 1;<module> (manage.py:1);Worker.run (worker.py:9) 50\n"
        "process 2;child_main (child.py:3);Engine._loop (engine.py:1);hit (tasks.py:2) 30\n"
        "process 2;child_main (child.py:3);Engine._loop (engine.py:1);claim (inflight.py:80) 10\n"
    )
    shares = dict((name, share) for share, name in top_frames(raw))
    assert shares["Engine._loop"] == 100.0
    assert shares["hit"] == 75.0 and shares["claim"] == 25.0
    assert "Worker.run" not in shares  # the supervisor's samples are left out
