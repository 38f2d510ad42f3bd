"""Code templates: a comment and a code line bound by one identifier that varies from record to record
(a TrojanPuzzle-style trigger and payload, issue 15)."""

from dokumi.stages.code_templates.stage import CodeTemplates

__all__ = ["CodeTemplates"]
