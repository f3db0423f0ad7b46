"""Rules: the catalogue of rule ids (``catalog``) and the judge that turns a program into findings (``judge``)."""

from picklewarden.rules.catalog import BY_ID, RULE_FOR_CATEGORY, RULES, Rule, error_finding, finding
from picklewarden.rules.judge import ProgramJudge

__all__ = ["BY_ID", "RULES", "RULE_FOR_CATEGORY", "ProgramJudge", "Rule", "error_finding", "finding"]
