"""The report of ``bench/gpu_suite.py``: markdown and JSON of every stage, and the goals
(issue 15) judged on the figures. Rewritten after every stage, so a suite stopped from outside
leaves the report of the stages it finished."""

from __future__ import annotations

import json
from pathlib import Path

from gpu_stages import Profile

ATTN_GOAL = "flex block-causal fwd+bwd <= 1.1 x (n+1)/(2n) of bidirectional, n >= 2"
MFU_GOAL, MFU_AIM = 0.40, 0.45
KV_GOAL = "KV-cache speedup >= 0.8 x the attention-FLOP ratio"


def cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def md_table(rows: list[dict]) -> list[str]:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return lines


def join_estimates(stages: dict) -> None:
    """Puts the estimator's peak next to each measured training peak (same shots)."""
    estimate = stages.get("estimate", {})
    predicted = {r["shots"]: r["estimated_peak_gb"]
                 for r in estimate.get("tables", {}).get("estimate", [])}
    for name in ("train-eager", "train-compiled"):  # the full model's (the LoRA stage's differs)
        for row in stages.get(name, {}).get("tables", {}).get("train", []):
            row["estimated_peak_gb"] = predicted.get(row["shots"])


def goals(stages: dict) -> list[str]:
    """One line per goal with the figures that decide it (``n/a`` when its stage is missing)."""
    lines = []
    attn = [r for r in stages.get("attention", {}).get("tables", {}).get("attention", [])
            if r["kernel"] == "flex" and r["n"] >= 2]
    if attn:
        worst = max(attn, key=lambda r: r["ratio_over_ideal"])
        verdict = "PASS" if all(r["goal"] == "PASS" for r in attn) else "FAIL"
        lines.append(f"{ATTN_GOAL}: {verdict} (worst n={worst['n']}: "
                     f"{worst['ratio_over_ideal']:.3f} x the ideal)")
    else:
        lines.append(f"{ATTN_GOAL}: n/a")
    for name in ("train-compiled", "train-eager"):
        rows = stages.get(name, {}).get("tables", {}).get("train", [])
        if rows and rows[0].get("mfu") is not None:
            top = max(rows, key=lambda r: r["shots"])
            verdict = "PASS" if top["mfu"] >= MFU_GOAL else "FAIL"
            lines.append(f"MFU >= {MFU_GOAL:.0%} at {top['shots']} shots ({name}; aim "
                         f"{MFU_AIM:.0%}): {verdict} ({top['mfu']:.1%})")
            break
    else:
        lines.append(f"MFU >= {MFU_GOAL:.0%} at 9 shots: n/a")
    kv = stages.get("kv-cache", {}).get("tables", {}).get("kv-cache", [])
    if kv:
        verdict = "PASS" if all(r["goal"] == "PASS" for r in kv) else "FAIL"
        worst = min(kv, key=lambda r: r["speedup"] / r["attn_ratio"])
        lines.append(f"{KV_GOAL}: {verdict} (worst n={worst['n']}: speedup "
                     f"{worst['speedup']:.2f} vs ratio {worst['attn_ratio']:.2f})")
    else:
        lines.append(f"{KV_GOAL}: n/a")
    syncs = stages.get("host-syncs", {}).get("info", {}).get("goal")
    lines.append(f"one host sync per training step: {syncs or 'n/a'}")
    return lines


def render(report: dict, profile: Profile) -> str:
    stages = report["stages"]
    m = report["machine"]
    lines = ["# GPU suite report", "",
             f"Machine: {m.get('device', 'CPU')} ({m.get('gpu_memory_gib', '-')} GiB), "
             f"torch {m['torch']} (CUDA {m.get('cuda', '-')}), Python {m['python']}, "
             f"{m['cpus']} CPUs; git {m['git']}; profile `{profile.name}`"
             + (" (smoke sizes: the figures check the code path, not speed)"
                if profile.name == "smoke" else ""),
             f"Command: `{report['command']}`; wall {report.get('wall_s', '-')} s", "",
             "| stage | status | wall s | cap s |", "|---|---|---|---|"]
    lines += [f"| {n} | {s['status']} | {s['wall_s']} | {s['cap_s']} |" for n, s in stages.items()]
    lines += ["", "## Goals", "", *(f"- {g}" for g in goals(stages))]
    for name, stage in stages.items():
        lines += ["", f"## {name}: {stage['status']}", ""]
        lines += [f"- {k}: {cell(v)}" for k, v in stage["info"].items()
                  if k != "imported_modules"]
        lines += [f"- note: {n}" for n in stage["notes"]]
        for table, rows in stage["tables"].items():
            lines += ["", f"{table}:", "", *md_table(rows)]
    return "\n".join(lines) + "\n"


def write_report(report: dict, profile: Profile, out: Path) -> str:
    join_estimates(report["stages"])
    report["goals"] = goals(report["stages"])
    report["imported_modules"] = sorted({m for s in report["stages"].values()
                                         for m in s["info"].get("imported_modules", [])})
    text = render(report, profile)
    (out / "gpu_suite.md").write_text(text)
    (out / "gpu_suite.json").write_text(json.dumps(report, indent=1, default=str))
    return text
