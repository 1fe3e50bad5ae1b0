"""The discretisation formulas of Table 1 on hand-checkable inputs, and the real table."""

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


def test_equal_frequency_puts_edges_at_the_quantiles():
    # np.quantile at 1/3, 2/3: 3 + 2/3 = 3.67 and 5 + 2/3 = 5.67 -> [0, 0, 1, 2, 2]
    np.testing.assert_array_equal(ub.discretise_equal_frequency(MOS, 3), [0, 0, 1, 2, 2])


def test_lloyd_max_finds_the_clusters_that_uniform_rounding_splits():
    # Three clusters; uniform rounding of (s - 0) / 40 * 2 puts 14 and 16 on different levels.
    mos = np.array([0.0, 1.0, 2.0, 14.0, 15.0, 16.0, 40.0])
    np.testing.assert_array_equal(ub.discretise_lloyd_max(mos, 3), [0, 0, 0, 1, 1, 1, 2])
    np.testing.assert_array_equal(ub.discretise_paper000(mos, 3), [0, 0, 0, 1, 1, 1, 2])
    skewed = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 40.0])
    np.testing.assert_array_equal(ub.discretise_lloyd_max(skewed, 3), [0, 0, 0, 1, 1, 1, 2])
    assert ub.upper_bound(skewed, 3, "lloyd_max")[2] > ub.upper_bound(skewed, 3, "paper000")[2]


def test_data_adaptive_bins_get_no_printed_value():
    table = ub.compute({"livec": np.linspace(0, 100, 50)}, [3], ["code", "lloyd_max"])
    assert table.set_index("formula").loc["code", "paper"] == 0.915
    assert np.isnan(table.set_index("formula").loc["lloyd_max", ["paper", "delta"]]).all()


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


def test_adaptive_bins_beat_uniform_rounding_on_koniq(mirror):
    """KonIQ, K = 3: seed 000's Eq. 1 keeps (SRCC + PLCC) / 2 = .801, equal-frequency bins .910,
    Lloyd-Max bins .916: the printed bound is that of uniform rounding only."""
    import shutil
    import tempfile
    from pathlib import Path

    from dogiqa.labels import read_labels
    from dogiqa.registry import DATASETS

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "koniq"
        for resource in DATASETS["koniq"].labels:
            (folder / resource.dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(mirror / resource.mirror, folder / resource.dest)
        mos = read_labels(DATASETS["koniq"], folder)["mos"].to_numpy()
    means = {name: ub.upper_bound(mos, 3, name)[2] for name in ub.FORMULAS}
    assert means["paper000"] == pytest.approx(0.801, abs=0.0005)
    assert means["equal_frequency"] == pytest.approx(0.910, abs=0.0005)
    assert means["lloyd_max"] == pytest.approx(0.916, abs=0.0005)
