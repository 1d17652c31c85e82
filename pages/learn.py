"""Learn from corrections: readiness, a background retrain, its before/after, Promote / Discard, Rollback."""

import pandas as pd
import streamlit as st

from facexpr.app import jobs
from facexpr.app.ui import (
    get_history,
    get_settings,
    model_changes_allowed,
    relabel_counts,
    served_classifier,
    sign_in_button,
    through_the_entry_script,
)
from facexpr.core.errors import FacexprError
from facexpr.learn.guardrail import cannot_pass
from facexpr.learn.retrain import before_after_rows, recipe_from
from facexpr.learn.shadow_evidence import current_tally
from facexpr.model.registry import ModelRegistry

through_the_entry_script()  # a deep link as the first request (facexpr.app.ui)
st.title("Learn from corrections")
st.caption("Fine-tunes the served model on people's confirmations and corrections, with a replayed "
           "sample of the training data, then compares it with the served model before it may be served.")

settings = get_settings()
allowed, why_not = model_changes_allowed()  # FACEXPR_MODEL_ADMINS: who may change what is served
if why_not:
    st.info(why_not)
    sign_in_button()
try:
    served = served_classifier()
except FacexprError as exc:
    st.error(str(exc))
    st.stop()
since = served.card.trained_at
summary = relabel_counts(settings, settings.relabeled_uri, since, ())
gathered = relabel_counts(settings, settings.relabeled_uri, None, ())

st.subheader("Readiness")
trained = f"{since:%Y-%m-%d %H:%M} UTC" if since else "at an unknown time"
st.write(f"Serving **{served.version}**, trained {trained}. "
         f"Corrections gathered since: **{summary.total}** ({gathered.total} in the store in all).")
st.dataframe(pd.DataFrame([summary.counts]), hide_index=True)
if summary.error:
    st.warning(f"Counts unavailable: {summary.error}")
try:
    recipe = recipe_from(settings.retrain_recipe)
except FacexprError as exc:
    st.error(str(exc))
    st.stop()
st.caption(f"Recipe: {recipe.epochs} epochs over {recipe.replay:,} replayed training images, corrections "
           f"{recipe.share:.0%} of every batch. Cross-fitted in {recipe.folds} folds: every correction is "
           f"scored by a fine-tune that never saw it ({recipe.folds + 1} fine-tunes, about 2 minutes each on "
           "two CPU cores). "
           + (f"Labelled photos scored too: {settings.photos_val}." if settings.photos_val else
              "No labelled photo folder (FACEXPR_PHOTOS_VAL) to score too."))


def job_panel(polling: bool) -> None:
    status = jobs.status(settings)
    if status.running:
        st.progress(min(1.0, status.progress), text=f"Retraining: {status.message}")
        return
    if polling:  # the job just ended: redraw the whole page (versions, sidebar) once
        st.rerun(scope="app")
    if status.state == "failed":
        st.error(f"The last retrain failed: {status.error}")
    if status.state == "done" and status.card:
        card = status.card
        verdict = card["guardrail"]
        st.write(f"**{status.name}** — fine-tuned from {card['base']['name']} on "
                 f"{sum(card['data']['corrections']['counts'].values())} corrections in "
                 f"{card['wall_time_s']:.0f} s.")
        st.dataframe(pd.DataFrame(before_after_rows(card)), hide_index=True, key="retrain_table")
        (st.success if verdict["passed"] else st.warning)(
            ("Passed" if verdict["passed"] else "Failed") + f" the guardrail: {verdict['reason']}.")
        for rule in verdict["rules"]:
            mark = ":material/check_circle: passed" if rule["passed"] else ":material/cancel: failed"
            st.caption(f"{mark} — {rule['rule']}: {rule['why']}")
        promote, discard = st.columns(2)
        registry = ModelRegistry(settings)
        where = jobs.candidate_place(registry.state(), status.name)
        if where:  # promoted from the CLI or another replica since the retrain ended
            st.info(f"{status.name} {where}.")
        if promote.button("Promote", key="retrain_promote",
                          disabled=not verdict["passed"] or bool(where) or not allowed,
                          type="primary"):
            registry.promote(status.name)
            jobs.clear(settings)
            st.rerun(scope="app")
        if not verdict["passed"] and not where:
            promote.caption("Off: it failed the guardrail. `python -m facexpr promote "
                            f"{status.name} --force` serves it anyway (logged).")
        if discard.button("Discard", key="retrain_discard", disabled=bool(where) or not allowed):
            try:
                registry.discard(status.name)
            except FacexprError as exc:
                st.error(f"Not discarded: {exc}")
            else:
                jobs.clear(settings)
                st.rerun(scope="app")
        if where:
            discard.caption("Off: a version that is served or may be rolled back to is kept.")
        return
    if not settings.train_data:
        st.info("Set FACEXPR_TRAIN_DATA to the training data (a folder or s3:// URI with train/ and val/) "
                "to retrain from the app; `python -m facexpr retrain --data URI` works meanwhile.")
    ready = bool(settings.train_data) and gathered.total > 0
    hopeless = cannot_pass(gathered.total, bool(settings.photos_val))
    if ready and hopeless:
        st.warning(hopeless)
    if st.button("Retrain now", key="retrain_start", disabled=not ready or not allowed, type="primary"):
        try:
            jobs.start(settings, settings.train_data)
        except FacexprError as exc:
            st.warning(str(exc))
        st.rerun(scope="app")


st.subheader("Retrain")
running = jobs.status(settings).running
st.fragment(job_panel, run_every=2 if running else None)(running)

st.subheader("Candidate in shadow")
evidence, unreadable = None, None
try:
    registry = ModelRegistry(settings)
    evidence = current_tally(registry, get_history(), served.version)
except FacexprError as exc:
    unreadable = f"The shadow tally cannot be read now: {exc}"
if unreadable:
    st.warning(unreadable)
elif evidence is not None:
    st.write(f"**{evidence.candidate}** answers new faces beside **{served.version}** (Classify, Batch, "
             "API); its answers are recorded, never shown. The Review page asks first about the faces "
             f"where the two disagree: **{evidence.disagreements}** so far, **{evidence.answered}** "
             "answered.")
    (st.success if evidence.passed else st.info)(evidence.summary())
    promote_shadow, stop_shadow = st.columns(2)
    if promote_shadow.button(f"Promote {evidence.candidate}", key="shadow_promote",
                             disabled=not evidence.passed or not allowed, type="primary"):
        registry.promote(evidence.candidate, evidence=f"shadow: {evidence.candidate_right} right vs "
                                                      f"{evidence.served_right}, p = {evidence.p_value:.4f}")
        st.rerun()
    if stop_shadow.button("Stop the shadow", key="shadow_off", disabled=not allowed):
        registry.set_shadow(None)
        st.rerun()
else:
    st.caption("None. A retrain's new version answers beside the served model until it is promoted, "
               "discarded or stopped (`python -m facexpr shadow NAME` picks another).")


def figure(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


st.subheader("Versions")
try:
    registry = ModelRegistry(settings)
    versions = registry.versions()
    state = registry.state()
except FacexprError as exc:
    st.error(f"The model store cannot be read: {exc}")
    st.stop()
if settings.model:
    st.info(f"FACEXPR_MODEL={settings.model} overrides the registry in this deployment.")
if versions:
    st.dataframe(pd.DataFrame([{"name": v.name, "base": v.base, "created": v.created,
                                # text throughout: a column of numbers and "—" cannot go to Arrow as is
                                "val": figure(v.val_accuracy), "corrections": figure(v.corrections_accuracy),
                                "guardrail": {True: "passed", False: "failed", None: "—"}[v.guardrail],
                                "served": "yes" if v.served else ""} for v in versions]),
                 hide_index=True, key="versions_table")
st.caption(f"Model store: {registry.uri}. Served: **{state.served or 'the shipped model (models/)'}**.")
if st.button("Rollback", key="retrain_rollback", disabled=not state.stack or not allowed,
             help="Serve the version served before this one (the shipped model when none was)."):
    registry.rollback()
    st.rerun()
