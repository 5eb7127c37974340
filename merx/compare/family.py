"""Many tests, one claim: which test of a comparison is confirmatory, and how the rest are adjusted.

One ``compare`` call shows many tests: each tested metric of each pair, and McNemar's. Ten tests
of equally good models at 5 % each find "something" about 40 % of the time, so a verdict per test
would let a researcher publish luck. Instead one metric is pre-specified as primary
(:data:`merx.compare.scores.CONFIRMATORY` per task, or ``compare(primary=...)``): its test is
the confirmatory one and is read as it is. Every other test shown is exploratory: their p-values
form one family, Holm-adjusted (:func:`merx.stats.holm`), and their verdicts use the adjusted p.

The primary is not in the exploratory family: it is the single hypothesis stated before looking,
and the exploratory tests cannot dilute it, nor it them. When one call compares several subjects
with the first (run1 run2 run3), the primary metric is tested once per pair; those tests form a
family of their own, Holm-adjusted too, or "run2 or run3 beats run1" would get two tries at 5 %.

A test without a p-value (no spread to weigh a difference against) is left out of its family's
count: it cannot produce a claim, true or false.
"""

from __future__ import annotations

from collections.abc import Iterator

from merx.metrics import metric as record
from merx.stats import format_p, holm, plain_p

#: The level every verdict is read at.
ALPHA = 0.05


def _entries(tests: list[dict]) -> Iterator[tuple[dict, str | None, dict]]:
    """(pair, metric or None for McNemar, test entry), in the order they are shown."""
    for test in tests:
        for m, entry in (test.get("bootstrap") or {}).items():
            yield test, m, entry
        if test.get("mcnemar"):
            yield test, None, test["mcnemar"]
        for m, entry in (test.get("seed_tests") or {}).items():
            yield test, m, entry


def _label(role: str, adjustment: str, size: int) -> str:
    if role == "primary":
        return "primary (confirmatory)" if adjustment == "none" else \
            f"primary (confirmatory), Holm-adjusted over the {size} pairs"
    return f"exploratory, Holm-adjusted over {size} test{'s' if size != 1 else ''}"


def _clause(entry: dict, alpha: float) -> str:
    """The verdict's second half: the p-value(s), and whether they clear ``alpha``."""
    p, adjusted = entry["p_value"], entry["p_adjusted"]
    too_few = entry.get("too_few")
    if p is None:
        return plain_p(None, alpha, entry.get("p_undefined")) + (f"; {too_few}" if too_few else "")
    if entry["adjustment"] == "none" and not too_few:
        text = plain_p(p, alpha)
    else:
        text = format_p(p)
        if entry["adjustment"] != "none":
            text += f", Holm-adjusted {format_p(adjusted)} over {entry['family_size']} tests"
        if too_few:
            return f"{text}; {too_few}"
        after = "after adjustment" if entry["adjustment"] != "none" else ""
        text += (f": significant at the {alpha:.0%} level {after}" if entry["significant"]
                 else f": not significant at the {alpha:.0%} level {after}").rstrip()
    if entry["significant"] and entry.get("direction"):
        text += f", {entry['direction']}"
    return text


def judge(tests: list[dict], primary: str, alpha: float = ALPHA) -> dict:
    """Label every test of one comparison primary or exploratory, Holm-adjust each family, and
    write each verdict; returns the summary ``compare`` puts under ``"multiple_testing"``.

    Every entry gains ``role``, ``p_adjusted`` (the raw p for a lone primary test),
    ``family_size``, ``adjustment`` ("none" or "holm"), ``label``, ``significant`` and ``verdict``."""
    entries = list(_entries(tests))
    families = {"primary": [e for _, m, e in entries if m == primary],
                "exploratory": [e for _, m, e in entries if m != primary]}
    sizes = {}
    for role, family in families.items():
        adjusted = holm([e["p_value"] for e in family])
        size = sum(p is not None for p in adjusted)
        sizes[role] = size
        adjustment = "none" if role == "primary" and size <= 1 else "holm"
        for entry, adj in zip(family, adjusted, strict=True):
            entry.update(role=role, p_adjusted=adj, family_size=size, adjustment=adjustment,
                         label=_label(role, adjustment, size))
            entry["significant"] = adj is not None and adj < alpha and not entry.get("too_few")
            entry["verdict"] = f"{entry['finding']}; {_clause(entry, alpha)}"
    for test in tests:
        has = primary in (test.get("bootstrap") or {}) or primary in (test.get("seed_tests") or {})
        if not has and not test.get("skipped"):
            test["no_primary"] = f"no test of the primary metric {primary} for this pair: the runs do not report it"
    return {"alpha": alpha, "primary_tests": sizes["primary"], "exploratory_tests": sizes["exploratory"],
            "statement": _statement(primary, sizes["primary"], sizes["exploratory"], len(families["primary"]))}


def _statement(primary: str, n_primary: int, n_exploratory: int, shown_primary: int) -> str:
    rec = record(primary)
    what = f"{primary} ({rec.description})" if rec is not None else primary
    if shown_primary == 0:
        text = f"Primary metric {what}: no test of it could be made here, so no claim is confirmatory."
    elif n_primary <= 1:
        text = (f"Primary metric {what}, fixed before looking (--primary picks another): its test is "
                "confirmatory, read unadjusted.")
    else:
        text = (f"Primary metric {what}, fixed before looking (--primary picks another): its tests, one per "
                f"pair, are confirmatory, Holm-adjusted over the {n_primary} pairs.")
    if n_exploratory:
        text += (f" The {n_exploratory} other test{'s' if n_exploratory != 1 else ''} shown "
                 f"{'are' if n_exploratory != 1 else 'is'} exploratory: Holm-adjusted as one family (the primary "
                 "is not in it); their verdicts use the adjusted p, their intervals are unadjusted.")
    return text
