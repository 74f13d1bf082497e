"""One way to write each kind of number a person reads, on every page, in the CLI's messages and in the model card:
shares as '72.3%', durations as '18 s' / '3 min 05 s' / '1 h 02 min', sizes as '940 B' / '17.4 MB', counts with
thousands separated, parameters as '3.37 M'. Missing values read 'n/a'."""

from __future__ import annotations

MISSING = "n/a"


def pct(share: float | None) -> str:
    """0.7231 -> '72.3%'."""
    return MISSING if share is None else f"{share:.1%}"


def duration(seconds: float | None) -> str:
    """18.86 -> '19 s'; 185 -> '3 min 05 s'; 3720 -> '1 h 02 min'; under a second -> '0.4 s'."""
    if seconds is None:
        return MISSING
    if seconds < 0.95:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def size(num_bytes: int | None) -> str:
    """940 -> '940 B'; 17_400_000 -> '17.4 MB' (powers of 1000, as file managers show them)."""
    if num_bytes is None:
        return MISSING
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{int(num_bytes)} B"


def count(n: int | None) -> str:
    """12345 -> '12,345'."""
    return MISSING if n is None else f"{int(n):,}"


def millions(n: int | None) -> str:
    """Parameters: 3_370_000 -> '3.37 M'; under 100,000 as a count."""
    if n is None:
        return MISSING
    return f"{n / 1e6:.2f} M" if n >= 100_000 else count(n)


def speed(images_per_second: float | None) -> str:
    """31.27 -> '31 pictures/s'; 2.34 -> '2.3 pictures/s'."""
    if images_per_second is None:
        return MISSING
    return f"{images_per_second:.0f} pictures/s" if images_per_second >= 10 else f"{images_per_second:.1f} pictures/s"
