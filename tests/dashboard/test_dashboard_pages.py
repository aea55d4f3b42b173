"""Every page through streamlit's AppTest: on an empty database, on a populated one,
and on a database that does not answer."""

from __future__ import annotations

import pytest
from dashboard_fixtures import OTHER_SWEEP, SWEEP, open_page, point_dashboard_at, populate, texts
from sqlalchemy import select

from db.models import Run, Sweep
from db.presets import PRESETS
from db.queries import queue_counts
from db.session import session_scope
from worker.training.sizes import run_bytes

PAGES = [
    "views/live.py",
    "views/launch.py",
    "views/leaderboard.py",
    "views/analysis.py",
    "views/statistics.py",
    "views/gallery.py",
]
READ_PAGES = [
    "views/live.py",
    "views/leaderboard.py",
    "views/analysis.py",
    "views/statistics.py",
    "views/gallery.py",
]
BADGE = "SYNTHETIC DATA"


def broker_messages(url: str) -> int:
    """Run ids waiting in the embedded broker beside the SQLite database."""
    from worker.queue import broker

    broker.configure(url)
    return broker.queue_depth()


def no_exception(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


@pytest.mark.parametrize("page", READ_PAGES)
def test_empty_database_says_so(empty_url, page):
    at = open_page(page)
    no_exception(at)
    assert not at.error
    assert any("no runs yet" in i.value for i in at.info), texts(at)


def test_launch_on_empty_database_offers_the_form(empty_url):
    at = open_page("views/launch.py")
    no_exception(at)
    assert at.metric[0].value == "600"  # nothing chosen: the whole grid
    assert any("No sweep yet" in i.value for i in at.info)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////nonexistent-folder/segbench.db",
        "postgresql://segbench@127.0.0.1:1/segbench",
    ],
)
@pytest.mark.parametrize("page", PAGES)
def test_database_that_does_not_answer_gives_one_sentence(monkeypatch, url, page):
    point_dashboard_at(monkeypatch, url)
    at = open_page(page)
    no_exception(at)
    messages = [e.value for e in at.error if e.value.startswith("Cannot")]
    assert messages, texts(at)
    assert "\n" not in messages[0] and "Traceback" not in messages[0]


def test_live_counts_running_and_failed(populated):
    at = open_page()  # Live is the default page
    no_exception(at)
    metrics = {m.label: int(m.value) for m in at.metric}
    assert metrics == {"total": sum(populated.counts.values()), **populated.counts}
    assert BADGE in texts(at)
    running, failed = at.dataframe[0].value, at.dataframe[1].value
    assert len(running) == len(populated.running)
    assert list(running["worker"]) == ["gpu-1", "gpu-2", "gpu-3"]
    assert running["progress"].between(0, 1).all()
    assert "CUDA out of memory" in failed["reason"].iloc[0]
    chart = at.get("vega_lite_chart")
    assert len(chart) == 1  # the loss curves of the running runs


def test_live_selection_survives_a_refresh(populated):
    at = open_page()
    chosen = [populated.running[1]]
    at.multiselect(key="live_curve_runs").set_value(chosen).run()
    at.run()  # what the fragment's timer does
    no_exception(at)
    assert at.multiselect(key="live_curve_runs").value == chosen


def test_live_filters_by_sweep(populated):
    at = open_page()
    at.selectbox(key="live_sweep").set_value(OTHER_SWEEP).run()
    no_exception(at)
    metrics = {m.label: int(m.value) for m in at.metric}
    assert metrics["total"] == len(populated.other_ids) == metrics["queued"]
    assert any("wait for a worker" in i.value for i in at.info)


def test_leaderboard_top_row_is_the_best_dice(populated):
    at = open_page("views/leaderboard.py")
    no_exception(at)
    board = at.dataframe[0].value
    assert len(board) == sum(populated.counts.values())
    assert board["run"].iloc[0] == populated.best_id
    assert board["Dice (%)"].iloc[0] == pytest.approx(populated.best_dice)
    assert board["NSD (%)"].iloc[0] == pytest.approx(populated.best_dice - 5.0)
    assert board["HD95 (mm)"].iloc[0] == pytest.approx((100.0 - populated.best_dice) / 10)
    assert BADGE in texts(at)
    assert at.get("download_button")


def test_leaderboard_filters_reduce_the_rows(populated):
    at = open_page("views/leaderboard.py")
    everything = len(at.dataframe[0].value)
    at.multiselect(key="lb_arch").set_value(["unet"]).run()
    unet = at.dataframe[0].value
    assert 0 < len(unet) < everything
    assert set(unet["architecture"]) == {"unet"}
    at.multiselect(key="lb_status").set_value(["succeeded"]).run()
    assert set(at.dataframe[0].value["status"]) == {"succeeded"}
    at.multiselect(key="lb_encoder").set_value(["efficientnet-b6"]).run()
    no_exception(at)
    assert any("No run matches" in i.value for i in at.info)


def test_leaderboard_sorts_by_parameters(populated):
    at = open_page("views/leaderboard.py")
    at.selectbox(key="lb_sort").set_value("parameters_m").run()
    params = at.dataframe[0].value["Params (M)"].dropna()
    assert params.is_monotonic_increasing


def test_analysis_draws_the_figures(populated):
    at = open_page("views/analysis.py")
    no_exception(at)
    assert at.selectbox(key="an_sweep").value == SWEEP  # the sweep with results
    charts = at.get("vega_lite_chart")
    # Fig. 6 (2), Fig. 4, Fig. 5 bands and B - A, mean Dice by encoder and family
    assert len(charts) == 7
    assert BADGE in texts(at)


def test_gallery_shows_masks_and_filters_without_the_dataset(populated):
    at = open_page("views/gallery.py")
    no_exception(at)
    models = at.multiselect(key=f"gal_models_{SWEEP}_lung-segmentation").value
    assert len(models) == 8  # best and worst encoder of each of 4 architectures
    # The dataset folder "data" does not exist: its error shows, the masks still do.
    assert any("data" in e.value for e in at.error)
    images = at.get("image")
    assert len(images) == 8 + 2  # 8 masks, first-layer filters before and after
    assert BADGE in texts(at)


def test_launch_counts_the_selection(populated):
    at = open_page("views/launch.py")
    at.multiselect(key="launch_architectures").set_value(["unet", "fpn"]).run()
    at.multiselect(key="launch_families").set_value(["vgg"]).run()
    at.multiselect(key="launch_encoders").set_value(["resnet18"]).run()
    no_exception(at)
    assert at.metric[0].value == str(3 * 2 * 4 * 2)  # experiments x archs x encoders x inits


def test_launch_offers_models_beyond_the_paper_behind_a_toggle(populated):
    at = open_page("views/launch.py")
    assert "unetplusplus" not in at.multiselect(key="launch_architectures").options
    at.toggle(key="launch_beyond").set_value(True).run()
    no_exception(at)
    at.multiselect(key="launch_architectures").set_value(["unetplusplus"]).run()
    at.multiselect(key="launch_encoders").set_value(["resnet18"]).run()
    no_exception(at)
    assert at.metric[0].value == str(3 * 2)  # experiments x inits
    at.multiselect(key="launch_encoders").set_value(["resnet18", "mit_b0"]).run()
    no_exception(at)  # a pair smp cannot build: one sentence, no runs
    assert "UnetPlusPlus does not support the encoder 'mit_b0'." in texts(at)
    assert at.metric[0].value == "0"


def test_launch_estimates_the_disk_a_selection_needs(populated):
    at = open_page("views/launch.py")
    at.multiselect(key="launch_architectures").set_value(["unet"]).run()
    at.multiselect(key="launch_encoders").set_value(["resnet18"]).run()
    no_exception(at)
    runs = 3 * 2  # experiments x inits
    finished = runs * run_bytes("unet", "resnet18") / 1e9
    peak = finished + (run_bytes("unet", "resnet18", training=True) / 1e9 - finished / runs)
    note = next(t for t in texts(at).splitlines() if t.startswith("Disk (estimate)"))
    assert f"{finished:.1f} GB of best models once finished" in note
    assert f"{peak:.1f} GB at most while 1 run(s) train" in note


def test_launch_enqueues_a_sweep(populated, synthetic_data):
    at = open_page("views/launch.py")
    at.text_input(key="launch_data_dir").set_value(str(synthetic_data)).run()
    at.multiselect(key="launch_experiments").set_value(["lung-segmentation"]).run()
    at.multiselect(key="launch_encoders").set_value(["resnet18"]).run()
    at.multiselect(key="launch_inits").set_value(["imagenet"]).run()
    at.text_input(key="launch_sweep").set_value("from-test").run()
    assert BADGE in texts(at)
    at.button(key="launch_enqueue").click().run()
    no_exception(at)
    assert any("holds these 4 runs" in s.value for s in at.success), texts(at)
    with session_scope(populated.url) as session:
        assert queue_counts(session, sweep="from-test")["queued"] == 4
    assert broker_messages(populated.url) == 4  # sent like `segbench submit` sends them


def test_launch_enqueues_a_preset_with_several_seeds(populated, synthetic_data):
    at = open_page("views/launch.py")
    at.radio(key="launch_preset").set_value("authors-2020").run()
    at.text_input(key="launch_data_dir").set_value(str(synthetic_data)).run()
    at.multiselect(key="launch_experiments").set_value(["lung-segmentation"]).run()
    at.multiselect(key="launch_architectures").set_value(["unet"]).run()
    at.multiselect(key="launch_encoders").set_value(["resnet18"]).run()
    at.multiselect(key="launch_inits").set_value(["random"]).run()
    at.text_input(key="launch_seeds").set_value("0, 1, 2").run()
    at.number_input(key="launch_epochs_authors-2020").set_value(3).run()  # overrides 100
    at.text_input(key="launch_sweep").set_value("seeded").run()
    assert at.metric[0].value == "3"
    at.button(key="launch_enqueue").click().run()
    no_exception(at)
    with session_scope(populated.url) as session:
        sweep = session.scalar(select(Sweep).where(Sweep.name == "seeded"))
        seeds = sorted(session.scalars(select(Run.seed).where(Run.sweep_id == sweep.id)))
        stored = {k: sweep.protocol[k] for k in PRESETS["authors-2020"]}
        assert stored == {**PRESETS["authors-2020"], "epochs": 3}
    assert seeds == [0, 1, 2]


def test_launch_enqueues_a_users_own_model(populated, synthetic_data, monkeypatch):
    """The model field takes the tests' tiny model module (importable here, as on an
    embedded deployment's worker): one run per chosen experiment, refused beside grid
    choices, and a module that does not import is refused at enqueue with nothing stored."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "fixtures"))
    at = open_page("views/launch.py")
    at.text_input(key="launch_data_dir").set_value(str(synthetic_data)).run()
    at.multiselect(key="launch_experiments").set_value(
        ["lung-segmentation", "lesion-segmentation-a"]
    ).run()
    at.text_input(key="launch_model").set_value("tiny_model:build").run()
    no_exception(at)
    assert at.metric[0].value == "2"
    at.multiselect(key="launch_encoders").set_value(["resnet18"]).run()
    assert any("takes experiments only" in e.value for e in at.error), texts(at)
    assert at.metric[0].value == "0" and at.button(key="launch_enqueue").disabled
    at.multiselect(key="launch_encoders").set_value([]).run()
    at.text_input(key="launch_model").set_value("absent_module:build").run()
    at.text_input(key="launch_sweep").set_value("mine").run()
    at.button(key="launch_enqueue").click().run()
    no_exception(at)
    assert any("Cannot import the model module 'absent_module'" in e.value for e in at.error)
    with session_scope(populated.url) as session:
        assert session.scalar(select(Sweep).where(Sweep.name == "mine")) is None
    at.text_input(key="launch_model").set_value("tiny_model:build").run()
    at.button(key="launch_enqueue").click().run()
    no_exception(at)
    assert any("holds these 2 runs" in s.value for s in at.success), texts(at)
    with session_scope(populated.url) as session:
        sweep = session.scalar(select(Sweep).where(Sweep.name == "mine"))
        cells = session.execute(
            select(Run.experiment, Run.architecture, Run.encoder, Run.init)
            .where(Run.sweep_id == sweep.id)
            .order_by(Run.experiment)
        ).all()
    assert [tuple(c) for c in cells] == [
        ("lesion-segmentation-a", "custom", "tiny_model:build", "own"),
        ("lung-segmentation", "custom", "tiny_model:build", "own"),
    ]


def test_launch_refuses_seeds_that_are_not_numbers(populated, synthetic_data):
    at = open_page("views/launch.py")
    at.text_input(key="launch_data_dir").set_value(str(synthetic_data)).run()
    at.text_input(key="launch_seeds").set_value("one").run()
    assert any("Seeds must be whole numbers" in e.value for e in at.error)
    assert at.button(key="launch_enqueue").disabled


def test_full_benchmark_needs_its_confirmation(populated, synthetic_data, monkeypatch):
    from worker.queue import broker

    sent: list[int] = []  # the embedded broker takes ~15 s for 600 messages: count them
    monkeypatch.setattr(broker, "publish", lambda ids, **_: sent.extend(ids) or len(sent))
    at = open_page("views/launch.py")
    at.text_input(key="launch_data_dir").set_value(str(synthetic_data)).run()
    assert at.button(key="launch_full_enqueue").disabled
    at.checkbox(key="launch_full_confirm").check().run()
    assert not at.button(key="launch_full_enqueue").disabled
    at.button(key="launch_full_enqueue").click().run()
    no_exception(at)
    with session_scope(populated.url) as session:
        assert sum(queue_counts(session, sweep="paper-benchmark").values()) == 600
    assert len(set(sent)) == 600


def test_cancel_and_retry_a_sweep(populated):
    at = open_page("views/launch.py")
    at.selectbox(key="manage_sweep").set_value(SWEEP).run()
    at.button(key="manage_cancel_sweep").click().run()
    no_exception(at)
    with session_scope(populated.url) as session:
        counts = queue_counts(session, sweep=SWEEP)
    assert counts["queued"] == 0 and counts["cancelled"] == 1 + 3
    at.button(key="manage_retry_sweep").click().run()
    with session_scope(populated.url) as session:
        counts = queue_counts(session, sweep=SWEEP)
    assert counts["queued"] == 3 + 1 + 1  # cancelled and failed runs queued again
    assert broker_messages(populated.url) == counts["queued"]  # every retried id was sent
    assert counts["cancelled"] == counts["failed"] == 0


def test_cancel_chosen_runs(populated):
    at = open_page("views/launch.py")
    at.selectbox(key="manage_sweep").set_value(OTHER_SWEEP).run()
    at.multiselect(key="manage_runs").set_value(populated.other_ids[:1]).run()
    at.button(key="manage_cancel_runs").click().run()
    no_exception(at)
    with session_scope(populated.url) as session:
        assert queue_counts(session, sweep=OTHER_SWEEP)["cancelled"] == 1


def test_password_guards_actions_not_reading(populated, monkeypatch):
    from db.settings import get_settings

    monkeypatch.setenv("SEGBENCH_DASHBOARD_PASSWORD", "s3cret")
    get_settings.cache_clear()
    at = open_page("views/launch.py")
    no_exception(at)
    assert at.button(key="launch_enqueue").disabled
    assert at.button(key="manage_cancel_sweep").disabled
    assert any("password" in i.value for i in at.info)
    at.switch_page("views/leaderboard.py").run()
    assert len(at.dataframe[0].value) > 0  # reading needs no password
    at.switch_page("views/launch.py").run()
    at.sidebar.text_input(key="segbench_password").set_value("wrong").run()
    assert at.button(key="manage_cancel_sweep").disabled
    at.sidebar.text_input(key="segbench_password").set_value("s3cret").run()
    assert not at.button(key="manage_cancel_sweep").disabled


def test_nan_losses_are_a_warning_not_an_error(postgres_url, monkeypatch):
    populated = populate(postgres_url, nan_losses=True)
    point_dashboard_at(monkeypatch, postgres_url)
    at = open_page()
    no_exception(at)
    assert any("NaN" in w.value for w in at.warning), texts(at)
    assert len(at.get("vega_lite_chart")) == 1
    for page in ("views/leaderboard.py", "views/analysis.py"):
        at.switch_page(page).run()
        no_exception(at)
    assert at.get("vega_lite_chart")
    at.switch_page("views/leaderboard.py").run()
    assert at.dataframe[0].value["run"].iloc[0] == populated.best_id


def test_gallery_and_histograms_read_the_sweeps_dataset(empty_url, synthetic_data):
    populate(empty_url, data_dir=str(synthetic_data))
    at = open_page("views/gallery.py")
    no_exception(at)
    assert not at.error, texts(at)
    captions = [c.value for c in at.caption]
    images = at.get("image")
    assert len(images) == 1 + 8 + 2  # ground truth, 8 models, filters before/after
    assert any("this slice" in str(c) for c in captions + [i.proto for i in images])
    at.switch_page("views/analysis.py").run()
    at.toggle(key="an_histograms").set_value(True).run()
    no_exception(at)
    assert not at.error, texts(at)
    assert len(at.get("vega_lite_chart")) == 7 + 1


def test_live_marks_a_run_whose_heartbeat_is_late_before_its_lease_expires(populated):
    from datetime import timedelta

    from sqlalchemy import update

    from db.models import Run, utcnow

    late, gone, fine = populated.running
    with session_scope(populated.url) as session:
        now = utcnow()
        session.execute(
            update(Run)
            .where(Run.id == fine)
            .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=40))
        )
        session.execute(
            update(Run)
            .where(Run.id == late)
            .values(
                heartbeat_at=now - timedelta(seconds=33),
                lease_expires_at=now + timedelta(seconds=7),
            )
        )
        session.execute(
            update(Run)
            .where(Run.id == gone)
            .values(
                heartbeat_at=now - timedelta(seconds=50),
                lease_expires_at=now - timedelta(seconds=10),
            )
        )
    at = open_page()
    no_exception(at)
    notes = list(at.dataframe[0].value["note"])
    assert notes[0].startswith("no heartbeat for 3") and notes[0].endswith(" s")
    assert notes[1] == "lease expired: being requeued"
    assert notes[2] == ""
