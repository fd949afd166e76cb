"""``python -m lct_train.estimate.search``: the largest scene that fits, by ``lct-estimate``.

The scene family: ``estimate.shots`` equal shots (9 by default here) of F latent frames of
``estimate.frame`` patches (30x30 = 480x480 px), ``estimate.text_len`` text tokens per group,
plus the global group; the search variable is F in ``1..search.max_frames``. When even F=1
does not fit, the search goes on over the shot count at F=1 (``1..shots-1``).

Peak memory is close to linear in the tokens (flash's O(L) attention), so the search does not
bisect blindly: it estimates F=max_frames (done if that fits) and F=1, fits a line through the
two estimates nearest the limit, estimates the predicted largest F* and F*+1 (or F*-1 when F*
does not fit) to verify it; after ``ROUNDS`` such rounds that have not closed the bracket it
bisects. The peak is assumed non-decreasing in F (the verification checks the neighbours of
the answer, not the whole curve).

Every estimate is printed (F, tokens, peak, the verdict per GPU), then one row per GPU, and as the
last line one JSON object. ``search.memory=[80gb,141gb]`` searches for several presets at once:
when the presets compose to the same run apart from ``memory`` and ``data.max_tokens`` (which
the estimate does not read: its scene is given explicitly), the estimates are shared, since the
peak does not depend on the GPU size; otherwise each preset gets its own estimates.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from lct_train.core.errors import ConfigError

PREFIX = "search."
ROUNDS = 2  # line predictions (each verified) before bisecting
GB = 1e9


@dataclass
class SearchConfig:
    max_frames: int = 64  # the cap: "F >= max_frames" when max_frames fits
    memory: tuple[str, ...] = ()  # presets searched at once; () = the run's own memory=
    start: tuple[int, ...] = ()  # the first F estimated; () = max_frames, then 1


def largest_fitting(peak_of: Callable[[int], int], limit: int, cap: int,
                    seen: dict[int, int], start: Sequence[int] = ()) -> int:
    """Largest n in ``1..cap`` with ``peak_of(n) <= limit`` (0 when none), for a peak that is
    non-decreasing in n. ``seen`` maps n to peaks already estimated (it is filled in);
    ``start``: the first estimates (default ``cap`` then 1), e.g. a previous search's answers."""

    def peak(n: int) -> int:
        if n not in seen:
            seen[n] = peak_of(n)
        return seen[n]

    first = list(start or (cap, 1))
    rounds = 0
    while True:
        lo = max((n for n, p in seen.items() if p <= limit and n <= cap), default=0)
        hi = min((n for n, p in seen.items() if p > limit and n <= cap), default=cap + 1)
        if hi - lo <= 1:  # cap fitting, or 1 not fitting, ends it in one estimate
            return lo
        if first:
            peak(first.pop(0))
            continue
        guess = _predict(seen, limit, lo, hi) if rounds < ROUNDS else None
        rounds += 1
        if guess is None:
            peak((lo + hi) // 2)
            continue
        guess = min(max(guess, lo + 1), hi - 1)
        # The prediction and its verification: F* fits and F*+1 does not.
        if peak(guess) <= limit:
            if guess + 1 < hi:
                peak(guess + 1)
        elif guess - 1 > lo:
            peak(guess - 1)


def _predict(seen: dict[int, int], limit: int, lo: int, hi: int) -> int | None:
    """Largest n on the line through the two estimates nearest the limit with line(n) <= limit
    (``None`` when that line does not rise)."""
    near = [n for n in (lo, hi) if n in seen]
    if len(near) < 2:  # one side of the bracket is unmeasured: the two points nearest it
        near = sorted(seen, key=lambda n: abs(n - near[0]) if near else n)[:2]
    if len(near) < 2:
        return None
    (n1, p1), (n2, p2) = sorted((n, seen[n]) for n in near)
    slope = (p2 - p1) / (n2 - n1)
    if slope <= 0:
        return None
    return n1 + int((limit - p1) // slope)


def split_args(args: Sequence[str]) -> tuple[SearchConfig, list[str]]:
    """``(search config, lct-estimate arguments)``; the scene keys are the search's own."""
    ours = [a for a in args if a.startswith(PREFIX)]
    rest = [a for a in args if not a.startswith(PREFIX)]
    for key in ("estimate.tokens", "estimate.grid"):
        if any(a.startswith(key + "=") for a in rest):
            raise ConfigError(key, "the search sets the scene itself (estimate.shots, "
                              "estimate.frame and search.max_frames define it)")
    from lct_train.estimate.config import parse_keys

    cfg = parse_keys(PREFIX, SearchConfig, ours)
    if cfg.max_frames < 1:
        raise ConfigError(PREFIX + "max_frames", f"must be >= 1, got {cfg.max_frames}")
    if not all(1 <= f <= cfg.max_frames for f in cfg.start):
        raise ConfigError(PREFIX + "start", f"frame counts in 1..{cfg.max_frames} "
                          f"(search.max_frames), got {list(cfg.start)}")
    if not any(a.startswith("estimate.shots=") for a in rest):
        rest.append("estimate.shots=9")
    return cfg, rest


def _prepare(args: list[str]):
    """``lct-estimate``'s ``(run config, estimate config, GPU bytes)`` for the family."""
    from lct_train.estimate.cli import prepare

    return prepare([*args, "estimate.grid=[1,1,1]"])


def _with_memory(args: list[str], preset: str | None) -> list[str]:
    if preset is None:
        return args
    return [a for a in args if not a.startswith("memory=")] + [f"memory={preset}"]


def _comparable(cfg) -> dict:
    from lct_train.config.store import to_dict

    d = to_dict(cfg)
    d.pop("memory", None)
    d["data"].pop("max_tokens", None)
    return d


class Searcher:
    """Runs and prints the estimates of one search."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.calls: list[dict] = []

    def peak(self, run_args: list[str], frame: tuple[int, int], frames: int, shots: int,
             limits: dict[str, int]) -> int:
        """The peak of one scene (``shots`` x ``frames`` latent frames of ``frame`` patches),
        printed with its verdict against each preset's usable bytes."""
        from lct_train.estimate.cli import estimate

        h, w = frame
        scene = [a for a in run_args if not a.startswith("estimate.shots=")]
        scene += [f"estimate.grid=[{frames},{h},{w}]", f"estimate.shots={shots}"]
        start = time.perf_counter()
        result = estimate(scene)
        row = {"frames": frames, "shots": shots, "tokens": result["tokens"],
               "peak_bytes": result["peak_bytes"],
               "seconds": round(time.perf_counter() - start, 1)}
        self.calls.append(row)
        verdicts = ", ".join(f"{'fits' if row['peak_bytes'] <= limit else 'does NOT fit'} {name}"
                             for name, limit in limits.items())
        print(f"estimate {len(self.calls)}: {shots} shots x {frames}x{h}x{w}, "
              f"{row['tokens']:,} tokens: peak {row['peak_bytes'] / GB:.2f} GB, {verdicts} "
              f"({row['seconds']:.0f} s)", file=self.out, flush=True)
        return row["peak_bytes"]


def search(args: Sequence[str], out=None) -> dict:
    """Largest F (or shot count at F=1) per preset; raises ``ConfigError`` on a bad key."""
    scfg, est_args = split_args(args)
    presets = list(scfg.memory) or [None]
    runs = {p: _prepare(_with_memory(est_args, p)) for p in presets}
    searcher = Searcher(out)
    out = searcher.out
    # Presets that compose to the same run share their estimates (the peak does not depend
    # on the GPU size): key -> (frame peaks, shot peaks at F=1).
    shared: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
    rows = []
    keys = {p: json.dumps(_comparable(runs[p][0]), sort_keys=True, default=str)
            for p in presets}
    for p in presets:
        same = [q for q in presets if keys[q] == keys[p]]  # the first one's args run them
        limits = {_label(q, runs[q]): _usable(runs[q]) for q in same}
        frame_peaks, shot_peaks = shared.setdefault(keys[p], ({}, {}))
        rows.append(_search_one(searcher, _with_memory(est_args, same[0]), p, runs[p], scfg,
                                frame_peaks, shot_peaks, limits))
    for row in rows:
        print(render_row(row), file=out)
    seconds = sum(c["seconds"] for c in searcher.calls)
    result = {"rows": rows, "estimates": searcher.calls, "seconds": round(seconds, 1)}
    print(json.dumps(result, sort_keys=True), file=out)
    return result


def _usable(run) -> int:
    _, est, gpu = run
    return int(gpu * (1 - est.headroom))


def _label(preset, run) -> str:
    return f"{run[2] / GB:g} GB" if preset is None else preset


def _search_one(searcher: Searcher, run_args: list[str], preset, run, scfg: SearchConfig,
                frame_peaks: dict[int, int], shot_peaks: dict[int, int],
                limits: dict[str, int]) -> dict:
    """The row of one preset: the largest F, else the largest shot count at F=1."""
    cfg, est, gpu = run
    limit = _usable(run)
    frames = largest_fitting(lambda f: searcher.peak(run_args, est.frame, f, est.shots, limits), limit,
                             scfg.max_frames, frame_peaks, scfg.start)
    shots = est.shots
    if frames == 0:
        shot_peaks.setdefault(est.shots, frame_peaks[1])
        shots = 0 if est.shots == 1 else largest_fitting(
            lambda s: searcher.peak(run_args, est.frame, 1, s, limits), limit, est.shots - 1, shot_peaks)
    # The row's scene; when nothing fits, the smallest one (1 shot of 1 frame), to say by how much.
    peak = frame_peaks[frames] if frames else shot_peaks.get(shots or 1, frame_peaks[1])
    return _row(preset, cfg, est, gpu, limit, frames, shots, scfg.max_frames, peak)


def _row(preset, cfg, est, gpu, limit, frames, shots, cap, peak) -> dict:
    from lct_train.estimate.scene import scene_spec

    n_shots = est.shots if frames else shots
    spec = scene_spec(replace(est, tokens=0, grid=[max(frames, 1), *est.frame],
                              shots=max(n_shots, 1)), cfg.model)
    row = {
        "memory": preset or cfg.memory, "gpu_gb": gpu / GB, "usable_bytes": limit,
        "world_size": est.world_size, "sp_degree": cfg.parallel.sp_degree,
        "shots": n_shots, "frames": frames, "at_cap": frames == cap,
        "tokens": spec.num_tokens if n_shots else 0,
        "peak_bytes": peak if n_shots else None, "fraction": peak / gpu if n_shots else None,
    }
    if not n_shots:
        row["smallest"] = {"tokens": spec.num_tokens, "peak_bytes": peak}
    return row


def render_row(row: dict) -> str:
    head = (f"{row['memory']} ({row['gpu_gb']:.0f} GB, usable {row['usable_bytes'] / GB:.1f} GB)"
            f", {row['world_size']} GPUs, sp {row['sp_degree']}: ")
    if not row["shots"]:
        small = row["smallest"]
        return head + (f"nothing fits: 1 shot of 1 latent frame ({small['tokens']:,} tokens) "
                       f"needs {small['peak_bytes'] / GB:.1f} GB")
    more = ">= " if row["at_cap"] else ""
    return (head + f"{row['shots']} shots x {more}{max(row['frames'], 1)} latent frames, "
            f"{row['tokens']:,} tokens, peak {row['peak_bytes'] / GB:.1f} GB "
            f"({row['fraction']:.0%} of the GPU)")


USAGE = """usage: python -m lct_train.estimate.search [training overrides] [estimate.* keys]
                    [search.max_frames=64] [search.memory=[80gb,141gb]] [search.start=[F,..]]

The largest scene of estimate.shots (default 9) equal shots of F latent frames of
estimate.frame patches (+ the global group) whose lct-estimate peak fits the GPU with the
estimate's headroom; F in 1..search.max_frames, then the shot count at F=1 if F=1 does not
fit. search.start: the first F estimated (default max_frames, then 1), e.g. the answers of a
previous search. Example:
  python -m lct_train.estimate.search model=hunyuan-video parallel.sp_degree=8 \\
      estimate.world_size=8 search.memory=[80gb,141gb]
"""


def _search(args: list[str]) -> int:
    search(args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from lct_train.estimate.cli import command

    return command(argv, USAGE, "python -m lct_train.estimate.search", _search,
                   lambda args: _prepare(split_args(args)[1]))


if __name__ == "__main__":
    sys.exit(main())
