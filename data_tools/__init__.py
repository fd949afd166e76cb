"""Offline shard building: lct-shards build / split / synth / inspect / verify."""
