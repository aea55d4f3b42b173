"""The segbench dashboard: `segbench dashboard` runs `streamlit run dashboard/app.py`.

Launch the benchmark, watch it train live, read the leaderboard and the paper's
figures. Reads SEGBENCH_DATABASE_URL (through db.settings) for the database.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

try:
    import dashboard  # noqa: F401 - installed package (pip install -e .)
except ImportError:  # a plain checkout: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dashboard import auth, data  # noqa: E402

st.set_page_config(page_title="segbench", page_icon=":material/biotech:", layout="wide")

PAGES = [
    st.Page("views/live.py", title="Live", icon=":material/monitor_heart:", default=True),
    st.Page("views/launch.py", title="Launch", icon=":material/rocket_launch:"),
    st.Page("views/run.py", title="Run", icon=":material/description:", url_path="run"),
    st.Page("views/leaderboard.py", title="Leaderboard", icon=":material/leaderboard:"),
    st.Page("views/analysis.py", title="Analysis", icon=":material/insights:"),
    st.Page("views/statistics.py", title="Statistics", icon=":material/query_stats:"),
    st.Page("views/gallery.py", title="Gallery", icon=":material/image:"),
]

page = st.navigation(PAGES)

with st.sidebar:
    st.caption("Bizopoulos et al. (2020): 600 models for lung and COVID-19 lesion segmentation.")
    st.caption(f"Database: `{data.shown_url(data.database_url())}`")
    if st.button("Refresh now", icon=":material/refresh:", help="Forget the cached reads."):
        data.clear_cache()
auth.password_form()

page.run()
