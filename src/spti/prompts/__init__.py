"""Default prompt templates (data, not code): ``default.yaml``. Override any of them in the config
(``generation.random_template`` ...). Placeholders: {domain}, {focus}/{<attribute key>}, {tone},
{examples}, {length}, {masked}, {text}, and {class} (labelled runs: the class description; unlabelled: the
domain). ``class_domain`` and ``random_examples_class`` are used by labelled runs only
(:mod:`spti.pe.generation`)."""

from __future__ import annotations

from importlib import resources

import yaml


def default_templates() -> dict[str, str]:
    text = resources.files(__name__).joinpath("default.yaml").read_text(encoding="utf-8")
    return dict(yaml.safe_load(text))
