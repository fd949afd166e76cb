"""``lct-shards`` on a fresh machine (issue 11, item 7): help texts and defaults, a readable
``inspect`` with a tokens-per-scene histogram (``--json`` for scripts), ``build`` refusing the
placeholder prompts ``split`` writes."""

from __future__ import annotations

import argparse
import json

import pytest

from data_tools.cli import _parser
from data_tools.cli import main as cli_main
from data_tools.manifest import read_manifest, write_manifest
from data_tools.split import TODO_SHOT


def subparsers():
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("name", ["build", "split", "synth", "inspect", "verify"])
def test_every_option_has_help_and_shows_its_default(name):
    sub = subparsers()[name]
    text = sub.format_help()
    options = [a for a in sub._actions if a.option_strings and a.dest != "help"]
    assert options
    for action in [*options, *(a for a in sub._actions if not a.option_strings)]:
        assert action.help, f"{name} {action.dest} has no help"
    flat = " ".join(text.split())
    for action in options:
        if action.default not in (None, False):
            assert f"{' '.join(action.help.split())} (default: {action.default})" in flat, \
                (action.dest, text)


def test_inspect_prints_a_summary_with_a_histogram_and_json_on_request(dataset_dir, capsys):
    assert cli_main(["inspect", str(dataset_dir)]) == 0
    out = capsys.readouterr().out
    assert "12 scenes" in out
    assert "tokens per scene" in out
    bars = [ln for ln in out.splitlines() if " | " in ln]
    assert sum(int(ln.rsplit(maxsplit=1)[-1]) for ln in bars) == 12  # every scene in a bin
    assert "#" in out
    assert cli_main(["inspect", str(dataset_dir), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["scenes"] == 12
    assert sum(count for _, _, count in stats["tokens_histogram"]) == 12


def test_build_refuses_placeholder_prompts_naming_the_scene(synth_dir, tmp_path, capsys):
    scenes = read_manifest(synth_dir / "manifest.jsonl")[:2]
    scenes[1].shots[0].prompt = TODO_SHOT
    manifest = tmp_path / "captioned.jsonl"
    write_manifest(manifest, [json.loads(s.to_json()) for s in scenes])
    out = tmp_path / "ds"
    args = ["build", str(manifest), str(out), "--vae", "pixel:2", "--text-encoder", "tiny",
            "--area", "1024", "--scenes-per-shard", "1"]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"scene {scenes[1].key}: shots[0].prompt" in err[0]
    assert "--allow-placeholder-prompts" in err[0]
    assert scenes[0].key not in err[0]
    assert not out.exists()  # refused before writing anything
    assert cli_main([*args, "--allow-placeholder-prompts"]) == 0
    assert len(list((out / "shards").glob("*.tar"))) == 2
