"""The shadow candidate's evidence: on the faces where it and the served model answered differently,
whose answer the person who labelled the face agreed with.

Only disagreements tell the two apart; a face both got right or both got wrong says nothing. The
rule is the guardrail's, fixed in code: the candidate may be promoted once it is right more often
than the served model on answered disagreements with a one-sided exact sign test p < GAIN_P_VALUE,
and its card's FER2013 val rule held (a shadow tally never excuses a model that forgot FER2013).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from facexpr.learn.guardrail import GAIN_P_VALUE, sign_test


@dataclass(frozen=True)
class ShadowTally:
    candidate: str
    disagreements: int  # faces the two answered differently
    answered: int  # of those, the ones a person labelled
    candidate_right: int
    served_right: int
    neither_right: int
    val_kept: bool  # the candidate's card: FER2013 val lost at most the guardrail's allowance

    @property
    def p_value(self) -> float:
        return sign_test(self.candidate_right, self.served_right)

    @property
    def passed(self) -> bool:
        return self.val_kept and self.candidate_right > self.served_right and self.p_value < GAIN_P_VALUE

    @property
    def more_needed(self) -> int:
        """Answered disagreements still needed to pass, if every one of them favoured the candidate."""
        n = 0
        while sign_test(self.candidate_right + n, self.served_right) >= GAIN_P_VALUE:
            n += 1
        return n

    def summary(self) -> str:
        if not self.answered:
            return (f"No disagreement answered yet ({self.disagreements} waiting): the Review page asks "
                    "about them first.")
        text = (f"On {self.answered} answered disagreement{'s' if self.answered != 1 else ''}: candidate "
                f"right {self.candidate_right}, served right {self.served_right}, neither "
                f"{self.neither_right}; one-sided sign test p = {self.p_value:.3f}.")
        if self.passed:
            return text + " The candidate is better beyond noise."
        if not self.val_kept:
            return text + " It lost FER2013 val beyond the guardrail's allowance: it cannot be promoted."
        return text + f" At least {self.more_needed} more answered in its favour would settle it."


def tally(candidate: str, rows: list[tuple[str, str, str | None]], card: dict) -> ShadowTally:
    """ROWS: (served answer, shadow answer, person's label or None) per face (History.shadow_answers)."""
    differ = [(served, shadow, label) for served, shadow, label in rows if served != shadow]
    answered = [(served, shadow, label) for served, shadow, label in differ if label is not None]
    val_rule = next((r for r in (card.get("guardrail") or {}).get("rules", []) if "val" in r.get("rule", "")),
                    None)
    return ShadowTally(
        candidate=candidate, disagreements=len(differ), answered=len(answered),
        candidate_right=sum(label == shadow for _, shadow, label in answered),
        served_right=sum(label == served for served, _, label in answered),
        neither_right=sum(label not in (served, shadow) for served, shadow, label in answered),
        val_kept=val_rule is None or bool(val_rule.get("passed")))


def current_tally(registry: Any, history: Any, served_version: str) -> ShadowTally | None:
    """The tally of the registry's shadow candidate against SERVED_VERSION (only the faces that model
    answered: after a promotion, older records count neither way); None when no candidate is in
    shadow. Raises what the registry or the history raise when they cannot be read."""
    candidate = registry.state().shadow
    if candidate is None:
        return None
    return tally(candidate, history.shadow_answers(candidate, served_version), registry.card(candidate))
