"""The methods boilerplate: ``logs/CITATION.md``, ``.html`` and ``.bib``, from the settings used.

As fMRIPrep does, each level writes a description of what it did, with citations (pandoc style,
``[@key]``, resolved in the ``.bib``; the ``.html`` and the reports show author-year references).
The text is built from the settings of the run (``logs/config-<level>.json``): the denoising
strategy with each of its steps, the seeds, smoothing, thresholds, inference, permutations and the
group ICA. The group level describes the participant level from ``config-participant.json``.
"""

from __future__ import annotations

import html
import json
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bids_ketamine_fc.reports import references
from bids_ketamine_fc.utils.io import atomic_write_text

LICENCE = (
    "The above methods description was generated automatically by bids_ketamine_fc from the "
    "settings of the run, with the intention that users copy and paste it into their manuscripts "
    "unchanged. It is released under the CC0 licence."
)
_MOTION = {
    "basic": "the 6 realignment parameters",
    "derivatives": "the 6 realignment parameters and their first derivatives (12 regressors)",
    "power2": "the 6 realignment parameters and their squares (12 regressors)",
    "full": "the 6 realignment parameters, their derivatives, squares and squared derivatives "
    "(24 regressors)",
}


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "n/a"


def _name(value) -> str:
    """Return a file name without its folder (no machine path in the text)."""
    return Path(str(value)).name if value and "/" in str(value) else str(value)


def _motion(confounds: dict) -> str:
    text = _MOTION.get(confounds["motion"], f"motion regressors ({confounds['motion']})")
    if confounds["motion"] != "basic" and confounds.get("derivatives") == "conn":
        text += ", the derivatives as central differences (CONN)"
    return text


def _compcor(compcor: dict) -> str:
    counts = ", ".join(
        f"{n} {mask.replace('wm', 'white-matter').replace('csf', 'CSF')}"
        for mask, n in compcor.items()
        if mask != "method"
    )
    if compcor.get("method") == "conn":
        return (
            f"aCompCor components ({counts}: each mask's mean signal and its principal components "
            "orthogonal to it and to the other regressors, from fMRIPrep's tissue probability maps "
            "thresholded at 50 % and eroded by one voxel, as CONN; fMRIPrep's components for runs "
            "without these maps) [@behzadi2007compcor; @whitfield2012conn]"
        )
    return f"fMRIPrep's aCompCor components ({counts}) [@behzadi2007compcor]"


def _confounds(strategy: dict) -> str:
    confounds = strategy.get("confounds") or {}
    parts = []
    if confounds.get("motion", "none") != "none":
        parts.append(_motion(confounds))
    if confounds.get("compcor"):
        parts.append(_compcor(confounds["compcor"]))
    for key, what in (
        ("wm_csf", "white-matter and CSF mean signals"),
        ("global_signal", "global signal"),
    ):
        if confounds.get(key, "none") != "none":
            parts.append(f"the {what} ({confounds[key]})")
    if confounds.get("effect_of_rest"):
        parts.append(
            "CONN's 'Effect of rest' (the run as one condition convolved with SPM's canonical "
            "haemodynamic response) and its derivative"
        )
    if confounds.get("cosine"):
        parts.append("fMRIPrep's discrete cosine high-pass regressors")
    return ", ".join(parts) or "no confound regressor"


def _scrubbing(strategy: dict, settings: dict) -> str:
    scrub = strategy.get("scrub")
    if not scrub:
        return "No volume was scrubbed."
    fd = settings.get("fd_threshold") or scrub.get("fd_threshold")
    detector = scrub.get("detector", "fd")
    if detector == "art":
        rule = (
            f"ART's composite motion above {fd} mm, computed from the realignment parameters"
            + (
                f", or a change of ART's global signal above z = {scrub['gs_z_threshold']}"
                if scrub.get("gs_z_threshold")
                else ""
            )
            + ", as in CONN [@whitfield2012conn]"
        )
    else:
        rule = f"framewise displacement above {fd} mm [@power2012motion]"
        if detector == "art-fd" and scrub.get("gs_z_threshold"):
            rule += (
                f" or a change of fMRIPrep's global signal above z = {scrub['gs_z_threshold']} "
                "(ART's rule)"
            )
    how = (
        "each regressed out by its own spike regressor"
        if scrub.get("method") == "regress"
        else "removed from the series (censoring)"
    )
    return f"Outlier volumes ({rule}) were {how}."


def _filtering(strategy: dict) -> str:
    detrend = int(strategy.get("detrend", 0))
    trend = {0: "the mean", 1: "a linear trend"}.get(
        detrend, f"polynomial trends up to order {detrend}"
    )
    text = f"Together with {trend}, these regressors were removed by least squares"
    filt = strategy.get("filter") or {}
    if filt.get("type") not in (None, "none"):
        band = f"{filt.get('low') or 0}-{filt.get('high') or 'Nyquist'} Hz"
        kind = (
            "CONN's FFT filter"
            if filt["type"] == "fft"
            else f"Butterworth filter of order {filt.get('order')}"
        )
        order = (
            "after the regression (RegBP)"
            if strategy.get("filter_order", "regbp") == "regbp"
            else "to the data and the regressors before the regression (Simult)"
        )
        text += f", and a {band} band-pass ({kind}) was applied {order}"
    if strategy.get("scaling") == "psc":
        text += (
            "; each run was first scaled to percent signal change (voxels by the run's mean over "
            "the brain mask, each seed by its own mean)"
        )
    return text + "."


def _seeds(settings: dict) -> str:
    from bids_ketamine_fc.participant.seeds import load_seed_set

    items = []
    for seed in load_seed_set(settings.get("seeds", "study")):
        if seed.kind == "sphere":
            items.append(
                f"{seed.name} (sphere of {seed.radius:g} mm at MNI "
                f"{', '.join(f'{c:g}' for c in seed.centre)})"
            )
        elif seed.kind == "atlas":
            items.append(
                f"{seed.name} ({seed.definition.get('Source') or seed.atlas}, TemplateFlow "
                f"atlas-{seed.atlas})"
            )
        else:
            items.append(f"{seed.name} (mask {_name(seed.path)})")
    atlas = any(seed.kind == "atlas" for seed in load_seed_set(settings.get("seeds", "study")))
    return "; ".join(items) + (" [@makris2006harvardoxford]" if atlas else "")


def participant_markdown(settings: dict) -> str:
    """Return the participant-level methods (Markdown with ``[@key]`` citations)."""
    from bids_ketamine_fc import __version__
    from bids_ketamine_fc.participant.strategy import load_strategy

    strategy = load_strategy(
        settings.get("denoise_strategy", "conn"), settings.get("fd_threshold")
    ).to_dict()
    dummies = (
        f"the first {settings['dummy_scans']} volumes were discarded"
        if settings.get("dummy_scans") is not None
        else "the non-steady-state volumes flagged by fMRIPrep were discarded"
        if strategy.get("drop_non_steady_state")
        else "no volume was discarded"
    )
    return "\n\n".join(
        [
            f"Functional connectivity was computed with bids_ketamine_fc {__version__}, which uses "
            f"Nipype {_version('nipype')} [@gorgolewski2011nipype], nilearn {_version('nilearn')} "
            f"[@abraham2014nilearn], NumPy {_version('numpy')}, SciPy {_version('scipy')} and "
            "TemplateFlow [@ciric2022templateflow], from the preprocessed BOLD runs of fMRIPrep "
            f"[@esteban2019fmriprep] in {settings.get('space', 'MNI152NLin2009cAsym')} space.",
            f"*Denoising* (strategy '{_name(strategy.get('name'))}', after CONN's default pipeline "
            f"[@whitfield2012conn]). In each run, {dummies}. The nuisance regressors were "
            f"{_confounds(strategy)}. {_scrubbing(strategy, settings)} {_filtering(strategy)} "
            f"Runs with fewer than {settings.get('min_volumes', 30)} volumes left were excluded. "
            "Voxel series were smoothed with a Gaussian kernel of "
            f"{settings.get('smoothing_fwhm', 8):g} mm FWHM within the brain mask; seed series were "
            "taken from the unsmoothed data.",
            f"*Seed-to-voxel connectivity.* Seeds: {_seeds(settings)}. Each seed's mean denoised "
            f"series was correlated with every voxel's series ({_correlation(strategy)}) and r was "
            "Fisher z-transformed; the runs of a participant were combined by concatenating their "
            "denoised series, as CONN does.",
        ]
    )


def _correlation(strategy: dict) -> str:
    if strategy.get("weighting") == "hrf":
        return (
            "CONN's default 'hrf' weighting: both series weighted-demeaned and multiplied by the "
            "Effect of rest"
        )
    return "Pearson correlation"


def _inference(settings: dict) -> str:
    texts = {
        "rft": "random field theory cluster-extent inference, as in SPM12 [@friston1994extent; "
        "@worsley1996unified; @penny2007spm], with topological FDR [@chumbley2010topological]",
        "permutation": f"{int(settings.get('n_permutations', 5000)):,} Freedman-Lane permutations "
        "of the maximum cluster size [@freedman1983nonstochastic; @winkler2014permutation; "
        "@phipson2010permutation]",
        "tfce": "threshold-free cluster enhancement (E = 0.5, H = 2) with the same permutations "
        "[@smith2009tfce]",
    }
    return "; ".join(texts[i] for i in settings.get("inference", ["rft"]) if i in texts)


def _dual(settings: dict) -> str:
    if settings.get("dual_regression", "fsl") == "fsl":
        return " (as FSL: stage-1 time courses scaled to unit variance, raw data in stage 2)"
    return " (stage 2 on variance-normalised data)"


def _prediction(settings: dict) -> str:
    named = list(settings.get("prediction") or [])
    if not named:
        return ""
    which = "every seed, model and contrast" if named == ["all"] else ", ".join(named)
    return (
        f"The brain-behaviour relation was tested by a leave-one-out prediction named in advance "
        f"({which}): in each fold the group analysis was re-run without one participant, whose "
        "mean Fisher z in the fold's clusters predicted their group and improvement (a fold "
        "without a cluster counted as no information); the AUC and cross-validated r were "
        f"compared with {int(settings.get('prediction_permutations', 1000)):,} permutations of "
        "the outcomes, each re-running every fold [@phipson2010permutation]."
    )


def group_markdown(settings: dict) -> str:
    """Return the group-level methods (Markdown with ``[@key]`` citations)."""
    covariates = list(settings.get("covariates") or [])
    threshold = float(settings.get("responder_threshold", 0.5))
    models = "one column per group (model 'groups')"
    if covariates:
        models += f", and a second model adding {', '.join(covariates)} (mean-centred; 'groupsAge')"
    return "\n\n".join(
        [
            f"*Group analysis.* Participants whose pain ({settings.get('pain_pre')} to "
            f"{settings.get('pain_post')}) fell by at least {100 * threshold:g} % were responders "
            f"(R), the others non-responders (NR). Each seed's Fisher z maps entered a general "
            f"linear model with {models}; R > NR and NR > R were tested one-sided. Voxels were "
            f"thresholded at p < {settings.get('voxel_p', 0.001):g} (uncorrected) and clusters "
            f"declared significant at p(FWE) < {settings.get('cluster_p', 0.05):g} with "
            f"{_inference(settings)}. Peaks were labelled with the Harvard-Oxford atlases "
            "[@makris2006harvardoxford].",
            "*Brain-behaviour correlation.* In each significant cluster, the participants' mean "
            "Fisher z was correlated with pain improvement (Pearson r). As the clusters were "
            "selected by the R vs NR contrast, this r is circular [@kriegeskorte2009circular] and "
            "is reported as a description, without p value or confidence interval. "
            f"{_prediction(settings)}",
            f"*Group ICA.* The participants' denoised, smoothed data, reduced to their "
            f"{settings.get('reduced_dims', 50)} leading temporal dimensions, were combined by MIGP "
            f"group PCA [@smith2014migp] and decomposed into {settings.get('ica_components', 20)} "
            "spatial components with FastICA [@hyvarinen1999fastica; @pedregosa2011sklearn]; subject "
            f"maps were obtained by dual regression{_dual(settings)} [@nickerson2017dualreg]. "
            "Components were matched "
            "to the Yeo 7 networks [@yeo2011networks; @schaefer2018parcellation] by spatial "
            "correlation, and the subject maps of the default-mode component compared between R "
            "and NR with the same models (random field theory).",
        ]
    )


_CITATION = re.compile(r"\[(@[^\]]+)\]")


def cited(markdown: str) -> list[str]:
    """Return the reference keys cited in ``markdown``, in order of first citation."""
    keys = []
    for group in _CITATION.findall(markdown):
        keys += [k.strip().lstrip("@") for k in group.split(";")]
    return list(dict.fromkeys(keys))


def to_html(markdown: str) -> str:
    """Return the Markdown paragraphs as HTML with author-year citations and a reference list."""

    def cite(match) -> str:
        keys = [k.strip().lstrip("@") for k in match.group(1).split(";")]
        links = "; ".join(
            f"<a href='#ref-{k}'>{html.escape(references.short_author(k))}</a>" for k in keys
        )
        return f"({links})"

    paragraphs = []
    for paragraph in markdown.split("\n\n"):
        text = html.escape(paragraph, quote=False)
        text = re.sub(r"\*([^*]+)\*", r"<i>\1</i>", text)
        paragraphs.append(f"<p>{_CITATION.sub(cite, text)}</p>")
    items = "".join(
        f"<li id='ref-{k}'>{html.escape(references.formatted(k))}</li>" for k in cited(markdown)
    )
    return "\n".join(paragraphs) + f"\n<h3>References</h3><ol class='small'>{items}</ol>"


def write_citation(output_dir: Path, participant: dict | None, group: dict | None) -> str:
    """Write ``logs/CITATION.md``, ``.html`` and ``.bib``; return the methods as HTML.

    Parameters
    ----------
    output_dir : Path
        OUTPUT_DIR.
    participant, group : dict or None
        The settings (as in ``logs/config-<level>.json``) of each level that ran.

    Returns
    -------
    str
        The methods (HTML, with their references) for the reports.
    """
    parts = []
    if participant:
        parts.append(participant_markdown(participant))
    if group:
        parts.append(group_markdown(group))
    markdown = "\n\n".join(parts)
    logs = Path(output_dir) / "logs"
    atomic_write_text(logs / "CITATION.md", f"{markdown}\n\n{LICENCE}\n")
    atomic_write_text(logs / "CITATION.bib", references.bibtex(cited(markdown)))
    body = to_html(markdown) + f"\n<p class='small'>{LICENCE}</p>"
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Methods</title>"
        f"</head><body>\n{body}\n</body></html>\n"
    )
    atomic_write_text(logs / "CITATION.html", page)
    return body


def read_settings(output_dir: Path, level: str) -> dict | None:
    """Return the settings a level wrote to ``logs/config-<level>.json`` (None if absent)."""
    path = Path(output_dir) / "logs" / f"config-{level}.json"
    return json.loads(path.read_text()) if path.is_file() else None
