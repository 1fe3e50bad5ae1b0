"""External cached outputs read from the mirror: the authors' LIVEC scores, Q-Bench, pyiqa."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io

from dogiqa import external, metrics, paper
from dogiqa.errors import DogIQAError


@pytest.fixture(scope="module")
def folder(mirror) -> Path:
    return mirror / "external"


@pytest.fixture(scope="module")
def livec_labels(mirror) -> pd.DataFrame:
    data = mirror / "livec" / "Data"
    names = scipy.io.loadmat(data / "AllImages_release.mat")["AllImages_release"]
    mos = scipy.io.loadmat(data / "AllMOS_release.mat")["AllMOS_release"]
    return pd.DataFrame(
        {"image": [str(cell[0][0]) for cell in names], "mos": np.asarray(mos, float).ravel()}
    )


def _spaq_labels(mirror: Path) -> pd.DataFrame:
    raw = pd.read_csv(mirror / "labels" / "spaq_MOS_and_Image_attribute_scores.csv")
    return pd.DataFrame({"image": raw["Image name"].astype(str), "mos": raw["MOS"]})


def _correlations(scores: pd.DataFrame, labels: pd.DataFrame) -> tuple[dict, dict]:
    joined, counts = external.match_labels(scores, labels)
    return metrics.evaluate(joined.score, joined.mos, bootstrap=0), counts


def test_authors_whole_image_livec_scores_reproduce(folder, livec_labels):
    scores = external.read_authors_livec(folder)
    assert len(scores.frame) == 1169 and scores.duplicates == 0
    assert set(scores.frame.score) <= set(range(1, 8))
    result, counts = _correlations(scores.frame, livec_labels)
    assert counts == {"labels": 1169, "matched": 1169, "missing": 0, "extra": 0}
    assert result["n"] == 1169
    assert result["srcc"] == pytest.approx(0.704, abs=0.002)
    assert result["plcc"] == pytest.approx(0.703, abs=0.002)
    # seed 001 Table 3 exp 6 (whole image, word standard) prints 0.708 / 0.707
    assert paper.value("llmiqa_table3", "6", "livec", "srcc") == 0.708


def test_concatenated_json_parsing():
    text = '{"a": 1}{"a": 2}\n {"a": {"b": "}{"}}'
    assert external.parse_concatenated_json(text) == [{"a": 1}, {"a": 2}, {"a": {"b": "}{"}}]
    assert external.parse_concatenated_json("  ") == []
    assert external.parse_concatenated_json('[{"a": 1},{"a": 2}] {"a": 3}') == [
        {"a": 1},
        {"a": 2},
        {"a": 3},
    ]


def test_qbench_models_and_duplicates(folder):
    assert external.qbench_models(folder) == sorted(external.QBENCH_MODELS)
    vicuna = external.read_qbench("instructblip_vicuna", "livec", folder)
    assert vicuna.duplicates == 1 and len(vicuna.frame) == 1169
    assert "t1.bmp" in vicuna.notes[0]
    clean = external.read_qbench("idefics", "livec", folder)
    assert clean.duplicates == 0 and len(clean.frame) == 1169
    assert clean.frame.score.between(0, 1).all()


def test_qbench_score_is_the_two_word_softmax():
    good, poor = np.array([19.5, 10.0]), np.array([16.75, 12.0])
    expected = np.exp(good) / (np.exp(good) + np.exp(poor))
    np.testing.assert_allclose(external.qbench_score(good, poor, 1.0), expected)


def test_qbench_livec_matches_its_leaderboard(folder, livec_labels):
    for model in ("idefics", "internlm_xcomposer_vl", "instructblip_t5"):
        scores = external.read_qbench(model, "livec", folder)
        result, counts = _correlations(scores.frame, livec_labels)
        assert counts["matched"] == 1169
        for metric in ("srcc", "plcc"):
            printed = paper.value("qbench_a3", model, "livec", metric)
            assert result[metric] == pytest.approx(printed, abs=0.0015), (model, metric)


def test_conflicting_repeats_are_refused(tmp_path):
    model = tmp_path / "qbench" / "toy"
    model.mkdir(parents=True)
    record = '{{"img_path": "x.jpg", "gt_score": 1, "logit_good": {}, "logit_poor": 1.0}}'
    (model / "livec.json").write_text(record.format(2.0) + record.format(3.0))
    with pytest.raises(DogIQAError, match="repeated images with different values"):
        external.read_qbench("toy", "livec", tmp_path)


def test_pyiqa_niqe_and_clipiqa_on_livec(folder, livec_labels):
    niqe = external.read_pyiqa("livec", "niqe", folder, labels=livec_labels)
    assert len(niqe.frame) == 1162
    assert not niqe.frame.image.isin(external.LIVEC_TRAINING).any()
    result, counts = _correlations(niqe.frame, livec_labels)
    assert counts["matched"] == 1162 and counts["missing"] == 7
    assert result["srcc"] == pytest.approx(0.450, abs=0.002)
    assert result["plcc"] == pytest.approx(0.479, abs=0.002)
    clip = external.read_pyiqa("livec", "clipiqa", folder)
    result = metrics.evaluate(clip.frame.score, clip.frame.gt_score, bootstrap=0)
    assert result["srcc"] == pytest.approx(0.696, abs=0.002)


def test_pyiqa_spaq_names_by_label_order(mirror, folder):
    labels = _spaq_labels(mirror)
    niqe = external.read_pyiqa("spaq", "niqe", folder, labels=labels)
    assert niqe.frame.image.tolist()[:2] == ["00001.jpg", "00002.jpg"]
    result = metrics.evaluate(niqe.frame.score, niqe.frame.gt_score, bootstrap=0)
    assert result["srcc"] == pytest.approx(0.693, abs=0.002)


def test_pyiqa_rejects_labels_that_do_not_match(folder, livec_labels):
    shuffled = livec_labels.assign(mos=livec_labels.mos.to_numpy()[::-1])
    with pytest.raises(DogIQAError, match="differs from the MOS"):
        external.read_pyiqa("livec", "niqe", folder, labels=shuffled)
    with pytest.raises(DogIQAError, match="do not match"):
        external.read_pyiqa("livec", "niqe", folder, labels=livec_labels.iloc[:100])


def test_match_labels_falls_back_to_file_stems():
    labels = pd.DataFrame({"image": ["a.bmp", "b.JPG", "c.png"], "mos": [1.0, 2.0, 3.0]})
    scores = pd.DataFrame({"image": ["a.bmp", "b.jpg", "z.png"], "score": [5.0, 6.0, 7.0]})
    joined, counts = external.match_labels(scores, labels)
    assert joined.score.tolist()[:2] == [5.0, 6.0] and np.isnan(joined.score[2])
    assert counts == {"labels": 3, "matched": 2, "missing": 1, "extra": 1}


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(DogIQAError, match="run the download stage"):
        external.read_authors_livec(tmp_path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_registry_entries_verify_against_the_mirror(mirror):
    manifests = Path(external.__file__).parent / "manifests"
    for key, resource in external.EXTERNAL_RESOURCES.items():
        source = mirror / resource.mirror
        assert source.exists(), key
        assert resource.url or resource.manual, key
        if not resource.is_folder:
            assert _sha256(source) == resource.sha256
            continue
        listed = {}
        for line in (manifests / resource.manifest).read_text().splitlines():
            digest, name = line.split("  ", 1)
            listed[name] = digest
        present = {p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()}
        assert set(listed) == present, key
        for name, digest in listed.items():
            assert _sha256(source / name) == digest, name


def test_training_sets_mark_in_domain_results():
    """pyiqa's Q-Align is q-future/one-align, whose model card lists SPAQ as seen: in-domain."""
    assert external.in_domain("qalign", "spaq")
    assert not external.in_domain("qalign", "livec")  # "unseen" on its model card
    assert not external.in_domain("topiq_nr", "spaq")  # KonIQ weights by default
    assert external.in_domain("clipiqa+", "koniq")
    with pytest.raises(DogIQAError, match="no training set recorded for 'musiq'"):
        external.in_domain("musiq", "spaq")


def test_every_trained_pyiqa_metric_has_a_cited_training_set():
    sets = external.training_sets()
    trained = {"clipiqa+", "qalign", "qualiclip+", "topiq_nr"}
    assert trained <= set(sets) <= set(external.PYIQA_METRICS)
    for name in trained:
        assert sets[name].trained_on and "github.com" in sets[name].source
