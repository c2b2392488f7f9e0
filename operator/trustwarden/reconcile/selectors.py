"""Kubernetes label selectors, evaluated in memory (matchLabels and matchExpressions)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """A label selector that cannot be evaluated; the message names the field."""


@dataclass(frozen=True)
class LabelSelector:
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None, field: str) -> LabelSelector:
        """Parse a metav1.LabelSelector; None or {} selects everything."""
        if not raw:
            return cls()
        labels = raw.get("matchLabels") or {}
        if not isinstance(labels, Mapping):
            raise SelectorError(f"{field}.matchLabels must be a map of label keys to values")
        expressions: list[tuple[str, str, tuple[str, ...]]] = []
        for i, expr in enumerate(raw.get("matchExpressions") or []):
            where = f"{field}.matchExpressions[{i}]"
            op = expr.get("operator")
            values = tuple(str(v) for v in expr.get("values") or ())
            if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
                raise SelectorError(f"{where}.operator must be In, NotIn, Exists or DoesNotExist")
            if op in ("In", "NotIn") and not values:
                raise SelectorError(f"{where}.values must not be empty for operator {op}")
            if op in ("Exists", "DoesNotExist") and values:
                raise SelectorError(f"{where}.values must be empty for operator {op}")
            expressions.append((str(expr.get("key", "")), op, values))
        return cls(
            match_labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
            match_expressions=tuple(expressions),
        )

    @property
    def selects_everything(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in self.match_labels:
            if labels.get(key) != value:
                return False
        for key, op, values in self.match_expressions:
            present = key in labels
            if op == "In" and (not present or labels[key] not in values):
                return False
            if op == "NotIn" and present and labels[key] in values:
                return False
            if op == "Exists" and not present:
                return False
            if op == "DoesNotExist" and present:
                return False
        return True
