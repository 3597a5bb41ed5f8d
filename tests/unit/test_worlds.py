"""Unit tests of the world family (training.worlds): held-out worlds really lie outside."""

from __future__ import annotations

import copy

import pytest

from training.synthetic import load_generator_config
from training.worlds import HELD_OUT, TRAIN, draw_world, draw_worlds, generate_world, load_world_spec


@pytest.fixture(scope="module")
def spec():
    return load_world_spec()


def _inside(value: float, bounds) -> bool:
    return float(bounds[0]) <= value <= float(bounds[1])


def test_training_worlds_draw_inside_and_held_out_worlds_outside_every_training_range(spec):
    train, held_out = draw_worlds(spec, 5, 8, seed=3)
    entries = {**spec["parameters"], "label_delay_days": spec["label_delay_days"]}
    for world in train:
        for name, entry in entries.items():
            assert _inside(world.params[name], entry[TRAIN]), (world.name, name)
    for world in held_out:
        for name, entry in entries.items():
            value = world.params[name]
            assert not (float(entry[TRAIN][0]) < value < float(entry[TRAIN][1])), (world.name, name, value)
            assert any(_inside(value, bounds) for bounds in entry[HELD_OUT]), (world.name, name, value)


def test_a_per_commodity_share_gets_the_drawn_value_for_every_commodity(spec):
    world = draw_world(spec, TRAIN, 0, seed=1)
    shares = world.config["fraud"]["undervalued_share"]
    assert set(shares) == set(load_generator_config()["fraud"]["undervalued_share"])
    assert set(shares.values()) == {world.params["undervalued_share"]}


def test_worlds_are_reproducible_and_adding_worlds_keeps_the_earlier_ones(spec):
    few = draw_worlds(spec, 2, 2, seed=9)
    more = draw_worlds(spec, 4, 5, seed=9)
    assert few[0] == more[0][:2] and few[1] == more[1][:2]
    assert draw_worlds(spec, 2, 2, seed=10)[0][0].params != few[0][0].params


def test_only_held_out_worlds_route_fraud_through_the_unlisted_hub(spec):
    train, held_out = draw_worlds(spec, 1, 1, seed=0)
    assert "vn_sea" not in train[0].config.get("fraud", {}).get("routes", {})
    frame = generate_world(held_out[0], 30_000, "2024-06-01", "2026-06-30")
    exported = frame.loc[frame["sim_route"] == "vn_sea", "export_country"]
    assert len(exported) > 0 and set(exported) == {"VN"}
    # Every declaration on the route is a fraud network's (some of its further lines are genuine cover).
    assert set(frame.loc[frame["sim_route"] == "vn_sea", "sim_scenario"]) == {"fraud_network"}
    assert frame["shipper_id"].str.startswith("held-out-0-").all()


def test_a_held_out_range_overlapping_the_training_range_is_refused(spec, tmp_path):
    import yaml

    broken = copy.deepcopy(spec)
    broken["parameters"]["price_noise"]["held_out"] = [[0.1, 0.2]]
    path = tmp_path / "worlds.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(ValueError, match="price_noise.*overlaps"):
        load_world_spec(path)
