"""The two datasets every benchmark projects its rate onto (`make bench` runs bench_*.py only).

FF++ c23: 5,000 videos (1,000 real, 4 methods) of about 509 frames; the full DFDC: 119,154
ten-second clips at 30 frames/s (as their papers count them). Sampled at every 5th frame.
"""

from __future__ import annotations

EVERY = 5
FFPP_C23_FRAMES = 5_000 * 509
DFDC_FRAMES = 119_154 * 300
DATASETS = {"FF++ c23": FFPP_C23_FRAMES // EVERY, "the full DFDC": DFDC_FRAMES // EVERY}
NO_GPU = "on a Colab T4: not measured (no GPU lent; benchmarks/gpu_check.sh measures it)"


def projections(what: str, per_second: float, unit: str = "crops") -> list[str]:
    """One line per dataset: hours to ``what`` its sampled crops at ``per_second`` here."""
    return [f"projection: {what} {name} at every {EVERY}th frame ({n:,} {unit}): "
            f"{n / per_second / 3600:.1f} h on this machine; {NO_GPU}"
            for name, n in DATASETS.items()]
