"""``GET /metrics``: Prometheus text from what the service's processes publish in Redis.

Ingest replicas publish per-stream statuses and frame -> estimate latencies, the router its
routed-crop counters and in-flight gauge; this renders them in one place, so a scrape does not
depend on which replica answers it.
"""

from __future__ import annotations

from tracklens.pipeline.service.control import LATENCY_BUCKETS_S, ControlPlane

__all__ = ["render_metrics"]


def render_metrics(control: ControlPlane) -> tuple[bytes, str]:
    """``(body, content type)`` of the exposition."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    specs = control.specs()
    statuses = [control.status(sid, spec.generation) for sid, spec in specs.items()]
    counters = control.metrics()
    mllm_in_flight = control.in_flight()

    class Collector:
        def collect(self):
            fps = GaugeMetricFamily("tracklens_stream_fps", "frames analysed per second", labels=["stream"])
            dropped = CounterMetricFamily("tracklens_stream_frames_dropped", "frames dropped because analysis fell behind", labels=["stream"])
            reconnects = CounterMetricFamily("tracklens_stream_reconnects", "reconnect attempts after a disconnect", labels=["stream"])
            active = GaugeMetricFamily("tracklens_stream_tracks_active", "tracks open on the stream", labels=["stream"])
            queued = GaugeMetricFamily("tracklens_stream_queued_frames", "frames waiting for analysis", labels=["stream"])
            for status in statuses:
                if status is not None:
                    fps.add_metric([status.id], status.fps)
                    dropped.add_metric([status.id], status.frames_dropped)
                    reconnects.add_metric([status.id], status.reconnects)
                    active.add_metric([status.id], status.tracks_active)
                    queued.add_metric([status.id], status.queued_frames)
            states = GaugeMetricFamily("tracklens_streams", "desired streams and jobs, by state", labels=["state"])
            tally: dict[str, int] = {}
            for status in statuses:
                state = "pending" if status is None else status.state
                tally[state] = tally.get(state, 0) + 1
            for state, n in sorted(tally.items()):
                states.add_metric([state], n)
            routed = CounterMetricFamily("tracklens_crops_routed", "crops estimated, by the source that answered", labels=["source"])
            for source in ("mllm", "specialist"):
                routed.add_metric([source], counters.get(f"routed:{source}", 0.0))
            in_flight = GaugeMetricFamily("tracklens_mllm_in_flight", "crops in the MLLM pool, summed over the ingest replicas")
            in_flight.add_metric([], mllm_in_flight)
            late = CounterMetricFamily("tracklens_mllm_late_answers", "MLLM answers after the latency budget, still fused")
            late.add_metric([], counters.get("late:mllm", 0.0))
            shed = CounterMetricFamily("tracklens_router_fallbacks", "MLLM troubles that sent crops to the specialist", labels=["reason"])
            for reason in ("backpressure", "overrun", "failure", "invalid"):
                shed.add_metric([reason], counters.get(f"fallback:{reason}", 0.0))
            buckets, cumulative = [], 0.0
            for bound in LATENCY_BUCKETS_S:
                cumulative += counters.get(f"latency_le:{bound}", 0.0)
                buckets.append((str(bound), cumulative))
            buckets.append(("+Inf", cumulative + counters.get("latency_le:+Inf", 0.0)))
            latency = HistogramMetricFamily("tracklens_estimate_latency_seconds", "frame time to estimate written, live streams")
            latency.add_metric([], buckets, counters.get("latency_sum", 0.0))
            yield from (fps, dropped, reconnects, active, queued, states, routed, in_flight, late, shed, latency)

    registry = CollectorRegistry()
    registry.register(Collector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
