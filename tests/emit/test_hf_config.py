"""save hf's config rewrite: num_hidden_layers and every per-layer list shrink."""

from __future__ import annotations

from transformers import BertConfig

from surgeon.emit.hf import _kept_layers, hf_config


def test_per_layer_lists_follow_the_kept_layers() -> None:
    cfg = BertConfig(num_hidden_layers=4)
    cfg.layer_types = ["a", "b", "c", "d"]  # a per-layer list, as some architectures have
    cfg.architectures = ["BertModel"]  # a list of another length stays as it is
    new = hf_config(cfg, {"encoder.layer": [0, 2, 3]})
    assert new.num_hidden_layers == 3
    assert new.layer_types == ["a", "c", "d"]
    assert new.architectures == ["BertModel"]
    assert cfg.num_hidden_layers == 4 and cfg.layer_types == ["a", "b", "c", "d"]  # untouched


def test_kept_layers_are_the_ones_the_graph_still_reads() -> None:
    original = {f"encoder.layer.{i}.w": None for i in range(4)} | {"pooler.w": None}
    compiled = {"encoder.layer.0.w", "encoder.layer.3.w"}
    assert _kept_layers(original, compiled) == {"encoder.layer": [0, 3]}
    assert _kept_layers(original, set(original)) == {}  # nothing pruned: no renumbering
