"""The pipeline's stages, one module each; :mod:`spti.pipeline` only sequences them.

    private.py   ingest the private images, caption them or embed them (the votes' side of PE)
    budget.py    the privacy budget, the noise source and the ledger (privacy.json)
    evolve.py    the DP stage: Private Evolution over captions, checkpointed
    render.py    render the DP captions into the release
    evaluate.py  metrics of the release and of each iteration (metrics.json; NOT differentially private)

This module holds what every entry point (``spti.run``, ``spti evolve``, ``spti caption``, ``spti render``)
does first and last: open the run folder, and copy the ledger and manifest into the release.
"""

from __future__ import annotations

from spti.config import Config
from spti.data.io import read_json
from spti.data.release import write_release_docs
from spti.data.run import RunDir
from spti.errors import ConfigError
from spti.log import attach_run_log, set_progress

__all__ = ["finish_release_docs", "open_run"]


def open_run(cfg: Config, command: str, *, post_processing: bool = False) -> RunDir:
    """Validate ``cfg``, require an output folder, open (create or resume) the run folder there and attach
    its log file. ``command`` is recorded in the manifest.

    ``post_processing``: for a stage that only post-processes DP output (``spti render``): the config is not
    validated (it need not name any private data), and a folder that already holds a run is used as it is
    (its config is neither checked against ``cfg`` nor rewritten)."""
    if not post_processing:
        cfg.validate()
    if not cfg.out:
        raise ConfigError("an output folder is required (--out)")
    existing = RunDir(cfg.out)
    # both take the folder's lock (one command per run folder) before anything is written
    run_dir = existing.lock() if post_processing and existing.is_run() else RunDir.open(cfg.out, cfg, command=command)
    if not cfg.progress:
        set_progress(False)  # also the libraries' bars ("Loading weights"), for library callers too
    attach_run_log(run_dir.path / "spti.log")
    return run_dir


def finish_release_docs(run_dir: RunDir, cfg: Config) -> None:
    """Write the ledger and the public manifest (allow-listed fields of the run's manifest and of the resolved
    config: :func:`spti.data.release.public_manifest`) into release/, and prune release/ to its allow-listed
    files, so that the release documents itself when handed over alone and holds nothing else."""
    privacy = read_json(run_dir.privacy_path) if run_dir.privacy_path.is_file() else {}
    manifest = run_dir.manifest()
    manifest["config"] = cfg.to_dict()
    write_release_docs(run_dir.release, privacy, manifest)
