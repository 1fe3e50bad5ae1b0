"""The three discretisation formulas of Table 1 on hand-checkable inputs, and the real table."""

from __future__ import annotations

import numpy as np
import pytest

from dogiqa import upper_bound as ub
from dogiqa.errors import ParamError

# MOS 2..10: max - min = 8.
MOS = np.array([2.0, 3.0, 5.0, 6.0, 10.0])


def test_code_formula_divides_unshifted_mos_and_rounds_half_to_even():
    # s / 8 * 4 = [1.0, 1.5, 2.5, 3.0, 5.0] -> half to even: [1, 2, 2, 3, 5]
    np.testing.assert_array_equal(ub.discretise_code(MOS, 4), [1, 2, 2, 3, 5])


def test_paper000_maps_onto_k_levels_from_zero():
    # (s - 2) / 8 * (3 - 1) = [0, .25, .75, 1, 2] -> [0, 0, 1, 1, 2]
    np.testing.assert_array_equal(ub.discretise_paper000(MOS, 3), [0, 0, 1, 1, 2])


def test_paper001_uses_k_plus_one_levels():
    # 3 * (s - 2) / 8 = [0, .375, 1.125, 1.5, 3] -> [0, 0, 1, 2, 3]
    np.testing.assert_array_equal(ub.discretise_paper001(MOS, 3), [0, 0, 1, 2, 3])


def test_perfectly_kept_ranking_gives_one():
    mos = np.arange(1.0, 6.0)  # every value lands on its own level
    srcc, plcc, mean = ub.upper_bound(mos, 5, "paper000")
    assert (srcc, plcc, mean) == pytest.approx((1.0, 1.0, 1.0))


def test_collapsed_levels_give_nan_not_a_number_pretending():
    mos = np.array([1.0, 1.1, 1.2, 100.0])
    srcc, _, _ = ub.upper_bound(mos[:3], 2, "paper000")  # all three fall on two levels
    assert not np.isnan(srcc)
    assert np.isnan(ub.upper_bound(np.array([5.0, 5.0 + 1e-9]), 1, "paper000")[0])


def test_compute_attaches_paper_values_and_deltas():
    rng = np.random.default_rng(0)
    table = ub.compute({"livec": rng.uniform(0, 100, 200)}, [3, 4], ["code"])
    row3 = table[table["K"] == 3].iloc[0]
    assert row3["paper"] == 0.915
    assert row3["delta"] == pytest.approx(row3["mean"] - 0.915)
    assert np.isnan(table[table["K"] == 4]["paper"]).all()


def test_paper_values_are_the_printed_table():
    printed = ub.paper_table1()
    assert len(printed) == 20
    assert printed[(3, "KonIQ")] == 0.830 and printed[(9, "KADID")] == 0.993


def test_code_formula_reproduces_table1_on_real_labels(mirror):
    """The acceptance check: 16 cells (SPAQ, KonIQ, LIVEC 1169, KADID x K 3-9) within 0.0005."""
    import shutil
    import tempfile
    from pathlib import Path

    from dogiqa.labels import read_labels
    from dogiqa.registry import DATASETS

    mos = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in ("spaq", "koniq", "livec", "kadid"):
            folder = Path(tmp) / key
            for resource in DATASETS[key].labels:
                (folder / resource.dest).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(mirror / resource.mirror, folder / resource.dest)
            mos[key] = read_labels(DATASETS[key], folder)["mos"].to_numpy()
    table = ub.compute(mos, [3, 5, 7, 9], ["code"])
    assert len(table) == 16
    assert table["delta"].abs().max() < 0.0005


@pytest.mark.parametrize(
    ("key", "value"),
    [("K", [3, "x"]), ("formulas", ["code", "eq9"]), ("datasets", ["mnist"]), ("K_sweep_min", 1)],
)
def test_bad_params_name_the_param(key, value):
    sec = {
        "datasets": ["livec"],
        "K": [3],
        "K_sweep_min": 2,
        "K_sweep_max": 4,
        "formulas": ["code"],
    }
    sec[key] = value
    with pytest.raises(ParamError, match=f"upper_bound.{key}"):
        ub.validate_params({"upper_bound": sec})
