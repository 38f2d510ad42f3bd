"""Stages found by the name a policy recipe uses: the built-in ones, and third-party ones.

A package adds stages by an entry point in the group ``dokumi.stages``, e.g.
in its ``pyproject.toml``::

    [project.entry-points."dokumi.stages"]
    profanity = "my_package.stages:Profanity"

after which ``[stages.profanity]`` works in any recipe. Stages are imported
lazily so that a recipe using only cheap stages never imports the heavy
dependencies of the others.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from dokumi.stage import Stage

ENTRY_POINT_GROUP = "dokumi.stages"

# stage name -> "module:Class"
REGISTRY: dict[str, str] = {
    "claims": "dokumi.stages.claims:Claims",
    "code_templates": "dokumi.stages.code_templates:CodeTemplates",
    "embedding_anomaly": "dokumi.stages.embedding_anomaly:EmbeddingAnomaly",
    "invisible": "dokumi.stages.invisible:InvisibleCharacters",
    "near_duplicates": "dokumi.stages.near_duplicates:NearDuplicates",
    "patterns": "dokumi.stages.patterns:Patterns",
    "provenance": "dokumi.stages.provenance:Provenance",
    "subpopulations": "dokumi.stages.subpopulations:Subpopulations",
    "triggers": "dokumi.stages.triggers:Triggers",
}


def plugin_stages() -> dict[str, str]:
    """Stages that installed packages register under the ``dokumi.stages`` entry-point group: name -> target."""
    return {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)
            if point.name not in REGISTRY}


def known_stages() -> list[str]:
    """Every stage name a recipe can use."""
    return sorted({*REGISTRY, *plugin_stages()})


def stage_class(name: str) -> type[Stage]:
    """The stage class registered under ``name`` (built in, or by an entry point)."""
    target = REGISTRY.get(name) or plugin_stages().get(name)
    if target is None:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(known_stages())}")
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise KeyError(f"stage {name!r}: cannot load {target!r} ({error})") from None
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise KeyError(f"stage {name!r}: {target!r} is not a dokumi Stage subclass")
    if cls.name != name:
        raise KeyError(f"stage {name!r}: {target!r} is named {cls.name!r}; the entry point must use the same name")
    return cls


def __getattr__(attr: str) -> type[Stage]:
    # `from dokumi.stages import InvisibleCharacters` works without eager imports.
    for target in REGISTRY.values():
        module_name, class_name = target.split(":")
        if class_name == attr:
            return getattr(importlib.import_module(module_name), class_name)
    raise AttributeError(f"module 'dokumi.stages' has no attribute {attr!r}")


__all__ = ["ENTRY_POINT_GROUP", "REGISTRY", "known_stages", "plugin_stages", "stage_class"]
