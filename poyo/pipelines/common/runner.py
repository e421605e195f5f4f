"""Run a pipeline over its sessions: download, convert, write; in parallel, resumable.

Every pipeline module (``poyo.pipelines.<id>``) defines:

* ``BRAINSET_ID``
* ``manifest(raw_dir, args) -> list[Asset]``: the sessions it can make, from the
  archive's listing, or (``--local``) from the files already in ``raw_dir``
* ``convert(asset) -> temporaldata.Data``: one session from its raw file
* optionally ``add_arguments(parser)`` and ``download(asset, redownload, progress)``

Sessions whose output exists are skipped (``--reprocess`` redoes them). A session that
fails is reported with its error, logged to ``<out>/failed.log``, and does not stop the
others; the command then exits with status 1.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from poyo.pipelines.common import download as dl
from poyo.pipelines.common import session as sess


@dataclass(frozen=True)
class Asset:
    """One session to make: its id, its raw file, and where that file comes from (if remote)."""

    session_id: str
    raw_path: Path
    remote: dl.RemoteFile | None = None
    extra: dict = field(default_factory=dict)  # anything the pipeline's convert() needs


def local_assets(raw_dir: Path, pattern: str, session_id) -> list[Asset]:
    """Assets for the files already under ``raw_dir`` matching ``pattern`` (``--local``)."""
    files = sorted(p for p in Path(raw_dir).rglob(pattern) if p.is_file() and not p.name.endswith(".part"))
    if not files:
        raise FileNotFoundError(f"--local: no files matching '{pattern}' below {raw_dir}")
    return [Asset(session_id(p.relative_to(raw_dir).as_posix()), p) for p in files]


def dandi_manifest(raw_dir: Path, args, dandiset: str, version: str, session_id) -> list[Asset]:
    """Assets of a DANDI dandiset (one session per NWB file), or of the local files with ``--local``."""
    if args.local:
        return local_assets(raw_dir, "*.nwb", session_id)
    extra = {"dandiset": dandiset, "version": version}
    return [Asset(session_id(f.path), Path(raw_dir) / f.path, f, extra) for f in dl.dandi_assets(dandiset, version)]


def _download(module, asset: Asset, redownload: bool, progress: bool) -> Path:
    if hasattr(module, "download"):
        return module.download(asset, redownload=redownload, progress=progress)
    if asset.raw_path.exists() and not redownload:
        return asset.raw_path
    if asset.remote is None:
        raise FileNotFoundError(f"{asset.raw_path} is missing and there is no source to download it from")
    remote = asset.remote
    if "dandiset" in asset.extra and remote.sha256 is None:
        remote = dl.dandi_sha256(asset.extra["dandiset"], asset.extra.get("version", "draft"), remote)
    return dl.fetch(remote, asset.raw_path, redownload=redownload, progress=progress)


def process_one(
    module_name: str,
    asset: Asset,
    out_path: Path,
    redownload: bool = False,
    progress: bool = False,
    download_only: bool = False,
) -> str:
    """Download and convert one session (runs in a worker process)."""
    module = importlib.import_module(module_name)
    _download(module, asset, redownload, progress)
    if download_only:
        return "downloaded"
    data = module.convert(asset)
    sess.write(data, out_path)
    return "written"


def build_parser(module) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m {module.__name__}", description=(module.__doc__ or "").strip().splitlines()[0]
    )
    p.add_argument(
        "--raw-dir", type=Path, default=Path("data/raw"), help="raw files go to RAW_DIR/<brainset>/ (default data/raw)"
    )
    p.add_argument(
        "--processed-dir",
        type=Path,
        default=Path("data/processed"),
        help="sessions go to PROCESSED_DIR/<brainset>/ (default data/processed)",
    )
    p.add_argument(
        "-j", "--workers", type=int, default=min(4, os.cpu_count() or 1), help="sessions processed in parallel"
    )
    p.add_argument("--sessions", nargs="*", default=None, help="only these session ids (glob patterns allowed)")
    # --offline: the same, under a name the brainsets command line (whose own --local means "a local pipeline") passes through
    p.add_argument(
        "--local",
        "--offline",
        dest="local",
        action="store_true",
        help="no network: use the raw files already in RAW_DIR/<brainset>/",
    )
    p.add_argument("--redownload", action="store_true", help="download again even if the raw file exists")
    p.add_argument("--reprocess", action="store_true", help="convert again even if the session file exists")
    p.add_argument("--download-only", action="store_true")
    p.add_argument("--list", action="store_true", help="print the sessions and exit")
    if hasattr(module, "add_arguments"):
        module.add_arguments(p)
    return p


def read_failures(log: Path) -> dict[str, str]:
    """The entries of a ``failed.log`` (session -> message and traceback)."""
    if not log.is_file():
        return {}
    out = {}
    for block in log.read_text().split("=== ")[1:]:
        sid, _, msg = block.partition("\n")
        out[sid.strip()] = msg.rstrip("\n")
    return out


def run(module, argv=None) -> int:
    """The command line of a pipeline module; returns the exit status."""
    parser = build_parser(module)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    raw, out = args.raw_dir / module.BRAINSET_ID, args.processed_dir / module.BRAINSET_ID
    if args.local and not raw.is_dir():
        parser.error(f"--local: no raw folder {raw}; put the raw files there, or drop --local to download them")
    raw.mkdir(parents=True, exist_ok=True)
    try:
        assets = module.manifest(raw, args)
    except (FileNotFoundError, OSError, ValueError) as e:  # no raw files, no network, a bad listing
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.sessions:
        assets = [a for a in assets if any(fnmatch.fnmatchcase(a.session_id, p) for p in args.sessions)]
        if not assets:
            raise SystemExit(f"no session matches {args.sessions}")
    ids = [a.session_id for a in assets]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"the manifest names a session twice: {sorted({i for i in ids if ids.count(i) > 1})}")
    try:  # session ids become file names below the processed folder
        for i in ids:
            sess.safe_name(i, "session id")
    except ValueError as e:
        print(f"error: the manifest of {module.BRAINSET_ID}: {e}", file=sys.stderr)
        return 2
    if args.list:
        for a in assets:
            print(a.session_id, a.raw_path)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    todo = [a for a in assets if args.reprocess or args.download_only or not (out / f"{a.session_id}.h5").exists()]
    print(
        f"{module.BRAINSET_ID}: {len(assets)} sessions, {len(assets) - len(todo)} already done, {len(todo)} to do -> {out}"
    )
    failures: dict[str, str] = {}
    start = time.time()
    jobs = [
        (
            module.__name__,
            a,
            sess.session_path(args.processed_dir, module.BRAINSET_ID, a.session_id),
            args.redownload,
            args.workers == 1,
            args.download_only,
        )
        for a in todo
    ]
    bar = tqdm(total=len(jobs), unit="session", desc=module.BRAINSET_ID)
    if args.workers == 1:
        for job in jobs:
            try:
                process_one(*job)
            except Exception as e:  # report and go on with the other sessions
                failures[job[1].session_id] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
            bar.update()
    else:
        with ProcessPoolExecutor(args.workers) as pool:
            futures = {pool.submit(process_one, *job): job[1].session_id for job in jobs}
            for fut in as_completed(futures):
                try:
                    fut.result()
                except Exception as e:
                    failures[futures[fut]] = f"{type(e).__name__}: {e}\n{''.join(traceback.format_exception(e))}"
                bar.update()
    bar.close()
    log = out / "failed.log"
    # sessions this run did not try keep their earlier failure; tried ones are replaced by this run's outcome
    tried = {a.session_id for a in todo}
    earlier = {
        sid: msg for sid, msg in read_failures(log).items() if sid not in tried and not (out / f"{sid}.h5").exists()
    }
    everything = {**earlier, **failures}
    if everything:
        with open(log, "w") as f:
            for sid, msg in everything.items():
                f.write(f"=== {sid}\n{msg}\n")
    elif log.exists():
        log.unlink()
    if failures:
        print(f"\n{len(failures)} of {len(todo)} sessions FAILED (details in {log}):")
        for sid, msg in failures.items():
            print(f"  {sid}: {msg.splitlines()[0]}")
    if earlier:
        print(
            f"{len(earlier)} session(s) that failed in an earlier run were not retried (still in {log}): {sorted(earlier)[:5]}"
        )
    print(f"done in {time.time() - start:.0f} s: {len(todo) - len(failures)} written, {len(failures)} failed")
    return 1 if failures else 0


def pipeline_base() -> type:
    """``BrainsetPipeline`` from ``torch_brain.pipeline`` (torch_brain 0.2, where brainsets was
    merged) when it imports, else from ``brainsets.pipeline``; both have the same interface."""
    try:
        from torch_brain.pipeline import BrainsetPipeline
    except ImportError:  # torch_brain absent, or installed without its pipeline dependencies (ray)
        try:
            from brainsets.pipeline import BrainsetPipeline
        except ImportError:
            raise ImportError(
                "running a pipeline through the brainsets command line needs torch_brain>=0.2 (torch_brain.pipeline) or "
                "brainsets (pip install brainsets); `python -m poyo.pipelines.<brainset>` runs it without either"
            ) from None
    return BrainsetPipeline


def brainsets_pipeline(module_name: str):
    """A ``BrainsetPipeline`` class (:func:`pipeline_base`) running this pipeline module, so that
    ``brainsets prepare <dir> --local --use-active-env`` drives the same code."""
    import pandas as pd

    BrainsetPipeline = pipeline_base()

    module = importlib.import_module(module_name)
    parser = build_parser(module)

    class Pipeline(BrainsetPipeline):
        brainset_id = module.BRAINSET_ID

        @classmethod
        def get_manifest(cls, raw_dir, args):
            args = args if args is not None else parser.parse_args([])
            assets = module.manifest(Path(raw_dir), args)
            return pd.DataFrame({"asset": assets}, index=pd.Index([a.session_id for a in assets], name="session_id"))

        def download(self, manifest_item):
            self.update_status("DOWNLOADING")
            asset = manifest_item.asset
            _download(module, asset, bool(getattr(self.args, "redownload", False)), progress=False)
            return asset

        def process(self, asset):
            out = Path(self.processed_dir) / f"{asset.session_id}.h5"
            if out.exists() and not getattr(self.args, "reprocess", False):
                self.update_status("Skipped")
                return
            self.update_status("Converting")
            sess.write(module.convert(asset), out)

    Pipeline.parser = parser
    Pipeline.__doc__ = module.__doc__
    return Pipeline
