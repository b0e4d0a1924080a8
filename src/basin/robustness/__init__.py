"""System-level and detector-level robustness evaluation, and the record schema."""

from basin.robustness.audit_report import AuditReport
from basin.robustness.conditions import Condition, check_dataset_names, parse_conditions
from basin.robustness.detector_level import (
    DetectorRobustness,
    RobustnessSettings,
    attack_detector,
    detector_robustness,
)
from basin.robustness.evaluation import (
    EvaluationResult,
    EvaluationSettings,
    Evaluator,
    evaluate_run,
)
from basin.robustness.records import RECORD_FIELDS, SIDES, Record, pivot, select, value_of
from basin.robustness.system import ScoreDetector

__all__ = ["RECORD_FIELDS", "SIDES", "Condition", "DetectorRobustness", "EvaluationResult",
           "EvaluationSettings", "Evaluator", "Record", "RobustnessSettings", "attack_detector",
           "check_dataset_names", "detector_robustness", "evaluate_run", "parse_conditions",
           "pivot", "select", "value_of"]
# the audit itself is basin.audit (basin.robustness.audit is its module, kept importable)
__all__ += ["AuditReport", "ScoreDetector"]
