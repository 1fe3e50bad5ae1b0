"""The score stage on real mirror images: table contract, skips, resume, params, hf end to end."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from tiny_models import build_idefics3, build_qwen25vl

from dogiqa import paths, score
from dogiqa.errors import LabelError, ParamError
from dogiqa.images import load_rgb
from dogiqa.scoring import LevelScores, classical
from dogiqa.scoring.classical import ClassicalScorer
from dogiqa.segmentation.algorithm1 import region_rows

pytestmark = pytest.mark.mirror  # real LIVE Challenge images of the mirror throughout

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("DOGIQA_MIRROR", ROOT.parent / "shared" / "data")).resolve()
IMAGES = ["1000.JPG", "1013.JPG", "1024.JPG"]  # 1024.JPG is 640 x 960, the others 500 x 500
REGION_COLUMNS = [
    "image",
    "region",
    "kind",
    "x0",
    "y0",
    "x1",
    "y1",
    "area",
    "area_authors",
    "height",
    "width",
    "count",
    "rle",
    "backend",
]


def masks_for(height: int, width: int) -> list[np.ndarray]:
    """Three masks: a rectangle, a disc and a thin band; the complement covers the rest."""
    yy, xx = np.mgrid[:height, :width]
    rect = (yy < height // 2) & (xx < width // 3)
    disc = (yy - height * 0.7) ** 2 + (xx - width * 0.6) ** 2 < (min(height, width) / 5) ** 2
    band = (yy >= height // 2) & (yy < height // 2 + 20)
    return [rect, disc, band]


def write_inputs(root: Path) -> None:
    """Labels (three real images, one broken file, one without a path) and their regions."""
    broken = root / "broken.JPG"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    labels = [(name, str(MIRROR / "livec" / "Images" / name)) for name in IMAGES]
    labels.insert(1, ("broken.JPG", str(broken)))
    labels.append(("gone.JPG", ""))
    table = pd.DataFrame(
        [
            {"image": n, "path": p, "mos": 50.0, "mos_norm": 0.5, "order": i}
            for i, (n, p) in enumerate(labels)
        ]
    )
    (root / paths.LABELS).mkdir(parents=True)
    table.to_csv(paths.labels_table("livec", base=root), index=False)
    rows = []
    for name, path in labels[:-1]:
        height, width = load_rgb(path).shape[:2] if name != "broken.JPG" else (500, 500)
        for row in region_rows(masks_for(height, width), height, width, 1000.0):
            rows.append({**row, "image": name, "backend": "classical"})
    rows.append({**rows[0], "image": "gone.JPG"})
    paths.regions_table("livec", base=root).parent.mkdir(parents=True)
    pd.DataFrame(rows, columns=REGION_COLUMNS).to_csv(
        paths.regions_table("livec", base=root), index=False
    )


@pytest.fixture(scope="module")
def params() -> dict[str, Any]:
    """The project's score params with one classical scorer (PIQE, the fastest)."""
    loaded = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    loaded["score"]["classical"]["scorer"] = "piqe"
    return {"score": loaded["score"]}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def with_score(params: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(params)
    for dotted, value in changes.items():
        section = out["score"]
        *parents, key = dotted.split("__")
        for parent in parents:
            section = section[parent]
        section[key] = value
    return out


def test_default_run_follows_the_contract(project, params) -> None:
    assert params["score"]["backend"] == "classical"
    table = score.run("livec", params)
    regions = pd.read_csv(paths.regions_table("livec"), keep_default_na=False)
    scored = regions[regions["image"].isin(IMAGES)]
    written = pd.read_csv(paths.scores_table("livec"), keep_default_na=False)
    k = params["score"]["K"]
    assert list(written.columns) == [
        "image",
        "region",
        "prompt_id",
        "K",
        *(f"p{i}" for i in range(1, k + 1)),
        "argmax",
        "expected",
        "raw",
        "fallback",
        "level_mass",
        "levels_found",
        "error",
    ]
    scorers = params["score"]["classical"]["scorer"]
    scorers = scorers if isinstance(scorers, list) else [scorers]
    assert len(written) == len(table) == len(scored) * len(scorers)
    assert list(zip(written["image"], written["region"], strict=True)) == [
        key for key in zip(scored["image"], scored["region"], strict=True) for _ in scorers
    ]
    probs = written[[f"p{i}" for i in range(1, k + 1)]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert written["prompt_id"].tolist() == scorers * len(scored)
    assert (written["K"] == k).all() and not written["fallback"].any()
    assert written["argmax"].between(1, k).all()
    assert (written["raw"].astype(float) >= 0).all()
    summary = json.loads(paths.summary("scores", "livec").read_text())
    assert summary["images"] == len(IMAGES) + 2 and summary["images_scored"] == len(IMAGES)
    assert summary["regions_scored"] == len(scored) and summary["fallbacks"] == 0
    assert [s["image"] for s in summary["skipped"]] == ["broken.JPG", "gone.JPG"]


def test_global_region_is_the_whole_image(project, params) -> None:
    table = score.run("livec", params)
    first = table[(table["image"] == "1000.JPG") & (table["region"] == 0)].iloc[0]
    image = Image.fromarray(load_rgb(MIRROR / "livec" / "Images" / "1000.JPG"))
    whole = ClassicalScorer("piqe", 7).raw_score(image)
    assert float(first["raw"]) == pytest.approx(whole, rel=1e-6)


def test_crop_modes(project, params) -> None:
    bbox = score.run("livec", params).set_index(["image", "region"])
    masked = score.run("livec", with_score(params, crop="mask")).set_index(["image", "region"])
    whole = score.run("livec", with_score(params, crop="whole")).set_index(["image", "region"])
    assert (bbox.xs(0, level="region")["raw"] == masked.xs(0, level="region")["raw"]).all()
    assert (bbox["raw"] != masked["raw"]).sum() >= len(IMAGES)  # the disc masks differ
    for _, group in whole.groupby(level="image"):
        assert group["raw"].nunique() == 1


def test_resume_redoes_only_what_is_missing(project, params, monkeypatch) -> None:
    score.run("livec", params)
    reference = Path(paths.scores_table("livec")).read_bytes()
    Path(paths.stage_cache("score", "livec")).unlink()
    calls = {"n": 0}
    original = ClassicalScorer.measure

    def crash_after_two(self, crops):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return original(self, crops)

    monkeypatch.setattr(ClassicalScorer, "measure", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        score.run("livec", params)
    monkeypatch.setattr(ClassicalScorer, "measure", original)
    counted = {"n": 0}

    def counting(self, crops):
        counted["n"] += 1
        return original(self, crops)

    monkeypatch.setattr(ClassicalScorer, "measure", counting)
    score.run("livec", params)
    assert counted["n"] == len(IMAGES) - 2
    assert Path(paths.scores_table("livec")).read_bytes() == reference
    counted["n"] = 0
    score.run("livec", params)  # everything cached
    assert counted["n"] == 0
    score.run("livec", with_score(params, crop="mask"))  # other crops: measured again
    assert counted["n"] == len(IMAGES)


def test_levels_ablation_maps_cached_metric_values(project, params, monkeypatch) -> None:
    """A classical metric's raw value depends on neither K nor the prompt: a run with another K
    measures nothing and writes the table a run from an empty cache writes."""
    k5 = with_score(params, K=5, prompt="paper_word_k5")
    score.run("livec", params)  # K = 7
    measured = {"n": 0}
    original = ClassicalScorer.measure

    def counting(self, crops):
        measured["n"] += 1
        return original(self, crops)

    with monkeypatch.context() as patch:
        patch.setattr(ClassicalScorer, "measure", counting)
        table = score.run("livec", k5)
    assert measured["n"] == 0
    assert "p5" in table.columns and "p6" not in table.columns
    mapped = Path(paths.scores_table("livec")).read_bytes()
    Path(paths.stage_cache("score", "livec")).unlink()
    score.run("livec", k5)
    assert Path(paths.scores_table("livec")).read_bytes() == mapped


def test_new_anchors_map_cached_metric_values_again(project, params, monkeypatch) -> None:
    """The anchors only place a raw value on the levels: other anchors measure nothing and
    write the table a run from an empty cache writes with them."""
    before = score.run("livec", params)
    moved = dataclasses.replace(classical.SCORERS["piqe"], best=20.0, worst=60.0)
    monkeypatch.setitem(classical.SCORERS, "piqe", moved)
    measured = {"n": 0}
    original = ClassicalScorer.measure

    def counting(self, crops):
        measured["n"] += 1
        return original(self, crops)

    with monkeypatch.context() as patch:
        patch.setattr(ClassicalScorer, "measure", counting)
        remapped = score.run("livec", params)
    assert measured["n"] == 0
    assert not remapped["expected"].equals(before["expected"])
    assert remapped["raw"].equals(before["raw"])
    mapped = Path(paths.scores_table("livec")).read_bytes()
    Path(paths.stage_cache("score", "livec")).unlink()
    score.run("livec", params)
    assert Path(paths.scores_table("livec")).read_bytes() == mapped


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"K": 4}, "score.K"),
        ({"crop": "box"}, "score.crop"),
        ({"backend": "gpu"}, "score.backend"),
        ({"readout": "sample"}, "score.readout"),
        ({"prompt": "mine"}, "score.prompt"),
        ({"classical__scorer": "ssim"}, "score.classical.scorer"),
        ({"backend": "hf", "prompt": "paper_word_k5"}, "score.prompt"),
        ({"backend": "hf", "hf__model": "mplug-owl3-7b"}, "score.hf.trust_remote_code"),
        (
            {
                "backend": "hf",
                "hf__model": "mplug-owl3-7b",
                "hf__trust_remote_code": True,
                "hf__revision": "main",  # remote code at an unpinned revision is refused
            },
            "score.hf.revision",
        ),
        ({"backend": "openai", "openai__concurrency": 0}, "score.openai.concurrency"),
    ],
)
def test_bad_params_fail_first(project, params, change, param) -> None:
    Path(paths.regions_table("livec")).unlink()  # no work may start before the check
    with pytest.raises(ParamError, match=param.replace(".", r"\.")):
        score.run("livec", with_score(params, **change))


def test_missing_regions_table(project, params) -> None:
    Path(paths.regions_table("livec")).unlink()
    with pytest.raises(LabelError, match="run the segment stage first"):
        score.run("livec", params)


@pytest.mark.slow
def test_hf_backend_runs_the_stage_end_to_end(project, params) -> None:
    """Switching score.backend to hf with a tiny local model (random weights: mechanics)."""
    qwen = build_qwen25vl(project / "models" / "qwen")
    hf = {"model": str(qwen), "device": "cpu", "local_files_only": True, "batch_size": 4}
    chosen = with_score(
        params,
        backend="hf",
        prompt="paper_word_k7",
        readout="logits",
        **{f"hf__{k}": v for k, v in hf.items()},
    )
    table = score.run("livec", chosen)
    regions = pd.read_csv(paths.regions_table("livec"))
    assert len(table) == regions["image"].isin(IMAGES).sum()
    assert (table["prompt_id"] == "paper_word_k7").all() and not table["fallback"].any()
    probs = table[[f"p{i}" for i in range(1, 8)]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)

    idefics = build_idefics3(project / "models" / "idefics")
    generate = with_score(
        chosen, prompt="authors_word_k7", readout="generate", hf__model=str(idefics)
    )
    table = score.run("livec", generate)
    summary = json.loads(paths.summary("scores", "livec").read_text())
    # The tiny Idefics3 answers " 8", no level of K = 7: every crop is a counted fallback.
    assert summary["fallbacks"] == len(table) == summary["regions_scored"]
    assert (table["raw"] == " 8").all() and (table["argmax"] == 1).all()


def padding_per_batch(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(padding tokens, real tokens) of every batch the hf backend sends through its model, read
    from the attention mask of the processor's output."""
    from dogiqa.scoring.hf import AutoAdapter

    seen: list[tuple[int, int]] = []
    real = AutoAdapter.inputs

    def inputs(self: AutoAdapter, requests: Any) -> Any:
        batch = real(self, requests)
        mask = batch["attention_mask"]
        seen.append((int((mask == 0).sum()), int(mask.sum())))
        return batch

    monkeypatch.setattr(AutoAdapter, "inputs", inputs)
    return seen


@pytest.mark.slow
def test_hf_batches_crops_of_similar_token_counts_across_images(
    project, params, monkeypatch
) -> None:
    """With a look-ahead, the crops of several images are sorted by token count before they are
    batched: fewer, fuller batches, less padding, the same numbers (fp32) in the same rows."""
    qwen = build_qwen25vl(project / "models" / "qwen")
    hf = {"model": str(qwen), "device": "cpu", "local_files_only": True, "batch_size": 3}
    chosen = with_score(
        params, backend="hf", prompt="paper_word_k7", **{f"hf__{k}": v for k, v in hf.items()}
    )
    batches = padding_per_batch(monkeypatch)
    per_image = score.run("livec", with_score(chosen, hf__lookahead=1))
    alone = list(batches)
    batches.clear()
    grouped = score.run("livec", with_score(chosen, hf__lookahead=16))
    assert sum(real for _, real in batches) == sum(real for _, real in alone)
    assert len(batches) < len(alone)  # batches span images
    assert sum(pad for pad, _ in batches) < sum(pad for pad, _ in alone)
    assert grouped[["image", "region"]].equals(per_image[["image", "region"]])
    probs = [f"p{i}" for i in range(1, 8)]
    np.testing.assert_allclose(grouped[probs], per_image[probs], atol=1e-5)


class Killed(BaseException):
    """Stands for a kill: no error handler of the stage catches it."""


@pytest.mark.slow
def test_hf_batches_of_a_resumed_run_are_those_of_an_uninterrupted_one(
    project, params, monkeypatch
) -> None:
    """Look-ahead windows count from the run's first image and are cached whole, so the images
    a killed run left are batched, on resume, with the same neighbours as in one run."""
    from dogiqa.scoring.hf import AutoAdapter

    qwen = build_qwen25vl(project / "models" / "qwen")
    hf = {"model": str(qwen), "device": "cpu", "local_files_only": True, "batch_size": 2}
    chosen = with_score(
        params,
        backend="hf",
        prompt="paper_word_k7",
        hf__lookahead=2,
        **{f"hf__{k}": v for k, v in hf.items()},
    )
    batches: list[list[tuple[int, int]]] = []
    kill_at: list[int] = []
    real = AutoAdapter.inputs

    def inputs(self: AutoAdapter, requests: Any) -> Any:
        if kill_at and len(batches) == kill_at[0]:
            raise Killed
        batches.append([image.size for request in requests for image in request.images])
        return real(self, requests)

    monkeypatch.setattr(AutoAdapter, "inputs", inputs)
    once = score.run("livec", chosen)
    whole = list(batches)
    cache_file = paths.stage_cache("score", "livec")
    cache_file.unlink()
    batches.clear()
    kill_at.append(len(whole) - 1)  # during the last window of images with crops
    with pytest.raises(Killed):
        score.run("livec", chosen)
    kill_at.clear()
    batches.clear()
    resumed = score.run("livec", chosen)
    assert 0 < len(batches) < len(whole)  # the first window's images were cached
    assert batches == whole[len(whole) - len(batches) :]  # the same neighbours
    pd.testing.assert_frame_equal(resumed, once)


def edited(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Source file ``name`` (a path below src/) reads as if a line had been added to it."""
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        data = real(self)
        return data + b"\n# edited\n" if self.as_posix().endswith(f"src/{name}") else data

    monkeypatch.setattr(Path, "read_bytes", read_bytes)


@pytest.mark.parametrize("backend", ["hf", "openai"])
@pytest.mark.parametrize(
    ("name", "rescored"),
    [
        ("dogiqa/scoring/base.py", True),  # level readout, crop preparation, error policy
        ("dogiqa/crops.py", True),  # padding to the aspect limit
        ("dogiqa/prompts.py", True),  # the chat messages
        ("dogiqa/systems.py", True),  # the prompting system's requests and their reading
        ("dogiqa/scoring/classical.py", False),  # another backend
        ("dogiqa/config.py", False),  # params checks only
    ],
)
def test_mllm_cache_key_covers_the_code_the_backend_runs(
    params, monkeypatch, backend, name, rescored
) -> None:
    """Cached MLLM scores are keyed by the backend's module and every module of the package it
    imports, not by its module alone: a change in the shared scoring code rescores."""
    chosen = with_score(params, backend=backend, prompt="paper_word_k7")

    def fingerprint() -> str:
        return score.validate_params(chosen).fingerprints["paper_word_k7"]

    before = fingerprint()
    edited(monkeypatch, name)
    assert (fingerprint() != before) is rescored


def test_crop_errors_are_flagged_fallbacks_counted_in_the_summary(
    project, params, monkeypatch
) -> None:
    """A scorer whose model raised for some crops (dogiqa.scoring.CropErrors) scores them as
    flagged fallbacks carrying the error; the table and the summary count them."""
    from dogiqa.scoring import LevelScorer, ScorerBackend, ScorerUnit, error_scores, one_hot

    class Flaky(LevelScorer):
        K, name = 7, "piqe"

        def score(self, crops: list[Image.Image]) -> list[Any]:
            return [
                error_scores(7, "ValueError: refused") if c.width < 200 else one_hot(4, 7)
                for c in crops
            ]

    unit = ScorerUnit("piqe", {"flaky": True}, Flaky, LevelScores.from_json)
    flaky = ScorerBackend(check=lambda section: None, units=lambda section: [unit])
    monkeypatch.setattr(classical, "BACKEND", flaky)  # the registry's entry for "classical"
    table = score.run("livec", params)
    flagged = table["error"] != ""
    assert flagged.any() and not flagged.all()
    assert table.loc[flagged, "fallback"].all() and (table.loc[flagged, "argmax"] == 1).all()
    summary = json.loads(paths.summary("scores", "livec").read_text())
    assert summary["errors"] == int(flagged.sum()) == summary["fallbacks"]
    written = pd.read_csv(paths.scores_table("livec"), keep_default_na=False)
    assert (written.loc[flagged.to_numpy(), "error"] == "ValueError: refused").all()


def test_hf_batch_size_is_part_of_the_cache_fingerprint(params) -> None:
    """Padding a batch changes bf16 logits, so scores made with another batch size or another
    look-ahead (other batch neighbours) are not reused as if they were the same."""
    hf = {
        "model": "Qwen/Qwen2.5-VL-3B-Instruct",
        "revision": "a" * 40,
        "trust_remote_code": False,
        "dtype": "bfloat16",
        "device": "cpu",
        "batch_size": 8,
        "lookahead": 16,
        "max_pixels": 0,
        "min_side": 28,
        "local_files_only": True,
    }
    base = with_score(params, backend="hf", prompt="paper_word_k7", hf=hf)

    def fingerprint(settings: dict[str, Any]) -> str:
        return score.validate_params(settings).fingerprints["paper_word_k7"]

    assert fingerprint(with_score(base, hf__batch_size=1)) != fingerprint(base)
    assert fingerprint(with_score(base, hf__lookahead=1)) != fingerprint(base)  # neighbours
    assert fingerprint(with_score(base, hf__local_files_only=False)) == fingerprint(base)
