"""pass@k: the unbiased estimator of Chen et al. (2021), "Evaluating Large Language Models Trained on Code".

With n samples of a problem of which c pass, pass@k = 1 - C(n-c, k) / C(n, k): the chance that k samples drawn
without replacement from the n include at least one passing one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``n`` samples, ``c`` of them correct.

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), the Codex paper's product form: c float factors, each
    in [0, 1], where the binomials themselves overflow a float once n passes about a thousand.

    Raises:
        ValueError: unless 0 <= c <= n and 1 <= k <= n.
    """
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every draw of k samples contains a correct one
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_at_k_table(results: Mapping[str, tuple[int, int]], ks: Iterable[int]) -> dict[str, float]:
    """Mean pass@k over problems, keyed ``"pass@{k}"``.

    Args:
        results: problem id -> (n samples, c correct).
        ks: the k to report; a k larger than some problem's n is left out, as no unbiased estimate exists.

    Raises:
        ValueError: ``results`` is empty, or holds an invalid (n, c).
    """
    if not results:
        raise ValueError("pass_at_k_table needs at least one problem")
    min_n = min(n for n, _ in results.values())
    return {
        f"pass@{k}": sum(pass_at_k(n, c, k) for n, c in results.values()) / len(results)
        for k in ks
        if k <= min_n
    }
