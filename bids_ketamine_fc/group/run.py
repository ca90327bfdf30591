"""The group level: responders vs non-responders, per seed, model, contrast and inference.

Plain Python over the participant outputs (as mriqc's group level): read the phenotype and the
subject-level maps, fit each seed's model once, and write under ``OUTPUT_DIR/group/``:

- ``subjects.tsv`` (+ ``.json``): every participant, group, scores, covariates, inclusion;
- ``seed-<seed>/space-<S>[_res-<R>]_seed-<seed>_desc-analysis_mask.nii.gz``: the analysis mask;
- ``seed-<seed>/..._seed-<seed>_model-<m>_contrast-<c>_stat-<t|z|p|effect|g>_boldmap.nii.gz``
  (+ ``.json``: design, degrees of freedom, group sizes, smoothness);
- ``seed-<seed>/..._model-<m>_contrast-<c>_inference-<i>_cluster-<n>_mask.nii.gz``: each
  significant cluster;
- ``clusters.tsv`` (+ ``.json``);
- the brain-behaviour correlation of each significant cluster (``cluster_values.tsv``,
  ``correlation.tsv``, and the leave-one-out ``prediction.tsv``; :mod:`.behaviour`);
- the group ICA (``ica/``; :mod:`.ica`).

The analysis never draws: :func:`analyse_group` returns :class:`GroupResults`, from which
:mod:`bids_ketamine_fc.reports` draws the figures and ``group.html``
(:func:`bids_ketamine_fc.cli.group.run_group` runs both).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bids_ketamine_fc import __version__
from bids_ketamine_fc.config import Settings
from bids_ketamine_fc.group import checks, maps, phenotype
from bids_ketamine_fc.group.behaviour.regions import check_roi
from bids_ketamine_fc.group.behaviour.run import hypotheses, run_brain_behaviour
from bids_ketamine_fc.group.comparison import compare_groups
from bids_ketamine_fc.group.ica.run import check_components, run_group_ica
from bids_ketamine_fc.group.inference import clusters, glm, relabel, rft
from bids_ketamine_fc.utils.derivatives import bids_uri, save_mask
from bids_ketamine_fc.utils.io import atomic_write_text, atomic_write_tsv

LOGGER = logging.getLogger(__name__)

#: TFCE exponents for 3-D maps (Smith & Nichols 2009; FSL, PALM and nilearn defaults).
TFCE_E, TFCE_H = 0.5, 2.0


def _subjects(settings: Settings, index: maps.MapIndex) -> pd.DataFrame:
    table, files = phenotype.read_phenotype(settings)
    source = " + ".join(str(f) for f in files)
    return phenotype.build_subjects_table(settings, table, index.participants, source)


def _write_subjects(settings: Settings, subjects: pd.DataFrame) -> None:
    group_dir = Path(settings.output_dir) / "group"
    atomic_write_tsv(subjects, group_dir / "subjects.tsv", float_format=maps.FLOAT_FORMAT)
    sidecar = json.dumps(phenotype.column_descriptions(settings), indent=2)
    atomic_write_text(group_dir / "subjects.json", sidecar + "\n")


def _write_stat_maps(settings, index, seed_maps, design, contrast, stats, sidecar) -> None:
    def path_of(stat):
        return maps.group_path(
            settings.output_dir,
            index,
            seed_maps.seed,
            "boldmap.nii.gz",
            model=design.model,
            contrast=contrast,
            stat=stat,
        )

    maps.write_stat_maps(stats, seed_maps.mask, seed_maps.affine, design.dof, sidecar, path_of)


def _write_group_means(settings, index, seed_maps, fit, sidecar) -> None:
    """Write each group's mean Fisher z map (the betas of the model ``groups``)."""
    from bids_ketamine_fc.utils.io import atomic_save_img

    for row, group in enumerate(glm.GROUPS):
        path = maps.group_path(
            settings.output_dir, index, seed_maps.seed, "boldmap.nii.gz",
            model="groups", contrast=group, stat="effect",
        )  # fmt: skip
        atomic_save_img(maps.to_image(fit.beta[row], seed_maps.mask, seed_maps.affine), path)
        meta = dict(
            sidecar, Contrast=group, ContrastVector=np.eye(len(glm.GROUPS))[row].tolist(),
            Statistic="effect", Description=f"Mean Fisher z of the {group} group.",
        )  # fmt: skip
        text = json.dumps(meta, indent=2, default=lambda o: o.tolist()) + "\n"
        atomic_write_text(path.with_name(path.name.replace(".nii.gz", ".json")), text)


def _write_cluster_masks(settings, index, seed_maps, found, **keys) -> list[str]:
    written = []
    for label in found.significant(settings.cluster_p):
        path = maps.group_path(
            settings.output_dir,
            index,
            seed_maps.seed,
            "mask.nii.gz",
            inference=found.inference,
            cluster=label,
            **keys,
        )
        description = (
            f"Cluster {label} of the {keys['contrast']} contrast of model {keys['model']} "
            f"({found.inference} inference, p(FWE) < {settings.cluster_p:g}; clusters.tsv)."
        )
        save_mask(path, found.labels == label, seed_maps.affine, index.space, description,
                  Type="ROI")  # fmt: skip
        written.append(str(path))
    return written


def _infer(inference, t_map, seed_maps, u, smooth, permuted, alpha) -> clusters.ClusterSet:
    """Clusters of one t map under one inference."""
    if inference == "rft":
        return clusters.rft_clusters(t_map, seed_maps.mask, u, smooth)
    if inference == "permutation":
        return clusters.permutation_clusters(permuted, seed_maps.mask)
    return clusters.tfce_clusters(permuted, seed_maps.mask, alpha)


def _permute(settings: Settings, seed_maps, design: glm.Design, u: float) -> dict:
    """Permutation nulls of both contrasts (one set of permutations, two tails)."""
    if not {"permutation", "tfce"} & set(settings.inference):
        return {}
    from bids_ketamine_fc.group.inference.permutation import permutation_test

    start = time.monotonic()
    result = permutation_test(
        seed_maps.data,
        design.matrix,
        {name: design.contrast(name) for name in glm.CONTRASTS},
        seed_maps.mask,
        u,
        n_permutations=settings.n_permutations,
        random_seed=settings.random_seed,
        tfce="tfce" in settings.inference,
        tfce_E=TFCE_E,
        tfce_H=TFCE_H,
        n_jobs=settings.nprocs,
        label=f"seed {seed_maps.seed}, {design.model}: permutations",
    )
    LOGGER.info(
        "seed %s, model %s: %d permutations in %.1f s.",
        seed_maps.seed,
        design.model,
        next(iter(result.values())).n_permutations,
        time.monotonic() - start,
    )
    return result


def _fit(settings: Settings, seed_maps, rows: pd.DataFrame, model: str) -> tuple:
    """Fit one model; return the fit, height threshold, smoothness, nulls and sidecar."""
    seed = seed_maps.seed
    design = glm.design_matrix(rows, model, settings.covariates, where=f"seed {seed}")
    fit = glm.fit_ols(seed_maps.data, design)
    u = rft.height_threshold(settings.voxel_p, design.dof)
    smooth = None
    if "rft" in settings.inference:
        smooth = rft.estimate_smoothness(
            fit.std_resid, seed_maps.mask, rft.voxel_sizes(seed_maps.affine), design.dof
        )
        LOGGER.info("seed %s, model %s: FWHM %s mm.", seed, model, np.round(smooth.fwhm_mm, 1))
        caution = clusters.low_dof_warning(design.dof, f"seed {seed}, model {model}")
        if caution:
            LOGGER.warning(caution)
    sidecar = {
        "Seed": seed,
        "Model": model,
        "Design": design.as_dict(),
        "DegreesOfFreedom": design.dof,
        "NPerGroup": design.n_per_group,
        "HeightThreshold": {"VoxelP": settings.voxel_p, "T": u},
        "Smoothness": smooth.to_dict() if smooth is not None else None,
        "RFTWarning": clusters.low_dof_warning(design.dof, "this model") if smooth else None,
        "Inference": list(settings.inference),
        "Software": {"bids_ketamine_fc": __version__},
    }
    permuted = _permute(settings, seed_maps, design, u)
    if permuted:
        sidecar["Permutations"] = _permutation_meta(settings, permuted, f"seed {seed}, {model}")
    return fit, u, smooth, permuted, sidecar


def _permutation_meta(settings: Settings, permuted: dict, where: str) -> dict:
    """Sidecar entry of the permutations run; warn when every relabelling was enumerated."""
    first = next(iter(permuted.values()))
    count = first.n_permutations
    if first.exhaustive:
        LOGGER.warning(
            "%s: only %d distinct relabellings exist (fewer than --n-permutations %d); all were "
            "used once, so the smallest attainable p(FWE) is %.3g.",
            where, count, settings.n_permutations, relabel.smallest_p(count),
        )  # fmt: skip
    meta = {
        "Count": count,
        "Requested": settings.n_permutations,
        "Exhaustive": first.exhaustive,
        "SmallestP": relabel.smallest_p(count),
        "RandomSeed": settings.random_seed,
        "Method": "Freedman-Lane, identity included; FWE from the maximum cluster size",
    }
    if "tfce" in settings.inference:
        meta["TFCE"] = {"E": TFCE_E, "H": TFCE_H, "Connectivity": 18}
    return meta


def _analyse_model(settings, index, seed_maps, rows, model, labeller, sources) -> list:
    """Fit one model of one seed; write its maps and cluster masks; return cluster-table rows."""
    fit, u, smooth, permuted, sidecar = _fit(settings, seed_maps, rows, model)
    sidecar["Sources"] = sources
    if model == "groups":
        _write_group_means(settings, index, seed_maps, fit, sidecar)
    tables = []
    for contrast in glm.CONTRASTS:
        stats = glm.contrast_maps(fit, contrast)
        vector = fit.design.contrast(contrast).tolist()
        meta = dict(sidecar, Contrast=contrast, ContrastVector=vector)
        _write_stat_maps(settings, index, seed_maps, fit.design, contrast, stats, meta)
        t_map = maps.unmask(stats["t"], seed_maps.mask)
        keys = {"model": model, "contrast": contrast}
        for inference in settings.inference:
            found = _infer(
                inference, t_map, seed_maps, u, smooth, permuted.get(contrast), settings.cluster_p
            )
            tables.append(
                clusters.cluster_table(
                    found, t_map, seed_maps.affine, labeller, seed=seed_maps.seed, **keys
                )
            )
            _write_cluster_masks(settings, index, seed_maps, found, **keys)
    return tables


def _analyse_seed(settings, index, seed, included, labeller) -> tuple[list, list[str]]:
    """Load one seed's maps once and analyse every model; return tables and participants used."""
    start = time.monotonic()
    seed_maps = maps.load_seed_maps(index, seed, list(included["participant_id"]))
    absent = sorted(set(included["participant_id"]) - set(index.files[seed]))
    if absent:
        LOGGER.warning(
            "seed %s: no map of %s; the seed is analysed without them.", seed, ", ".join(absent)
        )
    if seed_maps.unusable:
        LOGGER.warning("seed %s: maps without valid voxel: %s", seed, ", ".join(seed_maps.unusable))
    rows = included.set_index("participant_id").loc[seed_maps.participant_ids].reset_index()
    mask_path = maps.group_path(settings.output_dir, index, seed, "mask.nii.gz", desc="analysis")
    for stale in mask_path.parent.glob("*_cluster-*_mask.nii.gz"):  # from an earlier run
        stale.unlink()
    sources = [
        bids_uri(index.files[seed][pid], settings.output_dir) for pid in seed_maps.participant_ids
    ]
    save_mask(
        mask_path, seed_maps.mask, seed_maps.affine, index.space,
        "Analysis mask: voxels valid (finite, non-zero, not constant) in every subject-level map "
        "analysed (SPM's implicit mask).", Sources=sources,
    )  # fmt: skip
    tables = []
    for model in glm.model_names(settings.covariates):
        tables += _analyse_model(settings, index, seed_maps, rows, model, labeller, sources)
    LOGGER.info(
        "seed %s: %d participants, %d voxels, done in %.1f s.",
        seed,
        len(rows),
        int(seed_maps.mask.sum()),
        time.monotonic() - start,
    )
    return tables, seed_maps.participant_ids


def _mark_unusable(subjects: pd.DataFrame, analysed: set[str]) -> pd.DataFrame:
    """Exclude included participants whose maps turned out empty for every seed."""
    empty = subjects["included"] & ~subjects["participant_id"].isin(analysed)
    subjects = subjects.copy()
    subjects.loc[empty, "included"] = False
    subjects.loc[empty, "exclusion_reason"] = "no usable subject-level map (no valid voxel)"
    return subjects


def _ensure_description(settings: Settings) -> None:
    """Write the dataset description if the participant level did not; README and .bidsignore."""
    from bids_ketamine_fc.utils.bids import write_dataset_description
    from bids_ketamine_fc.utils.derivatives import write_bidsignore, write_readme

    if not (Path(settings.output_dir) / "dataset_description.json").exists():
        write_dataset_description(settings)
    write_readme(settings.output_dir)
    write_bidsignore(settings.output_dir)


@dataclass(frozen=True)
class GroupResults:
    """What the group level found: the inputs it read and the tables it wrote.

    Attributes
    ----------
    index : maps.MapIndex
        The subject-level maps analysed.
    subjects : pandas.DataFrame
        ``subjects.tsv``.
    clusters : pandas.DataFrame
        ``clusters.tsv``.
    behaviour : dict
        The brain-behaviour tables
        (:func:`~bids_ketamine_fc.group.behaviour.run.run_brain_behaviour`).
    comparison : pandas.DataFrame
        ``group_comparison.tsv``: R vs NR on motion, covariates and pain.
    """

    index: maps.MapIndex
    subjects: pd.DataFrame
    clusters: pd.DataFrame
    behaviour: dict
    comparison: pd.DataFrame | None = None


def analyse_group(settings: Settings) -> GroupResults:
    """Run the group analyses of ``settings`` and write their results under ``OUTPUT_DIR/group``.

    Parameters
    ----------
    settings : Settings
        Group options (phenotype, pain columns, threshold, covariates, inference...).

    Returns
    -------
    GroupResults

    Raises
    ------
    UserInputError
        For every problem with the user's data or options (the message names the culprit).
    """
    checks.check_settings(settings)
    index = maps.find_subject_maps(settings)
    check_roi(settings, index)
    hypotheses(settings, list(index.seeds), warn=False)  # a bad --prediction before the work
    subjects = _subjects(settings, index)
    _write_subjects(settings, subjects)
    checks.report_exclusions(subjects, Path(settings.output_dir) / "group" / "subjects.tsv")
    included = subjects[subjects["included"]]
    checks.report_models(included, settings)  # refuses a bad design before the work
    checks.check_provenance(settings, index, list(included["participant_id"]))
    check_components(settings, list(included["participant_id"]))
    _ensure_description(settings)
    resolution = int(index.resolution) if (index.resolution or "").isdigit() else 2
    labeller = clusters.PeakLabeller(index.space, resolution)
    tables, analysed = [], set()
    for seed in index.seeds:
        seed_tables, used = _analyse_seed(settings, index, seed, included, labeller)
        tables += seed_tables
        analysed |= set(used)
    subjects = _mark_unusable(subjects, analysed)
    _write_subjects(settings, subjects)
    comparison = compare_groups(settings, subjects)
    run_group_ica(settings, subjects[subjects["included"]], labeller)
    table = (
        pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=clusters.COLUMNS)
    )
    write_clusters(settings, table)
    behaviour = run_brain_behaviour(settings, index, subjects, table)
    return GroupResults(index, subjects, table, behaviour, comparison)


def write_clusters(settings: Settings, table: pd.DataFrame) -> Path:
    """Write ``group/clusters.tsv`` and its JSON sidecar (columns always present)."""
    path = Path(settings.output_dir) / "group" / "clusters.tsv"
    atomic_write_tsv(
        table.reindex(columns=list(clusters.COLUMNS)), path, float_format=maps.FLOAT_FORMAT
    )
    sidecar = {
        **clusters.column_sidecar(),
        "HeightThreshold": {"VoxelP": settings.voxel_p},
        "ClusterP": settings.cluster_p,
        "Connectivity": 18,
    }
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2) + "\n")
    return path
