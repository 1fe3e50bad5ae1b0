"""One entry per extension: every entry of every registry is tested by being there.

A dataset (``registry.DATASETS``) parses its tiny label table (``tests/fixtures/data/labels``) and
its mirror labels; a classical metric (``scoring.classical.SCORERS``) runs on a fixture image,
rates a distorted copy worse, and has a calibration row (or says why not); a model
(``scoring.models.MODELS``) builds its tiny version through the adapter registered for its model
type; a segmenter (``segmentation.SEGMENTERS``) segments a fixture image and has a c_max without
a run; an aggregation variant (``aggregate.VARIANTS``) computes on a fixture and splits into its
parts. docs/extending.md names these tests as the proof of each step.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from dogiqa import aggregate, download
from dogiqa.errors import DogIQAError, ParamError
from dogiqa.images import load_rgb
from dogiqa.labels import read_labels
from dogiqa.registry import DATASETS
from dogiqa.scoring.classical import SCORERS
from dogiqa.scoring.models import ADAPTERS, MODELS, adapter_class
from dogiqa.segmentation import SEGMENTERS, backend, build_segmenter, default_c_max

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
LABEL_COLUMNS = ["image", "mos", "mos_norm", "order"]


def check_label_table(table: pd.DataFrame) -> None:
    """What every parsed label table is: names, finite MOS, 0-1 normalisation, file order."""
    assert list(table.columns) == LABEL_COLUMNS
    assert len(table) > 0 and table["image"].is_unique
    assert np.isfinite(table["mos"]).all()
    assert table["mos_norm"].between(0, 1).all()
    assert table["order"].is_monotonic_increasing


# --- datasets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(DATASETS))
def test_every_dataset_parses_its_tiny_label_table(key: str, fixtures: Path) -> None:
    spec = DATASETS[key]
    folder = fixtures / "labels" / key
    assert folder.is_dir(), f"add a tiny label table of {key} in its published format: {folder}"
    table = read_labels(spec, folder)
    check_label_table(table)
    assert {"scene1.png", "scene2.jpg", "scene3.bmp"} <= set(table["image"])
    for name, image_set in spec.image_sets.items():
        kept = read_labels(spec, folder, name)
        assert set(kept["image"]) == set(table["image"]) - set(image_set.excluded)
        assert image_set.reason


@pytest.mark.parametrize("key", sorted(DATASETS))
def test_every_dataset_parses_its_mirror_labels(key: str, mirror: Path, tmp_path: Path) -> None:
    spec = DATASETS[key]
    for resource in spec.labels:
        if resource.mirror is None:
            pytest.skip(f"{key}: {resource.dest} has no mirror copy")
        (tmp_path / resource.dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mirror / resource.mirror, tmp_path / resource.dest)
    table = read_labels(spec, tmp_path)
    check_label_table(table)
    assert len(table) > 1000  # every dataset of the study has thousands of rated images
    for image_set in spec.image_sets.values():
        assert set(image_set.excluded) <= set(table["image"])  # it names images that exist


def test_livec_test_images_leave_out_the_training_images_by_name(fixtures: Path) -> None:
    livec = DATASETS["livec"]
    table = read_labels(livec, fixtures / "labels" / "livec", "test")
    assert "t1.bmp" not in set(table["image"]) and table["order"].tolist() == [2, 3, 4]
    with pytest.raises(ParamError, match="download.livec_images"):
        read_labels(livec, fixtures / "labels" / "livec", "train")
    with pytest.raises(ParamError, match="download.koniq_images"):
        read_labels(DATASETS["koniq"], fixtures / "labels" / "koniq", "test")


@pytest.mark.parametrize("key", sorted(DATASETS))
def test_every_image_manifest_named_by_the_registry_is_shipped(key: str) -> None:
    images = DATASETS[key].images
    if images is None or images.manifest is None:
        pytest.skip(f"{key}: its images have no manifest (no mirror or direct download)")
    assert download.read_manifest(images.manifest)


def test_make_manifest_writes_what_the_download_stage_verifies(fixtures: Path, tmp_path) -> None:
    out = tmp_path / "scenes.sha256"
    assert download.make_manifest(fixtures / "images", output=out) == 0
    lines = out.read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == sorted(
        p.name for p in (fixtures / "images").iterdir()
    )
    entries = {name: digest for digest, name in (line.split("  ") for line in lines)}
    counts = download._verify_folder(fixtures / "images", entries, "scenes")
    assert counts == {"files": len(lines), "verified": len(lines), "unverified": 0}
    with pytest.raises(DogIQAError, match="one of them"):
        download.make_manifest(fixtures / "images")


def test_make_manifest_reproduces_the_shipped_livec_manifest(mirror: Path, tmp_path) -> None:
    out = tmp_path / "livec.sha256"
    download.make_manifest(mirror / "livec" / "Images", output=out)
    assert out.read_bytes() == (download.MANIFESTS / "livec_images.sha256").read_bytes()


# --- classical metrics ---------------------------------------------------------------------------


@pytest.mark.parametrize("metric", sorted(SCORERS))
def test_every_metric_runs_on_a_fixture_and_rates_its_distortion_worse(
    metric: str, fixtures: Path
) -> None:
    spec = SCORERS[metric]
    clean = spec.function(load_rgb(fixtures / "images" / "scene1.png"))
    distorted = spec.function(load_rgb(fixtures / "images" / "scene1_distorted.jpg"))
    assert np.isfinite(clean) and np.isfinite(distorted)
    assert distorted > clean  # lower is better, for every metric of the registry
    assert spec.best < spec.worst, f"{metric}: run python -m dogiqa.scoring.anchors"


@pytest.mark.parametrize("metric", sorted(SCORERS))
def test_every_metric_has_a_calibration_row_or_says_why_not(metric: str) -> None:
    calibration = SCORERS[metric].calibration
    assert calibration, f"{metric}: name its calibration row, or say 'none: <why>'"
    if calibration.startswith("none:"):
        assert len(calibration.removeprefix("none:").strip()) > 10


@pytest.mark.parametrize("metric", sorted(SCORERS))
def test_every_calibrated_metric_matches_its_reference_row(metric: str, mirror: Path) -> None:
    spec = SCORERS[metric]
    if spec.calibration.startswith("none:"):
        pytest.skip(f"{metric}: {spec.calibration}")
    folder = mirror / "samples" / "tid2013_calibration"
    official = pd.read_csv(folder / "official_values.csv", index_col="Method")
    assert spec.calibration in official.index
    reference = official.loc[spec.calibration].astype(float)
    ours = pd.Series(
        {name: spec.function(load_rgb(folder / "dist_dir" / name)) for name in reference.index}
    )
    assert float((ours - reference).abs().median()) <= spec.tolerance


# --- MLLMs ---------------------------------------------------------------------------------------


def _owl3_scorer(folder: Path) -> Any:
    """mPLUG-Owl3's adapter over the stub of its remote code (tests/test_mplug_owl3.py)."""
    from test_mplug_owl3 import MARKER, PROMPT, StubOwl3Model
    from tiny_models import build_qwen25vl
    from transformers import AutoTokenizer

    from dogiqa.scoring.hf import HFScorer

    tokenizer = AutoTokenizer.from_pretrained(build_qwen25vl(folder))
    tokenizer.add_special_tokens({"additional_special_tokens": [MARKER]})
    adapter = adapter_class("mplugowl3")(StubOwl3Model(tokenizer), tokenizer)
    return HFScorer(adapter, PROMPT, "logits", batch_size=1, max_pixels=0, min_side=28)


def _auto_scorer(build: Any) -> Any:
    """A tiny model of a transformers architecture, saved and loaded as a registry model is."""

    def make(folder: Path) -> Any:
        from dogiqa.scoring.hf import HFScorer

        section = {
            "model": str(build(folder)),
            "revision": None,
            "trust_remote_code": False,
            "dtype": "auto",
            "device": "cpu",
            "batch_size": 2,
            "max_pixels": 0,
            "min_side": 28,
            "local_files_only": True,
        }
        return HFScorer.from_params(section, "paper_word_k7", 7, "logits")

    return make


def tiny_scorers() -> dict[str, Any]:
    """model_type -> a function that builds a scorer of that type's tiny version in a folder."""
    pytest.importorskip("torch")
    from tiny_models import BUILDERS

    return {
        **{kind: _auto_scorer(build) for kind, build in BUILDERS.items()},
        "mplugowl3": _owl3_scorer,
    }


@pytest.fixture(scope="module")
def model_scorers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tiny scorer per model type of the registry, built once."""
    makers = tiny_scorers()
    kinds = {spec.model_type for spec in MODELS.values()}
    missing = sorted(kinds - set(makers))
    assert not missing, f"add a tiny builder of model type {missing} to tests/tiny_models.py"
    return {kind: makers[kind](tmp_path_factory.mktemp(kind)) for kind in sorted(kinds)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_builds_its_tiny_version_through_its_adapter(
    name: str, model_scorers: dict[str, Any], fixtures: Path
) -> None:
    spec = MODELS[name]
    scorer = model_scorers[spec.model_type]
    assert isinstance(scorer.adapter, adapter_class(spec.loader))
    if not ADAPTERS[spec.loader].remote_code:  # a saved transformers model states its type
        config = scorer.adapter.model.config
        assert config.model_type == spec.model_type
    crop = Image.open(fixtures / "images" / "scene2.jpg").convert("RGB")
    (result,) = scorer.score([crop])
    assert (
        not result.fallback
        and result.levels_found == 7
        and sum(result.probs) == pytest.approx(1.0, abs=1e-12)
    )


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_every_adapter_entry_names_an_adapter_class(name: str) -> None:
    pytest.importorskip("torch")
    cls = adapter_class(name)
    for method in ("load", "level_logits", "generate"):
        assert callable(getattr(cls, method)), f"{ADAPTERS[name].target} lacks {method}"


# --- segmenters ----------------------------------------------------------------------------------


def _classical(section: dict[str, Any]) -> Any:
    return build_segmenter({**section, "backend": "classical"})


def _sam2_random(section: dict[str, Any]) -> Any:
    """SAM 2's real code with random Hiera-T weights (no checkpoint here): mechanics only."""
    torch = pytest.importorskip("torch")
    from sam2.build_sam import build_sam2

    from dogiqa.segmentation.sam2_backend import Sam2Segmenter, settings_from

    torch.manual_seed(0)
    model = build_sam2("configs/sam2/sam2_hiera_t.yaml", ckpt_path=None, device="cpu")
    settings = dict(section["sam2"], points_per_side=2, pred_iou_thresh=0.0)
    settings.update(stability_score_thresh=0.0, min_mask_region_area=0)
    return Sam2Segmenter(settings_from(settings), model=model)


TINY_SEGMENTERS = {"classical": _classical, "sam2": _sam2_random}
"""segment.backend -> its segmenter, built here without downloads."""


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[pytest.mark.slow] if n == "sam2" else []) for n in sorted(SEGMENTERS)],
)
def test_every_segmenter_segments_a_fixture_image(name: str, fixtures: Path) -> None:
    assert name in TINY_SEGMENTERS, f"add a way to build {name} without downloads here"
    segmenter = TINY_SEGMENTERS[name](copy.deepcopy(PARAMS["segment"]))
    image = np.asarray(
        Image.open(fixtures / "images" / "scene3.bmp").convert("RGB").resize((96, 80))
    )
    masks = segmenter.masks(image)
    assert all(mask.dtype == bool and mask.shape == (80, 96) for mask in masks)


@pytest.mark.parametrize("name", sorted(SEGMENTERS))
def test_every_segmenter_has_a_c_max_without_a_run(name: str) -> None:
    assert backend(name).default_c_max is not None, f"{name}: give its BACKEND a default_c_max"
    value, source = default_c_max({**PARAMS["segment"], "backend": name})
    assert isinstance(value, int) and value >= 1 and source


def test_classical_c_max_is_never_exceeded(fixtures: Path) -> None:
    """No image gets more regions than the classical segmenter's default c_max."""
    from dogiqa.segmentation.algorithm1 import region_rows

    section = {**PARAMS["segment"], "backend": "classical"}
    cap, _ = default_c_max(section)
    segmenter = build_segmenter(section)
    for path in sorted((fixtures / "images").iterdir()):
        image = load_rgb(path)
        rows = region_rows(segmenter.masks(image), *image.shape[:2], t=1)
        assert rows[0]["count"] <= cap


# --- aggregation variants ------------------------------------------------------------------------


def fixture_tables(levels: dict[str, dict[str, list[int]]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Regions and scores of two images: ``levels[prompt][image]`` gives the level of the whole
    image and of each of its regions (the last region is the complement)."""
    regions, scores = [], []
    first = next(iter(levels.values()))
    for image, image_levels in first.items():
        count = len(image_levels) - 1
        covered = 1000 * count * (count + 1) // 2  # the regions partition the image
        for region in range(count + 1):
            kind = "global" if region == 0 else ("complement" if region == count else "mask")
            area = 0 if region == 0 else 1000 * region
            regions.append(
                {
                    "image": image,
                    "region": region,
                    "kind": kind,
                    "area": area or 6000,
                    "area_authors": area or 6000,
                    "count": count,
                    "height": covered // 100,
                    "width": 100,
                }
            )
    for prompt, per_image in levels.items():
        for image, image_levels in per_image.items():
            for region, level in enumerate(image_levels):
                scores.append(
                    {
                        "image": image,
                        "region": region,
                        "prompt_id": prompt,
                        "K": 7,
                        "argmax": level,
                        "expected": level - 0.25,
                    }
                )
    return pd.DataFrame(regions), pd.DataFrame(scores)


def settings(base: str, readout: str = "argmax", c_max: int = 4) -> aggregate.AggregateParams:
    return aggregate.AggregateParams(
        variants=(base,),
        readouts=(readout,),
        main=f"{base}:{readout}",
        prompt_id="auto",
        prompt_ids="all",
        ensemble="all",
        llmiqa_lambda=0.5,
        c_max=c_max,
        missing="report",
    )


IMAGES = pd.Index(["a", "b"], name="image")


LEVEL_VARIANTS = sorted(name for name, v in aggregate.VARIANTS.items() if not v.classical_only)
"""Variants of level answers; a classical-only one reads the continuous score that a classical
scorer records and a level answer has not (tested with a classical scorer's table in
test_aggregate.py)."""


@pytest.mark.parametrize("base", LEVEL_VARIANTS)
def test_every_variant_computes_on_a_fixture(base: str) -> None:
    regions, scores = fixture_tables(
        {"p1": {"a": [6, 5, 7, 3], "b": [2, 1, 3]}, "p2": {"a": [5, 5, 6, 4], "b": [3, 2, 2]}}
    )
    predictions, facts = aggregate.compute(regions, scores, IMAGES, settings(base))
    assert np.isfinite(predictions[f"{base}:argmax"]).all()
    assert predictions[f"{base}:argmax"]["a"] > predictions[f"{base}:argmax"]["b"]
    assert facts["c_max"] == 4


@pytest.mark.parametrize("base", LEVEL_VARIANTS)
def test_every_variant_splits_into_its_quality_part_and_count_term(base: str) -> None:
    """A variant's parts: final = weight * quality + count term; where every crop scores level
    L the quality part is L, on the level scale, whatever the variant's weights."""
    uniform = {"p1": {"a": [5] * 4, "b": [2] * 3}, "p2": {"a": [5] * 4, "b": [2] * 3}}
    regions, scores = fixture_tables(uniform)
    parts = aggregate.explain(regions, scores, IMAGES, settings(base))
    assert parts["quality"].tolist() == pytest.approx([5.0, 2.0])
    recomposed = parts["weight"] * parts["quality"] + parts["count_term"]
    assert recomposed.tolist() == pytest.approx(parts["final"].tolist())
    assert (parts["low"] <= parts["final"]).all() and (parts["final"] <= parts["high"]).all()
    variant = aggregate.VARIANTS[base]
    if variant.count_term is None:
        assert (parts["count_term"] == 0).all() and not variant.count_label
    else:
        assert variant.count_label and (parts["count_term"] > 0).all()
