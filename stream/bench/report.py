"""The benchmark as a table: each figure beside its baseline, ratios and targets last."""

from __future__ import annotations

from typing import Any

__all__ = ["render_table"]


def _ms(latency: dict[str, Any] | None) -> str:
    if not latency:
        return "- (saturated)"
    return f"{latency['p50_ms']:.1f} / {latency['p99_ms']:.1f} / {latency['p999_ms']:.1f}"


def _rate(value: float | None) -> str:
    return f"{value:,.0f}/s" if value else "-"


def render_table(result: dict[str, Any]) -> str:
    """Plain-text (Markdown-compatible) table of one ``run_bench`` result."""
    lines: list[str] = []
    machine = result.get("machine", {})
    lines.append(
        f"machine: {machine.get('nproc')} cores, {machine.get('cpu_model')}, "
        f"Python {machine.get('python')}, load average {machine.get('load_avg_1m')} at start, "
        f"{machine.get('load_avg_1m_end')} at the end"
    )
    options = result.get("options", {})
    lines.append(
        f"offered load: warm-up {options.get('warmup_s')} s excluded, "
        f"{options.get('measured_s')} s measured per rate; "
        f"fetch wait {options.get('fetch_wait_ms')} ms, "
        f"linger {options.get('producer_linger_ms')} ms, {options.get('partitions')} partitions"
    )
    lines.append("")
    broker = {p["offered_rate"]: p for p in result.get("broker_floor", {}).get("offered", [])}
    faust = {p["offered_rate"]: p for p in result.get("faust_floor", {}).get("offered", [])}
    agent = {p["offered_rate"]: p for p in result.get("faust_agent_floor", {}).get("offered", [])}
    mine = {p["offered_rate"]: p for p in result.get("insession", {}).get("offered", [])}
    rates = sorted(set(broker) | set(faust) | set(agent) | set(mine))
    if rates:
        lines.append(
            "| latency p50 / p99 / p99.9 ms (from intended send) | broker floor (relay) "
            "| Faust agent floor | Faust floor (batch runtime) | insession event → page "
            "| in-worker: consumed → page produced | in-worker: consumed → acked + checkpointed "
            "| in-worker: consumed → batch starts |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for rate in rates:
            phase = mine.get(rate, {})
            lines.append(
                f"| offered {rate:,.0f} events/s | {_ms(broker.get(rate, {}).get('latency'))} "
                f"| {_ms(agent.get(rate, {}).get('latency'))} "
                f"| {_ms(faust.get(rate, {}).get('latency'))} "
                f"| {_ms(phase.get('latency'))} | {_ms(phase.get('in_worker_page_produced'))} "
                f"| {_ms(phase.get('in_worker_processing'))} "
                f"| {_ms(phase.get('in_worker_batch_wait'))} |"
            )
        sustained = result.get("insession", {}).get("at_sustained_rate")
        if sustained:
            lines.append(
                f"| insession sustained: {sustained['offered_rate']:,.0f} events/s paced "
                f"({sustained.get('share_of_drain_rate', 0.9):.0%} of its drain rate, the "
                "highest share tried that kept up; fresh topics and worker) | | "
                f"| | {_ms(sustained['latency'])} "
                f"| {_ms(sustained.get('in_worker_page_produced'))} "
                f"| {_ms(sustained.get('in_worker_processing'))} "
                f"| {_ms(sustained.get('in_worker_batch_wait'))} |"
            )
        attempts = result.get("insession", {}).get("sustained_attempts") or []
        behind = [a for a in attempts if not a["kept_up"]]
        if behind:
            tried = ", ".join(
                f"{a['offered_rate']:,.0f}/s "
                + (f"p99 {a['p99_ms']:,.0f} ms" if "p99_ms" in a else "no answer")
                for a in behind
            )
            lines.append(f"| insession fell behind on a paced stream at: {tried} | | | | | | | |")
        lines.append("")
        lines.append(
            "| maximum throughput (backlog drain) | broker floor | Faust agent floor "
            "| Faust floor (batch runtime) | insession |"
        )
        lines.append("|---|---|---|---|---|")
        lines.append(
            "| events/s | "
            + " | ".join(
                _rate(result.get(name, {}).get("max_throughput", {}).get("events_per_s"))
                for name in ("broker_floor", "faust_agent_floor", "faust_floor", "insession")
            )
            + " |"
        )
        lines.append("")
    pauses = result.get("insession", {}).get("gc_pauses")
    if pauses:
        lines.append(
            "worker GC pauses over the run (count, p99 / max ms): "
            + ", ".join(
                f"{gen} {p['count']:.0f}, {p['p99_ms']:.1f} / {p['max_ms']:.1f}"
                for gen, p in sorted(pauses.items())
                if gen.startswith("gen")
            )
            + f"; survivors frozen {pauses.get('freezes', 0)} times"
        )
        lines.append("")
    for name in ("broker_floor", "faust_agent_floor", "faust_floor", "insession"):
        error = result.get(name, {}).get("error")
        if error:
            lines.append(f"{name}: ERROR {error.splitlines()[0]}")
    engine = result.get("engine_alone")
    if engine:
        lines.append(
            f"engine alone (in-process, warm models), a page per trigger: "
            f"{engine['events_per_cpu_s']:,.0f} events per CPU-second "
            f"({engine['events_per_s']:,.0f}/s of wall time); "
            f"per event p50/p99/p99.9 {_ms(engine.get('per_event'))} ms; "
            f"page-building events ({engine['page_share']:.0%}) "
            f"{_ms(engine.get('per_page_event'))} ms"
        )
        for row in engine.get("batched", []):
            lines.append(
                f"engine alone, {row['mode']} as the worker feeds it (one page per user per "
                f"batch): {row['events_per_cpu_s']:,.0f} events per CPU-second "
                f"(x{row.get('events_per_cpu_s_over_event_at_a_time')} the baseline), "
                f"{row['pages']:,} pages for {row['triggers']:,} triggers; "
                f"per batch {_ms(row.get('per_batch'))} ms"
            )
    memory = result.get("memory")
    if memory:
        for population in memory["populations"]:
            lines.append(
                f"memory at {population['users']:,} active sessions: "
                f"{population['state_bytes_per_session']:,} B of user state per session "
                f"(RSS growth {population['rss_bytes_per_session']:,} B); "
            )
        lines.append(
            f"  plus a bounded cache of recent pages' features: "
            f"{memory['served_cache_bytes_per_page']:,} B/page, at most "
            f"{memory['served_cache_pages_max']:,} pages"
        )
    ratios = result.get("ratios", {})
    if ratios.get("latency") or "throughput_over_faust" in ratios:
        lines.append("")
        lines.append("ratios:")
        for row in ratios.get("latency", []):
            parts = [f"  @ {row['offered_rate']:,.0f}/s:"]
            if "p99_over_broker" in row:
                parts.append(
                    f"insession/broker p50 x{row['p50_over_broker']}, "
                    f"p99 x{row['p99_over_broker']} (p99 {row['p99_minus_broker_ms']:+.1f} ms)"
                )
            if "p99_over_faust_agent" in row:
                parts.append(f"insession/Faust agent p99 x{row['p99_over_faust_agent']}")
            if "p99_over_faust" in row:
                parts.append(f"insession/Faust batch runtime p99 x{row['p99_over_faust']}")
            lines.append(" ".join(parts))
        if "throughput_over_faust_agent" in ratios:
            lines.append(
                f"  throughput insession/Faust agent: x{ratios['throughput_over_faust_agent']}"
            )
        if "throughput_over_faust" in ratios:
            lines.append(
                f"  throughput insession/Faust batch runtime: x{ratios['throughput_over_faust']}"
            )
    lines.append(f"(elapsed {result.get('elapsed_s')} s; logs in {result.get('log_dir')})")
    return "\n".join(lines)
