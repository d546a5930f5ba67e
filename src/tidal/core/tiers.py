"""SLA tiers and who may take devices from whom."""

from __future__ import annotations

from enum import Enum

from tidal.core.errors import SpecError


class Tier(Enum):
    """An SLA tier. Lower ``rank`` means more important.

    premium takes from standard and basic, standard from basic, and nobody takes a
    premium job's devices.
    """

    PREMIUM = "premium"
    STANDARD = "standard"
    BASIC = "basic"

    @property
    def rank(self) -> int:
        return _RANK[self._value_]  # keyed by value: hashing an Enum member is slow

    def may_take_from(self, other: Tier) -> bool:
        """Whether a job of this tier may shrink or stop a job of tier ``other``."""
        return other is not Tier.PREMIUM and self.rank < other.rank

    @classmethod
    def parse(cls, value: str | Tier) -> Tier:
        if isinstance(value, Tier):
            return value
        try:
            return cls(value.strip().lower())
        except ValueError:
            names = ", ".join(t.value for t in cls)
            raise SpecError(f"unknown tier {value!r}; expected one of: {names}") from None


_RANK = {Tier.PREMIUM.value: 0, Tier.STANDARD.value: 1, Tier.BASIC.value: 2}
