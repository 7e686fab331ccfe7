"""Run folders: where a run keeps its config, manifest, ledger, private area, checkpoints and release.

Rules: an existing folder is never silently overwritten. Re-running a command on the same folder resumes
it, provided the settings that determine what private data was used and how (data, privacy, generation,
pe, the captioner / LLM / embedders) are the same as when it started; otherwise the run stops with an error
naming the differing keys. Settings that only change post-processing (the renderer, evaluation, progress
bars) may change between stages.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import platform
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from spti._version import __version__
from spti.config import Config
from spti.data.io import atomic_write_json, atomic_write_text, read_json
from spti.data.lock import LOCK_NAME, RunFolderLock, lock_run_folder
from spti.errors import RunFolderError

#: Sections whose change would mix results computed under different private-data settings.
LOCKED_SECTIONS = ("data", "privacy", "generation", "pe", "llm", "text_embedder", "captioner", "image_embedder", "seed")
LIBRARIES = ("numpy", "scipy", "torch", "transformers", "diffusers", "sentence-transformers", "timm",
             "llama_cpp_python", "accelerate", "faiss-cpu", "pillow")


_COMMAND_WORD = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_PROGRAM_WORDS = ("spti", "spti.exe", "python", "python3", "-m")


def command_name(command: str | None) -> str:
    """What the manifest records of the command that opened a run: its subcommand only ("spti run --data
    /secret/patients" -> "run"). Why: a command line names the private data and the user's folders, and the
    manifest is shown in reports; no argument is ever kept. A command that does not start with a plain word
    (after the program's name) is recorded as "unknown"."""
    words = str(command or "").split()
    while words and (words[0] in _PROGRAM_WORDS or Path(words[0]).name in ("spti", "spti.exe", "__main__.py")):
        words = words[1:]
    return words[0] if words and _COMMAND_WORD.match(words[0]) else "unknown"


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        out: list[str] = []
        for k in keys:
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock: RunFolderLock | None = None  # held from open() (or lock()) until close()

    # ------------------------------------------------------------------ layout
    @property
    def private(self) -> Path:
        return self.path / "private"

    @property
    def cache(self) -> Path:
        return self.path / "cache"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def release(self) -> Path:
        return self.path / "release"

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def privacy_path(self) -> Path:
        return self.path / "privacy.json"

    @property
    def stats_path(self) -> Path:
        return self.path / "stats.json"

    def is_run(self) -> bool:
        return self.config_path.is_file()

    # ------------------------------------------------------------------ lock
    def lock(self) -> RunDir:
        """Take this run folder's exclusive lock (:mod:`spti.data.lock`) for as long as this RunDir is open;
        shared with every other RunDir of this process on the same folder. Raises RunFolderError, naming
        the holder's pid, when another process works in the folder. Returns ``self``."""
        if self._lock is None or not self._lock.held:
            self._lock = lock_run_folder(self.path)
        return self

    def close(self) -> None:
        """Give up this RunDir's hold on the folder's lock (the lock goes when the process's last hold does)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _only_skeleton(self) -> bool:
        """True when the folder holds nothing but what :meth:`open` creates before the config: the lock
        file and empty private/, cache/, checkpoints/ (a first command killed at its very start)."""
        skeleton = {self.private.name, self.cache.name, self.checkpoints.name}
        for e in self.path.iterdir():
            if e.name == LOCK_NAME:
                continue
            if e.name in skeleton and e.is_dir() and not e.is_symlink() and not any(e.iterdir()):
                continue
            return False
        return True

    # ------------------------------------------------------------------ open / create
    @classmethod
    def open(cls, path: str | Path, config: Config, *, command: str) -> RunDir:
        """Create a new run folder, or resume the run in it if its locked settings match ``config``.

        The folder's lock is taken before anything is written (:meth:`lock`) and held until
        :meth:`close`: a second command on the same folder fails at once."""
        run_dir = cls(path)
        p = run_dir.path
        if p.exists() and not p.is_dir():
            raise RunFolderError(f"{p} exists and is not a folder")
        foreign = (
            f"{p} exists, is not empty and is not an spti run folder; choose another --out (spti never "
            "overwrites a folder it did not create)"
        )
        if p.exists() and not run_dir.is_run() and not run_dir._only_skeleton():
            raise RunFolderError(foreign)  # checked before the lock file is created in someone's folder
        p.mkdir(parents=True, exist_ok=True)
        run_dir.lock()
        try:
            run_dir._open_locked(config, command, foreign)
        except BaseException:
            run_dir.close()
            raise
        return run_dir

    def _open_locked(self, config: Config, command: str, foreign: str) -> None:
        """:meth:`open`'s body, run while holding the folder's lock."""
        run_dir, p = self, self.path
        if not run_dir._only_skeleton():
            if not run_dir.is_run():
                raise RunFolderError(foreign)
            saved = run_dir.load_config()
            diffs = [
                k for sec in run_dir.locked_sections(saved)
                for k in _diff({sec: saved.to_dict().get(sec)}, {sec: config.to_dict().get(sec)})
            ]
            if diffs:
                raise RunFolderError(
                    f"{p} holds a run with different settings ({', '.join(diffs[:12])}); resuming would mix results. "
                    "Use a new --out, or the same settings to resume."
                )
            run_dir._write_config(config)
            # a run folder of an older spti recorded the whole command line: keep its subcommand only
            earlier = run_dir.manifest().get("command")
            earlier = {} if earlier is None else {"command": command_name(earlier)}
            run_dir.update_manifest(resumed=True, last_command=command_name(command), **earlier)
            stale = [t for t in p.rglob(".*.tmp") if t.is_file()]  # atomic writes cut short by a kill
            for t in stale:
                t.unlink()
            return
        for sub in (run_dir.private, run_dir.cache, run_dir.checkpoints):
            sub.mkdir(exist_ok=True)
        run_dir._write_config(config)
        run_dir.update_manifest(
            spti_version=__version__,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            command=command_name(command),
            python=sys.version.split()[0],
            platform=platform.platform(),
            libraries=library_versions(),
            seed=config.seed,
            stages={},
        )

    def locked_sections(self, saved: Config) -> list[str]:
        """Settings that results already on disk depend on: they may not change when the run resumes.
        Nothing computed yet, nothing locked — e.g. ``spti caption`` then ``spti run --domain ...``."""
        locked: list[str] = []
        has_files = lambda p: p.is_dir() and any(p.iterdir())  # noqa: E731
        # a failed ingestion (e.g. no usable image) leaves only its own files: the data path may be corrected
        ingest_only = {"ingest.jsonl", "skipped.jsonl"}
        if self.stage_done("ingest") or (
            self.private.is_dir() and any(e.name not in ingest_only for e in self.private.iterdir())
        ):
            locked += ["data"]
        if (self.private / "captions").is_dir():
            locked += ["captioner"]
        if any(self.private.glob("text_features-*")) or any(self.private.glob("image_features-*")):
            locked += ["text_embedder", "image_embedder"]
        if has_files(self.checkpoints):
            locked += list(LOCKED_SECTIONS)
            if saved.pe.voting == "image":
                locked += ["renderer", "render"]  # the loop's renders are part of the DP selection
        return list(dict.fromkeys(locked))

    def _write_config(self, config: Config) -> None:
        atomic_write_text(self.config_path, config.to_yaml())

    def load_config(self) -> Config:
        d = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        return Config.from_dict(d)

    # ------------------------------------------------------------------ manifest & stats
    def manifest(self) -> dict[str, Any]:
        return read_json(self.manifest_path) if self.manifest_path.is_file() else {}

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        m = self.manifest()
        for k, v in fields.items():
            if isinstance(v, dict) and isinstance(m.get(k), dict):
                m[k] = {**m[k], **v}
            else:
                m[k] = v
        atomic_write_json(self.manifest_path, m)
        return m

    def stage_done(self, stage: str) -> bool:
        return bool(self.manifest().get("stages", {}).get(stage, {}).get("done"))

    def mark_stage(self, stage: str, **info: Any) -> None:
        info = {"done": True, "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **info}
        self.update_manifest(stages={stage: info})

    def stats(self) -> dict[str, Any]:
        return read_json(self.stats_path) if self.stats_path.is_file() else {}

    def update_stats(self, section: str, counts: Counter | dict[str, Any]) -> None:
        s = self.stats()
        s[section] = dict(counts)
        atomic_write_json(self.stats_path, s)
