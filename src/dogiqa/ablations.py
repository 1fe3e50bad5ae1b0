"""The papers' ablation tables mapped to this study's aggregation variants (notebook 03).

Each printed row is a :class:`dogiqa.results.Cell`: the variant of ``dogiqa.aggregate.VARIANTS``
that computes it and the setting (standard, K, crop, ensemble) a run needs to fill it. Rows that
no run here can compute have a reason instead (:data:`REASONS`), and the s_seg scale comparison
(:func:`sseg_scale_table`) shows what the definition of c_max does to each cell that adds s_seg.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from dogiqa import results
from dogiqa.results import Cell

TABLE4_CELLS: dict[str, Cell] = {  # seed 000 Table 4: mPLUG-Owl3, K = 7, 7 words unless stated
    "1": Cell("local_area_sseg", standard="number"),
    "2": Cell("local_area_sseg", standard="sentence"),
    "3": Cell("local_mean_sseg"),
    "4": Cell("local_area_sseg", crop="mask"),
    "5": Cell("global_only", crop=None),
    "6": Cell("local_only_area"),
    "7": Cell("local_area_sseg"),
    "8": Cell("paper"),
}

LLMIQA_TABLE3_CELLS: dict[str, Cell] = {  # seed 001 Table 3: mPLUG-Owl3, K = 7
    "1": Cell("global_float", crop=None, standard=results.FLOAT_STANDARD),
    "2": Cell("local_only_area", standard="number"),
    "3": Cell("local_only_area", standard="sentence"),
    "4": Cell("local_mean"),
    "5": Cell("local_only_area", crop="mask"),
    "6": Cell("global_only", crop=None),
    "7": Cell("local_only_area"),
    "8": Cell("llmiqa_one"),
    "9": Cell("llmiqa", ensemble=True),
}

TABLE5_VARIANT = "local_area_sseg"
"""Table 5 (K): its printed K = 7 row on SPAQ (0.885 / 0.875) equals Table 4 exp 7 (regions and
s_seg, no whole image), not exp 8 (0.902 / 0.897, the full formula); on AGIQA-3k it matches
neither (0.800 / 0.779 against exp 7's 0.809 / 0.797 and exp 8's 0.823 / 0.797). The rows are
mapped to what the SPAQ numbers say: exp 7's aggregation at each K."""
TABLE5_CELLS: dict[str, Cell] = {str(k): Cell(TABLE5_VARIANT, K=k) for k in (3, 5, 7, 9)}

LLMIQA_TABLE5_CELLS: dict[str, Cell] = {  # seed 001 Table 5: segmentation settings, exp 8's formula
    "No Complement": Cell("llmiqa_one_no_complement"),
    "Our Setting": Cell("llmiqa_one"),
}

NUMBER = (
    "number standard: needs a run in the paper's configuration scoring with a number prompt "
    "(paper_number_k7); a classical scorer has no prompt, so no standard to change"
)
SENTENCE = (
    "sentence standard: needs a run in the paper's configuration scoring with a sentence prompt "
    "(paper_sentence_k7); a classical scorer has no prompt, so no standard to change"
)
MASK = (
    "masked crops: needs a run whose profile sets score.crop: mask (a score pass of its own); "
    "not run for the classical scorers, which would read the zeroed pixels as image content"
)
REASONS: dict[str, dict[str, str]] = {
    "4": {"1": NUMBER, "2": SENTENCE, "4": MASK},
    "LLM-IQA 3": {
        "1": "float output: needs a run in the paper's configuration whose prompt asks for a free "
        "number without a standard (the study has no such prompt: its number prompts ask for a "
        "level in [1..K]); a classical scorer's continuous score sits in its own column",
        "2": NUMBER,
        "3": SENTENCE,
        "5": MASK,
        "9": "an ensemble of several MLLMs: one run has one MLLM (aggregate.ensemble averages "
        "the scorers of one run)",
    },
    "LLM-IQA 5": {
        "Default (SAM2 defaults)": "SAM 2's default automatic-mask-generator settings: needs a "
        "sam2 run with them (SAM 2 weights, GPU)",
        "SAM Tiny": "the SAM 2 Hiera-Tiny checkpoint: needs a sam2 run with it (weights, GPU)",
    },
}

SSEG_CELLS: tuple[tuple[str, str, str, str, str], ...] = (
    # table, row, variant with s_seg, the same at the paper's scale, the same without s_seg
    ("4", "3", "local_mean_sseg", "local_mean_sseg_scaled", "local_mean"),
    ("4", "7", "local_area_sseg", "local_area_sseg_scaled", "local_only_area"),
    ("4", "8", "paper", "paper_scaled", "no_sseg"),
    *(
        ("5", str(k), "local_area_sseg", "local_area_sseg_scaled", "local_only_area")
        for k in (3, 5, 7, 9)
    ),
)
"""The cells that add s_seg (Table 4 exps 3, 7, 8; Table 5, every K) with their two other
readings."""
SSEG_READINGS = ("s_seg, c_max over the dataset", "s_seg at the paper's scale", "without s_seg")
"""Column names of the three readings of each s_seg cell, in the order of SSEG_CELLS."""


def _metrics_of(run: results.StudyRun, dataset: str, variant: str, k: int) -> dict[str, Any] | None:
    report = run.metrics(dataset)
    if report is None:
        return None
    name = f"{variant}:{results.main_readout(report)}"
    if k != run.setting.K:
        main_prompt = (run.summary("predictions", dataset) or {}).get("prompt_id", "")
        name += f"@{main_prompt}_k{k}"
    return report["variants"].get(name)


def sseg_scale_table(
    study: Sequence[results.StudyRun], metrics: Sequence[str] = ("srcc", "plcc")
) -> pd.DataFrame:
    """Per run, dataset and s_seg cell: the mean region count over the dataset, c_max over the
    run's images and over the dataset, c_max at the paper's scale, the mean s_seg of each, and
    the cell's metrics with s_seg (dataset c_max), at the paper's scale and without s_seg. Rows
    only for cells the run computes (its K, crop and standard)."""
    rows = []
    for run in study:
        for dataset in run.datasets:
            facts = run.summary("predictions", dataset) or {}
            if "c_max" not in facts:
                continue
            for table, label, *variants in SSEG_CELLS:
                k = int(label) if table == "5" else 7
                if not run.shares_setting(Cell(variants[0], K=k)):
                    continue
                found = {
                    reading: _metrics_of(run, dataset, variant, k)
                    for reading, variant in zip(SSEG_READINGS, variants, strict=True)
                }
                if any(v is None for v in found.values()):
                    continue
                mean_count = facts.get("mean_count", float("nan"))
                for metric in metrics:
                    rows.append(
                        {
                            "run": run.name,
                            "dataset": dataset,
                            "table": table,
                            "row": label,
                            "K": k,
                            "metric": metric,
                            "mean_count": mean_count,
                            "c_max_sample": facts.get("c_max_sample"),
                            "c_max": facts["c_max"],
                            "c_max_scaled": facts.get("c_max_scaled"),
                            "mean_s_seg": mean_count * k / facts["c_max"],
                            "mean_s_seg_scaled": mean_count * k / facts.get("c_max_scaled", 1),
                            **{r: v[metric] for r, v in found.items()},
                        }
                    )
    return pd.DataFrame(rows)
