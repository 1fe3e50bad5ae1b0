"""Where each stage reads and writes, anchored on the project root (the folder with dvc.yaml).

The layout below is relative to the project root (the form dvc.yaml and the reports show). The
functions return absolute paths under :func:`root`, found from the working directory upwards, so
a notebook opened from ``notebooks/`` reads the same files as the pipeline; :func:`show` turns a
path back into its root-relative form for tables and messages. Every per-dataset stage output
comes from :func:`stage_file`. ``base`` (a project root) overrides the search, for tests.

Runs (``runs`` of params.yaml, ``dogiqa.runs``) are computed side by side: each run's outputs
lie in a folder of its own below each stage's folder (``data/regions/<run>/<ds>.csv``,
``reports/metrics/<run>/<ds>.json``, its caches in ``data/cache/<stage>/<run>/``), so one run
never writes where another reads. Labels, raw inputs and the sample selections are shared by
every run.
"""

from __future__ import annotations

from pathlib import Path

MARKER = "dvc.yaml"
"""The file that marks the project root."""

DATA = Path("data")
RAW = DATA / "raw"
LABELS = DATA / "labels"
REGIONS = DATA / "regions"
SCORES = DATA / "scores"
PREDICTIONS = DATA / "predictions"
SELECTIONS = DATA / "selections"
COMPARISONS = DATA / "comparisons"
CACHE = DATA / "cache"
REPORTS = Path("reports")
TABLES = REPORTS / "tables"
FIGURES = REPORTS / "figures"
METRICS = REPORTS / "metrics"
COMPARISON_METRICS = REPORTS / "comparisons"
PLOTS = REPORTS / "plots"
BENCH = REPORTS / "bench"
NOTEBOOKS = Path("notebooks")
PARAMS = Path("params.yaml")

DEFAULT_RUN = "cpu"
"""The run of the default CPU configuration (``runs.cpu`` of params.yaml): the run a stage reads
and writes when none is named."""

STAGE_DIRS = {
    "labels": LABELS,
    "regions": REGIONS,
    "scores": SCORES,
    "predictions": PREDICTIONS,
    "selections": SELECTIONS,
    "comparisons": COMPARISONS,
    "metrics": METRICS,
    "comparison_metrics": COMPARISON_METRICS,
    "plots": PLOTS,
}
"""Per-dataset outputs: the stage table (or report) kind -> its folder."""
SHARED_KINDS = ("labels", "selections")
"""Kinds every run shares (the selections are drawn from labels and other models' cached
outputs, not from a run's); the others have one folder per run below their folder."""


def root() -> Path:
    """The nearest folder at or above the working directory that holds dvc.yaml (else the
    working directory itself)."""
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / MARKER).is_file():
            return folder
    return here


def at(relative: str | Path, base: Path | None = None) -> Path:
    """``relative`` (a layout path, or a path stored in a table) under the project root."""
    return (base if base is not None else root()) / relative


def show(path: str | Path) -> str:
    """``path`` relative to the project root (POSIX form) when it lies below it."""
    path = Path(path)
    if path.is_absolute() and path.is_relative_to(root()):
        path = path.relative_to(root())
    return path.as_posix()


def stage_file(
    kind: str,
    dataset: str,
    suffix: str = ".csv",
    base: Path | None = None,
    *,
    run: str = DEFAULT_RUN,
) -> Path:
    """``<folder of kind>/<run>/<dataset><suffix>`` (``<folder>/<dataset><suffix>`` for a kind
    every run shares): every per-dataset stage output path."""
    folder = STAGE_DIRS[kind]
    if kind not in SHARED_KINDS:
        folder = folder / run
    return at(folder / f"{dataset}{suffix}", base)


def summary(kind: str, dataset: str, base: Path | None = None, *, run: str = DEFAULT_RUN) -> Path:
    """The JSON summary a stage writes beside its table (labels, regions, scores, predictions)."""
    return stage_file(kind, dataset, ".summary.json", base, run=run)


def labels_table(dataset: str, base: Path | None = None) -> Path:
    return stage_file("labels", dataset, base=base)


def regions_table(dataset: str, base: Path | None = None, *, run: str = DEFAULT_RUN) -> Path:
    return stage_file("regions", dataset, base=base, run=run)


def region_counts(dataset: str, base: Path | None = None, *, run: str = DEFAULT_RUN) -> Path:
    """Region count c per image of the whole dataset (the count_regions stage)."""
    return stage_file("regions", dataset, ".counts.csv", base, run=run)


def region_counts_summary(
    dataset: str, base: Path | None = None, *, run: str = DEFAULT_RUN
) -> Path:
    """The count_regions stage's summary (counted images, c_max and mean count over them)."""
    return stage_file("regions", dataset, ".counts.summary.json", base, run=run)


def scores_table(dataset: str, base: Path | None = None, *, run: str = DEFAULT_RUN) -> Path:
    return stage_file("scores", dataset, base=base, run=run)


def predictions_table(dataset: str, base: Path | None = None, *, run: str = DEFAULT_RUN) -> Path:
    return stage_file("predictions", dataset, base=base, run=run)


def metrics_file(dataset: str, base: Path | None = None, *, run: str = DEFAULT_RUN) -> Path:
    """Every variant's metrics (``reports/metrics/<run>/<ds>.json``), which the notebooks read."""
    return stage_file("metrics", dataset, ".json", base, run=run)


def headline_file(dataset: str, base: Path | None = None, *, run: str = DEFAULT_RUN) -> Path:
    """The main variant's figures (``<ds>.headline.json`` beside the metrics): the DVC metric."""
    return stage_file("metrics", dataset, ".headline.json", base, run=run)


def plot_file(dataset: str, base: Path | None = None, *, run: str = DEFAULT_RUN) -> Path:
    return stage_file("plots", dataset, ".csv", base, run=run)


def comparisons_table(dataset: str, base: Path | None = None, *, run: str = DEFAULT_RUN) -> Path:
    """The compare stage's table (``data/comparisons/<run>/<ds>.csv``)."""
    return stage_file("comparisons", dataset, base=base, run=run)


def comparison_predictions(
    dataset: str, base: Path | None = None, *, run: str = DEFAULT_RUN
) -> Path:
    """The rank stage's predictions (``data/comparisons/<run>/<ds>.predictions.csv``)."""
    return stage_file("comparisons", dataset, ".predictions.csv", base, run=run)


def comparison_metrics(dataset: str, base: Path | None = None, *, run: str = DEFAULT_RUN) -> Path:
    """The rank stage's metrics (``reports/comparisons/<run>/<ds>.json``)."""
    return stage_file("comparison_metrics", dataset, ".json", base, run=run)


def raw_dir(dataset: str, base: Path | None = None) -> Path:
    return at(RAW / dataset, base)


def external_dir(base: Path | None = None) -> Path:
    """The cached outputs of other models (download_external)."""
    return at(RAW / "external", base)


def table(name: str, suffix: str = ".csv", base: Path | None = None) -> Path:
    """A report table, ``reports/tables/<name><suffix>``."""
    return at(TABLES / f"{name}{suffix}", base)


def figures(*parts: str, base: Path | None = None) -> Path:
    """``reports/figures`` or a file or folder below it."""
    return at(FIGURES.joinpath(*parts), base)


def stage_cache(stage: str, name: str, base: Path | None = None, *, run: str = DEFAULT_RUN) -> Path:
    """A long stage's per-image cache, ``data/cache/<stage>/<run>/<name>.jsonl``."""
    return at(CACHE / stage / run / f"{name}.jsonl", base)


def params_file(base: Path | None = None) -> Path:
    return at(PARAMS, base)


def notebook(name: str, base: Path | None = None) -> Path:
    """The source notebook ``notebooks/<name>.ipynb``."""
    return at(NOTEBOOKS / f"{name}.ipynb", base)


def report_notebook(name: str, base: Path | None = None) -> Path:
    """The executed notebook ``reports/<name>.ipynb``."""
    return at(REPORTS / f"{name}.ipynb", base)
