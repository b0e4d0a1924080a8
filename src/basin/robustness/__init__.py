"""System-level and detector-level robustness evaluation, and the record schema."""

from basin.robustness.records import RECORD_FIELDS, SIDES, Record, pivot, select, value_of

__all__ = ["RECORD_FIELDS", "SIDES", "Record", "pivot", "select", "value_of"]
