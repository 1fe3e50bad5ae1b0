"""The evaluate_external stage: metrics of the cached outputs of other models, computed once.

The external predictions (``dogiqa.external``: the Dog-IQA authors' whole-image LIVE Challenge
scores, Q-Bench's logits of 15 MLLMs on five datasets, pyiqa's predictions on LIVE Challenge and
SPAQ) never change with this study's params, so their metrics and bootstrap intervals are
computed here, once, and the report notebooks read them from one tidy table:

``reports/tables/external_metrics.csv`` (and its Markdown twin), one row per
(source, model, dataset, image set, temperature) with SRCC, PLCC, PLCC after the logistic fit,
KRCC and the percentile bootstrap intervals of SRCC and PLCC (params ``evaluate``, the same as
for this study's own predictions).

Q-Bench rows come at one temperature, 100: Q-Bench's evaluation protocol (its eval.ipynb divides
both logits by 100 before the softmax; the values its leaderboard prints reproduce only so), used
by every report that shows a Q-Bench score (Table 6's MLLM choice in notebook 03, Figure 4 in
notebook 04). Q-Bench rows carry no bootstrap interval (``bootstrap_samples`` 0): the reports
set them against the leaderboard's point values, and intervals for 75 files of up to 11k images
each would triple the stage's time.

The CSV keeps full float precision, so that report tables computed from it are identical to
tables computed from the predictions themselves.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from dogiqa import evaluate, external, io, metrics, paths, schema
from dogiqa.errors import DogIQAError
from dogiqa.evaluate import EvaluateParams

log = logging.getLogger(__name__)

NAME = "external_metrics"
"""The table's name: ``reports/tables/external_metrics.csv`` and ``.md``."""

COLUMNS = [
    "source",
    "model",
    "display_name",
    "dataset",
    "images",
    "temperature",
    "labels",
    "n",
    "missing",
    "extra",
    "duplicates_dropped",
    "srcc",
    "plcc",
    "plcc_logistic",
    "krcc",
    "srcc_ci_low",
    "srcc_ci_high",
    "plcc_ci_low",
    "plcc_ci_high",
    "bootstrap_samples",
    "file",
    "reference",
    "reader_note",
    "metric_note",
]
"""``images``: ``all`` (every labelled image) or ``test`` (LIVE Challenge without its 7 training
images); ``labels``: label rows in that image set; ``n``: those with a prediction (the pairs used);
``missing``: those without; ``extra``: predictions in the file without a label row;
``duplicates_dropped``: identical repeated entries of the file; ``file``: the local file;
``reference``: where it was published; ``reader_note``/``metric_note``: what the reader or the
metrics noted (other logits read, logistic fit not converged, ...)."""

MARKDOWN_COLUMNS = [
    "source",
    "display_name",
    "dataset",
    "images",
    "temperature",
    "n",
    "srcc",
    "srcc_ci_low",
    "srcc_ci_high",
    "plcc",
    "plcc_ci_low",
    "plcc_ci_high",
    "plcc_logistic",
    "krcc",
]

ALL_IMAGES, TEST_IMAGES = "all", "test"
AUTHORS_MODEL = ("dogiqa_authors", "mPLUG-Owl3")
QBENCH_PROTOCOL_TEMPERATURE = external.QBENCH_TEMPERATURE
"""The one temperature of every Q-Bench score in this study (see the module's docstring)."""


@dataclass(frozen=True)
class Task:
    """One external file to evaluate."""

    source: str
    model: str
    dataset: str
    labels: pd.DataFrame


def validate_params(params: Mapping[str, Any]) -> EvaluateParams:
    """The ``evaluate`` section: bootstrap samples, seed, confidence, logistic."""
    return evaluate.validate_params(params)


def _row(
    task: Task,
    name: str,
    joined: pd.DataFrame,
    extra: int,
    scores: external.ExternalScores,
    path: Path,
    p: EvaluateParams,
    **fields: Any,
) -> dict[str, Any]:
    """Metrics of ``joined`` (image, mos, score; score NaN where the file has none)."""
    result = metrics.evaluate(
        joined.score.to_numpy(float),
        joined.mos.to_numpy(float),
        bootstrap=p.bootstrap,
        seed=p.seed,
        logistic=p.logistic,
        level=p.confidence,
    )
    srcc_ci = result["srcc_ci"] or [None, None]
    plcc_ci = result["plcc_ci"] or [None, None]
    return {
        "source": task.source,
        "model": task.model,
        "display_name": name,
        "dataset": task.dataset,
        "images": ALL_IMAGES,
        "temperature": None,
        "labels": len(joined),
        "n": result["n"],
        "missing": result["missing"],
        "extra": extra,
        "duplicates_dropped": scores.duplicates,
        **{m: result[m] for m in ("srcc", "plcc", "plcc_logistic", "krcc")},
        "srcc_ci_low": srcc_ci[0],
        "srcc_ci_high": srcc_ci[1],
        "plcc_ci_low": plcc_ci[0],
        "plcc_ci_high": plcc_ci[1],
        "bootstrap_samples": p.bootstrap,
        "file": paths.show(path),
        "reference": scores.source,
        "reader_note": "; ".join(scores.notes),
        "metric_note": result["note"],
        **fields,
    }


def _authors_rows(task: Task, folder: Path, p: EvaluateParams) -> list[dict[str, Any]]:
    """All labelled LIVE Challenge images (the authors' evaluation) and the 1162 test images."""
    scores = external.read_authors_livec(folder)
    joined, counts = external.match_labels(scores.frame, task.labels)
    test = joined[~joined.image.isin(external.LIVEC_TRAINING)]
    path = folder / external.AUTHORS_LIVEC
    name, extra = AUTHORS_MODEL[1], counts["extra"]
    test_set = {"images": TEST_IMAGES}
    return [
        _row(task, name, joined, extra, scores, path, p),
        _row(task, name, test, extra, scores, path, p, **test_set),
    ]


def _qbench_rows(task: Task, folder: Path, p: EvaluateParams) -> list[dict[str, Any]]:
    """Point values at Q-Bench's temperature (no intervals, see above)."""
    scores = external.read_qbench(task.model, task.dataset, folder)
    path = (
        folder / external.QBENCH_DIR / task.model / f"{external.QBENCH_DATASETS[task.dataset]}.json"
    )
    name = external.QBENCH_MODELS.get(task.model, task.model)
    joined, counts = external.match_labels(scores.frame, task.labels)
    point = EvaluateParams(0, p.seed, p.confidence, p.logistic)
    at = {"temperature": QBENCH_PROTOCOL_TEMPERATURE}
    return [_row(task, name, joined, counts["extra"], scores, path, point, **at)]


def _pyiqa_rows(task: Task, folder: Path, p: EvaluateParams) -> list[dict[str, Any]]:
    """The files are in label order without names; the reader names the rows from the labels."""
    scores = external.read_pyiqa(task.dataset, task.model, folder, labels=task.labels)
    joined, counts = external.match_labels(scores.frame, task.labels)
    path = folder / external.PYIQA_DIR / external.PYIQA_DATASETS[task.dataset] / f"{task.model}.csv"
    name = external.PYIQA_METRICS[task.model]
    return [_row(task, name, joined, counts["extra"], scores, path, p)]


READERS = {"authors": _authors_rows, "qbench": _qbench_rows, "pyiqa": _pyiqa_rows}


def evaluate_file(task: Task, folder: Path, p: EvaluateParams) -> list[dict[str, Any]]:
    """The table rows of one external file."""
    return READERS[task.source](task, folder, p)


def _evaluate_job(job: tuple[Task, Path, EvaluateParams]) -> list[dict[str, Any]]:
    return evaluate_file(*job)


def load_labels(datasets: list[str]) -> dict[str, pd.DataFrame]:
    """The labels tables present (image, mos, in label-file order); absent ones are logged."""
    labels = {}
    for key in dict.fromkeys(datasets):
        path = paths.labels_table(key)
        if not path.exists():
            log.warning("%s not found: the external rows of %s are left out", path, key)
            continue
        table = io.read_table(schema.LABELS, path, ("image", "mos"))
        labels[key] = table.loc[:, ["image", "mos"]]
    return labels


def tasks(folder: Path) -> list[Task]:
    """Every external file to evaluate, in the order of the table."""
    wanted = ["livec", *external.QBENCH_DATASETS, *external.PYIQA_DATASETS]
    labels = load_labels(wanted)
    out = []
    if "livec" in labels:
        out.append(Task("authors", AUTHORS_MODEL[0], "livec", labels["livec"]))
    for model in external.qbench_models(folder):
        for key in external.QBENCH_DATASETS:
            if key in labels:
                out.append(Task("qbench", model, key, labels[key]))
    for metric in external.PYIQA_METRICS:
        for key in external.PYIQA_DATASETS:
            if key in labels:
                out.append(Task("pyiqa", metric, key, labels[key]))
    return out


def compute(folder: Path, p: EvaluateParams, workers: int | None = None) -> pd.DataFrame:
    """The metrics table of every external file in ``folder`` (files in parallel processes)."""
    todo = tasks(folder)
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    jobs = [(task, folder, p) for task in todo]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(
            tqdm(pool.map(_evaluate_job, jobs), total=len(jobs), desc="external", unit="file")
        )
    rows = [row for part in results for row in part]
    return pd.DataFrame(rows, columns=COLUMNS)


def write(table: pd.DataFrame) -> None:
    """CSV at full precision (%.17g round-trips every float) and a 3-decimal Markdown twin."""
    io.write_csv_atomic(paths.table(NAME), table, float_format="%.17g")
    part = table[MARKDOWN_COLUMNS]
    cells = part.astype(object).where(part.notna(), None)
    markdown = cells.to_markdown(index=False, floatfmt=".3f", missingval="")
    io.write_text_atomic(paths.table(NAME, ".md"), markdown + "\n")


def load(path: str | Path | None = None) -> pd.DataFrame:
    """The table written by this stage, as the notebooks read it."""
    path = Path(path) if path is not None else paths.table(NAME)
    if not path.exists():
        raise DogIQAError(f"{paths.show(path)} not found (run: python -m dogiqa evaluate-external)")
    notes = {"reader_note": "str", "metric_note": "str"}
    table = pd.read_csv(path, dtype=notes, keep_default_na=False, na_values=[""])
    return table.fillna(dict.fromkeys(notes, ""))


def select(
    table: pd.DataFrame,
    source: str,
    model: str,
    dataset: str,
    images: str = ALL_IMAGES,
    temperature: float | None = None,
) -> pd.Series:
    """The one row of ``table`` for these keys (``temperature`` only for Q-Bench)."""
    rows = table[
        (table.source == source)
        & (table.model == model)
        & (table.dataset == dataset)
        & (table.images == images)
    ]
    if temperature is not None:
        rows = rows[rows.temperature == temperature]
    if len(rows) != 1:
        raise DogIQAError(
            f"external metrics: {len(rows)} rows for {source}/{model}/{dataset}/{images}"
            + (f" at temperature {temperature:g}" if temperature is not None else "")
        )
    return rows.iloc[0]


def run(params: Mapping[str, Any]) -> pd.DataFrame:
    """Evaluate every external prediction file; write ``reports/tables/external_metrics.csv``."""
    p = validate_params(params)
    table = compute(paths.external_dir(), p)
    write(table)
    log.info(
        "evaluate-external: %d rows (%s) -> %s",
        len(table),
        ", ".join(f"{k} {v}" for k, v in table.source.value_counts(sort=False).items()),
        paths.show(paths.table(NAME)),
    )
    return table
