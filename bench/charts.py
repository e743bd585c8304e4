"""PNG charts from a results file; runs in the matplotlib venv (bench/.peers/_tools).

``python -m bench.charts RESULTS.jsonl OUT_DIR`` prints the path of each PNG it wrote.
Only the standard library and matplotlib are imported here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .stats import BROKER_ORDER, BROKER_TITLES, SYSTEM_ORDER, Results, Summary, load  # noqa: E402

COLORS = {"redis": "#d62728", "amqp": "#ff7f0e", "postgres": "#1f77b4", "sqlite": "#7f7f7f",
          "p50": "#2ca02c", "p99": "#9467bd", "rss": "#8c564b", "pss": "#e377c2",
          "bulk": "#17becf"}  # fmt: skip


LABELS = {**BROKER_TITLES, "rss": "RSS", "pss": "PSS", "cpu": "CPU", "bulk": "Redis, bulk path"}


def _subtitle(res: Results) -> str:
    m = res.meta
    return f"{m.get('cores')} cores, {m.get('mode')} mode, {m.get('rounds')} round(s), {m.get('started', '')}"


def _bars(
    ax, groups: list[str], series: dict[str, list[Summary | None]], log: bool = False
) -> None:
    """Grouped bars: one group per label, one bar per series, whiskers at min and max."""
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs, heights, lo, hi = [], [], [], []
        for g, s in enumerate(values):
            if s is None:
                continue
            xs.append(g + (i - (len(series) - 1) / 2) * width)
            heights.append(s.median)
            lo.append(s.median - s.low)
            hi.append(s.high - s.median)
        if xs:
            ax.bar(xs, heights, width, label=LABELS.get(name, name),
                   color=COLORS.get(name), yerr=[lo, hi], capsize=2)  # fmt: skip
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20, ha="right")
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def _systems(res: Results) -> list[str]:
    present = {t[0] for t in res.targets()}
    return [s for s in SYSTEM_ORDER if s in present]


def throughput(res: Results, out: Path) -> Path:
    systems = _systems(res)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, mode in zip(axes, ("off", "on"), strict=True):
        series = {}
        for broker in BROKER_ORDER:
            vals = []
            for system in systems:
                if mode == "off":
                    s = res.summary(
                        "throughput", system=system, broker=broker, results="off", concurrency=2
                    )
                else:
                    s = res.summary(
                        "throughput", system=system, broker=broker, results="redis", concurrency=2
                    ) or res.summary(
                        "throughput", system=system, broker=broker, results="db", concurrency=2
                    )
                vals.append(s)
            if any(vals):
                series[broker] = vals
        _bars(ax, [res.title(s) for s in systems], series)
        ax.set_title(f"tasks/s, results {'off' if mode == 'off' else 'on (Redis, else database)'}")
    fig.suptitle(f"End-to-end throughput, concurrency 2 — {_subtitle(res)}", fontsize=10)
    fig.tight_layout()
    path = out / "bench-throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def enqueue(res: Results, out: Path) -> Path:
    systems = _systems(res)
    series = {}
    for broker in BROKER_ORDER:
        vals = [
            res.summary("enqueue_rate", system=s, broker=broker, enqueue_mode="plain")
            for s in systems
        ]
        if any(vals):
            series[broker] = vals
    bulk = [res.summary("enqueue_rate", system=s, broker="redis", enqueue_mode="bulk")
            for s in systems]  # fmt: skip
    if any(bulk):
        series["bulk"] = bulk
    fig, ax = plt.subplots(figsize=(9, 4.5))
    _bars(ax, [res.title(s) for s in systems], series)
    ax.set_title(f"Enqueue rate, one process (tasks/s) — {_subtitle(res)}", fontsize=10)
    fig.tight_layout()
    path = out / "bench-enqueue.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def roundtrip(res: Results, out: Path) -> Path | None:
    labels, p50, p99 = [], [], []
    for system, broker, results in res.targets():
        a = res.summary("rt_p50_ms", system=system, broker=broker, results=results)
        if a is None:
            continue
        labels.append(f"{res.title(system)}\n{BROKER_TITLES[broker]}/{results}")
        p50.append(a)
        p99.append(res.summary("rt_p99_ms", system=system, broker=broker, results=results))
    if not labels:
        return None
    fig, ax = plt.subplots(figsize=(max(8, 0.75 * len(labels)), 4.8))
    _bars(ax, labels, {"p50": p50, "p99": p99}, log=True)
    ax.set_ylabel("ms (log scale)")
    ax.set_title(f"Round-trip latency, delay().get() — {_subtitle(res)}", fontsize=10)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    path = out / "bench-roundtrip.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def memory(res: Results, out: Path) -> Path:
    systems = _systems(res)

    def pick(metric: str, system: str) -> Summary | None:
        for broker in BROKER_ORDER:
            for results in ("off", "db"):
                s = res.summary(
                    metric, system=system, broker=broker, results=results, concurrency=2
                )
                if s:
                    return s
        return None

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    _bars(
        axes[0],
        [res.title(s) for s in systems],
        {
            "rss": [pick("peak_rss_mb", s) for s in systems],
            "pss": [pick("peak_pss_mb", s) for s in systems],
        },
    )
    axes[0].set_title("Peak worker memory (MB), 2 workers")
    _bars(
        axes[1],
        [res.title(s) for s in systems],
        {"cpu": [pick("cpu_ms_per_task", s) for s in systems]},
    )
    axes[1].set_title("Worker CPU per task (ms)")
    fig.suptitle(
        f"Resources (Redis broker where available, results off) — {_subtitle(res)}", fontsize=10
    )
    fig.tight_layout()
    path = out / "bench-resources.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scaling(res: Results, out: Path) -> Path | None:
    scale = [r for r in res.ok if r.get("kind", "").startswith("scale")]
    if not scale:
        return None
    systems = [s for s in SYSTEM_ORDER if any(r["system"] == s for r in scale)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    core_n = res.meta.get("n")
    for system in systems:
        for ax, key, kind in ((axes[0], "concurrency", "scale-c"), (axes[1], "n", "scale-n")):
            points = {}
            for rec in res.ok:
                if rec["system"] != system or rec["broker"] != "redis" or rec["results"] != "off":
                    continue
                is_core = rec.get("kind") == "core" and (key == "concurrency" or rec["n"] == core_n)
                if rec.get("kind") == kind or is_core:
                    if key == "n" and rec["concurrency"] != 2:
                        continue
                    x = rec["queued"] if key == "n" else rec[key]
                    points.setdefault(x, []).append(rec["throughput"])
            if points:
                xs = sorted(points)
                ys = [sorted(points[x])[len(points[x]) // 2] for x in xs]
                ax.plot(xs, ys, marker="o", label=res.title(system))
    axes[0].set_xlabel("worker processes")
    axes[0].set_xticks(sorted({r["concurrency"] for r in res.ok}))
    axes[1].set_xlabel("tasks queued before the workers start")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("tasks/s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Scaling, Redis broker, results off — {_subtitle(res)}", fontsize=10)
    fig.tight_layout()
    path = out / "bench-scaling.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def targets(res: Results, out: Path) -> Path | None:
    """Each target's ratio as a share of what it needs: 1 or more is met."""
    from .targets import GOALS, judge

    rows = [(v.goal.label, v.ratio / v.goal.factor) for v in (judge(res, g) for g in GOALS)
            if v.ratio is not None]  # fmt: skip
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.5))
    labels = [label.replace("`", "") for label, _ in rows][::-1]
    values = [value for _, value in rows][::-1]
    colors = ["#2ca02c" if v >= 1 else "#d62728" for v in values]
    ax.barh(range(len(values)), values, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(values)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("ratio to the best peer ÷ the ratio needed (≥ 1: met; log scale)")
    ax.set_title(f"Issue 5's targets\n{_subtitle(res)}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = out / "bench-targets.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str]) -> int:
    res = load(Path(argv[0]))
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    makers = {"targets": targets, "throughput": throughput, "enqueue": enqueue,
              "roundtrip": roundtrip, "resources": memory, "scaling": scaling}  # fmt: skip
    for name, make in makers.items():
        path = make(res, out)
        if path is None:
            (out / f"bench-{name}.png").unlink(missing_ok=True)  # no stale chart from an older run
        else:
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
