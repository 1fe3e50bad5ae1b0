"""Download stage: fetch a dataset's files, verify their checksums, and normalise its labels.

Sources, in order: files already in ``data/raw/<ds>`` whose checksum matches (nothing to do); a
local mirror folder (``download.mirror`` or ``$DOGIQA_MIRROR``) when it exists; the official URL
named in :mod:`dogiqa.registry`. Whatever the source, a file whose SHA-256 differs from the
registry's is refused, and archives are extracted only when no member would land outside the
target folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import requests
from tqdm import tqdm

from dogiqa import paths, runs, schema
from dogiqa.config import get_choice, get_list, get_str, section
from dogiqa.errors import ChecksumError, DogIQAError, ParamError, UnsafeArchiveError
from dogiqa.io import atomic_path, write_json_atomic, write_table
from dogiqa.labels import read_labels
from dogiqa.registry import DATASETS, Dataset, Resource

log = logging.getLogger(__name__)

MIRROR_ENV = "DOGIQA_MIRROR"
MANIFESTS = Path(__file__).parent / "manifests"
CHUNK = 1 << 20


@dataclass(frozen=True)
class DownloadConfig:
    datasets: list[str]
    pipeline_datasets: list[str]
    """The datasets whose images an enabled run processes (``dogiqa.runs``)."""
    mirror: Path | None
    image_sets: dict[str, str]
    """Dataset -> the image set whose labels it keeps (``download.<key>_images``, else all)."""


def validate_params(params: dict[str, Any]) -> DownloadConfig:
    sec = section(params, "download")
    datasets = get_list(sec, "download", "datasets")
    unknown = [key for key in datasets if key not in DATASETS]
    if unknown:
        raise ParamError(
            "download.datasets", f"unknown dataset {unknown[0]!r}; known: {sorted(DATASETS)}"
        )
    pipeline = runs.image_datasets(params)
    mirror_value = os.environ.get(MIRROR_ENV) or get_str(sec, "download", "mirror")
    return DownloadConfig(
        datasets=datasets,
        pipeline_datasets=pipeline,
        mirror=paths.at(mirror_value) if mirror_value else None,
        image_sets={key: image_set(sec, spec) for key, spec in DATASETS.items()},
    )


def image_set(sec: dict[str, Any], spec: Dataset) -> str:
    """``download.<key>_images`` (e.g. ``livec_images: test``) where params set it, else all."""
    name = f"{spec.key}_images"
    if name not in sec:
        return "all"
    return get_choice(sec, "download", name, ("all", *spec.image_sets))


# --- checksums -------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, expected: str | None, what: str) -> None:
    """Raise ``ChecksumError`` (and delete ``path``) when its SHA-256 is not ``expected``."""
    if expected is None:
        return
    actual = sha256_of(path)
    if actual != expected:
        path.unlink(missing_ok=True)
        raise ChecksumError(
            f"{what}: checksum mismatch, refused (expected sha256 {expected[:12]}..., "
            f"got {actual[:12]}...)"
        )


def read_manifest(name: str) -> dict[str, str]:
    """Per-file SHA-256 values of an image folder (sha256sum format, relative paths)."""
    entries: dict[str, str] = {}
    for line in (MANIFESTS / name).read_text(encoding="utf-8").splitlines():
        if line.strip():
            digest, relative = line.split(maxsplit=1)
            entries[relative.strip()] = digest
    return entries


def manifest_lines(folder: Path) -> list[str]:
    """``<sha256>  <relative path>`` for every file below ``folder``, sorted by path: the format
    of the shipped manifests (``sha256sum``'s)."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return [
        f"{sha256_of(folder / name)}  {name}" for name in tqdm(files, desc="sha256", leave=False)
    ]


def make_manifest(folder: Path, dataset: str | None = None, output: Path | None = None) -> int:
    """``dogiqa make-manifest DIR``: write the manifest of an image folder, to ``output`` or, for
    ``dataset``, to ``<key>_images.sha256`` in the package's manifests (the name a registry
    entry's ``manifest`` then gives). Prints where, and the entry's field."""
    if not folder.is_dir():
        raise DogIQAError(f"{folder}: not a folder")
    if (output is None) == (dataset is None):
        raise DogIQAError("make-manifest: give --dataset KEY or --output FILE (one of them)")
    target = output if output is not None else MANIFESTS / f"{dataset}_images.sha256"
    lines = manifest_lines(folder)
    if not lines:
        raise DogIQAError(f"{folder}: no files to list")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    print(f"{paths.show(target)}: {len(lines)} files of {folder}")
    if output is None:
        print(f'registry entry (its images Resource): manifest="{target.name}"')
    return 0


# --- fetching ----------------------------------------------------------------------------------


def http_download(url: str, target: Path, expected_sha256: str | None = None) -> Path:
    """Stream ``url`` to ``target`` (atomically), verifying ``expected_sha256`` when given."""
    if target.exists() and expected_sha256 and sha256_of(target) == expected_sha256:
        return target
    try:
        with requests.get(url, stream=True, timeout=60) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length") or 0) or None
            with (
                atomic_path(target) as tmp,
                tmp.open("wb") as handle,
                tqdm(total=total, unit="B", unit_scale=True, desc=target.name, leave=False) as bar,
            ):
                for block in response.iter_content(CHUNK):
                    handle.write(block)
                    bar.update(len(block))
                handle.flush()
                verify_file(tmp, expected_sha256, url)
    except requests.RequestException as exc:
        raise DogIQAError(f"download failed: {url} ({type(exc).__name__}: {exc})") from None
    return target


def _member_target(root: Path, name: str) -> Path:
    """Where an archive member would be written; refuse names that escape ``root``."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise UnsafeArchiveError(f"archive member {name!r} would be written outside {root}")
    target = (root / pure).resolve()
    if not target.is_relative_to(root.resolve()):
        raise UnsafeArchiveError(f"archive member {name!r} would be written outside {root}")
    return target


def safe_extract(archive: Path, prefix: str, destination: Path) -> list[Path]:
    """Extract the members of ``archive`` under ``prefix`` into ``destination``.

    ``prefix`` is a member (a single file) or a folder prefix ending in "/", whose contents land
    directly in ``destination``. Every member of the archive is checked first; one unsafe entry
    (absolute path, "..", a link) refuses the whole archive before anything is written.
    """
    destination.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            members = [(info.filename, info.is_dir(), False) for info in bundle.infolist()]
            _check_members(members, destination)
            return _extract_selected(members, prefix, destination, lambda name: bundle.open(name))
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as bundle:
            infos = bundle.getmembers()
            members = [(i.name, i.isdir(), i.issym() or i.islnk() or i.isdev()) for i in infos]
            _check_members(members, destination)
            return _extract_selected(
                members, prefix, destination, lambda name: bundle.extractfile(name)
            )
    raise DogIQAError(f"{archive}: not a zip or tar archive")


def _check_members(members: list[tuple[str, bool, bool]], destination: Path) -> None:
    for name, _is_dir, is_link in members:
        if is_link:
            raise UnsafeArchiveError(f"archive member {name!r} is a link or device; refused")
        _member_target(destination, name)


def _extract_selected(
    members: list[tuple[str, bool, bool]], prefix: str, destination: Path, opener: Any
) -> list[Path]:
    written: list[Path] = []
    for name, is_dir, _ in members:
        if is_dir:
            continue
        if prefix.endswith("/"):
            if not name.startswith(prefix):
                continue
            relative = name[len(prefix) :]
        elif name == prefix:
            relative = PurePosixPath(name).name
        else:
            continue
        target = _member_target(destination, relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        with opener(name) as source, atomic_path(target) as tmp, tmp.open("wb") as sink:
            shutil.copyfileobj(source, sink, CHUNK)
        written.append(target)
    if not written:
        raise DogIQAError(f"archive has no member {prefix!r}")
    return written


def fetch_file(resource: Resource, folder: Path, mirror: Path | None, what: str) -> Path:
    """Make ``folder/resource.dest`` present with the registry's checksum."""
    target = folder / resource.dest
    if target.exists() and resource.sha256 and sha256_of(target) == resource.sha256:
        return target
    if mirror is not None and resource.mirror and (mirror / resource.mirror).is_file():
        with atomic_path(target) as tmp:
            shutil.copyfile(mirror / resource.mirror, tmp)
            verify_file(tmp, resource.sha256, f"{what} ({mirror / resource.mirror})")
        return target
    if resource.url is None:
        raise DogIQAError(f"{what}: no download available; {resource.manual}")
    downloaded = _download_to_cache(resource)
    if resource.member is None:
        with atomic_path(target) as tmp:
            shutil.copyfile(downloaded, tmp)
            verify_file(tmp, resource.sha256, f"{what} ({resource.url})")
        return target
    (extracted,) = safe_extract(downloaded, resource.member, target.parent)
    if extracted != target.resolve() and extracted != target:
        os.replace(extracted, target)
    verify_file(target, resource.sha256, f"{what} ({resource.url} :: {resource.member})")
    return target


def _download_to_cache(resource: Resource) -> Path:
    assert resource.url is not None
    name = resource.url.rstrip("/").rsplit("/", 1)[-1]
    target = paths.at(paths.CACHE / "downloads" / name)
    return http_download(resource.url, target, resource.archive_sha256)


def fetch_folder(resource: Resource, folder: Path, mirror: Path | None, what: str) -> dict:
    """Make the image folder present; verify files listed in its manifest. Returns counts."""
    target = folder / resource.dest
    manifest = read_manifest(resource.manifest) if resource.manifest else {}
    if not _folder_complete(target, manifest):
        if mirror is not None and resource.mirror and (mirror / resource.mirror).is_dir():
            _copy_tree(mirror / resource.mirror, target)
        elif resource.url is not None:
            if resource.member is None:
                raise DogIQAError(f"{what}: registry entry needs an archive member prefix")
            safe_extract(_download_to_cache(resource), resource.member, target)
        else:
            raise DogIQAError(f"{what}: no download available; {resource.manual}")
    return _verify_folder(target, manifest, what)


def _folder_complete(target: Path, manifest: dict[str, str]) -> bool:
    if not target.is_dir():
        return False
    return bool(manifest) and all((target / name).is_file() for name in manifest)


def _copy_tree(source: Path, target: Path) -> None:
    files = sorted(p for p in source.rglob("*") if p.is_file())
    for path in tqdm(files, desc=f"copy {source.name}", unit="file", leave=False):
        destination = target / path.relative_to(source)
        if destination.is_file() and destination.stat().st_size == path.stat().st_size:
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(destination) as tmp:
            shutil.copyfile(path, tmp)


def _verify_folder(target: Path, manifest: dict[str, str], what: str) -> dict:
    present = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    for name in tqdm([n for n in present if n in manifest], desc="verify", leave=False):
        verify_file(target / name, manifest[name], f"{what}: {name}")
    return {
        "files": len(present),
        "verified": sum(name in manifest for name in present),
        "unverified": sum(name not in manifest for name in present),
    }


# --- the stage ---------------------------------------------------------------------------------


def resolve_mirror(config: DownloadConfig) -> Path | None:
    if config.mirror is not None and config.mirror.is_dir():
        return config.mirror
    if config.mirror is not None:
        log.info("mirror %s not found; using the official sources", config.mirror)
    return None


def image_index(folder: Path) -> dict[str, Path]:
    """File name -> path for every file below ``folder`` (label files name images by file name)."""
    if not folder.is_dir():
        return {}
    return {path.name: path for path in sorted(folder.rglob("*")) if path.is_file()}


def prepare(spec: Dataset, config: DownloadConfig) -> tuple[pd.DataFrame, dict]:
    """Fetch and verify the dataset's files; return its labels table and a summary."""
    folder = paths.raw_dir(spec.key)
    mirror = resolve_mirror(config)
    for resource in spec.labels:
        fetch_file(resource, folder, mirror, f"{spec.title} {resource.dest}")
    summary: dict[str, Any] = {"dataset": spec.key}
    index: dict[str, Path] = {}
    if spec.images is not None and spec.key in config.pipeline_datasets:
        try:
            summary["images"] = fetch_folder(spec.images, folder, mirror, f"{spec.title} images")
            index = image_index(folder / spec.images.dest)
        except DogIQAError as exc:
            if not spec.images.optional:
                raise
            log.warning("%s: images not available, labels only (%s)", spec.title, exc)
            summary["images_unavailable"] = str(exc)
    table = read_labels(spec, folder, config.image_sets[spec.key])
    table["path"] = [paths.show(index[name]) if name in index else "" for name in table["image"]]
    summary.update(labelled=len(table), with_image=int((table["path"] != "").sum()))
    return table[list(schema.LABELS.columns)], summary


def fetch_external(config: DownloadConfig) -> dict[str, Any]:
    """Fetch the cached outputs of other models (dogiqa.external) into data/raw/external."""
    from dogiqa.external import EXTERNAL_RESOURCES

    folder = paths.external_dir()
    mirror = resolve_mirror(config)
    summary: dict[str, Any] = {}
    for name, resource in EXTERNAL_RESOURCES.items():
        what = f"external {name}"
        if resource.is_folder:
            summary[name] = fetch_folder(resource, folder, mirror, what)
        else:
            fetch_file(resource, folder, mirror, what)
            summary[name] = {"files": 1, "verified": 1, "unverified": 0}
    return summary


def run_external(params: dict[str, Any]) -> None:
    summary = fetch_external(validate_params(params))
    write_json_atomic(paths.at(paths.DATA / "external.summary.json"), summary)
    files = sum(entry["files"] for entry in summary.values())
    print(f"external: {len(summary)} sources, {files} files verified or recorded")


def run(dataset: str, params: dict[str, Any]) -> None:
    config = validate_params(params)
    if dataset not in config.datasets:
        raise ParamError("download.datasets", f"does not list {dataset!r}")
    table, summary = prepare(DATASETS[dataset], config)
    write_table(schema.LABELS, paths.labels_table(dataset), table, float_format="%.15g")
    write_json_atomic(paths.summary("labels", dataset), summary)
    labelled, with_image = summary["labelled"], summary["with_image"]
    print(f"{dataset}: {labelled} labelled images, {with_image} with image files")
