"""Statistics: how far a sweep's numbers can be trusted. Hierarchical bootstrap
intervals, ranking stability (blob plot), the significance map, critical-difference
diagrams, per-volume metrics, the paper's means beside this database's, and both
metric modes side by side; re-queue the best runs with more seeds."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import auth, common, data
from db.protocol import METRIC_MODES
from worker.results import paper, stat_charts

st.title("Statistics")
url = data.database_url()
sweeps = common.load(data.sweeps, url)
if sweeps.empty:
    st.info("The database holds no runs yet; statistics appear once runs have finished.")
    st.stop()

c = st.columns([2, 1, 1, 1])
with c[0]:
    sweep = common.sweep_choice(sweeps, "stats_sweep", allow_all=False, prefer_results=True)
own_mode = (sweeps.set_index("name").at[sweep, "protocol"] or {}).get("metric_mode", "standard")
mode = c[1].selectbox(
    "Metric mode", METRIC_MODES, index=METRIC_MODES.index(own_mode), key="stats_mode"
)
top = int(c[2].number_input("Pairs among the top", 2, 50, 10, key="stats_top"))
resamples = c[3].selectbox("Resamples", [500, 1000, 2000], index=1, key="stats_resamples")

report = common.load(data.report, url, sweep, mode, top, resamples)
common.synthetic_badge(report["synthetic"])
runs = pd.DataFrame(report["runs"])
experiments = list(dict.fromkeys(runs["experiment"]))
experiment = st.radio("Experiment", experiments, horizontal=True, key="stats_experiment")
runs = runs[runs["experiment"] == experiment].copy()
runs["label"] = runs.apply(
    lambda r: f"#{r['id']} {r['architecture']} {r['encoder']} {r['init']} s{r['seed']}", axis=1
)
label = dict(zip(runs["id"], runs["label"], strict=True))
st.caption(
    f"{len(runs)} runs on {report['slices'].get(experiment, 0)} test slices, "
    f"{mode} metrics. Intervals: {int(100 * report['confidence'])}% percentile bootstrap, "
    f"{report['n_resamples']} resamples of **{report['resampled']}** (test volumes are "
    "drawn with replacement, then slices within each drawn volume)."
)

tabs = st.tabs(["Intervals", "Ranking", "Significance", "Critical difference", "Per volume",
                "Paper", "Metric modes"])  # fmt: skip

with tabs[0]:
    shown = runs.assign(low=runs["dice_ci"].str[0], high=runs["dice_ci"].str[1])
    shown = shown.dropna(subset=["low"])
    if shown.empty:
        st.info("No run of this experiment has per-slice counts to resample.")
    else:
        st.altair_chart(stat_charts.interval_chart(shown), width="stretch")
    st.dataframe(
        shown[["id", "label", "dice", "low", "high", "nsd", "hd95"]].rename(
            columns={
                "dice": "Dice (%)",
                "low": "CI low",
                "high": "CI high",
                "nsd": "NSD (%)",
                "hd95": "HD95 (mm)",
            }  # fmt: skip
        ),
        hide_index=True,
        width="stretch",
    )

with tabs[1]:
    ranking = pd.DataFrame([e for e in report["ranking"] if e["experiment"] == experiment])
    if ranking.empty:
        st.info("Nothing to rank in this experiment.")
    else:
        ranking["label"] = ranking["id"].map(label)
        ranking["low"], ranking["high"] = ranking["rank_ci"].str[0], ranking["rank_ci"].str[1]
        shares = pd.DataFrame(report["rank_shares"])
        shares = shares[shares["run"].isin(ranking["id"])].assign(
            label=lambda f: f["run"].map(label)
        )
        st.altair_chart(stat_charts.blob_chart(shares, ranking), width="stretch")
        st.caption(
            "Blob plot (challengeR): circle area = share of bootstrap resamples in which the "
            "run took that rank; black line = its 95% rank interval, tick = median rank."
        )
        taus = [t for t in report["kendall"]["modes"] if t["experiment"] == experiment]
        if taus and taus[0]["tau"] is not None:
            st.metric("Kendall's tau, standard vs authors-2020 ranking", f"{taus[0]['tau']:.3f}")
        between = pd.DataFrame(report["kendall"]["experiments"])
        if not between.empty:
            st.caption("Kendall's tau between experiments, over the grid cells both hold:")
            st.dataframe(between, hide_index=True)

    st.subheader("More seeds for the best runs")
    can_act = auth.authorised()
    if not can_act:
        auth.locked_note()
    s1, s2 = st.columns(2)
    k = int(s1.number_input("Top runs", 1, max(len(runs), 1), min(3, len(runs)), key="seeds_k"))
    typed = s2.text_input("Seeds to add (comma-separated)", "1, 2", key="seeds_list")
    best = runs.sort_values("dice", ascending=False).head(k)["id"].astype(int).tolist()
    if st.button(f"Queue {k} run(s) with these seeds", disabled=not can_act, key="stats_add_seeds"):
        try:
            seeds = [int(v) for v in typed.replace(" ", "").split(",") if v]
        except ValueError:
            st.error(f"Seeds are whole numbers separated by commas, got '{typed}'.")
        else:
            done = common.attempt(data.add_seeds, url, run_ids=best, seeds=seeds)
            if done is not None:
                where = ", ".join(done["sweeps"])
                st.success(
                    f"Queued {len(done['created'])} new run(s) in {where} "
                    f"({len(done['runs']) - len(done['created'])} existed already)."
                )

with tabs[2]:
    pairs = pd.DataFrame([p for p in report["pairwise"] if p["experiment"] == experiment])
    if pairs.empty:
        st.info("Fewer than two comparable runs in this experiment.")
    else:
        pairs["a"], pairs["b"] = pairs["a"].map(label), pairs["b"].map(label)
        st.altair_chart(stat_charts.significance_map(pairs), width="stretch")
        st.caption(
            f"{report['pairwise_rule']}. Colour: {report['wilcoxon']}, Holm-adjusted; × marks "
            "p ≤ 0.05. The table adds the paired hierarchical bootstrap of the difference."
        )
        st.dataframe(
            pairs[["a", "b", "difference", "ci", "p_holm", "p_bootstrap_holm"]],
            hide_index=True,
            width="stretch",
        )

with tabs[3]:
    for cd in report["cd"]:
        if cd.get("experiment") not in (None, experiment):
            continue
        st.markdown(f"**Which {cd['treatment']} is best** ({cd['question']})")
        if "skipped" in cd:
            st.info(f"Not enough results: {cd['skipped']}.")
            continue
        st.altair_chart(stat_charts.cd_chart(cd), width="stretch")
        fr = cd["friedman"]
        st.caption(
            f"Friedman chi² = {fr['statistic']:.2f}, p = {fr['p_value']:.3g} over {cd['blocks']} "
            f"blocks ({' × '.join(cd['blocks_of'])}); Nemenyi CD = {cd['cd']:.3f} "
            f"(q = {cd['q_alpha']:.3f}, alpha {cd['alpha']}). Treatments joined by a grey line "
            "are not significantly different."
        )

with tabs[4]:
    volumes = pd.DataFrame(
        [{"run": label[r["id"]], **v} for _, r in runs.iterrows() for v in r["volumes"]],
        columns=["run", "volume", "dice", "nsd", "hd95"],
    )
    if volumes.empty:
        st.info("No per-volume results stored for these runs.")
    else:
        st.dataframe(
            volumes.rename(columns={"dice": "3-D Dice (%)", "nsd": "NSD (%)", "hd95": "HD95 (mm)"}),
            hide_index=True,
            width="stretch",
        )
        if volumes["nsd"].isna().all():
            st.caption("NSD and HD95 were not recorded by these runs' evaluation.")

with tabs[5]:
    own = pd.DataFrame(report["runs"]).dropna(subset=["dice"])
    own = own.groupby(["experiment", "architecture"], as_index=False)["dice"].mean()
    both = pd.concat(
        [paper.architecture_means().assign(source="paper"), own.assign(source="this database")],
        ignore_index=True,
    )
    chart = stat_charts.paper_chart(both, synthetic=bool(report["synthetic"]))
    st.altair_chart(chart, width="content")
    st.caption(f"{paper.NOTE} Shown here: {mode} metrics.")
    if mode != paper.COMPARABLE_MODE:
        st.warning("Switch the metric mode to authors-2020 to compare with the paper.")

with tabs[6]:
    modes = common.load(data.both_modes, url, sweep)
    modes = modes[modes["experiment"] == experiment]
    modes["inflation"] = modes["dice authors-2020"] - modes["dice standard"]
    st.dataframe(modes, hide_index=True, width="stretch")
    st.caption(
        "Both metric modes from the same stored per-slice counts. authors-2020 scores 1 on "
        "every slice with an empty ground truth, whatever the prediction; 'inflation' is "
        "its Dice minus the standard one, in points."
    )
