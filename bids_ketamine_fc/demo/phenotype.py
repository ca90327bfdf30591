"""Participants, pain scores and the planted connectivity of the generated cohort."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bids_ketamine_fc.demo.signals import DMN_BASELINE

#: Planted mPFC-precuneus correlation = COUPLING_AT_ZERO - COUPLING_SLOPE * improvement + noise,
#: so responders (improvement >= 0.5) have the lower coupling and the coupling tracks improvement.
COUPLING_AT_ZERO = 0.70
COUPLING_SLOPE = 0.50
COUPLING_NOISE = 0.08

PARTICIPANTS_JSON = {
    "participant_id": {"Description": "Unique participant identifier."},
    "age": {"Description": "Age at the scan.", "Units": "year"},
    "sex": {"Description": "Sex of the participant.", "Levels": {"F": "female", "M": "male"}},
}
PAIN_JSON = {
    "participant_id": {"Description": "Unique participant identifier."},
    "nrs_pre": {
        "LongName": "Numerical Rating Scale before infusion",
        "Description": "Pain intensity 0 (no pain) to 10 (worst pain imaginable), rated before "
        "the ketamine infusion (0.3 mg/kg i.v. over 30 min).",
        "Units": "arbitrary",
    },
    "nrs_post": {
        "LongName": "Numerical Rating Scale after infusion",
        "Description": "Pain intensity 0 (no pain) to 10 (worst pain imaginable), rated 60 min "
        "after the ketamine infusion.",
        "Units": "arbitrary",
    },
    "hads_anxiety": {
        "LongName": "Hospital Anxiety and Depression Scale, anxiety subscale",
        "Description": "Sum of the 7 anxiety items, 0-21.",
        "Units": "arbitrary",
    },
    "hads_depression": {
        "LongName": "Hospital Anxiety and Depression Scale, depression subscale",
        "Description": "Sum of the 7 depression items, 0-21.",
        "Units": "arbitrary",
    },
    "pcs_total": {
        "LongName": "Pain Catastrophizing Scale",
        "Description": "Total score of the 13 items, 0-52.",
        "Units": "arbitrary",
    },
}


def _pain_scores(rng: np.random.Generator, responder: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pre = rng.integers(5, 11, len(responder))  # chronic pain, NRS 5-10
    target = np.where(responder, rng.uniform(0.5, 1.0, len(pre)), rng.uniform(0.0, 0.45, len(pre)))
    # rounding towards the group's side keeps (pre - post) / pre on the right side of 0.5
    post = np.where(responder, np.floor(pre * (1 - target)), np.ceil(pre * (1 - target)))
    return pre, post.astype(int)


def make_cohort(rng: np.random.Generator, n_subjects: int) -> pd.DataFrame:
    """Draw the participants, their scores, their group and their planted coupling.

    Half the participants (rounded down) are responders. Group and coupling are ground truth: the
    BIDS files carry only the scores, from which a pipeline must derive the groups.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator.
    n_subjects : int
        Number of participants (>= 2).

    Returns
    -------
    pandas.DataFrame
        ``participant_id``, ``age``, ``sex``, ``nrs_pre``, ``nrs_post``, ``hads_anxiety``,
        ``hads_depression``, ``pcs_total``, ``group``, ``improvement``, ``planted_coupling``.
    """
    width = max(2, len(str(n_subjects)))
    responder = rng.permutation(np.arange(n_subjects) < n_subjects // 2)
    pre, post = _pain_scores(rng, responder)
    improvement = (pre - post) / pre
    coupling = COUPLING_AT_ZERO - COUPLING_SLOPE * improvement
    coupling += rng.normal(0.0, COUPLING_NOISE, n_subjects)
    # node signals need |coupling - baseline| <= 1 - baseline
    coupling = np.clip(coupling, 2 * DMN_BASELINE - 1 + 0.05, 0.95)
    distress = rng.normal(0.0, 1.0, n_subjects)  # shared anxiety/depression/catastrophizing trait
    return pd.DataFrame(
        {
            "participant_id": [f"sub-{k + 1:0{width}d}" for k in range(n_subjects)],
            "age": rng.integers(27, 82, n_subjects),
            "sex": rng.choice(["F", "M"], n_subjects),
            "nrs_pre": pre,
            "nrs_post": post,
            "hads_anxiety": np.clip(
                np.rint(9 + 3 * distress + rng.normal(0, 2, n_subjects)), 0, 21
            ),
            "hads_depression": np.clip(
                np.rint(8 + 3 * distress + rng.normal(0, 2, n_subjects)), 0, 21
            ),
            "pcs_total": np.clip(np.rint(25 + 8 * distress + rng.normal(0, 5, n_subjects)), 0, 52),
            "group": np.where(responder, "R", "NR"),
            "improvement": improvement,
            "planted_coupling": coupling,
        }
    ).astype({"hads_anxiety": int, "hads_depression": int, "pcs_total": int})
