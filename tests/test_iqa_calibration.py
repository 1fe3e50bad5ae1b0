"""The classical metrics against their reference implementations, on real images.

References (``samples/tid2013_calibration`` of the mirror: five distorted TID2013 images with
values from the original implementations, as IQA-PyTorch's calibration publishes them):

- ``niqe`` row: the authors' NIQE release (MATLAB ``computequality.m``, ``modelparameters.mat``).
  Our ``niqe`` uses that model and pipeline: I04 agrees to 1e-6, every image within 0.05. The
  ``niqe_matlab`` row is MATLAB's Image Processing Toolbox ``niqe`` with MathWorks' own default
  model (``defaultNIQEModel.mat``), which no public package registry ships: another scale
  (I03: 7.20 against the release's 15.75), not a target here.
- ``brisque`` row: the authors' BRISQUE release (MATLAB ``brisquescore.m`` + LIBSVM, ``allmodel``,
  ``allrange``). On I03, I04 and I06 ours agree within 0.01. I08 and I19 contain flat areas
  (I19: 71% of pixels equal their upper neighbour) where the MSCN coefficients are 0 in exact
  arithmetic; the reference's filter leaves rounding noise there whose sign splits those
  coefficients between the two sides of its AGGD fit, so its value on such images is set by
  floating-point noise (our features with scipy's noise give I19 = 67.1, with three summation
  orders of a direct 2-D filter 64.0; with the exact zeros 74.4 against the reference's 72.3).
  Tolerance there: 0.6 (I08) and 2.5 (I19). ``brisque_matlab`` is MATLAB's ``brisque`` with
  MathWorks' own model, not shipped by any registry package either.
- ``piqe`` row: MATLAB ``piqe`` (printed to two decimals): every image within 0.01.

And per image against pyiqa's released LIVE Challenge NIQE predictions (pyiqa ``niqe``: the same
release model; ``external/pyiqa_predictions/LIVEC/niqe.csv``, test images in label-file order):
Spearman >= 0.98 on the mirrored images (measured 0.9994 on 627).

The metrics are called through ``SCORERS`` so that the same tests run on any implementation.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import yaml
from scipy.stats import spearmanr

from dogiqa.images import load_rgb
from dogiqa.scoring.classical import SCORERS

FLAT_AREAS = ("I08.bmp", "I19.bmp")
BRISQUE_FLAT_TOLERANCE = {"I08.bmp": 0.6, "I19.bmp": 2.5}


@pytest.fixture(scope="module")
def calibration(mirror: Path) -> Path:
    return mirror / "samples" / "tid2013_calibration"


@pytest.fixture(scope="module")
def official(calibration: Path) -> pd.DataFrame:
    return pd.read_csv(calibration / "official_values.csv", index_col="Method")


@pytest.fixture(scope="module")
def distorted(official: pd.DataFrame, calibration: Path) -> dict[str, np.ndarray]:
    return {name: load_rgb(calibration / "dist_dir" / name) for name in official.columns}


def ours(metric: str, images: dict[str, np.ndarray]) -> pd.Series:
    return pd.Series({name: SCORERS[metric].function(image) for name, image in images.items()})


def test_niqe_matches_the_niqe_release(official, distorted) -> None:
    values = ours("niqe", distorted)
    reference = official.loc["niqe"].astype(float)
    np.testing.assert_allclose(values, reference, atol=0.05)
    assert values["I04.bmp"] == pytest.approx(reference["I04.bmp"], abs=1e-6)
    # MATLAB toolbox niqe (MathWorks' model) is another scale: not what this reproduces.
    assert abs(values["I03.bmp"] - official.loc["niqe_matlab", "I03.bmp"]) > 5


def test_brisque_matches_the_brisque_release(official, distorted) -> None:
    values = ours("brisque", distorted)
    reference = official.loc["brisque"].astype(float)
    for name in reference.index:
        tolerance = BRISQUE_FLAT_TOLERANCE.get(name, 0.01)
        assert values[name] == pytest.approx(reference[name], abs=tolerance), name


def test_piqe_matches_matlab(official, distorted) -> None:
    values = ours("piqe", distorted)
    np.testing.assert_allclose(values, official.loc["piqe"].astype(float), atol=0.01)


def livec_test_images(mirror: Path) -> list[str]:
    """LIVE Challenge names in label-file order without the seven training images: the rows of
    pyiqa's prediction files."""
    names = scipy.io.loadmat(mirror / "labels" / "livec_AllImages_release.mat")
    names = [str(entry[0][0]) for entry in names["AllImages_release"]]
    return [name for name in names if not name.startswith("t")]


@pytest.mark.slow
def test_niqe_ranks_images_as_pyiqa_niqe_on_live_challenge(mirror: Path) -> None:
    predictions = pd.read_csv(mirror / "external" / "pyiqa_predictions" / "LIVEC" / "niqe.csv")
    predictions.columns = ["prediction", "mos"]
    predictions["image"] = livec_test_images(mirror)
    mos = scipy.io.loadmat(mirror / "labels" / "livec_AllMOS_release.mat")["AllMOS_release"]
    np.testing.assert_allclose(predictions["mos"], mos.ravel()[7:], atol=1e-4)  # row alignment
    folder = mirror / "livec" / "Images"
    mirrored = predictions[[(folder / name).exists() for name in predictions["image"]]]
    assert len(mirrored) == 627
    values = [SCORERS["niqe"].function(load_rgb(folder / name)) for name in mirrored["image"]]
    # pyiqa's file holds -NIQE (higher is better).
    assert spearmanr(values, -mirrored["prediction"])[0] >= 0.98


def test_shipped_parameter_files_are_the_stated_ones() -> None:
    folder = resources.files("dogiqa.resources")
    stated = yaml.safe_load((folder / "iqa_parameters.yaml").read_text())["files"]
    assert set(stated) == {"niqe_pris_params.npz", "brisque_allmodel", "brisque_allrange"}
    for name, entry in stated.items():
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert digest == entry["sha256"], name
    assert (folder / "LIVE_NOTICE.txt").read_text().count("COPYRIGHT NOTICE STARTS") == 2
