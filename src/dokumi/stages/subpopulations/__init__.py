"""Subpopulations: label-inconsistent records that share a style, structure or word-pair signature, and
prompt values that split instruction responses (issue 15's attacks with no token to find)."""

from dokumi.stages.subpopulations.stage import Subpopulations

__all__ = ["Subpopulations"]
