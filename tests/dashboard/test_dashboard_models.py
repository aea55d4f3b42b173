"""The leaderboard beside the paper's grid: a user's model and an smp model beyond the
paper show marked in the `grid` column and in Table 2, and "Paper grid only" hides
them."""

from __future__ import annotations

from db import jobs
from db.grid import RunSpec, custom_specs
from db.protocol import Protocol
from db.session import session_scope
from tests.dashboard.dashboard_fixtures import open_page


def test_leaderboard_marks_models_beyond_the_paper_and_filters_them(populated):
    specs = [
        *custom_specs("mylab.models:build", ["lung-segmentation"]),
        RunSpec("lung-segmentation", "unetplusplus", "tu-resnet18", "random"),
    ]
    with session_scope(populated.url) as session:
        ids = jobs.submit(
            session,
            specs=specs,
            protocol=Protocol(epochs=1, image_size=64),
            sweep="own-models",
            data_dir="/nonexistent",
            dataset={"name": "generated", "synthetic": True},
        )
    at = open_page("views/leaderboard.py")
    assert not at.exception
    board = at.dataframe[0].value
    kinds = dict(zip(board["run"], board["grid"], strict=True))
    assert kinds[ids[0]] == "custom" and kinds[ids[1]] == "smp"
    assert {kinds[i] for i in kinds if i not in ids} == {"paper"}
    encoders = dict(zip(board["run"], board["encoder"], strict=True))
    assert encoders[ids[0]] == "◆ mylab.models:build" and encoders[ids[1]] == "+ tu-resnet18"
    assert any("a user's own model" in c.value for c in at.caption)
    at.checkbox(key="lb_paper_only").check().run()
    shown = at.dataframe[0].value
    assert set(shown["grid"]) == {"paper"} and len(shown) == len(board) - 2
