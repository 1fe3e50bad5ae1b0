"""This study's runs as the report notebooks read them: which runs there are, what each one
computes with, their outputs, and which printed cells a run may fill.

Like against like: a printed cell's ``reproduced`` value comes only from a run that computes
what the cell was computed with (:meth:`StudyRun.reproduces`): an MLLM scorer (the cell's model,
or one the run's profile states it stands in for), SAM 2 regions, every image, the cell's
standard, K and crop, and the cell's aggregation (one variant of the run). Every other run's
value for the same setting goes into a column of its own, ``this study: <run>``, with no delta
against the paper (:func:`cell_values`, :func:`add_run_columns`).

Each loader returns None when the run has not produced the file yet, so a notebook can say so
instead of failing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dogiqa import config, io, paths, profiles, runs, schema

MLLM_BACKENDS = ("hf", "openai")
"""Score backends that ask a multimodal LLM (the papers' scorer family)."""
PAPER_MODEL = "mplug-owl3-7b"
"""The model of the papers' Dog-IQA cells (registry name of mPLUG-Owl3-7B-240728)."""
MODEL_NAMES = {"mplug/mplug-owl3-7b-240728": PAPER_MODEL}
"""Other names of a registry model (hub ids, lower case), so that any of them matches."""
DOG_IQA_STANDARD = "word"
"""The standard of Dog-IQA's own rows (a classical scorer, which has none, stands beside these)."""
FLOAT_STANDARD = "float"
"""No standard, a free number (seed 001 Table 3 exp 1): a classical scorer's continuous score is
one too (variant ``global_float``)."""
CLASSICAL_STANDARDS = (DOG_IQA_STANDARD, FLOAT_STANDARD)


def study_params() -> dict[str, Any]:
    """params.yaml of the project."""
    return config.load_params(paths.params_file())


def configuration_label(params: Mapping[str, Any]) -> str:
    """A short description of a run's segmenter and scorer, read from its params."""
    segment = params.get("segment", {})
    score = params.get("score", {})
    seg = segment.get("backend", "?")
    if seg == "classical":
        seg = f"classical ({segment.get('classical', {}).get('method', '?')})"
    backend = score.get("backend", "?")
    sub = score.get(backend, {}) if isinstance(score.get(backend), dict) else {}
    scorer = sub.get("scorer") or sub.get("model") or backend
    return f"{seg} segmentation + {scorer} scoring, K={score.get('K', '?')}"


def model_name(name: str) -> str:
    """A model named by registry name or hub id, in one spelling."""
    return MODEL_NAMES.get(name.lower(), name.lower())


@dataclass(frozen=True)
class Setting:
    """What a run computes with, in the terms of the papers' cells."""

    family: str
    """``mllm`` or ``classical``."""
    model: str
    """The MLLM (:func:`model_name`), or the classical scorers."""
    standard: str | None
    """number, word or sentence (the prompt's); None for a classical scorer."""
    K: int
    crop: str
    segmenter: str
    sample: int
    """Images drawn per dataset (0 = every image)."""
    scorers: int
    """Members of the LLM-IQA ensemble (scorers or prompts averaged by ``llmiqa``)."""
    other_K: tuple[int, ...] = ()
    """Further K the run's variants exist for: a classical scorer's scores mapped again
    (``aggregate.classical_K``, prompt ids ``<scorer>_k<K>``)."""


def setting(params: Mapping[str, Any]) -> Setting:
    score, segment = params["score"], params["segment"]
    backend = score["backend"]
    standard: str | None = None
    if backend in MLLM_BACKENDS:
        family, model, scorers = "mllm", model_name(score[backend]["model"]), 1  # one prompt
        standard = str(score["prompt"]).split("_")[1]  # ids are <style>_<standard>_k<K>
    else:
        listed = score.get(backend, {}).get("scorer", backend)
        listed = listed if isinstance(listed, list) else [listed]
        family, model, scorers = "classical", ", ".join(map(str, listed)), len(listed)
    ensemble = params.get("aggregate", {}).get("ensemble", "all")
    other_k = params.get("aggregate", {}).get("classical_K", []) if family == "classical" else []
    return Setting(
        family=family,
        model=model,
        standard=standard,
        K=int(score["K"]),
        crop=score["crop"],
        segmenter=segment["backend"],
        sample=int(params["sample"]["size"]),
        scorers=scorers if ensemble == "all" else len(ensemble),
        other_K=tuple(int(k) for k in other_k if int(k) != int(score["K"])),
    )


@dataclass(frozen=True)
class Cell:
    """The configuration of a printed cell: Dog-IQA's (SAM 2 regions, every image) with its
    model, standard, K, crop and aggregation."""

    variant: str
    """The aggregation: a formula of ``dogiqa.aggregate.VARIANTS``."""
    crop: str | None = "bbox"
    """How regions are cut (bbox or mask); None when only the whole image is scored."""
    standard: str = DOG_IQA_STANDARD
    K: int = 7
    model: str = PAPER_MODEL
    ensemble: bool | None = None
    """LLM-IQA: True for an ensemble of several scorers, False for one; None: either."""


@dataclass(frozen=True)
class StudyRun:
    """One run of this study: its name, profile, datasets and params as the run sees them."""

    name: str
    profile: str
    datasets: tuple[str, ...]
    params: dict[str, Any] = field(compare=False, repr=False)
    substitutes: tuple[str, ...] = ()
    """Models the profile states its MLLM stands in for."""

    @property
    def setting(self) -> Setting:
        return setting(self.params)

    @property
    def column(self) -> str:
        """The column of this run's values in tables where it reproduces no cell."""
        return f"this study: {self.name}"

    @property
    def label(self) -> str:
        text = f"{self.name}: {configuration_label(self.params)}"
        if self.substitutes:
            text += f" (standing in for {', '.join(self.substitutes)})"
        return text

    def shares_setting(self, cell: Cell) -> bool:
        """True when the run computes the cell's setting in all that its scorer family has: K
        (a classical run also the K it maps its scores to again), crop, ensemble and the
        standard (a classical scorer has none: it sits beside Dog-IQA's own word-standard rows
        and beside the float-output row, whose free number its continuous score is, not beside
        rows that change the standard). Its aggregation is a variant that every run computes."""
        s = self.setting
        standards = (s.standard,) if s.family == "mllm" else CLASSICAL_STANDARDS
        return (
            cell.standard in standards
            and (s.K == cell.K or cell.K in s.other_K)
            and (cell.crop is None or s.crop == cell.crop)
            and (cell.ensemble is None or (s.scorers > 1) == cell.ensemble)
        )

    def reproduces(self, cell: Cell) -> bool:
        """True when the run computes what ``cell`` was computed with: like against like (an
        MLLM, the cell's model or a stated substitute, SAM 2 regions, every image, and the
        cell's setting)."""
        s = self.setting
        model = model_name(cell.model)
        return (
            self.shares_setting(cell)
            and s.family == "mllm"
            and (s.model == model or model in {model_name(m) for m in self.substitutes})
            and s.sample == 0
            and (cell.crop is None or s.segmenter == "sam2")
        )

    def metrics(self, dataset: str) -> dict[str, Any] | None:
        """Every variant's metrics (``reports/metrics/<run>/<ds>.json``), None before the run."""
        return load_metrics(dataset, self.name)

    def predictions(self, dataset: str) -> pd.DataFrame | None:
        return load_predictions(dataset, self.name)

    def regions(self, dataset: str) -> pd.DataFrame | None:
        """The run's regions table of a dataset (image, region, kind, count), None before it."""
        path = paths.regions_table(dataset, run=self.name)
        columns = ("image", "region", "kind", "count")
        return (
            io.read_table(schema.REGIONS, path, columns)[list(columns)] if path.exists() else None
        )

    def summary(self, kind: str, dataset: str) -> dict[str, Any] | None:
        """A stage's summary (kind: regions, scores, predictions), or None."""
        return load_summary(kind, dataset, self.name)

    def metrics_source(self, dataset: str) -> str:
        """The metrics file as the report tables cite it (relative to the project root)."""
        return paths.show(paths.metrics_file(dataset, run=self.name))

    def predictions_source(self, dataset: str) -> str:
        return paths.show(paths.predictions_table(dataset, run=self.name))


def study_runs(params: Mapping[str, Any] | None = None) -> list[StudyRun]:
    """The enabled runs of params.yaml (or of ``params``), in their order."""
    params = study_params() if params is None else params
    found = []
    for run in runs.enabled(params):
        seen = runs.run_params(params, run.name)
        stated = profiles.load_profiles()[run.profile].get("substitutes") or ()
        found.append(StudyRun(run.name, run.profile, run.datasets, seen, tuple(stated)))
    return found


def main_readout(report: Mapping[str, Any]) -> str:
    """The readout of a metrics report's main variant (``paper:argmax`` -> ``argmax``)."""
    return report["main"].split(":")[1].split("@")[0]


def _cell_result(
    run: StudyRun, dataset: str, cell: Cell, loaded: dict[tuple[str, str], Any]
) -> tuple[str, dict[str, Any]] | None:
    """The run's variant and metrics for ``cell`` when the run shares the cell's setting and
    has produced them; ``loaded`` keeps the metrics files read."""
    if dataset not in run.datasets or not run.shares_setting(cell):
        return None
    if (run.name, dataset) not in loaded:
        loaded[run.name, dataset] = run.metrics(dataset)
    report = loaded[run.name, dataset]
    if report is None:
        return None
    variant = f"{cell.variant}:{main_readout(report)}"
    if cell.K != run.setting.K:  # the main scorer mapped again to the cell's K
        main_prompt = (run.summary("predictions", dataset) or {}).get("prompt_id", "")
        variant += f"@{main_prompt}_k{cell.K}"
    result = report["variants"].get(variant)
    return None if result is None else (variant, result)


def cell_values(
    study: Sequence[StudyRun],
    wanted: Iterable[tuple[str, str, Cell]],
    metrics: Sequence[str] = ("srcc", "plcc"),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Values of the runs for printed cells ``(label, dataset, cell)``.

    Returns (reproduced, own): ``reproduced`` has label, dataset, metric, configuration,
    reproduced, source, from the first run that reproduces the cell; ``own`` has label,
    dataset, metric and one ``this study: <run>`` column per other run that shares the cell's
    setting (:meth:`StudyRun.shares_setting`).
    """
    reproduced: list[dict[str, Any]] = []
    own: dict[tuple[str, str, str], dict[str, Any]] = {}
    loaded: dict[tuple[str, str], Any] = {}
    for label, dataset, cell in wanted:
        found = [(run, hit) for run in study if (hit := _cell_result(run, dataset, cell, loaded))]
        first = next((run for run, _ in found if run.reproduces(cell)), None)
        for run, (variant, result) in found:
            for metric in metrics:
                if run is first:
                    source = f"{run.metrics_source(dataset)} [{variant}; n={result['n']}]"
                    reproduced.append(
                        {
                            "label": label,
                            "dataset": dataset,
                            "metric": metric,
                            "configuration": run.label,
                            "reproduced": result[metric],
                            "source": source,
                        }
                    )
                else:
                    own.setdefault((label, dataset, metric), {})[run.column] = result[metric]
    reproduced_frame = pd.DataFrame(
        reproduced,
        columns=["label", "dataset", "metric", "configuration", "reproduced", "source"],
    )
    own_frame = pd.DataFrame(
        [{"label": k[0], "dataset": k[1], "metric": k[2], **v} for k, v in own.items()],
        columns=["label", "dataset", "metric", *[r.column for r in study]],
    ).dropna(axis=1, how="all")
    return reproduced_frame, own_frame


def add_run_columns(table: pd.DataFrame, own: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``table`` with the ``this study: <run>`` columns of ``own`` (matched on ``keys``) after
    its other columns: runs that reproduce no cell, shown beside it, never with a delta."""
    columns = [c for c in own.columns if c.startswith("this study: ")]
    if not columns:
        return table
    return table.merge(own[[*keys, *columns]], on=keys, how="left")


# --- one run's files, by name (the default run unless named) --------------------------------


def load_metrics(dataset: str, run: str = paths.DEFAULT_RUN) -> dict[str, Any] | None:
    """A run's metrics of a dataset (``reports/metrics/<run>/<ds>.json``), None before the run."""
    path = paths.metrics_file(dataset, run=run)
    return io.read_json(path, "metrics") if path.exists() else None


def load_predictions(dataset: str, run: str = paths.DEFAULT_RUN) -> pd.DataFrame | None:
    """A run's predictions table of a dataset, None before the run."""
    path = paths.predictions_table(dataset, run=run)
    return io.read_table(schema.PREDICTIONS, path) if path.exists() else None


def load_summary(kind: str, dataset: str, run: str = paths.DEFAULT_RUN) -> dict[str, Any] | None:
    """A stage's summary of a dataset in a run (kind: regions, scores, predictions), or None."""
    path = paths.summary(kind, dataset, run=run)
    return io.read_json(path, f"{kind} summary") if path.exists() else None
