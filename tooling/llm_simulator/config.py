"""Configuration of the Messages API simulator.

Everything here is plain data plus a couple of small parsers for the CLI
string formats (``--latency`` and ``--fault-rate``). No Django, no I/O.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Fault kinds the simulator can inject, with what each one does.
FAULT_KINDS: dict[str, str] = {
    "529": "HTTP 529 overloaded_error (anthropic.OverloadedError)",
    "500": "HTTP 500 api_error (anthropic.InternalServerError)",
    "502": "HTTP 502 api_error (anthropic.InternalServerError)",
    "503": "HTTP 503 api_error (anthropic.ServiceUnavailableError)",
    "504": "HTTP 504 timeout_error (anthropic.GatewayTimeoutError)",
    "timeout": "accept the request, then send nothing until the client gives up "
    "(or hang_seconds pass) and close the connection (anthropic.APITimeoutError)",
    "disconnect": "close the connection without any response (anthropic.APIConnectionError)",
    "malformed": "HTTP 200, content-type application/json, body cut in the middle (json.JSONDecodeError in the SDK)",
    "truncated": "HTTP 200, stop_reason max_tokens, text cut off mid-way (for a schema: broken JSON)",
    "refusal": "HTTP 200, stop_reason refusal, empty content, stop_details.type refusal",
}

# Aliases accepted on the CLI / config dicts.
_FAULT_ALIASES = {
    "overloaded": "529",
    "overload": "529",
    "api_error": "500",
    "internal": "500",
    "hang": "timeout",
    "close": "disconnect",
    "reset": "disconnect",
    "bad_json": "malformed",
    "max_tokens": "truncated",
    "truncate": "truncated",
}

_Z99 = 2.3263478740408408  # standard normal quantile at 0.99


def normalize_fault_kind(kind: str) -> str:
    k = str(kind).strip().lower()
    k = _FAULT_ALIASES.get(k, k)
    if k not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    return k


def parse_fault_rates(spec: Any) -> dict[str, float]:
    """Parse ``"529=0.05,500=0.05,timeout=0.01"`` (or a mapping) into {kind: rate}."""
    if spec is None or spec == "":
        return {}
    items: list[tuple] = []
    if isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part and ":" not in part:
                raise ValueError(f"bad fault spec {part!r}; expected KIND=RATE")
            k, v = part.replace(":", "=", 1).split("=", 1)
            items.append((k, v))
    out: dict[str, float] = {}
    for k, v in items:
        rate = float(v)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate for {k!r} must be in [0, 1], got {rate}")
        out[normalize_fault_kind(k)] = out.get(normalize_fault_kind(k), 0.0) + rate
    total = sum(out.values())
    if total > 1.0 + 1e-9:
        raise ValueError(f"fault rates add up to {total:.3f} > 1")
    return out


@dataclass
class LatencySpec:
    """A long-tailed latency distribution, in seconds.

    ``dist`` is one of ``lognormal`` (default), ``uniform``, ``fixed`` or ``none``.
    For ``lognormal`` the median and p99 define mu/sigma; samples are clipped
    to [min, max]. ``per_token`` seconds are added per generated output token
    (0 by default), which models generation speed.
    """

    dist: str = "lognormal"
    median: float = 0.015
    p99: float = 0.06
    min: float = 0.002
    max: float = 0.15
    per_token: float = 0.0

    def validate(self) -> LatencySpec:
        if self.dist not in ("lognormal", "uniform", "fixed", "none"):
            raise ValueError(f"unknown latency distribution {self.dist!r}")
        for name in ("median", "p99", "min", "max", "per_token"):
            if getattr(self, name) < 0:
                raise ValueError(f"latency {name} must be >= 0")
        if self.max < self.min:
            raise ValueError("latency max must be >= min")
        return self

    def sample(self, rng: random.Random, output_tokens: int = 0) -> float:
        if self.dist == "none":
            base = 0.0
        elif self.dist == "fixed":
            base = self.median
        elif self.dist == "uniform":
            base = rng.uniform(self.min, self.max)
        else:
            median = max(self.median, 1e-6)
            p99 = max(self.p99, median)
            sigma = math.log(p99 / median) / _Z99 if p99 > median else 0.0
            base = rng.lognormvariate(math.log(median), sigma)
        if self.dist != "none":
            base = min(max(base, self.min), self.max)
        return base + self.per_token * max(0, output_tokens)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_latency(spec: Any) -> LatencySpec:
    """Parse a latency spec.

    Accepted forms::

        "lognormal:median=0.05,p99=0.5,min=0.01,max=2"
        "uniform:min=0.1,max=0.5"
        "fixed:0.3"  or  "0.3"      (always 0.3 s)
        "none" / "0"                (no added latency)
        {"dist": "lognormal", "median": 2, "p99": 20, "min": 2, "max": 30}
        a LatencySpec instance

    Unspecified keys keep their defaults, except that ``min``/``max`` of a
    lognormal default to [0, 100*p99] when median/p99 are given, so that a
    spec like ``lognormal:median=5,p99=25`` is not clipped by the small
    test defaults.
    """
    if isinstance(spec, LatencySpec):
        return dataclasses.replace(spec).validate()
    if spec is None:
        return LatencySpec()
    if isinstance(spec, (int, float)):
        v = float(spec)
        if v == 0:
            return LatencySpec(dist="none", median=0, p99=0, min=0, max=0)
        return LatencySpec(dist="fixed", median=v, p99=v, min=v, max=v)
    if isinstance(spec, Mapping):
        d = dict(spec)
        dist = str(d.pop("dist", d.pop("type", "lognormal")))
        return _build_latency(dist, {k: float(v) for k, v in d.items()})
    s = str(spec).strip()
    if s.lower() in ("none", "0", "off", ""):
        return LatencySpec(dist="none", median=0, p99=0, min=0, max=0)
    if ":" in s:
        dist, rest = s.split(":", 1)
    else:
        try:
            return parse_latency(float(s))
        except ValueError:
            dist, rest = s, ""
    dist = dist.strip().lower()
    params: dict[str, float] = {}
    for part in rest.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            if dist == "fixed":
                params["value"] = float(part)
                continue
            raise ValueError(f"bad latency parameter {part!r}; expected KEY=SECONDS")
        k, v = part.split("=", 1)
        params[k.strip().lower()] = float(v)
    return _build_latency(dist, params)


def _build_latency(dist: str, params: dict[str, float]) -> LatencySpec:
    dist = dist.lower()
    known = {"median", "p99", "min", "max", "per_token", "value", "mean"}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown latency parameter(s) {sorted(unknown)}; known: {sorted(known)}")
    if dist == "none":
        return LatencySpec(dist="none", median=0, p99=0, min=0, max=0, per_token=params.get("per_token", 0.0))
    if dist == "fixed":
        v = params.get("value", params.get("median", params.get("mean", 0.0)))
        return LatencySpec(
            dist="fixed", median=v, p99=v, min=v, max=v, per_token=params.get("per_token", 0.0)
        ).validate()
    if dist == "uniform":
        lo = params.get("min", 0.0)
        hi = params.get("max", lo)
        mid = (lo + hi) / 2
        return LatencySpec(
            dist="uniform",
            median=mid,
            p99=lo + 0.99 * (hi - lo),
            min=lo,
            max=hi,
            per_token=params.get("per_token", 0.0),
        ).validate()
    if dist == "lognormal":
        if "median" in params or "p99" in params:
            median = params.get("median", params.get("p99", 0.0) / 4)
            p99 = params.get("p99", median * 4)
            lo = params.get("min", 0.0)
            hi = params.get("max", max(p99 * 100, lo))
        else:
            base = LatencySpec()
            median, p99 = base.median, base.p99
            lo = params.get("min", base.min)
            hi = params.get("max", base.max)
        return LatencySpec(
            dist="lognormal", median=median, p99=p99, min=lo, max=hi, per_token=params.get("per_token", 0.0)
        ).validate()
    raise ValueError(f"unknown latency distribution {dist!r}; use lognormal, uniform, fixed or none")


def latency_from_min_median_max(
    min_s: float | None, median_s: float | None, max_s: float | None, p99_s: float | None = None
) -> LatencySpec:
    """Build a clipped lognormal from ``--latency-min/--latency-median/--latency-max``.

    With no p99 given, p99 is put at 80% of the way from median to max (in
    log space), which gives a visible long tail while leaving room before the
    clip.
    """
    base = LatencySpec()
    lo = base.min if min_s is None else min_s
    hi = base.max if max_s is None else max_s
    med = (
        median_s
        if median_s is not None
        else (base.median if min_s is None and max_s is None else math.sqrt(max(lo, 1e-3) * max(hi, 1e-3)))
    )
    med = min(max(med, lo), hi) if hi >= lo else med
    if p99_s is None:
        if med > 0 and hi > med:
            p99_s = math.exp(math.log(med) + 0.8 * (math.log(hi) - math.log(med)))
        else:
            p99_s = med
    return LatencySpec(dist="lognormal", median=med, p99=p99_s, min=lo, max=hi).validate()


@dataclass
class SimulatorConfig:
    """Every run-time knob of the simulator. All of these can be passed to
    ``start_simulator(**config)``, set by CLI flags, and changed at run time
    with ``POST /_sim/config``.

    Rate limits of 0 (or None) mean unlimited.
    """

    # --- rate limits (token buckets, replenished continuously) -------------
    rpm: int = 0  # requests per minute on POST /v1/messages
    itpm: int = 0  # input tokens per minute (uncached input + cache writes)
    otpm: int = 0  # output tokens per minute
    # After this many accepted POST /v1/messages requests, every further one
    # gets the non-transient spend-limit 429. None = never.
    spend_limit_after: int | None = None

    # --- latency ------------------------------------------------------------
    latency: LatencySpec = field(default_factory=LatencySpec)
    # Latency before an error response (429/5xx/400) is sent.
    error_latency: float = 0.0

    # --- faults -------------------------------------------------------------
    fault_rates: dict[str, float] = field(default_factory=dict)
    # Outcomes forced for the next requests, consumed first-in first-out
    # before the random draw: e.g. ["529", "529", "ok"].
    fault_script: list[str] = field(default_factory=list)
    seed: int = 0
    # How long a "timeout" fault holds the connection open at most.
    hang_seconds: float = 600.0

    # --- prompt caching -----------------------------------------------------
    cache_min_tokens: int = 1024  # prefixes shorter than this are not cached
    cache_ttl: float | None = None  # override TTL (s); None = 300 s / 3600 s per block ttl

    # --- batches ------------------------------------------------------------
    batch_delay: float = 0.3  # seconds a batch stays in_progress

    # --- misc ---------------------------------------------------------------
    require_api_key: bool = True  # 401 when neither x-api-key nor Authorization is sent
    organization_id: str = "00000000-0000-4000-8000-00000000051d"

    def validate(self) -> SimulatorConfig:
        for name in ("rpm", "itpm", "otpm"):
            v = getattr(self, name)
            if v is None:
                setattr(self, name, 0)
            elif v < 0:
                raise ValueError(f"{name} must be >= 0")
        self.latency = parse_latency(self.latency)
        self.fault_rates = parse_fault_rates(self.fault_rates)
        self.fault_script = [
            ("ok" if str(k).lower() in ("ok", "none", "-") else normalize_fault_kind(k))
            for k in (self.fault_script or [])
        ]
        if self.batch_delay < 0 or self.hang_seconds < 0 or self.error_latency < 0:
            raise ValueError("delays must be >= 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["latency"] = self.latency.to_dict()
        return d

    def updated(self, changes: Mapping[str, Any]) -> SimulatorConfig:
        """Return a copy with ``changes`` applied (unknown keys raise ValueError).

        Besides the field names, ``fault_rate`` (alias of fault_rates) and
        ``latency_min``/``latency_median``/``latency_max``/``latency_p99`` are
        accepted.
        """
        changes = dict(changes)
        names = {f.name for f in dataclasses.fields(self)}
        if "fault_rate" in changes:
            changes["fault_rates"] = changes.pop("fault_rate")
        lat_keys = {
            k: changes.pop(k) for k in ("latency_min", "latency_median", "latency_max", "latency_p99") if k in changes
        }
        unknown = set(changes) - names
        if unknown:
            raise ValueError(
                f"unknown config key(s): {sorted(unknown)}; known: {sorted(names | {'fault_rate', 'latency_min', 'latency_median', 'latency_max', 'latency_p99'})}"
            )
        new = dataclasses.replace(self, **changes)
        if lat_keys:
            if "latency" in changes:
                raise ValueError("give either latency or latency_min/median/max, not both")
            new.latency = latency_from_min_median_max(
                lat_keys.get("latency_min"),
                lat_keys.get("latency_median"),
                lat_keys.get("latency_max"),
                lat_keys.get("latency_p99"),
            )
        # copy mutable containers so that the caller's objects are not shared
        new.fault_rates = dict(parse_fault_rates(new.fault_rates))
        new.fault_script = list(new.fault_script or [])
        return new.validate()
