"""Staff routes for the synthetic municipality: who visits whom, when, in one zone.

Times are built from the routes, not the other way round: each route walks its residents in
street order, one visit after the other with travel time between, so no staff member can be in
two homes at once. Minutes count from local midnight of the demo day (1440 = next midnight).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from portner.demo import names as N
from portner.domain.model import Role

# Parts of the day a resident can need a visit in, as (first start, last end) in local minutes.
WINDOWS = {"day_a": (420, 690), "day_b": (720, 900), "eve_a": (900, 1080), "eve_b": (1110, 1380)}
SHIFT_WINDOWS = {"day": ("day_a", "day_b"), "eve": ("eve_a", "eve_b")}
NIGHT_START = 1380  # 23:00; night visits start before midnight so they belong to the demo day
MIDNIGHT = 1440
ANCHOR = 480  # 08:00, the timeOfDay of the recurring plans
_ANCHOR_SLACK = 60  # minutes kept free in an anchored window so the shift to 08:00 still fits
# Route sizes: _split gives each route fewer than V/n + 2 visits, so V/n <= 13 keeps a route at
# most 14 and V/n >= 10 keeps it at least 9 (the brief asks for 8-15 visits a shift).
_SPLIT_MAX = 13
_SPLIT_MIN = 10
# Overloaded staff get longer routes, up to this V/n (about 21 visits a shift), and no further.
_SPLIT_LIMIT = 20

_Table = dict[str, tuple[tuple[str, int], ...]]


@dataclass(frozen=True, slots=True)
class Need:
    """What one resident of the zone needs today: windows (see WINDOWS) and a night visit."""

    resident: int
    windows: tuple[str, ...]
    overnight: bool


@dataclass(frozen=True, slots=True)
class PlannedVisit:
    """One scheduled visit; `anchored` marks the 08:00 visit written as a recurring timing."""

    resident: int
    start: int
    end: int
    staff: int
    description: str
    window: str
    anchored: bool = False


def _split(items: list[tuple[int, int]], n: int) -> list[list[int]]:
    """Cut (resident, visits) in order into n runs with about equal visit counts."""
    total = sum(w for _, w in items)
    runs: list[list[int]] = [[]]
    cum = 0
    for resident, weight in items:
        r = len(runs) - 1
        if runs[r] and r < n - 1 and cum + weight > (r + 1) * total / n:
            runs.append([])
        runs[-1].append(resident)
        cum += weight
    return runs


def _route_counts(v_day: int, v_eve: int, n_night: int, s: int) -> tuple[int, int, int]:
    """Choose how many day, evening and night routes s staff run; doubles shifts when short."""

    def routes(c: int) -> tuple[int, int]:
        return (math.ceil(v_day / c) if v_day else 0, math.ceil(v_eve / c) if v_eve else 0)

    limits = range(_SPLIT_MAX, _SPLIT_LIMIT + 1)
    # Longer routes before fewer night rounds; fewer night rounds before refusing.
    fits = [c for c in limits if max(routes(c)) <= s and sum(routes(c)) + n_night <= 2 * s]
    fits = fits or [c for c in limits if max(routes(c)) <= s]
    if not fits:
        raise ValueError(
            f"{s} staff cannot cover {v_day + v_eve} day and evening visits in one zone; "
            "give the municipality more staff"
        )
    n_day, n_eve = routes(fits[0])
    n_night = max(0, min(n_night, s, 2 * s - n_day - n_eve))
    spare = s - n_day - n_eve - n_night
    # Spare staff shorten the longest routes, as long as each keeps enough visits to be a shift.
    while spare > 0:
        grow_day = n_day and v_day / (n_day + 1) >= _SPLIT_MIN
        grow_eve = n_eve and v_eve / (n_eve + 1) >= _SPLIT_MIN
        if grow_day and (not grow_eve or v_day / n_day >= v_eve / n_eve):
            n_day += 1
        elif grow_eve:
            n_eve += 1
        else:
            break
        spare -= 1
    return n_day, n_eve, n_night


def _assign(
    staff: list[int], roles: dict[int, Role], n_day: int, n_eve: int, n_night: int
) -> dict[int, dict[str, int]]:
    """Give routes to staff: day from the front, evening from the back, night to the idle."""
    plan: dict[int, dict[str, int]] = {member: {} for member in staff}
    for r in range(n_day):
        plan[staff[r]]["day"] = r
    for r in range(n_eve):
        plan[staff[len(staff) - 1 - r]]["eve"] = r
    # Night goes first to staff without a route, then to evening staff (a late double shift is
    # more usual than a split one), and to nurses before home helpers.
    position = {m: i for i, m in enumerate(staff)}
    order = sorted(
        staff,
        key=lambda m: (len(plan[m]), "day" in plan[m], roles[m] is Role.HOME_HELP, position[m]),
    )
    for r in range(n_night):
        plan[order[r]]["night"] = r
    return plan


class _Clock:
    """Lays visits out one after another inside a window, compressing when they do not fit."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def lay_out(
        self, lo: int, hi: int, durations: list[int], anchor: bool
    ) -> tuple[list[tuple[int, int]], int | None]:
        """Return (start, end) per visit and the index moved to 08:00, if any."""
        rng = self.rng
        start = lo + 5 * rng.randint(0, 2)
        travel = [0] + [5 * rng.randint(1, 3) for _ in durations[1:]]
        avail = hi - start - (_ANCHOR_SLACK if anchor else 0)
        total = sum(durations) + sum(travel)
        if total > avail > 0:
            f = avail / total
            durations = [max(10, 5 * int(d * f / 5)) for d in durations]
            travel = [0] + [max(5, 5 * int(t * f / 5)) for t in travel[1:]]
        times = []
        t = start
        for d, tr in zip(durations, travel, strict=True):
            t += tr
            times.append((t, t + d))
            t += d
        anchored = None
        if anchor and times and times[0][0] <= ANCHOR:
            k = max(i for i, (s, _) in enumerate(times) if s <= ANCHOR)
            shift = ANCHOR - times[k][0]
            times = times[:k] + [(s + shift, e + shift) for s, e in times[k:]]
            anchored = k
        return times, anchored


def plan_zone(
    rng: random.Random,
    needs: list[Need],
    staff: list[int],
    roles: dict[int, Role],
    anchors: int,
) -> list[PlannedVisit]:
    """Schedule one zone's needs (in street order) on its staff; `anchors` day routes get 08:00."""
    if not staff:
        return []
    counts = {
        shift: [(n.resident, sum(w in wins for w in n.windows)) for n in needs]
        for shift, wins in SHIFT_WINDOWS.items()
    }
    day_items = [(r, w) for r, w in counts["day"] if w]
    eve_items = [(r, w) for r, w in counts["eve"] if w]
    night_res = [n.resident for n in needs if n.overnight]
    n_day, n_eve, n_night = _route_counts(
        sum(w for _, w in day_items),
        sum(w for _, w in eve_items),
        math.ceil(len(night_res) / 2),
        len(staff),
    )
    routes = {
        "day": _split(day_items, n_day) if n_day else [],
        "eve": _split(eve_items, n_eve) if n_eve else [],
        "night": [night_res[i : i + 2] for i in range(0, 2 * n_night, 2)],
    }
    wanted = {n.resident: n.windows for n in needs}
    plan = _assign(staff, roles, n_day, n_eve, n_night)
    clock = _Clock(rng)
    visits: list[PlannedVisit] = []
    for member in staff:
        table = N.HOME_HELP_VISITS if roles[member] is Role.HOME_HELP else N.NURSING_VISITS
        busy = 0
        for shift in ("day", "eve"):
            if shift not in plan[member]:
                continue
            route = routes[shift][plan[member][shift]]
            anchor = shift == "day" and plan[member][shift] < anchors
            for window in SHIFT_WINDOWS[shift]:
                residents = [r for r in route if window in wanted[r]]
                if not residents:
                    continue
                kinds = [rng.choice(table[window]) for _ in residents]
                durations = [max(10, minutes + 5 * rng.randint(-1, 1)) for _, minutes in kinds]
                lo, hi = WINDOWS[window]
                anchored = anchor and window == "day_a"
                times, k = clock.lay_out(max(lo, busy + 5), hi, durations, anchored)
                for i, (resident, (desc, _), (s, e)) in enumerate(
                    zip(residents, kinds, times, strict=True)
                ):
                    visits.append(PlannedVisit(resident, s, e, member, desc, window, i == k))
                busy = times[-1][1]
        if "night" in plan[member]:
            visits.extend(_night(rng, routes["night"][plan[member]["night"]], member, table, busy))
    return visits


def _night(
    rng: random.Random, residents: list[int], member: int, table: _Table, busy: int
) -> list[PlannedVisit]:
    """Lay out a night route of one or two visits; the last one runs past midnight."""
    start = max(NIGHT_START + 5 * rng.randint(0, 2), busy + 5)
    if len(residents) == 1:
        start = max(start, NIGHT_START + 5 * rng.randint(4, 8))
    out = []
    for i, resident in enumerate(residents):
        desc, minutes = rng.choice(table["night"])
        end = start + minutes
        if i == len(residents) - 1:
            end = max(end, MIDNIGHT + 5 * rng.randint(2, 8))
        if start >= MIDNIGHT - 5:
            break  # only when an overlong evening pushed the night out of the demo day
        out.append(PlannedVisit(resident, start, end, member, desc, "night"))
        start = end + 5 * rng.randint(1, 2)
    return out
