"""A hybrid in the report: labelled as the sweep names it, its components' settings tell variants apart, paired
with uniform, uniform on its data and its shuffled control."""

from __future__ import annotations

import json

from test_report import SEEDS, make_run

from wmtp.analysis.report import write_report


def test_hybrid_variants_labels_baselines_and_control(tmp_path):
    root = tmp_path / "runs"
    hybrid = ("data.train_on=all", f"weighting.rho1.reference={root / 'ref'}")
    for seed in SEEDS[:3]:
        make_run(root, "uniform", seed)
        make_run(root, "uniform", seed, overrides=("data.train_on=all",), name="uniform-on-all")
        make_run(root, "hybrid", seed, overrides=hybrid, name="hybrid-t1", shift=-0.02)
        make_run(root, "hybrid", seed, overrides=(*hybrid, "weighting.rho1.temperature=2"), name="hybrid-t2")
        make_run(root, "shuffled", seed, overrides=(*hybrid, "weighting.control_of=hybrid"), name="shuffled-of-hybrid")
    write_report([root], tmp_path / "out")
    variants = {v["label"]: v for v in json.loads((tmp_path / "out" / "report.json").read_text())["variants"]}
    one, two = "hybrid (rho1.temperature=1.0)", "hybrid (rho1.temperature=2.0)"
    control = "shuffled:hybrid (rho1.temperature=1.0)"
    assert set(variants) == {"uniform", "uniform@all", one, two, control}  # data.train_on=all is the hybrid's own
    assert (variants[one]["baseline"], variants[one]["data_baseline"], variants[one]["controls"]) == (
        "uniform", "uniform@all", [control])
    assert variants[two]["controls"] == [] and variants[control]["baseline"] == "uniform"
