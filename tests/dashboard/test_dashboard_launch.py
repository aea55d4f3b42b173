"""The Launch page through streamlit's AppTest: what a selection costs (runs, epochs,
disk, time) with every seed counted, the protocol's every field, the full benchmark
only through its confirmation, enqueueing, cancelling and retrying."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from dashboard import protocol_form
from dashboard.common import duration
from db.grid import EXPERIMENTS
from db.models import Epoch, Run, Sweep
from db.presets import PRESETS
from db.queries import queue_counts
from db.session import session_scope
from tests.dashboard.dashboard_fixtures import OTHER_SWEEP, SWEEP, broker_messages, open_page, texts
from worker.training.sizes import run_bytes

BADGE = "SYNTHETIC DATA"


def no_exception(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


TEXT_INPUTS = ("seeds", "sweep", "data_dir", "model")


def choose(at, **choices) -> None:
    """Set Launch inputs by the end of their key: text inputs or multiselects."""
    for key, value in choices.items():
        kind = at.text_input if key in TEXT_INPUTS else at.multiselect
        kind(key=f"launch_{key}").set_value(value).run()


def test_nothing_chosen_is_no_run_and_never_the_whole_grid(empty_url):
    """An empty selection used to turn into an enabled "Enqueue 600 runs"."""
    at = open_page("views/launch.py")
    no_exception(at)
    assert at.metric[0].value == "0"
    assert at.button(key="launch_enqueue").label == "Enqueue"
    assert at.button(key="launch_enqueue").disabled
    assert any("Nothing chosen yet" in i.value for i in at.info), texts(at)
    assert any("No sweep yet" in i.value for i in at.info)


def test_the_whole_grid_goes_through_the_confirmation(populated, synthetic_data):
    at = open_page("views/launch.py")
    choose(at, data_dir=str(synthetic_data), experiments=list(EXPERIMENTS))
    no_exception(at)
    assert at.metric[0].value == "600"
    assert at.button(key="launch_enqueue").disabled
    assert any("whole 600-model grid" in w.value for w in at.warning), texts(at)


def test_launch_counts_the_selection(populated):
    at = open_page("views/launch.py")
    choose(at, architectures=["unet", "fpn"], families=["vgg"], encoders=["resnet18"])
    no_exception(at)
    assert at.metric[0].value == str(3 * 2 * 4 * 2)  # experiments x archs x encoders x inits


def test_every_figure_counts_the_seeds(populated, synthetic_data):
    """Runs, epochs, the disk estimate and both buttons count every seed: with seeds
    0, 1, 2 the full benchmark is 1,800 runs, not 600."""
    at = open_page("views/launch.py")
    choose(at, data_dir=str(synthetic_data), architectures=["unet"], encoders=["resnet18"])
    choose(at, experiments=["lung-segmentation"], inits=["random"], seeds="0, 1, 2")
    no_exception(at)
    epochs = PRESETS["default"]["epochs"]
    assert at.metric[0].value == "3"
    assert at.metric[1].value == f"{3 * epochs:,}"
    assert f"1 grid cells × 3 seed(s) × {epochs} epochs = {3 * epochs:,} epochs" in texts(at)
    assert at.button(key="launch_enqueue").label == "Enqueue 3 runs"
    finished = 3 * run_bytes("unet", "resnet18") / 1e9
    note = next(t for t in texts(at).splitlines() if t.startswith("Disk (estimate)"))
    assert f"{finished:.1f} GB of best models once the 3 runs have finished" in note
    assert at.button(key="launch_full_enqueue").label.endswith("(1,800 runs)")
    assert f"**1,800 runs**, with the protocol above: **{1800 * epochs:,} epochs**" in texts(at)


def test_launch_estimates_the_disk_a_selection_needs(populated):
    at = open_page("views/launch.py")
    choose(at, architectures=["unet"], encoders=["resnet18"])
    no_exception(at)
    runs = 3 * 2  # experiments x inits
    finished = runs * run_bytes("unet", "resnet18") / 1e9
    peak = finished + (run_bytes("unet", "resnet18", training=True) / 1e9 - finished / runs)
    note = next(t for t in texts(at).splitlines() if t.startswith("Disk (estimate)"))
    assert f"{finished:.1f} GB of best models once the {runs} runs have finished" in note
    assert f"{peak:.1f} GB at most while 1 run(s) train" in note


def stored_seconds(url: str, **cell) -> list[float]:
    """Seconds (training + validation) of every stored epoch of the cell, plain SQL rows."""
    with session_scope(url) as session:
        stmt = select(Epoch.train_seconds, Epoch.val_seconds).join(Run, Run.id == Epoch.run_id)
        for column, value in cell.items():
            stmt = stmt.where(getattr(Run, column) == value)
        return [t + v for t, v in session.execute(stmt)]


def test_time_estimate_from_the_measured_epochs(populated, synthetic_data):
    """The estimate is said to be one and from what. Checked against a plain mean of
    the stored epochs' seconds: the cell's own when it was measured, every cell's
    when not. The populated sweep trained at 64 px, the synthetic dataset's size."""
    at = open_page("views/launch.py")
    choose(at, data_dir=str(synthetic_data), architectures=["unet"], encoders=["resnet18"])
    choose(at, experiments=["lung-segmentation"], inits=["random"], seeds="0, 1")
    at.number_input(key="launch_epochs_default").set_value(5).run()
    no_exception(at)
    own = stored_seconds(populated.url, architecture="unet", encoder="resnet18")
    expected = 2 * 5 * sum(own) / len(own)  # 2 runs x 5 epochs, one run at a time
    sentence = next(t for t in texts(at).splitlines() if t.startswith("Time (estimate)"))
    assert f"about {duration(expected)} with 1 run(s) at once" in sentence
    every = stored_seconds(populated.url)
    assert f"from {len(every):,} measured epochs" in sentence
    assert "at 64 px, batch 2 in this database" in sentence
    assert at.metric[3].value == duration(expected)

    choose(at, encoders=["densenet121"])  # never measured: the mean of every cell
    sentence = next(t for t in texts(at).splitlines() if t.startswith("Time (estimate)"))
    assert f"about {duration(2 * 5 * sum(every) / len(every))}" in sentence
    assert "2 of the runs have no measured epoch of their own model" in sentence

    at.number_input(key="launch_image_size_default_64").set_value(128).run()
    assert "no epoch at 128 px, batch 2 has been measured" in texts(at)


def test_image_size_starts_at_the_datasets_slice_size(empty_url, synthetic_data):
    """The generated dataset has 64 px slices: the image size starts at 64, not 512."""
    at = open_page("views/launch.py")
    choose(at, data_dir=str(synthetic_data))
    no_exception(at)
    assert at.number_input(key="launch_image_size_default_64").value == 64
    assert "slices of 64 px" in texts(at)
    assert "64 px, batch 2" in texts(at)  # the protocol line


def test_every_protocol_field_is_on_the_page(populated, synthetic_data):
    """One input per shared field of Protocol (the per-run seed has its own), among them
    the NSD tolerance and boundary mode that are hashed into every run's identity."""
    at = open_page("views/launch.py")
    choose(at, data_dir=str(synthetic_data))
    keys = {w.key for kind in ("number_input", "selectbox", "checkbox", "text_input")
            for w in getattr(at, kind)}  # fmt: skip
    for field in protocol_form.fields():
        assert any(str(k).startswith(f"launch_{field.name}_default") for k in keys), field.name
    choose(at, architectures=["unet"], encoders=["resnet18"], experiments=["lung-segmentation"])
    choose(at, inits=["random"], sweep="boundary")
    at.number_input(key="launch_nsd_tolerance_mm_default").set_value(1.5).run()
    at.selectbox(key="launch_boundary_mode_default").set_value("border-voxel").run()
    assert "NSD tolerance 1.5 mm" in texts(at) and "boundary border-voxel" in texts(at)
    at.button(key="launch_enqueue").click().run()
    no_exception(at)
    with session_scope(populated.url) as session:
        stored = session.scalar(select(Sweep.protocol).where(Sweep.name == "boundary"))
    assert (stored["nsd_tolerance_mm"], stored["boundary_mode"]) == (1.5, "border-voxel")
    assert stored["image_size"] == 64


def test_launch_offers_models_beyond_the_paper_behind_a_toggle(populated):
    at = open_page("views/launch.py")
    assert "unetplusplus" not in at.multiselect(key="launch_architectures").options
    at.toggle(key="launch_beyond").set_value(True).run()
    no_exception(at)
    choose(at, architectures=["unetplusplus"], encoders=["resnet18"])
    no_exception(at)
    assert at.metric[0].value == str(3 * 2)  # experiments x inits
    choose(at, encoders=["resnet18", "mit_b0"])
    no_exception(at)  # a pair smp cannot build: one sentence, no runs
    assert "UnetPlusPlus does not support the encoder 'mit_b0'." in texts(at)
    assert at.metric[0].value == "0"


def test_launch_enqueues_a_sweep(populated, synthetic_data):
    at = open_page("views/launch.py")
    choose(at, data_dir=str(synthetic_data), experiments=["lung-segmentation"])
    choose(at, encoders=["resnet18"], inits=["imagenet"], sweep="from-test")
    assert BADGE in texts(at)
    at.button(key="launch_enqueue").click().run()
    no_exception(at)
    assert any("holds these 4 runs" in s.value for s in at.success), texts(at)
    with session_scope(populated.url) as session:
        assert queue_counts(session, sweep="from-test")["queued"] == 4
    assert broker_messages(populated.url) == 4  # sent like `segbench submit` sends them
    assert "from-test" in at.selectbox(key="manage_sweep").options  # listed at once


def test_launch_enqueues_a_preset_with_several_seeds(populated, synthetic_data):
    at = open_page("views/launch.py")
    at.radio(key="launch_preset").set_value("authors-2020").run()
    choose(at, data_dir=str(synthetic_data), experiments=["lung-segmentation"])
    choose(at, architectures=["unet"], encoders=["resnet18"], inits=["random"])
    choose(at, seeds="0, 1, 2", sweep="seeded")
    at.number_input(key="launch_epochs_authors-2020").set_value(3).run()  # overrides 100
    assert at.metric[0].value == "3"
    at.button(key="launch_enqueue").click().run()
    no_exception(at)
    with session_scope(populated.url) as session:
        sweep = session.scalar(select(Sweep).where(Sweep.name == "seeded"))
        seeds = sorted(session.scalars(select(Run.seed).where(Run.sweep_id == sweep.id)))
        stored = {k: sweep.protocol[k] for k in PRESETS["authors-2020"]}
    # the dataset's 64 px slices set the image size; everything else is the preset's
    assert stored == {**PRESETS["authors-2020"], "epochs": 3, "image_size": 64}
    assert seeds == [0, 1, 2]


def test_launch_enqueues_a_users_own_model(populated, synthetic_data, monkeypatch):
    """The model field takes the tests' tiny model module (importable here, as on an
    embedded deployment's worker): one run per chosen experiment, refused beside grid
    choices, and a module that does not import is refused at enqueue with nothing stored."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "fixtures"))
    at = open_page("views/launch.py")
    choose(at, data_dir=str(synthetic_data))
    choose(at, experiments=["lung-segmentation", "lesion-segmentation-a"], model="tiny_model:build")
    no_exception(at)
    assert at.metric[0].value == "2"
    choose(at, encoders=["resnet18"])
    assert any("takes experiments only" in e.value for e in at.error), texts(at)
    assert at.metric[0].value == "0" and at.button(key="launch_enqueue").disabled
    choose(at, encoders=[], model="absent_module:build", sweep="mine")
    at.button(key="launch_enqueue").click().run()
    no_exception(at)
    assert any("Cannot import the model module 'absent_module'" in e.value for e in at.error)
    with session_scope(populated.url) as session:
        assert session.scalar(select(Sweep).where(Sweep.name == "mine")) is None
    choose(at, model="tiny_model:build")
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
    choose(at, data_dir=str(synthetic_data), encoders=["resnet18"], seeds="one")
    assert any("Seeds must be whole numbers" in e.value for e in at.error)
    assert at.button(key="launch_enqueue").disabled


def test_full_benchmark_needs_its_confirmation(populated, synthetic_data, monkeypatch):
    from worker.queue import broker

    sent: list[int] = []  # the embedded broker takes ~15 s for 600 messages: count them
    monkeypatch.setattr(broker, "publish", lambda ids, **_: sent.extend(ids) or len(sent))
    at = open_page("views/launch.py")
    choose(at, data_dir=str(synthetic_data))
    assert at.button(key="launch_full_enqueue").disabled
    at.checkbox(key="launch_full_confirm").check().run()
    assert not at.button(key="launch_full_enqueue").disabled
    at.button(key="launch_full_enqueue").click().run()
    no_exception(at)
    with session_scope(populated.url) as session:
        assert sum(queue_counts(session, sweep="paper-benchmark").values()) == 600
    assert len(set(sent)) == 600


def sweep_caption(at) -> str:
    return next(c.value for c in at.caption if c.value.startswith("queued:"))


def test_cancel_and_retry_a_sweep_show_the_new_counts_at_once(populated):
    at = open_page("views/launch.py")
    at.selectbox(key="manage_sweep").set_value(SWEEP).run()
    assert "queued: 3" in sweep_caption(at) and "cancelled: 1" in sweep_caption(at)
    at.button(key="manage_cancel_sweep").click().run()
    no_exception(at)
    with session_scope(populated.url) as session:
        counts = queue_counts(session, sweep=SWEEP)
    assert counts["queued"] == 0 and counts["cancelled"] == 1 + 3
    # the counts on the page are those after the cancel, not before it
    assert "queued: 0" in sweep_caption(at) and "cancelled: 4" in sweep_caption(at)
    assert any("Cancelled 3 queued run(s)" in s.value for s in at.success), texts(at)
    at.button(key="manage_retry_sweep").click().run()
    with session_scope(populated.url) as session:
        counts = queue_counts(session, sweep=SWEEP)
    assert counts["queued"] == 3 + 1 + 1  # cancelled and failed runs queued again
    assert broker_messages(populated.url) == counts["queued"]  # every retried id was sent
    assert counts["cancelled"] == counts["failed"] == 0
    assert "queued: 5" in sweep_caption(at) and "failed: 0" in sweep_caption(at)


def test_cancel_chosen_runs(populated):
    at = open_page("views/launch.py")
    at.selectbox(key="manage_sweep").set_value(OTHER_SWEEP).run()
    at.multiselect(key="manage_runs").set_value(populated.other_ids[:1]).run()
    at.button(key="manage_cancel_runs").click().run()
    no_exception(at)
    with session_scope(populated.url) as session:
        assert queue_counts(session, sweep=OTHER_SWEEP)["cancelled"] == 1
    assert "cancelled: 1" in sweep_caption(at)
