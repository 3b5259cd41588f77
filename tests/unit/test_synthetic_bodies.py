"""The shared correct bodies: every stylistic variant computes the same function."""

from wmtp.data.synthetic.templates.bodies import collected, counted, totalled


def _results(bodies, arg):
    out = []
    for body in bodies:
        namespace = {}
        exec("def f(xs):\n" + "".join("    " + line + "\n" for line in body.splitlines()), namespace)
        out.append(namespace["f"](arg))
    return out


def test_variants_agree():
    xs = [3, -1, 4, 1, -5, 9, 2, 6]
    assert _results(counted("x", "xs", "x > 1"), xs) == [5] * 3
    assert _results(totalled("x", "xs", "x * x", "x % 2 == 0"), xs) == [56] * 3
    assert _results(totalled("x", "xs", "abs(x)"), xs) == [31] * 3
    assert _results(collected("x", "xs", "x + 1"), xs) == [[x + 1 for x in xs]] * 2
