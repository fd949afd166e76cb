"""The memory table of BENCHMARKS.md / README: model x GPU memory x world size -> the largest
scene (S equal 480p shots, latent-patch frame 30x30, F frames per shot) that fits.

Every figure is an ``lct-estimate`` run (``lct_train.estimate.cli.estimate``). The search: two
calibration runs (F1, F2 frames per shot) fix the line peak(tokens) - activations grow linearly
in the scene with flash attention and full AC - that proposes F*; F* and F*+1 are then both
estimated, and the row reports the largest F whose *estimate* fits (never the line).

  python bench/estimate_table.py --model lct-3b --world 8 --gpu-gb 80 141 --calib 4 16
"""

from __future__ import annotations

import argparse
import json
import sys

from lct_train.estimate.cli import estimate

GB = 1e9


def run(model: str, world: int, shots: int, frames: int, gpu_gb: float, extra: list[str]) -> dict:
    args = [f"model={model}", f"estimate.world_size={world}", f"estimate.shots={shots}",
            f"estimate.grid=[{frames},30,30]", f"estimate.gpu_gb={gpu_gb}", *extra]
    result = estimate(args)
    result["command"] = "lct-estimate " + " ".join(args)
    print(json.dumps({k: result[k] for k in ("command", "tokens", "peak_bytes", "fits")}),
          file=sys.stderr, flush=True)
    return result


def largest(model, world, shots, gpus, calib, extra) -> list[dict]:
    a, b = (run(model, world, shots, f, gpus[0], extra) for f in calib)
    slope = (b["peak_bytes"] - a["peak_bytes"]) / (b["tokens"] - a["tokens"])
    per_frame = shots * 900
    rows = []
    for gpu in gpus:
        usable = gpu * GB * 0.9
        guess = max(1, calib[0] + int((usable - a["peak_bytes"]) / slope) // per_frame)
        tried = {f: run(model, world, shots, f, gpu, extra) for f in (guess, guess + 1)}
        while tried[min(tried)]["fits"] is False and min(tried) > 1:  # line was optimistic
            f = min(tried) - 1
            tried[f] = run(model, world, shots, f, gpu, extra)
        fitting = [f for f, r in tried.items() if r["fits"]]
        best = tried[max(fitting)] if fitting else tried[min(tried)]
        over = tried.get(max(fitting) + 1) if fitting else None
        rows.append({"model": model, "gpu_gb": gpu, "world": world, "best": best,
                     "next": over})
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["| model | GPU | ranks | sp | largest scene that fits (shots x F x H x W patches) "
           "| joint tokens | peak / rank | next frame up |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b, n = r["best"], r["next"]
        scene = f"{b['shots']} x {'x'.join(map(str, b['shot_grid']))}" if b["fits"] else \
            f"none (smallest tried {b['shots']} x {'x'.join(map(str, b['shot_grid']))}: " \
            f"{b['peak_bytes'] / GB:.1f} GB)"
        nxt = f"{n['tokens']:,} tokens: {n['peak_bytes'] / GB:.1f} GB" if n else "-"
        out.append(f"| {r['model']} | {r['gpu_gb']:.0f} GB | {r['world']} | {b['sp_degree']} | "
                   f"{scene} | {b['tokens']:,} | {b['peak_bytes'] / GB:.1f} GB | {nxt} |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--world", type=int, default=8)
    p.add_argument("--shots", type=int, default=9)
    p.add_argument("--gpu-gb", type=float, nargs="+", default=[80.0, 141.0])
    p.add_argument("--calib", type=int, nargs=2, default=[4, 16])
    p.add_argument("overrides", nargs="*", help="training overrides, e.g. memory=80gb")
    a = p.parse_args()
    rows = largest(a.model, a.world, a.shots, a.gpu_gb, a.calib, a.overrides)
    print(markdown(rows))
    print(json.dumps(rows, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
