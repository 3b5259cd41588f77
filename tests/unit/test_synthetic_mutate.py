"""The mutation engine on a known body: every mutation kind, each as a minimal edit."""

from wmtp.data.synthetic import mutate


def test_mutation_kinds_on_a_known_body():
    body = "if not xs:\n    return 0\ntotal = 0\nfor i in range(1, len(xs)):\n    total += xs[i - 1]\nreturn total"
    mutants = {(body[: e.start] + e.text + body[e.end:]): e.kind for e in mutate._edits(body, ["xs"])}
    expected = [
        ("for i in range(1, len(xs)):", "for i in range(1, len(xs) + 1):", "off_by_one"),
        ("for i in range(1, len(xs)):", "for i in range(0, len(xs)):", "off_by_one"),
        ("    total += xs[i - 1]", "    total += xs[i]", "off_by_one"),
        ("    total += xs[i - 1]", "    total -= xs[i - 1]", "wrong_operator"),
        ("if not xs:\n    return 0\n", "", "missing_case"),
        ("total = 0", "total = 1", "wrong_init"),
        ("return total", "return xs", "wrong_return"),
    ]
    for old, new, kind in expected:
        assert mutants.get(body.replace(old, new)) == kind, (old, new)
    assert body not in mutants
    assert set(mutants.values()) == set(mutate.MUTATION_KINDS)
