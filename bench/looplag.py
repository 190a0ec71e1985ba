"""The hub's event-loop pauses in each benchmark phase, measured continuously.

The benchmark's hub probes its own loop every PROBE_INTERVAL (config
`metrics.loop_probe_interval_sec`) and logs every lag of LOG_FROM or more (`hub.loop_paused`,
with the garbage collection done meanwhile). Around each phase the benchmark scrapes
`/metrics` (`metrics.anonymous`): the lag histogram's counts give the probes and the pauses
over PAUSE_LIMIT_MS, the gc histogram the collections by generation. After the run the log's
`hub.loop_paused` lines are placed in the phase they woke in: the longest pause of a phase is
the longest of them, or, with none, the bound of the highest lag bucket the phase reached.
"""

import json
import time
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

PROBE_INTERVAL = 0.01  # s: a 50 ms pause cannot fall between two probes
LOG_FROM = 0.02  # s: every lag from this on is logged with its time and gc share
PAUSE_LIMIT_MS = 50  # issue 15's target: no pause over 50 ms at 10,000 runners
HUB_METRICS = {"anonymous": True, "loop_probe_interval_sec": PROBE_INTERVAL,
               "loop_lag_log_sec": LOG_FROM}
LAG = "semaphore_hub_event_loop_lag_seconds"
GC = "semaphore_hub_gc_pause_seconds"


def parse_scrape(text: str) -> dict:
    """The lag histogram's cumulative buckets and the gc histogram's count/sum per generation."""
    buckets: dict[float, float] = {}
    gc: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == LAG + "_bucket":
                buckets[float(sample.labels["le"])] = sample.value
            elif sample.name in (GC + "_count", GC + "_sum"):
                pair = gc.setdefault(sample.labels["generation"], [0.0, 0.0])
                pair[0 if sample.name.endswith("_count") else 1] = sample.value
    return {"buckets": buckets, "gc": gc}


def difference(before: dict, after: dict) -> dict:
    """What happened between two scrapes."""
    buckets = {le: after["buckets"][le] - before["buckets"].get(le, 0.0)
               for le in after["buckets"]}
    probes = buckets.get(float("inf"), 0.0)
    limit = buckets.get(PAUSE_LIMIT_MS / 1000, 0.0)
    reached = [le for le in sorted(buckets) if buckets[le] < probes]  # some lag above le
    bound = next((le for le in sorted(buckets) if le not in reached), float("inf"))
    gc = {gen: {"count": int(after["gc"][gen][0] - before["gc"].get(gen, [0, 0])[0]),
                "ms": (after["gc"][gen][1] - before["gc"].get(gen, [0, 0])[1]) * 1000}
          for gen in sorted(after["gc"])}
    return {"probes": int(probes), "over_limit": int(probes - limit),
            "max_bound_ms": bound * 1000, "gc": gc}


class LoopLag:
    """Scrapes around each phase; `summary` joins them with the hub log's pauses."""

    def __init__(self, base: str, http: aiohttp.ClientSession):
        self.base, self.http = base, http
        self.phases: list[dict] = []

    async def scrape(self) -> dict:
        async with self.http.get(self.base + "/metrics") as response:
            response.raise_for_status()
            return parse_scrape(await response.text())

    @asynccontextmanager
    async def phase(self, name: str):
        before = await self.scrape()
        start = time.time()
        yield  # a phase that fails fails the run: nothing to measure then
        end = time.time()
        self.phases.append({"phase": name, "start": start, "end": end,
                            **difference(before, await self.scrape())})

    def summary(self, hub_log: Path) -> dict[str, dict]:
        """Per phase: seconds, probes, longest pause (ms; exact from LOG_FROM on, else the
        bucket bound), pauses over the limit, gc by generation, and the logged pauses."""
        pauses = logged_pauses(hub_log)
        out = {}
        for p in self.phases:
            mine = [dict(x, at=round(x["t"] - p["start"], 3)) for x in pauses
                    if p["start"] <= x["t"] <= p["end"]]
            longest = max((x["lag_ms"] for x in mine), default=None)
            # The loop thread's own CPU in a pause: on a shared, loaded machine a pause is
            # mostly waiting for a CPU; this part is the hub's work (its code, its gc).
            own = max((x["cpu_ms"] for x in mine), default=0.0)
            out[p["phase"]] = {
                "seconds": p["end"] - p["start"], "probes": p["probes"],
                "max_ms": longest if longest is not None else min(p["max_bound_ms"],
                                                                  LOG_FROM * 1000),
                "max_exact": longest is not None, "over_limit": p["over_limit"],
                "max_cpu_ms": own,
                "own_over_limit": sum(1 for x in mine if x["cpu_ms"] > PAUSE_LIMIT_MS),
                "gc": p["gc"], "pauses": [{k: v for k, v in x.items() if k != "t"}
                                           for x in mine]}
        return out


def logged_pauses(hub_log: Path) -> list[dict]:
    """The hub's `hub.loop_paused` lines: wake time (time.time()), lag and gc share."""
    found = []
    with open(hub_log, errors="replace") as log:
        for line in log:
            if '"hub.loop_paused"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
            found.append({"t": at, **{key: entry.get(key, -1) for key in (
                "lag_ms", "cpu_ms", "gc_ms", "gc_cpu_ms", "gc_generation", "gc_longest_ms",
                "gc_longest_generation")}})
    return found


def report(summary: dict[str, dict]) -> list[str]:
    """The report's lines: a row per phase, then each pause over the limit."""
    out = [f"Event-loop pauses (hub probe every {PROBE_INTERVAL * 1000:g} ms, through every "
           f"phase; target: none over {PAUSE_LIMIT_MS} ms)",
           "(own: the most CPU the loop thread used in one pause, and the pauses with over "
           f"{PAUSE_LIMIT_MS} ms of it; the rest of a pause is waiting for a CPU)",
           f"  {'phase':<13}{'s':>7}{'probes':>8}{'longest ms':>12}{'>50ms':>7}"
           f"{'own ms':>8}{'own>50':>7}{'gc0 n/ms':>13}{'gc1 n/ms':>12}{'gc2 n/ms':>12}"]
    for name, s in summary.items():
        longest = (f"{s['max_ms']:.1f}" if s["max_exact"] else f"<{s['max_ms']:g}")
        gc = "".join(f"{s['gc'].get(g, {}).get('count', 0)}/"
                     f"{s['gc'].get(g, {}).get('ms', 0):.0f}".rjust(w)
                     for g, w in (("0", 13), ("1", 12), ("2", 12)))
        out.append(f"  {name:<13}{s['seconds']:>7.1f}{s['probes']:>8}{longest:>12}"
                   f"{s['over_limit']:>7}{s['max_cpu_ms']:>8.0f}{s['own_over_limit']:>7}{gc}")
    over = [(name, x) for name, s in summary.items() for x in s["pauses"]
            if x["lag_ms"] > PAUSE_LIMIT_MS]
    for name, x in over:
        gen = f"gen {x['gc_generation']}" if x["gc_generation"] >= 0 else "no gc"
        out.append(f"  pause {x['lag_ms']:.0f} ms in {name} at +{x['at']:.2f} s: loop thread "
                   f"CPU {x['cpu_ms']:.0f} ms, gc {x['gc_ms']:.0f} ms ({gen}, CPU "
                   f"{x['gc_cpu_ms']:.0f} ms; longest {x['gc_longest_ms']:.0f} ms, gen "
                   f"{x['gc_longest_generation']})")
    if not over:
        out.append(f"  no pause over {PAUSE_LIMIT_MS} ms")
    return out
