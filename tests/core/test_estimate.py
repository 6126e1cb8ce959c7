"""The time estimate: the model's arithmetic, and the machine's figures kept between runs."""

from __future__ import annotations

import json

import pytest
import torch

from nstyle.core import estimate
from nstyle.core.estimate import Speed, SpeedRecord, StepSample
from nstyle.core.plan import Plan, ScalePlan, make, schedule
from nstyle.core.stylizer import Stylizer
from nstyle.io import speed
from nstyle.options.config import Config
from nstyle.options.layers import network_share


def test_fit_recovers_a_line_and_the_setup():
    # 0.1 s + 20 s per megapixel per iteration; each step's setup costs 2 of its iterations
    steps = [StepSample(mp, 10, 10 * (0.1 + 20 * mp), 2 * (0.1 + 20 * mp)) for mp in (0.01, 0.05, 0.2)]
    speed_ = estimate.fit(steps, [1.5, 0.5, 1.0])
    assert speed_.per_iteration == pytest.approx(0.1)
    assert speed_.per_megapixel == pytest.approx(20)
    assert speed_.setup == pytest.approx(2)
    assert speed_.warmup == pytest.approx(1.0)


def test_fit_of_one_size_is_all_per_pixel_and_noise_never_goes_negative():
    one = estimate.fit([StepSample(0.1, 4, 4.0, 1.0)], [])
    assert (one.per_iteration, one.per_megapixel) == (0.0, pytest.approx(10.0))
    # a larger image measured faster (a busy moment): a flat line, not a negative slope
    flat = estimate.fit([StepSample(0.01, 5, 5.0, 0.0), StepSample(0.1, 5, 2.5, 0.0)], [])
    newest = 1 / (1 + estimate.DECAY)  # the newer sample's share of the weight
    assert flat.per_megapixel == 0 and flat.per_iteration == pytest.approx(0.5 * newest + 1.0 * (1 - newest))


def test_seconds_adds_every_step_of_the_plan():
    plan = Plan((ScalePlan(256, 256, 192, 100), ScalePlan(512, 512, 384, 50)))
    s = Speed(per_iteration=0.05, per_megapixel=10.0, setup=2.0, warmup=3.0)
    t1, t2 = 0.05 + 10 * 256 * 192 / 1e6, 0.05 + 10 * 512 * 384 / 1e6
    assert estimate.seconds(plan, s) == pytest.approx(3.0 + 102 * t1 + 52 * t2)


def test_a_tiled_step_counts_its_overlapping_halos():
    whole = ScalePlan(2048, 2048, 1536, 10)
    tiled = ScalePlan(2048, 2048, 1536, 10, tile=512)
    assert estimate.effective_megapixels(whole) == pytest.approx(2048 * 1536 / 1e6)
    # 4 x 3 tiles of (512 + 2 x 96) px
    assert estimate.effective_megapixels(tiled, halo=96) == pytest.approx(12 * 704 * 704 / 1e6)


@pytest.mark.parametrize("secs, text", [(4, "a few seconds"), (42, "about 40 s"), (100, "about 1 min 30 s"),
                                        (130, "about 2 min"), (1500, "about 25 min"),
                                        (4200, "about 1 h 10 min"), (7200, "about 2 h")])
def test_describe_reads_as_a_person_says_it(secs, text):
    assert estimate.describe(secs) == text


def test_a_record_keeps_the_newest_samples():
    record = SpeedRecord()
    for i in range(estimate.MAX_SAMPLES + 5):
        record.add([StepSample(0.01, 1, float(i), 0.0)], float(i))
    assert len(record.steps) == estimate.MAX_SAMPLES and record.steps[-1].optimize_seconds == 28
    again = SpeedRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again.speed() == record.speed()


def test_runs_are_recorded_per_machine_and_the_estimate_follows_them(tmp_path, monkeypatch):
    monkeypatch.setenv("NSTYLE_CACHE_DIR", str(tmp_path))
    config = Config.from_options(scales="32,48", scale_iterations="3,2", tolerance=0)
    plan = schedule(config, (30, 40))
    assert speed.known_speed(config) is None and speed.estimate_seconds(config, plan) is None
    result = Stylizer(config).run(torch.rand(1, 3, 30, 40), [torch.rand(1, 3, 40, 40)])
    speed.record_run(config, result)
    kept = json.loads((tmp_path / "speed.json").read_text())[speed.machine_key(config)]
    assert [s["iterations"] for s in kept["steps"]] == [3, 2]
    # the last scale reads up to relu3_1 only: its work counts at that share of a whole pass
    assert [s["megapixels"] for s in kept["steps"]] == pytest.approx(
        [32 * 24 / 1e6, 48 * 36 / 1e6 * network_share(["relu3_1"])])
    assert kept["steps"][1]["optimize_seconds"] == pytest.approx(result.timings["optimize_48"])
    guess = speed.estimate_seconds(config, plan)
    # the same run again: its own figures predict it (no noise model: the arithmetic)
    assert guess == pytest.approx(estimate.seconds(plan, speed.known_speed(config)))
    assert 0 < guess < 10 * result.timings["total"]


def test_a_step_that_reads_less_of_the_network_is_estimated_at_its_share():
    """The default's last scale stops at relu3_1: its iterations cost about 0.45 of a whole
    pass per pixel, so a speed fitted on whole passes predicts it at that share, and with
    every layer read (--coarse-only-layers none) at all of it."""
    plan = schedule(Config.from_options(size=512), (384, 512))
    assert [s.network_share for s in plan.scales] == [1.0, pytest.approx(0.449, abs=1e-3)]
    whole = schedule(Config.from_options(size=512, coarse_only_layers="none"), (384, 512))
    assert [s.network_share for s in whole.scales] == [1.0, 1.0]
    speed_here = Speed(per_iteration=0.0, per_megapixel=10.0, setup=0.0, warmup=0.0)
    last, last_whole = plan.scales[-1], whole.scales[-1]
    assert estimate.seconds(Plan((last,), None), speed_here) == pytest.approx(
        0.449 * estimate.seconds(Plan((last_whole,), None), speed_here), rel=1e-2)
    assert plan.scales[-1].to_dict()["network_share"] == pytest.approx(0.449, abs=1e-3)
    assert "network_share" not in whole.scales[-1].to_dict()


def test_the_memory_plan_fits_each_step_with_the_layers_it_reads():
    """The last scale's network stops at relu3_1: its estimated peak is below a last scale
    that reads every layer, and the first scale's is the same either way."""
    auto = make(Config.from_options(size=512), (384, 512), [(400, 512)])
    whole = make(Config.from_options(size=512, coarse_only_layers="none"), (384, 512), [(400, 512)])
    assert auto.scales[0].estimated_peak_gib == whole.scales[0].estimated_peak_gib
    assert auto.scales[-1].estimated_peak_gib < whole.scales[-1].estimated_peak_gib


def test_a_cache_that_cannot_be_written_never_fails_a_run(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("NSTYLE_CACHE_DIR", str(blocked / "cache"))
    config = Config.from_options(size=32, iterations=2)
    result = Stylizer(config).run(torch.rand(1, 3, 24, 32), [torch.rand(1, 3, 32, 32)])
    speed.record_run(config, result)  # nothing raised
    assert speed.known_speed(config) is None


def test_the_newest_runs_count_most():
    # the machine got twice as fast (a run of two steps at 2 s, then one at 1 s an iteration)
    old = [StepSample(0.05, 100, 100 * 2.0, 0.0)] * 2
    new = [StepSample(0.05, 100, 100 * 1.0, 0.0)] * 2
    assert estimate.fit(old + new, []).iteration_seconds(0.05) < 1.25
    assert estimate.fit(new + old, []).iteration_seconds(0.05) > 1.75


def test_the_measuring_run_retires_once_real_runs_of_two_sizes_are_known():
    measuring = [StepSample(0.01, 4, 4 * 9.0, 0.0, measuring=True), StepSample(0.05, 4, 4 * 9.0, 0.0, measuring=True)]
    one_real = [StepSample(0.02, 100, 100 * (0.1 + 20 * 0.02), 0.0)]
    two_real = one_real + [StepSample(0.08, 50, 50 * (0.1 + 20 * 0.08), 0.0)]
    assert estimate.fit(measuring + one_real, []).samples == 3  # still standing in
    fitted = estimate.fit(measuring + two_real, [])
    assert fitted.samples == 2 and fitted.per_megapixel == pytest.approx(20)


def test_the_newest_real_run_sets_the_level_and_the_older_ones_the_shape():
    # an hour ago, under load: 5x slower at three sizes; now one run at one size, at speed
    busy = [StepSample(mp, 100, 100 * 5 * (0.1 + 20 * mp), 0.0) for mp in (0.01, 0.03, 0.1)]
    now = StepSample(0.05, 80, 80 * (0.1 + 20 * 0.05), 0.0)
    fitted = estimate.fit(busy + [now], [])
    assert fitted.iteration_seconds(0.05) == pytest.approx(1.1)
    assert fitted.iteration_seconds(0.2) == pytest.approx(0.1 + 20 * 0.2, rel=0.1)
    # a run of a few iterations (a test, a probe) is too short to set the level
    short = StepSample(0.05, 3, 3 * 0.2, 0.0)
    assert estimate.fit(busy + [short], []).iteration_seconds(0.05) > 3
