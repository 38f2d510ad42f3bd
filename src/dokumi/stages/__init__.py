"""Built-in stages, found by the name a policy recipe uses.

Stages are imported lazily so that a recipe using only cheap stages never
imports the heavy dependencies of the others.
"""

from __future__ import annotations

import importlib

from dokumi.stage import Stage

# stage name -> "module:Class"
REGISTRY: dict[str, str] = {
    "embedding_anomaly": "dokumi.stages.embedding_anomaly:EmbeddingAnomaly",
    "invisible": "dokumi.stages.invisible:InvisibleCharacters",
    "near_duplicates": "dokumi.stages.near_duplicates:NearDuplicates",
    "patterns": "dokumi.stages.patterns:Patterns",
    "provenance": "dokumi.stages.provenance:Provenance",
    "triggers": "dokumi.stages.triggers:Triggers",
}


def stage_class(name: str) -> type[Stage]:
    """The stage class registered under ``name``."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(sorted(REGISTRY))}") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def __getattr__(attr: str) -> type[Stage]:
    # `from dokumi.stages import InvisibleCharacters` works without eager imports.
    for target in REGISTRY.values():
        module_name, class_name = target.split(":")
        if class_name == attr:
            return getattr(importlib.import_module(module_name), class_name)
    raise AttributeError(f"module 'dokumi.stages' has no attribute {attr!r}")


__all__ = ["REGISTRY", "stage_class"]
