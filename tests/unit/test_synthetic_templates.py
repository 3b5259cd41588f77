"""The template engine: texts from a family's YAML, values and inputs from its draw function, drawn in order."""

import dataclasses
import hashlib
import json
import random

import pytest

from wmtp.config import SyntheticDataConfig
from wmtp.data.synthetic import GENERATOR_VERSION, generate_problems
from wmtp.data.synthetic.spec import family

# sha256 of the default config's problems (json of their fields, sorted keys) at GENERATOR_VERSION 2. A change to
# a template, a draw or the mutations changes the data: bump GENERATOR_VERSION (the data cache key) and this hash.
DEFAULT_PROBLEMS_SHA256 = "01b31d5755e74422dca90f8f8c9c657f8006e4236e538ecc28b093c79a19689a"

_YAML = """\
twice:
  difficulty: easy
  names: ["twice_{k}", double]
  params: "{x}: int"
  returns: int
  doc: "Return {x} times {k}."
  bodies:
    - |-
      return {x} * {k}
    - |-
      y = {x}
      return y * {k}
pick:
  difficulty: hard
  names:
    small: [pick_small]
    big: [pick_big, choose_big]
  params: "xs: list[int]"
  returns: int
  doc:
    small: "The smallest of xs."
    big: "The largest of xs."
  bodies:
    small: ["return min(xs)"]
    big: ["return max(xs)"]
"""


def _twice(rng):
    k, x = rng.randint(2, 9), rng.choice(("n", "x"))
    return {"k": k, "x": x}, lambda: [(rng.randint(0, 5),), (0,)]


def _pick(rng):
    return {"variant": "small" if rng.random() < 0.5 else "big"}, lambda: [([1, 2],)]


@pytest.fixture()
def path(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(_YAML)
    return path


def test_default_problems_are_unchanged():
    problems = generate_problems(SyntheticDataConfig())
    text = json.dumps([dataclasses.asdict(p) for p in problems], sort_keys=True)
    assert GENERATOR_VERSION == 2
    assert hashlib.sha256(text.encode()).hexdigest() == DEFAULT_PROBLEMS_SHA256


def test_family_orders_by_draws_and_reads_its_texts(path):
    pick, twice = family(path, _pick, _twice)
    assert (pick.name, pick.family, pick.difficulty) == ("pick", "toy", "hard")
    assert (twice.name, twice.family, twice.difficulty) == ("twice", "toy", "easy")


def test_build_draws_values_then_name_then_inputs(path):
    (twice,) = [t for t in family(path, _twice, _pick) if t.name == "twice"]
    spec = twice.build(random.Random(3))
    rng = random.Random(3)
    k, x = rng.randint(2, 9), rng.choice(("n", "x"))
    name = rng.choice((f"twice_{k}", "double"))
    assert spec.name == name
    assert (spec.params, spec.returns, spec.doc) == (f"{x}: int", "int", f"Return {x} times {k}.")
    assert spec.bodies == (f"return {x} * {k}", f"y = {x}\nreturn y * {k}")
    assert spec.inputs == [(rng.randint(0, 5),), (0,)]


def test_a_variant_chooses_the_texts_and_a_single_name_is_not_drawn(path):
    (pick,) = [t for t in family(path, _twice, _pick) if t.name == "pick"]
    seen = {}
    for seed in range(20):
        rng = random.Random(seed)
        spec = pick.build(rng)
        seen[spec.bodies] = spec.doc
        after = rng.random()
        replay = random.Random(seed)
        small = replay.random() < 0.5
        if not small:
            assert spec.name == replay.choice(("pick_big", "choose_big"))
        else:
            assert spec.name == "pick_small"
        assert after == replay.random()  # the same number of draws as the replay
    assert seen == {("return min(xs)",): "The smallest of xs.", ("return max(xs)",): "The largest of xs."}


def test_family_rejects_missing_draws_and_fields(path, tmp_path):
    with pytest.raises(ValueError, match="draw functions for"):
        family(path, _twice)
    broken = tmp_path / "broken.yaml"
    broken.write_text(_YAML.replace("  returns: int\n  doc: \"Return", "  doc: \"Return", 1))
    with pytest.raises(ValueError, match="template twice has fields"):
        family(broken, _twice, _pick)
