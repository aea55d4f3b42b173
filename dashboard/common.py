"""Small UI pieces every page shares: error states, the synthetic badge, formatting."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd
import streamlit as st
from sqlalchemy import exc as sa_exc

from dashboard import arrays, data
from db.errors import SegbenchError
from worker.results.formats import MISSING

log = logging.getLogger(__name__)
T = TypeVar("T")

SYNTHETIC_HELP = (
    "These results come from GENERATED stand-in data (segbench data synth), "
    "not from the CT scans of the paper."
)


USER_ERRORS = (SegbenchError, OSError)  # what a page shows as one sentence


def one_sentence(error: BaseException) -> str:
    """An error as the one sentence a page shows."""
    if isinstance(error, sa_exc.SQLAlchemyError):
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()
        reason = reason[0] if reason else type(error).__name__
        return f"The database did not answer as expected ({reason}); try again in a moment."
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def load(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a data function; on a database or data error show it as one sentence and
    stop the page (never a traceback)."""
    try:
        return fn(*args, **kwargs)
    except (sa_exc.SQLAlchemyError, *USER_ERRORS) as error:
        log.warning("dashboard read failed: %s", error)
        st.error(one_sentence(error), icon=":material/error:")
        st.stop()
        raise  # st.stop raises; this line is never reached


def attempt(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Like load() but the page goes on: the error shows and None is returned."""
    try:
        return fn(*args, **kwargs)
    except (sa_exc.SQLAlchemyError, *USER_ERRORS) as error:
        log.warning("dashboard action failed: %s", error)
        st.error(one_sentence(error), icon=":material/error:")
        return None


def capture(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T | None, str | None]:
    """For actions run in a widget's callback (before the page draws, so that what it
    changed shows at once): (result, None), or (None, the error's one sentence)."""
    try:
        return fn(*args, **kwargs), None
    except (sa_exc.SQLAlchemyError, *USER_ERRORS) as error:
        log.warning("dashboard action failed: %s", error)
        return None, one_sentence(error)


NOTICE_KINDS = {"success": ":material/check_circle:", "error": ":material/error:"}


def notice(key: str) -> None:
    """Show (once) the message a callback left under session key `key`."""
    kind, text = st.session_state.pop(key, (None, None))
    if kind is not None:
        getattr(st, kind)(text, icon=NOTICE_KINDS.get(kind))


def run_link(run_id: int) -> str:
    """The Run page's address for one run (a deep link: ?run=17), relative to the page
    that shows it, so it holds under a server's base path too."""
    return f"run?run={int(run_id)}"


RUN_LINK_TEXT = r"run=(\d+)"  # what a LinkColumn of run_link() values shows: the id


PALETTE_KEY = "overlay_palette"  # one choice for the Gallery and the Run page


def palette_choice() -> str:
    """The overlay colours: the paper's green / red, or a colour-blind-safe pair."""
    names = list(arrays.PALETTES)
    if st.session_state.get(PALETTE_KEY) not in names:
        st.session_state[PALETTE_KEY] = arrays.DEFAULT_PALETTE
    return st.radio("Overlay colours", names, horizontal=True, key=PALETTE_KEY)


def _swatch(rgb: tuple[int, int, int]) -> str:
    r, g, b = rgb
    return (
        f'<span style="display:inline-block;width:0.9em;height:0.9em;border-radius:2px;'
        f'vertical-align:-0.1em;background:rgb({r},{g},{b})"></span>'
    )


def overlay_legend(palette: str) -> None:
    """What the overlay's two colours mean, with a swatch of each."""
    right, wrong = arrays.PALETTES[palette]
    st.markdown(
        f"{_swatch(right)} right: predicted and in the target (on the ground-truth tile: "
        f"the target) &nbsp;&nbsp; {_swatch(wrong)} wrong: false positives and false "
        "negatives &nbsp;&nbsp; grey: the CT slice (lung window)",
        unsafe_allow_html=True,
    )


def synthetic_badge(synthetic: Any) -> None:
    """The SYNTHETIC DATA badge, shown whenever any result on the page is synthetic."""
    if isinstance(synthetic, pd.Series):
        synthetic = bool(synthetic.fillna(False).astype(bool).any())
    if synthetic:
        st.badge("SYNTHETIC DATA", icon=":material/science:", color="orange")
        st.caption(SYNTHETIC_HELP)


def duration(seconds: float | None) -> str:
    """12 s, 3 min 5 s, 2 h 07 min, 1 d 4 h."""
    if seconds is None or pd.isna(seconds):
        return "–"
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def run_label(row: Any) -> str:
    """#12 lung-segmentation · unet · resnet18 · imagenet"""
    return f"#{row['id']} {row['experiment']} · {row['architecture']} · {row['encoder']} · " + str(
        row["init"]
    )


def sweep_choice(
    sweeps: pd.DataFrame,
    key: str,
    *,
    allow_all: bool = True,
    prefer_results: bool = False,
    label: str = "Sweep",
):
    """A sweep selectbox, newest first; None means every sweep. With prefer_results the
    first choice is the sweep with the most succeeded runs."""
    names = list(reversed(sweeps["name"].tolist())) if not sweeps.empty else []
    options = ([None] if allow_all else []) + names
    if not options:
        return None
    index = 0
    if prefer_results and "succeeded" in sweeps and sweeps["succeeded"].max() > 0:
        best = sweeps.loc[sweeps["succeeded"].astype(int).idxmax(), "name"]
        index = options.index(best)
    return st.selectbox(
        label,
        options,
        index=index,
        key=key,
        format_func=lambda s: "All sweeps" if s is None else s,
    )


def table(frame: Any, **kwargs: Any) -> Any:
    """st.dataframe that shows an en dash for a missing value, never "None"."""
    return st.dataframe(frame, placeholder=MISSING, **kwargs)


def results_page(title: str, waiting_for: str) -> tuple[str, pd.DataFrame]:
    """A results page's title, its database URL and sweeps; with no run stored yet the
    page says so in one line (what appears once runs finish) and stops there."""
    st.title(title)
    url = data.database_url()
    sweeps = load(data.sweeps, url)
    if sweeps.empty:
        st.info(f"The database holds no runs yet; {waiting_for}.")
        st.stop()
    return url, sweeps
