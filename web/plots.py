"""The pages' drawings, made on the server: a training loop's loss per iteration as the
coordinates of an SVG (no script draws it) and the words and numbers that say the same
for a reader who cannot see it."""

from __future__ import annotations

import math
from typing import Any

WIDTH, HEIGHT = 480, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 12, 40  # room for the axes' labels
Y_TICKS = 5


def loss_plot(curve: Any, mine: str = "Your loop") -> dict[str, Any] | None:
    """What `_loss_plot.html` draws from a result's `loss_curve` (the answer's losses and a
    correct run's, None where one was not read): each line's segments between gaps as SVG
    points, the axes' ticks, and a summary naming the answer's line `mine` (the summary
    alone, `drawn` false, when no value was read); None when there is nothing to tell."""
    if not isinstance(curve, dict):
        return None
    answer, reference = _values(curve.get("answer")), _values(curve.get("reference"))
    shown = [v for v in (*answer, *reference) if v is not None]
    if not shown:  # nothing to draw: the words alone, if there were iterations
        return {"drawn": False, "summary": _summary(mine, answer, [])} if answer else None
    n = max(len(answer), len(reference))
    low, high = _range(min(shown), max(shown))
    ticks = _ticks(low, high)
    low, high = min(low, ticks[0]), max(high, ticks[-1])

    def x(i: int) -> float:
        inner = WIDTH - LEFT - RIGHT
        return round(LEFT + (inner / 2 if n == 1 else inner * i / (n - 1)), 1)

    def y(v: float) -> float:
        return round(TOP + (HEIGHT - TOP - BOTTOM) * (high - v) / (high - low), 1)

    def lines(values: list[float | None]) -> dict[str, Any]:
        segments, dots, run = [], [], []
        for i, v in enumerate([*values, None]):
            if v is not None:
                run.append((x(i), y(v)))
                continue
            if len(run) == 1:
                dots.append(run[0])
            elif run:
                segments.append(" ".join(f"{px:g},{py:g}" for px, py in run))
            run = []
        return {"segments": segments, "dots": dots}

    return {
        "drawn": True, "width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT,
        "top": TOP, "bottom": HEIGHT - BOTTOM,
        "answer": lines(answer), "reference": lines(reference) if reference else None,
        "y_ticks": [{"y": y(t), "label": _number(t, ticks)} for t in ticks],
        "x_ticks": [{"x": x(i), "label": str(i + 1)} for i in _iteration_ticks(n)],
        "rows": [
            {"iteration": i + 1, "answer": _cell(answer, i), "reference": _cell(reference, i)}
            for i in range(n)
        ],
        "summary": _summary(mine, answer, reference),
    }  # fmt: skip


def _values(values: Any) -> list[float | None]:
    if not isinstance(values, list):
        return []
    return [
        float(v)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        else None
        for v in values
    ]


def _range(low: float, high: float) -> tuple[float, float]:
    if high - low < 1e-12 * max(1.0, abs(high)):
        pad = max(abs(high) * 0.1, 0.5)
        return low - pad, high + pad
    pad = (high - low) * 0.05
    return low - pad, high + pad


def _ticks(low: float, high: float) -> list[float]:
    """About Y_TICKS round values covering [low, high]: steps of 1, 2 or 5 times a power of ten."""
    raw = (high - low) / (Y_TICKS - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    count = math.ceil((high - first) / step - 1e-9) + 1
    return [first + k * step for k in range(count)]


def _number(value: float, ticks: list[float]) -> str:
    """A tick's label with as many decimals as its step needs."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step)))
    return f"{value:.{decimals}f}"


def _iteration_ticks(n: int) -> list[int]:
    """Indices of the iterations the x axis names: the first, the last and a few between."""
    if n <= 10:
        return list(range(n))
    step = math.ceil((n - 1) / 5)
    return sorted({*range(0, n - 1, step), n - 1})


def _cell(values: list[float | None], i: int) -> str:
    if i >= len(values):
        return ""
    return "not read" if values[i] is None else f"{values[i]:.4g}"


def _told(values: list[float | None]) -> str:
    read = [v for v in values if v is not None]
    if not read:
        return f"could not be read at any of its {len(values)} iterations"
    gaps = len(values) - len(read)
    missing = f"; {gaps} of them could not be read" if gaps else ""
    return (
        f"over {len(values)} iteration{'s' if len(values) != 1 else ''}, from {read[0]:.4g} "
        f"to {read[-1]:.4g} (lowest {min(read):.4g}){missing}"
    )


def _summary(whose: str, answer: list[float | None], reference: list[float | None]) -> str:
    mine = f"{whose}'s loss {_told(answer)}." if answer else f"{whose} recorded no loss."
    if not reference:
        return mine
    same = len(answer) == len(reference) and all(
        a is not None and r is not None and math.isclose(a, r, rel_tol=1e-4, abs_tol=1e-6)
        for a, r in zip(answer, reference, strict=True)
    )
    theirs = f" A correct run's loss {_told(reference)}."
    return mine + theirs + (" The two match at every iteration." if same else "")
