"""The download stage against a local HTTP server: good archive, checksum mismatch, unsafe paths."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from stage_project import one_run

from dogiqa import download, paths, schema
from dogiqa.errors import ChecksumError, DogIQAError, ParamError, UnsafeArchiveError
from dogiqa.io import read_table
from dogiqa.registry import Resource

PAYLOAD = b"image,mos\na.jpg,3.5\n"
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture()
def server(tmp_path):
    """Serve ``tmp_path/site`` over HTTP on loopback; yields (folder, base URL)."""
    site = tmp_path / "site"
    site.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None  # keep test output quiet
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def in_tmp_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # These tests choose the mirror through params; the environment variable would override it.
    monkeypatch.delenv("DOGIQA_MIRROR", raising=False)


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)


def test_good_archive_member_is_fetched_and_verified(server, tmp_path):
    site, url = server
    _zip(site / "labels.zip", {"release/labels.csv": PAYLOAD, "release/other.txt": b"x"})
    resource = Resource(
        dest="labels.csv",
        mirror=None,
        url=f"{url}/labels.zip",
        member="release/labels.csv",
        sha256=PAYLOAD_SHA,
    )
    target = download.fetch_file(resource, tmp_path / "raw", None, "test labels")
    assert target.read_bytes() == PAYLOAD
    assert not (tmp_path / "raw" / "other.txt").exists()


def test_plain_file_download(server, tmp_path):
    site, url = server
    (site / "labels.csv").write_bytes(PAYLOAD)
    resource = Resource(dest="labels.csv", mirror=None, url=f"{url}/labels.csv", sha256=PAYLOAD_SHA)
    assert download.fetch_file(resource, tmp_path / "raw", None, "x").read_bytes() == PAYLOAD


def test_checksum_mismatch_is_refused_and_nothing_is_kept(server, tmp_path):
    site, url = server
    (site / "labels.csv").write_bytes(PAYLOAD + b"tampered\n")
    resource = Resource(dest="labels.csv", mirror=None, url=f"{url}/labels.csv", sha256=PAYLOAD_SHA)
    with pytest.raises(ChecksumError, match="checksum mismatch, refused"):
        download.fetch_file(resource, tmp_path / "raw", None, "x")
    assert not (tmp_path / "raw" / "labels.csv").exists()


def test_pinned_archive_checksum_is_enforced(server, tmp_path):
    site, url = server
    _zip(site / "bundle.zip", {"labels.csv": PAYLOAD})
    resource = Resource(
        dest="labels.csv",
        mirror=None,
        url=f"{url}/bundle.zip",
        member="labels.csv",
        sha256=PAYLOAD_SHA,
        archive_sha256="0" * 64,
    )
    with pytest.raises(ChecksumError):
        download.fetch_file(resource, tmp_path / "raw", None, "x")
    assert not list((tmp_path / "data" / "cache" / "downloads").glob("bundle.zip"))


def test_path_traversal_entry_refuses_the_whole_archive(server, tmp_path):
    site, url = server
    _zip(site / "evil.zip", {"images/a.jpg": b"ok", "images/../../escaped.txt": b"owned"})
    resource = Resource(dest="images", mirror=None, url=f"{url}/evil.zip", member="images/")
    with pytest.raises(UnsafeArchiveError, match="outside"):
        download.fetch_folder(resource, tmp_path / "raw", None, "x")
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "raw" / "images" / "a.jpg").exists()


@pytest.mark.parametrize("name", ["/etc/evil", "C:/evil.txt"])
def test_absolute_member_names_are_refused(tmp_path, name):
    archive = tmp_path / "abs.zip"
    _zip(archive, {name: b"x"})
    with pytest.raises(UnsafeArchiveError):
        download.safe_extract(archive, "", tmp_path / "out")


def test_tar_links_are_refused(tmp_path):
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as bundle:
        info = tarfile.TarInfo("images/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        bundle.addfile(info)
        data = tarfile.TarInfo("images/a.jpg")
        data.size = 2
        bundle.addfile(data, io.BytesIO(b"ok"))
    with pytest.raises(UnsafeArchiveError, match="link"):
        download.safe_extract(archive, "images/", tmp_path / "out")


def test_folder_from_tar_archive(tmp_path):
    archive = tmp_path / "imgs.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        for name in ("set/images/a.jpg", "set/images/sub/b.jpg", "set/readme.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            bundle.addfile(info, io.BytesIO(b"z"))
    written = download.safe_extract(archive, "set/images/", tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == [
        "a.jpg",
        "sub/b.jpg",
    ]


def test_network_failure_is_one_line(tmp_path):
    resource = Resource(
        dest="x.csv", mirror=None, url="http://127.0.0.1:9/none.csv", sha256=PAYLOAD_SHA
    )
    with pytest.raises(DogIQAError, match="download failed") as info:
        download.fetch_file(resource, tmp_path / "raw", None, "x")
    assert "\n" not in str(info.value)


def _params(mirror: Path, **download_overrides) -> dict:
    sec = {"datasets": ["agiqa", "livec"], "mirror": str(mirror), "livec_images": "all"}
    sec.update(download_overrides)
    return {**one_run(["agiqa", "livec"]), "download": sec}


def test_stage_from_mirror_writes_labels_with_paths(mirror, tmp_path):
    download.run("livec", _params(mirror))
    table = pd.read_csv("data/labels/livec.csv")
    assert list(table.columns) == ["image", "path", "mos", "mos_norm", "order"]
    assert len(table) == 1169
    with_image = table[table["path"].notna()]
    assert len(with_image) == 634  # the mirror holds 627 test images + t1-t7
    assert all(Path(p).is_file() for p in with_image["path"])
    # A run's sample is a seeded draw among the images with a file: the same for the same seed.
    labels = read_table(schema.LABELS, paths.labels_table("livec"))
    first = schema.stage_images(labels, schema.Sample(5, 0))["image"].tolist()
    assert len(first) == 5 and set(first) <= set(with_image["image"])
    assert schema.stage_images(labels, schema.Sample(5, 0))["image"].tolist() == first
    assert schema.stage_images(labels, schema.Sample(5, 1))["image"].tolist() != first
    assert len(schema.stage_images(labels, schema.Sample(0, 0))) == 634


def test_labels_only_dataset_outside_the_pipeline(mirror):
    params = _params(mirror)
    params["download"]["datasets"] = ["kadid"]
    download.run("kadid", params)
    table = pd.read_csv("data/labels/kadid.csv")
    assert len(table) == 10125
    assert table["path"].isna().all()


def test_corrupted_mirror_copy_is_refused(mirror, tmp_path):
    fake = tmp_path / "fake_mirror"
    (fake / "labels").mkdir(parents=True)
    (fake / "labels" / "kadid10k_dmos.csv").write_text("dist_img,ref_img,dmos,var\n")
    params = _params(fake)
    params["download"]["datasets"] = ["kadid"]
    with pytest.raises(ChecksumError):
        download.run("kadid", params)


@pytest.mark.parametrize(
    ("key", "value", "param"),
    [
        ("livec_images", "some", "download.livec_images"),
        ("datasets", ["imagenet"], "download.datasets"),
    ],
)
def test_bad_params_fail_before_any_work(mirror, tmp_path, key, value, param):
    with pytest.raises(ParamError, match=param):
        download.run("livec", _params(mirror, **{key: value}))
    assert not Path("data").exists()


def test_environment_variable_overrides_the_mirror_param(mirror, tmp_path, monkeypatch):
    params = _params(tmp_path / "no_such_mirror")
    params["download"]["datasets"] = ["kadid"]
    monkeypatch.setenv("DOGIQA_MIRROR", str(mirror))
    download.run("kadid", params)
    assert len(pd.read_csv("data/labels/kadid.csv")) == 10125
