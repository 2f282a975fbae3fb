"""The runner's track lifecycle, with scripted detections and a recording estimator."""

from __future__ import annotations

from fakes import BlobFaceDetector, ListSource, RecordingEstimator, ScriptedDetector, walking_script
from tracklens.pipeline.config import PipelineConfig
from tracklens.pipeline.runner import StageSet, StreamAnalyzer, analyze
from tracklens.pipeline.store import MemoryTrackStore
from tracklens.pipeline.types import PERSON


def test_track_lifecycle_events_and_final_estimates():
    pa, fa = walking_script(range(40), 50)
    pb, fb = walking_script(range(10, 15), 400)  # a short visit: confirmed, then gone
    people = {i: pa.get(i, []) + pb.get(i, []) for i in range(40)}
    faces = {i: fa.get(i, []) + fb.get(i, []) for i in range(40)}
    config = PipelineConfig.model_validate(
        {"stream": "cam", "crops": {"first_after_s": 0.3, "refresh_s": 1.0}, "tracker": {"min_hits": 3, "lost_track_buffer": 30}}
    )
    estimator = RecordingEstimator()
    stages = StageSet(ScriptedDetector(people, PERSON), BlobFaceDetector(), estimator)
    store = MemoryTrackStore()
    analyzer = StreamAnalyzer(config, stages, store, 10.0, stream="cam")
    analyze(ListSource(40, faces), analyzer)

    tracks = {t.track: t for t in store.tracks("cam")}
    assert set(tracks) == {"cam:0:1", "cam:0:2"}
    long, short = tracks["cam:0:1"], tracks["cam:0:2"]
    assert long.first_seen == 0.2 and long.last_seen == 3.9 and long.frames == 38
    assert short.state == long.state == "ended"
    # the short track ended (lost buffer: 10 frames at 10 fps) long before the file did
    events = [(e["track"], e["event"]) for e in store.events("cam")]
    assert events.index(("cam:0:2", "end")) < events.index(("cam:0:1", "end"))
    assert events[0] == ("cam:0:1", "start")
    # long: first request 0.3 s after confirmation, a refresh a second later, then it is
    # confident (age standard error 1/sqrt(2 * 0.8 / 3^2) = 2.37 < 4, both labels set) and
    # is not asked again; short: vanished before its first request was due, so its best crop
    # was sent when it ended
    assert estimator.seen.count("cam:0:1") == 2 and estimator.seen.count("cam:0:2") == 1
    assert long.age.model_dump() == {"mean": 30.0, "std": 2.37, "n": 2}
    assert long.gender.label == "female" and long.expression.label == "happy"
    assert short.age.mean is None and short.age.n == 1  # one estimate is not enough
    assert store.record("cam:0:1").state["age_n"] == 2
    assert len(analyzer.driver.book) == 0  # every ended track was written and forgotten


def test_a_track_that_ends_before_its_first_request_still_gets_estimated():
    pb, fb = walking_script(range(5), 300)
    config = PipelineConfig.model_validate({"crops": {"first_after_s": 5.0}, "tracker": {"min_hits": 2}})
    estimator = RecordingEstimator()
    stages = StageSet(ScriptedDetector(pb, PERSON), BlobFaceDetector(), estimator)
    analyzer = StreamAnalyzer(config, stages, MemoryTrackStore(), 10.0, stream="cam")
    analyze(ListSource(8, fb), analyzer)
    assert estimator.seen == ["cam:0:1"]


def test_face_only_people_are_followed_between_full_scans_on_a_fraction_of_the_pixels():
    """No person detections at all: the face is found by a full scan, then in windows
    around where it was, frame after frame, and the track never breaks."""
    faces = {i: [[100 + 8 * i, 200, 150 + 8 * i, 250]] for i in range(30)}
    config = PipelineConfig.model_validate({"detection": {"face_schedule": {"full_scan_interval_s": 1.0}}})
    detector = BlobFaceDetector()
    stages = StageSet(ScriptedDetector({}, PERSON), detector, RecordingEstimator())
    store = MemoryTrackStore()
    analyzer = StreamAnalyzer(config, stages, store, 10.0, stream="cam")
    analyze(ListSource(30, faces), analyzer)
    (track,) = store.tracks("cam")
    assert track.frames == 28  # every frame from confirmation (min_hits 3) to the end
    full_scans = 3  # at 0, 1 and 2 s
    assert detector.pixels_scanned < 0.3 * 30 * 480 * 640
    assert detector.pixels_scanned > full_scans * 480 * 640


def _two_people(n: int):
    pa, fa = walking_script(range(n), 50)
    pb, fb = walking_script(range(n), 400)
    return {i: pa[i] + pb[i] for i in range(n)}, {i: fa[i] + fb[i] for i in range(n)}


def test_a_stop_request_ends_and_writes_every_open_track_at_once():
    people, faces = _two_people(60)
    ended: list[dict] = []
    store = MemoryTrackStore()
    analyzer = StreamAnalyzer(PipelineConfig(), StageSet(ScriptedDetector(people, PERSON), BlobFaceDetector(), RecordingEstimator()),
                              store, 10.0, stream="cam", on_track_end=ended.append)  # fmt: skip
    stop = __import__("threading").Event()

    def on_frame(result):
        if result.frame.index == 20:
            stop.set()

    analyze(ListSource(60, faces), analyzer, on_frame, stop=stop)
    # the batch after the request was never analysed: frames 0-23 were (batches of 8)
    assert analyzer.stats.frames_analysed == 24
    assert sorted(s.track for s in ended) == ["cam:0:1", "cam:0:2"]
    assert all(s.state == "ended" for s in store.tracks("cam"))
    assert [e["event"] for e in store.events("cam")].count("end") == 2


def test_an_estimator_crash_still_ends_and_writes_the_open_tracks_then_raises():
    """The error reaches the caller, but only after every track was ended in the store
    (an active track with no expiry would be left behind otherwise)."""
    import pytest

    people, faces = _two_people(60)
    ended: list[dict] = []
    store = MemoryTrackStore()
    estimator = RecordingEstimator(fail_on_call=2)
    analyzer = StreamAnalyzer(PipelineConfig(), StageSet(ScriptedDetector(people, PERSON), BlobFaceDetector(), estimator),
                              store, 10.0, stream="cam", on_track_end=ended.append)  # fmt: skip
    with pytest.raises(RuntimeError, match="estimator crashed"):
        analyze(ListSource(60, faces), analyzer)
    assert estimator.calls == 2  # the final flush did not call the failed estimator again
    assert sorted(s.track for s in ended) == ["cam:0:1", "cam:0:2"]
    assert {s.state for s in store.tracks("cam")} == {"ended"}


def test_a_restarted_stream_goes_on_with_the_same_track_keys():
    """Perception's snapshot (tracker, crop budgets, open tracks) survives a JSON round trip;
    a stream restored from it gives exactly what an uninterrupted stream gives."""
    import json

    from tracklens.pipeline.perception import Perception

    people, faces = _two_people(40)
    config = PipelineConfig()
    frames = list(ListSource(40, faces))

    def run(parts):
        detector = ScriptedDetector(people, PERSON)
        snapshot, keys, spans = None, [], {}
        for part in parts:
            perception = Perception(config, detector, BlobFaceDetector(), "cam", 0, 10.0, snapshot=snapshot)
            for i in range(part.start, part.stop, 8):
                batch = perception.process(frames[i : min(i + 8, part.stop)])
                keys += [[p.key for p in r.people] for r in batch.results]
                spans.update(batch.seen)
            snapshot = json.loads(json.dumps(perception.snapshot()))
        return keys, spans

    whole = run([range(0, 40)])
    restarted = run([range(0, 24), range(24, 40)])
    assert restarted == whole
    assert {k for frame in whole[0] for k in frame} == {"cam:0:1", "cam:0:2"}


def test_the_pipeline_bench_times_each_stage_of_a_real_run(sample_video, models):
    """Regression: the bench read its stats from what ``analyze`` returned, which became the
    run's end; ``make bench`` failed before measuring anything."""
    from tracklens.pipeline.bench import _pipeline

    got = _pipeline(sample_video, {}, models)
    assert got["frames"] == 40 and got["fps"] > 0
    assert got["seconds"]["decode"] > 0 and got["seconds"]["person"] > 0 and got["seconds"]["total"] >= got["seconds"]["decode"]
    assert [t[0] for t in got["tracks"]] == ["video:0:1"]

