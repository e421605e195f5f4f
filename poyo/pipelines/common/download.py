"""Resumable, checksummed downloads (standard library only) and the archives' file listings.

A file is fetched into ``<name>.part`` with HTTP range requests, so an interrupted
download continues where it stopped; it is renamed to its final name only after its
size and checksum (where the source publishes one) match, so a file under its final
name is always complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

DANDI_API = "https://api.dandiarchive.org/api"
ZENODO_API = "https://zenodo.org/api"
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    pass


@dataclass(frozen=True)
class RemoteFile:
    """One file of an archive: where it goes (relative path), where it comes from, what it must be."""

    path: str
    url: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None


def _json(url: str, opener=None) -> dict:
    try:
        with (opener or urllib.request.build_opener()).open(url, timeout=60) as r:
            return json.load(r)
    except urllib.error.URLError as e:
        raise DownloadError(f"cannot reach {url}: {e}") from e


def dandi_assets(dandiset: str, version: str = "draft", suffix: str = ".nwb") -> list[RemoteFile]:
    """The files of a DANDI dandiset version (``"000688"``, ``"draft"``) ending in ``suffix``.

    Sizes come with the listing; sha256 sums are looked up per asset when it is fetched.
    """
    url = f"{DANDI_API}/dandisets/{dandiset}/versions/{version}/assets/?page_size=200"
    out = []
    while url:
        page = _json(url)
        for a in page["results"]:
            if a["path"].endswith(suffix):
                out.append(RemoteFile(a["path"], f"{DANDI_API}/assets/{a['asset_id']}/download/", int(a["size"])))
        url = page.get("next")
    if not out:
        raise DownloadError(f"DANDI:{dandiset}/{version} lists no {suffix} files")
    return sorted(out, key=lambda f: f.path)


def dandi_sha256(dandiset: str, version: str, remote: RemoteFile) -> RemoteFile:
    """``remote`` with the sha256 DANDI publishes for it (unchanged if it publishes none)."""
    asset_id = remote.url.rstrip("/").split("/")[-2]
    meta = _json(f"{DANDI_API}/dandisets/{dandiset}/versions/{version}/assets/{asset_id}/")
    sha = (meta.get("digest") or {}).get("dandi:sha2-256")
    return RemoteFile(remote.path, remote.url, remote.size, sha, remote.md5) if sha else remote


def zenodo_files(record: str, suffix: str = "") -> list[RemoteFile]:
    """The files of a Zenodo record, with their sizes and md5 sums."""
    meta = _json(f"{ZENODO_API}/records/{record}")
    out = []
    for f in meta.get("files", []):
        if f["key"].endswith(suffix):
            algo, _, digest = f.get("checksum", "").partition(":")
            out.append(RemoteFile(f["key"], f["links"]["self"], int(f["size"]), md5=digest if algo == "md5" else None))
    if not out:
        raise DownloadError(f"Zenodo record {record} lists no {suffix or ''} files")
    return sorted(out, key=lambda f: f.path)


def file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, remote: RemoteFile) -> None:
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        raise DownloadError(f"{path}: {size} bytes, the source says {remote.size}")
    for algo, want in (("sha256", remote.sha256), ("md5", remote.md5)):
        if want and (got := file_digest(path, algo)) != want.lower():
            raise DownloadError(f"{path}: {algo} {got} does not match the published {want}")


def fetch(remote: RemoteFile, dest: Path, *, opener=None, redownload: bool = False, progress: bool = True) -> Path:
    """Download ``remote`` to ``dest`` (resuming a ``.part`` file) and verify it.

    An existing ``dest`` is kept unless ``redownload``. A ``.part`` file that fails its
    checks is deleted, so the next run starts clean.
    """
    dest = Path(dest)
    if dest.exists() and not redownload:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if redownload and part.exists():
        part.unlink()
    have = part.stat().st_size if part.exists() else 0
    if remote.size is not None and have > remote.size:
        part.unlink()
        have = 0
    if remote.size is None or have < remote.size:
        request = urllib.request.Request(remote.url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            response = (opener or urllib.request.build_opener()).open(request, timeout=120)
        except urllib.error.URLError as e:
            raise DownloadError(f"cannot download {remote.url}: {e}") from e
        with response:
            if have and response.status != 206:  # the server ignored the range: start over
                have = 0
            total = remote.size if remote.size is not None else None
            with (
                open(part, "ab" if have else "wb") as f,
                tqdm(
                    total=total,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    desc=dest.name,
                    disable=not progress,
                    leave=False,
                ) as bar,
            ):
                while block := response.read(CHUNK):
                    f.write(block)
                    bar.update(len(block))
                f.flush()
                os.fsync(f.fileno())
    try:
        _verify(part, remote)
    except DownloadError:
        part.unlink()
        raise
    os.replace(part, dest)
    return dest
