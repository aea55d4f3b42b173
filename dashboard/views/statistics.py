"""Statistics: how far a sweep's numbers can be trusted. Intervals of each run's mean
Dice (approximate, the method named), ranking stability (blob plot), the significance
map, critical-difference diagrams, per-volume metrics, the paper's means beside this
database's, and both metric modes side by side; re-queue the best runs with more
seeds. Each tab is one function below; the page runs them on one report."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import auth, common, data
from db import metrics as registry
from db.metrics import BOOTSTRAP_RESAMPLES, INTERVAL_METHOD, INTERVAL_METHODS
from db.protocol import METRIC_MODES
from worker.results import formats as fmt
from worker.results import paper, stat_charts
from worker.results.intervals import DESCRIPTIONS
from worker.results.styles import metric_styler, table_height

RESAMPLE_CHOICES = sorted({500, 1000, BOOTSTRAP_RESAMPLES, 4000})
TABS = ("Intervals", "Ranking", "Significance", "Critical difference", "Per volume", "Paper",
        "Metric modes")  # fmt: skip


def controls(sweeps: pd.DataFrame) -> tuple[str, str, int, int, str]:
    """(sweep, metric mode, top, resamples, interval method) chosen at the top."""
    c = st.columns([2, 1, 1, 1, 2])
    with c[0]:
        sweep = common.sweep_choice(sweeps, "stats_sweep", allow_all=False, prefer_results=True)
    own = (sweeps.set_index("name").at[sweep, "protocol"] or {}).get("metric_mode", "standard")
    mode = c[1].selectbox(
        "Metric mode", METRIC_MODES, index=METRIC_MODES.index(own), key="stats_mode"
    )
    top = int(c[2].number_input("Pairs among the top", 2, 50, 10, key="stats_top"))
    resamples = c[3].selectbox(
        "Resamples", RESAMPLE_CHOICES, index=RESAMPLE_CHOICES.index(BOOTSTRAP_RESAMPLES),
        key="stats_resamples",
    )  # fmt: skip
    interval = c[4].selectbox(
        "Intervals", INTERVAL_METHODS, index=INTERVAL_METHODS.index(INTERVAL_METHOD),
        key="stats_interval", format_func=lambda m: {"cluster-t": "cluster-robust t",
        "percentile": "percentile bootstrap"}[m], help="; ".join(DESCRIPTIONS.values()),
    )  # fmt: skip
    return sweep, mode, top, int(resamples), interval


def interval_words(report: dict) -> str:
    conf = int(round(100 * report["confidence"]))
    return f"{conf}% {report['interval']['description']}"


def intervals_tab(report: dict, runs: pd.DataFrame) -> None:
    shown = runs.assign(low=runs["dice_ci"].str[0], high=runs["dice_ci"].str[1])
    drawn = shown.dropna(subset=["low"])
    if drawn.empty:
        st.info("No run of this experiment has per-slice counts to compute an interval from.")
    else:
        dice = registry.get("dice")
        st.altair_chart(
            stat_charts.interval_chart(drawn, dice.header, dice.decimals), width="stretch"
        )
    metrics = registry.select(kind="test", compact=True)
    table = pd.DataFrame({"run": shown["label"]}, index=shown.index)
    for m in metrics:
        table[m.header] = pd.to_numeric(shown[m.name], errors="coerce")
        if m.name == "dice":
            table["95% CI"] = [fmt.interval(ci, m.decimals) for ci in shown["dice_ci"]]
    common.table(
        metric_styler(table, shown, metrics),
        hide_index=True,
        width="stretch",
        height=table_height(len(table)),
        column_config={m.header: st.column_config.NumberColumn(help=m.help) for m in metrics},
    )
    st.caption(f"Intervals of mean Dice: {interval_words(report)}.")


def ranking_tab(report: dict, runs: pd.DataFrame, label: dict, experiment: str) -> None:
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
            "run took that rank; grey line = its approximate 95% rank interval (percentile "
            f"bootstrap, {report['n_resamples']} resamples), tick = median rank. Ties share "
            "their average rank."
        )
        taus = [t for t in report["kendall"]["modes"] if t["experiment"] == experiment]
        if taus and pd.notna(taus[0]["tau"]):
            st.metric(
                "Kendall's tau, standard vs authors-2020 ranking", fmt.number(taus[0]["tau"], 3)
            )
        between = pd.DataFrame(report["kendall"]["experiments"])
        if not between.empty:
            st.caption("Kendall's tau between experiments, over the grid cells both hold:")
            between["tau"] = pd.to_numeric(between["tau"], errors="coerce")
            common.table(between.style.format(precision=3, na_rep=fmt.MISSING), hide_index=True)
    more_seeds(runs)


def more_seeds(runs: pd.DataFrame) -> None:
    st.subheader("More seeds for the best runs")
    can_act = auth.authorised()
    if not can_act:
        auth.locked_note()
    s1, s2 = st.columns(2)
    k = int(s1.number_input("Top runs", 1, max(len(runs), 1), min(3, len(runs)), key="seeds_k"))
    typed = s2.text_input("Seeds to add (comma-separated)", "1, 2", key="seeds_list")
    best = runs.sort_values("dice", ascending=False).head(k)["id"].astype(int).tolist()
    if not st.button(f"Queue {k} run(s) with these seeds", disabled=not can_act,
                     key="stats_add_seeds"):  # fmt: skip
        return
    try:
        seeds = [int(v) for v in typed.replace(" ", "").split(",") if v]
    except ValueError:
        st.error(f"Seeds are whole numbers separated by commas, got '{typed}'.")
        return
    done = common.attempt(data.add_seeds, url, run_ids=best, seeds=seeds)
    if done is not None:
        st.success(
            f"Queued {len(done.created)} new run(s) in {', '.join(done.sweeps)} "
            f"({len(done.runs) - len(done.created)} existed already)."
        )


def significance_tab(report: dict, label: dict, experiment: str) -> None:
    pairs = pd.DataFrame([p for p in report["pairwise"] if p["experiment"] == experiment])
    if pairs.empty:
        st.info("Fewer than two comparable runs in this experiment.")
        return
    pairs["a"], pairs["b"] = pairs["a"].map(label), pairs["b"].map(label)
    b = report["n_resamples"]
    with_t = pairs["p_t_holm"].notna().any()
    p_key, test = ("p_t_holm", "the cluster-t test") if with_t else (
        "p_bootstrap_holm", "the paired bootstrap")  # fmt: skip
    pairs["p_text"] = [
        fmt.p_value(p) if with_t else fmt.bootstrap_p(p, b, bounded=bd)
        for p, bd in zip(pairs[p_key], pairs["p_bootstrap_bounded"], strict=True)
    ]
    st.altair_chart(stat_charts.significance_map(pairs, p=p_key, title="p (Holm)"), width="stretch")
    st.caption(
        f"{report['pairwise_rule']}. Colour: the Holm-adjusted p of {test} of the "
        "difference (the test of the intervals shown); × marks p ≤ 0.05."
    )
    table = pd.DataFrame({
        "a": pairs["a"], "b": pairs["b"],
        "difference (points)": [fmt.number(d) for d in pairs["difference"]],
        "95% CI": [fmt.interval(ci) for ci in pairs["ci"]],
        "p (cluster t, Holm)": [fmt.p_value(p) for p in pairs["p_t_holm"]],
        "p (Wilcoxon, Holm)": [fmt.p_value(p) for p in pairs["p_holm"]],
        "p (bootstrap, Holm)": [fmt.bootstrap_p(p, b, bounded=bd) for p, bd in
                                zip(pairs["p_bootstrap_holm"], pairs["p_bootstrap_bounded"],
                                    strict=True)],
    })  # fmt: skip
    if not with_t:
        table = table.drop(columns="p (cluster t, Holm)")
    common.table(table, hide_index=True, width="stretch", height=table_height(len(table)))
    st.caption(
        f"CI: {interval_words(report)}. Wilcoxon: {report['wilcoxon']}. Bootstrap: "
        f"resolution 1/{b} (≤: an upper bound)."
    )


def cd_tab(report: dict, experiment: str) -> None:
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
            f"Friedman chi² = {fmt.number(fr['statistic'])}, p = {fmt.p_value(fr['p_value'])} "
            f"(Iman-Davenport p = {fmt.p_value(fr['p_iman_davenport'])}) over {cd['blocks']} "
            f"blocks ({' × '.join(cd['blocks_of'])}); Nemenyi CD = {fmt.number(cd['cd'], 3)} "
            f"(q = {fmt.number(cd['q_alpha'], 3)}, alpha {cd['alpha']}). Treatments joined by "
            "a grey line are not significantly different."
        )


def volumes_tab(runs: pd.DataFrame, label: dict) -> None:
    metrics = registry.select(kind="test", level="volume")
    volumes = pd.DataFrame(
        [{"run": label[r["id"]], **v} for _, r in runs.iterrows() for v in r["volumes"]],
        columns=["run", "volume", "dice", *(m.name for m in metrics)],
    )
    if volumes.empty:
        st.info("No per-volume results stored for these runs.")
        return
    table = volumes[["run", "volume"]].assign(**{"3-D Dice (%)": volumes["dice"]})
    for m in metrics:
        table[m.header] = pd.to_numeric(volumes[m.name], errors="coerce")
    common.table(metric_styler(table, volumes, metrics, highlight=False), hide_index=True,
                 width="stretch")  # fmt: skip
    if volumes[metrics[0].name].isna().all():
        st.caption("NSD and HD95 were not recorded by these runs' evaluation.")


def paper_tab(report: dict, mode: str) -> None:
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


def modes_tab(sweep: str, experiment: str) -> None:
    modes = common.load(data.both_modes, url, sweep)
    modes = modes[modes["experiment"] == experiment].copy()
    modes["inflation"] = modes["dice authors-2020"] - modes["dice standard"]
    common.table(modes.style.format(precision=2, na_rep=fmt.MISSING), hide_index=True,
                 width="stretch")  # fmt: skip
    st.caption(
        "Both metric modes from the same stored per-slice counts. authors-2020 scores 1 on "
        "every slice with an empty ground truth, whatever the prediction; 'inflation' is "
        "its Dice minus the standard one, in points."
    )


url, sweeps = common.results_page("Statistics", "statistics appear once runs have finished")

sweep, mode, top, resamples, interval = controls(sweeps)
report = common.load(data.report, url, sweep, mode, top, resamples, interval)
common.synthetic_badge(report["synthetic"])
all_runs = pd.DataFrame(report["runs"])
experiment = st.radio(
    "Experiment", list(dict.fromkeys(all_runs["experiment"])), horizontal=True,
    key="stats_experiment",
)  # fmt: skip
runs = all_runs[all_runs["experiment"] == experiment].copy()
runs["label"] = [
    f"#{r['id']} {r['architecture']} {r['encoder']} {r['init']} s{r['seed']}"
    for _, r in runs.iterrows()
]
label = dict(zip(runs["id"], runs["label"], strict=True))
st.caption(
    f"{len(runs)} runs on {report['slices'].get(experiment, 0)} test slices, {mode} metrics. "
    f"Intervals: {interval_words(report)}; ranks: approximate percentile bootstrap, "
    f"{report['n_resamples']} resamples of **{report['resampled']}** (test volumes drawn "
    "with replacement, then slices within each drawn volume). "
    + registry.resolution_note((report["protocol"] or {}).get("image_size"))
)

tabs = st.tabs(list(TABS))
with tabs[0]:
    intervals_tab(report, runs)
with tabs[1]:
    ranking_tab(report, runs, label, experiment)
with tabs[2]:
    significance_tab(report, label, experiment)
with tabs[3]:
    cd_tab(report, experiment)
with tabs[4]:
    volumes_tab(runs, label)
with tabs[5]:
    paper_tab(report, mode)
with tabs[6]:
    modes_tab(sweep, experiment)
