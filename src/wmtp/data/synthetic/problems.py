"""Problem assembly: a template instance becomes a `Problem` (prompt, hidden tests, correct and mutated
completions), deterministically by `SyntheticDataConfig.seed`."""

from __future__ import annotations

import copy
import random
import textwrap
from dataclasses import dataclass
from typing import Any

from wmtp.config import SyntheticDataConfig
from wmtp.data.synthetic.mutate import mutants
from wmtp.data.synthetic.spec import Spec, Template, as_completion
from wmtp.data.synthetic.templates import FAMILIES, TEMPLATES

# Bump when templates or mutations change: the data cache key includes it, so stale data is never reused.
GENERATOR_VERSION = 2  # 2: mutants only of the problem's own correct bodies; decisive_spans

_MAX_ATTEMPTS = 200  # resamples of a template before a family is declared exhausted


@dataclass(frozen=True)
class Problem:
    """One generated problem. `correct` / `incorrect` are completions (indented bodies ending in a newline) as
    written: correct variants and mutants. Their labels are decided later by running the tests.

    `sources[i]` is the completion of `correct` that `incorrect[i]` was mutated from (None: provenance unknown,
    as in a hand-built problem; its records then get no `decisive_spans`).
    """

    problem_id: str
    family: str
    difficulty: str
    prompt: str
    entry_point: str
    tests: list[str]
    correct: list[str]
    incorrect: list[str]
    sources: list[str] | None = None

    def __post_init__(self) -> None:
        if self.sources is not None and (len(self.sources) != len(self.incorrect)
                                         or not set(self.sources) <= set(self.correct)):
            raise ValueError(f"problem {self.problem_id}: sources must name, for each incorrect completion, the "
                             "correct completion it was mutated from")


def _expected(spec: Spec, inputs: list[tuple[Any, ...]]) -> list[Any]:
    """Outputs of the canonical body. It is our own code, so it is run in-process (no subprocess needed)."""
    namespace: dict[str, Any] = {}
    exec(compile(spec.source(spec.bodies[0]), f"<{spec.name}>", "exec"), namespace)
    fn = namespace[spec.name]
    return [fn(*copy.deepcopy(args)) for args in inputs]


def _prompt(spec: Spec, example: str, output: Any) -> str:
    """The signature and a docstring: the description, then the example call and its output."""
    doc = textwrap.fill(spec.doc, width=100, initial_indent="    " + '"""', subsequent_indent="    ")
    return (f"def {spec.name}({spec.params}) -> {spec.returns}:\n{doc}\n\n"
            f"    >>> {example}\n    {output!r}\n    \"\"\"\n")


def _unique_inputs(inputs: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The inputs without repeats (by repr), in first-seen order."""
    seen: set[str] = set()
    out = []
    for args in inputs:
        if repr(args) not in seen:
            seen.add(repr(args))
            out.append(args)
    return out


def _problem(index: int, template: Template, spec: Spec, cfg: SyntheticDataConfig) -> Problem:
    """Problem `index` of the config, from this template instance: its tests, prompt and completions."""
    inputs = _unique_inputs(spec.inputs)
    if len(inputs) < 4:
        raise RuntimeError(f"template {template.name} gave {len(inputs)} distinct test inputs; at least 4 needed")
    outputs = _expected(spec, inputs)
    tests = [f"assert {spec.call(args)} == {out!r}" for args, out in zip(inputs, outputs)]
    # Solutions draw from their own RNG so that changing n_correct/n_incorrect leaves the problems unchanged.
    rng = random.Random(f"{cfg.seed}:{index}:solutions")
    correct = rng.sample(spec.bodies, min(cfg.n_correct, len(spec.bodies)))
    pairs = mutants(spec, correct, cfg.n_incorrect, rng)
    return Problem(
        problem_id=f"{template.name}-{index:04d}",
        family=template.family,
        difficulty=template.difficulty,
        prompt=_prompt(spec, spec.call(inputs[0]), outputs[0]),
        entry_point=spec.name,
        tests=tests,
        correct=[as_completion(b) for b in correct],
        incorrect=[as_completion(mutant) for mutant, _ in pairs],
        sources=[as_completion(source) for _, source in pairs],
    )


def generate_problems(cfg: SyntheticDataConfig) -> list[Problem]:
    """`cfg.n_problems` distinct problems; families rotate (problem i is of family i mod 5), templates are random.

    At most `cfg.n_correct` correct variants per problem (templates have 3–4) and up to `cfg.n_incorrect`
    distinct mutants of those variants (fewer only if they admit no more).
    """
    by_family = {f: [t for t in TEMPLATES if t.family == f] for f in FAMILIES}
    problems, seen = [], set()
    for index in range(cfg.n_problems):
        family = FAMILIES[index % len(FAMILIES)]
        for attempt in range(_MAX_ATTEMPTS):
            rng = random.Random(f"{cfg.seed}:{index}:{attempt}")
            template = rng.choice(by_family[family])
            spec = template.build(rng)
            key = (spec.name, spec.params, spec.doc)
            if key not in seen:
                seen.add(key)
                break
        else:
            raise RuntimeError(f"family {family!r} has no new problem left after {_MAX_ATTEMPTS} attempts; "
                               f"lower n_problems={cfg.n_problems}")
        problems.append(_problem(index, template, spec, cfg))
    return problems
