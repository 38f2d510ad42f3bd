"""Adapters that run a fitted dokumi :class:`~dokumi.Pipeline` inside other data-processing frameworks.

Each adapter lives in its own module and imports its framework only when that
module is imported: ``dokumi.integrations.datatrove`` (datatrove filter step),
``dokumi.integrations.nemo_curator`` (NeMo Curator stage).
"""
