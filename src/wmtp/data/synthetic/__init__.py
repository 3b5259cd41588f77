"""The embedded verifiable code task: small Python function problems with correct and mutated solutions.

A problem comes from a template (35 of them, in 5 families) with random constants and names: a prompt (the
signature and a docstring with one `>>>` example), hidden tests (asserts whose expected values come from running
the template's canonical solution in-process, which is our own trusted code), stylistic variants of a correct
body (loop / comprehension / builtin), and mutants of those bodies (off-by-one, wrong operator, missing case,
wrong initial value, wrong return value). Mutants are minimal text edits, so they keep the formatting of the code
they came from: style never tells a correct solution from an incorrect one. Labels are never assumed: every
completion is run against the tests in the sandbox (`wmtp.eval.sandbox.run_many`, the same isolation as
evaluation), so a mutant that happens to pass is labelled correct.

Everything is deterministic by `SyntheticDataConfig.seed`: problem i uses RNGs seeded by (seed, i), so a config
with fewer problems yields a prefix of the same problems.

Every record carries `decisive_spans` (`spans`): where a mutant differs from the correct body it was made from,
and on a correct body the regions its incorrect mutants changed.

Modules: `spec` (what a template is, and the engine that builds one), `templates` (the templates: per family, its
texts in a YAML file and its draws in a module), `mutate` (the mutation engine), `problems` (problem assembly),
`program` (the program that grades a completion, in labelling and in evaluation alike), `spans` (decisive spans by
difflib), `splits` (labelling in the sandbox, spans, train / valid / test).
"""

from wmtp.data.synthetic.problems import GENERATOR_VERSION, Problem, generate_problems
from wmtp.data.synthetic.splits import generate_splits, label_program
from wmtp.data.synthetic.templates import FAMILIES

__all__ = ["FAMILIES", "GENERATOR_VERSION", "Problem", "generate_problems", "generate_splits", "label_program"]
