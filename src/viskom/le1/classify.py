"""Frame-type classification of VIS frames by rules kept as data (`frame_types.toml`).

Branch on metadata, never on pixels: the frame type comes from IMG_T1/IMG_T2/EXPTIME.
A frame that matches no rule is UNKNOWN, with a reason naming the keyword values seen.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

FRAME_TYPES = ("SCIENCE", "DARK", "BIAS", "FLAT", "CHARGE", "UNKNOWN")
_RULE_KEYS = {"frame_type", "contains_any", "equals", "min_exptime", "comment"}


@dataclass(frozen=True)
class Rule:
    """One classification rule; all its conditions must hold."""

    frame_type: str
    contains_any: dict[str, tuple[str, ...]] = field(default_factory=dict)
    equals: dict[str, str] = field(default_factory=dict)
    min_exptime: float | None = None

    def matches(self, header: Mapping[str, Any]) -> bool:
        if self.contains_any:
            hit = any(
                sub.upper() in _text(header.get(key))
                for key, subs in self.contains_any.items()
                for sub in subs
            )
            if not hit:
                return False
        for key, value in self.equals.items():
            if _text(header.get(key)) != value.upper():
                return False
        if self.min_exptime is not None:
            try:
                exptime = float(header.get("EXPTIME"))
            except (TypeError, ValueError):
                return False
            if not exptime > self.min_exptime:
                return False
        return True


@dataclass(frozen=True)
class Classification:
    """The result: a frame type and, for UNKNOWN, why nothing matched."""

    frame_type: str
    reason: str | None = None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip().upper()


def parse_rules(data: Mapping[str, Any], source: str = "rules") -> tuple[Rule, ...]:
    """Validate and build rules from a parsed TOML mapping; ValueError names the bad rule."""
    raw = data.get("rule")
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{source}: no [[rule]] tables found")
    rules = []
    for i, item in enumerate(raw, start=1):
        unknown = set(item) - _RULE_KEYS
        if unknown:
            raise ValueError(f"{source}: rule {i} has unknown keys {sorted(unknown)}")
        ftype = str(item.get("frame_type", "")).upper()
        if ftype not in FRAME_TYPES or ftype == "UNKNOWN":
            raise ValueError(
                f"{source}: rule {i} has frame_type {ftype!r}, not one of {FRAME_TYPES}"
            )
        contains = {
            str(k).upper(): tuple(str(s) for s in (v if isinstance(v, list) else [v]))
            for k, v in item.get("contains_any", {}).items()
        }
        equals = {str(k).upper(): str(v) for k, v in item.get("equals", {}).items()}
        if not contains and not equals:
            raise ValueError(f"{source}: rule {i} ({ftype}) has no condition")
        min_exp = item.get("min_exptime")
        rules.append(
            Rule(ftype, contains, {k: v.upper() for k, v in equals.items()}, _opt_float(min_exp))
        )
    return tuple(rules)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@lru_cache(maxsize=8)
def load_rules(path: str | None = None) -> tuple[Rule, ...]:
    """Rules from a TOML file, or the packaged defaults when `path` is None."""
    if path is None:
        text = resources.files("viskom.le1").joinpath("frame_types.toml").read_text()
        return parse_rules(tomllib.loads(text), "frame_types.toml (built-in)")
    p = Path(path)
    with p.open("rb") as fh:
        return parse_rules(tomllib.load(fh), str(p))


def classify(header: Mapping[str, Any], rules: tuple[Rule, ...] | None = None) -> Classification:
    """Frame type of a primary header (any mapping with IMG_T1, IMG_T2, EXPTIME...)."""
    for rule in rules if rules is not None else load_rules():
        if rule.matches(header):
            return Classification(rule.frame_type)
    seen = ", ".join(f"{k}={header.get(k)!r}" for k in ("IMG_CAT", "IMG_T1", "IMG_T2", "EXPTIME"))
    return Classification("UNKNOWN", f"no frame-type rule matches ({seen})")
