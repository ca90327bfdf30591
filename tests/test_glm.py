"""Second-level GLM: checked against nilearn's SecondLevelModel and independent formulas."""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from bids_ketamine_fc.exceptions import UserInputError
from bids_ketamine_fc.group.inference import glm

SHAPE = (9, 10, 11)


def _subjects(n_r=8, n_nr=8, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_r + n_nr
    return pd.DataFrame(
        {
            "participant_id": [f"sub-{i:02d}" for i in range(n)],
            "group": ["R"] * n_r + ["NR"] * n_nr,
            "age": rng.uniform(27, 81, n).round(),
            "hads": rng.normal(10, 3, n),
        }
    )


def _data(n, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.normal(0.3, 0.2, size=(n, int(np.prod(SHAPE)))).astype(np.float32)
    data[: n // 2, :100] += 0.4  # a group difference in part of the volume
    return data


@pytest.mark.parametrize(("model", "covariates"), [("groups", ()), ("groupsAge", ("age", "hads"))])
@pytest.mark.parametrize("contrast", ["RgtNR", "NRgtR"])
def test_matches_nilearn_second_level(model, covariates, contrast):
    from nilearn.glm.second_level import SecondLevelModel

    subjects = _subjects(7, 9)
    data = _data(len(subjects))
    design = glm.design_matrix(subjects, model, covariates)
    maps = glm.contrast_maps(glm.fit_ols(data, design), contrast)

    imgs = [nb.Nifti1Image(row.reshape(SHAPE, order="F"), np.eye(4)) for row in data]
    mask = nb.Nifti1Image(np.ones(SHAPE, np.uint8), np.eye(4))
    frame = pd.DataFrame(design.matrix, columns=design.columns)
    slm = SecondLevelModel(mask_img=mask).fit(imgs, design_matrix=frame)
    vector = design.contrast(contrast)
    for output, ours in (("stat", "t"), ("effect_size", "effect"), ("z_score", "z")):
        theirs = slm.compute_contrast(vector, output_type=output).get_fdata()
        np.testing.assert_allclose(maps[ours], theirs.ravel(order="F"), atol=1e-5)


def test_two_sample_statistics_match_scipy_and_hedges_g():
    subjects = _subjects(6, 10)
    data = _data(len(subjects))
    design = glm.design_matrix(subjects, "groups", ())
    maps = glm.contrast_maps(glm.fit_ols(data, design), "RgtNR")
    r, nr = data[:6].astype(float), data[6:].astype(float)
    expected = stats.ttest_ind(r, nr, alternative="greater")
    np.testing.assert_allclose(maps["t"], expected.statistic, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(maps["p"], expected.pvalue, rtol=1e-4, atol=1e-7)
    pooled = np.sqrt((5 * r.var(0, ddof=1) + 9 * nr.var(0, ddof=1)) / 14)
    hedges = (r.mean(0) - nr.mean(0)) / pooled * (1 - 3 / (4 * 16 - 9))
    np.testing.assert_allclose(maps["g"], hedges, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(maps["effect"], r.mean(0) - nr.mean(0), atol=1e-6)
    opposite = glm.contrast_maps(glm.fit_ols(data, design), "NRgtR")
    np.testing.assert_allclose(opposite["t"], -maps["t"], atol=1e-6)
    np.testing.assert_allclose(opposite["p"], 1 - maps["p"], atol=1e-6)


def test_standardised_residuals_have_dof_sum_of_squares():
    subjects = _subjects()
    design = glm.design_matrix(subjects, "groupsAge", ("age",))
    fit = glm.fit_ols(_data(len(subjects)), design)
    assert design.dof == 16 - 3
    np.testing.assert_allclose((fit.std_resid.astype(float) ** 2).sum(0), design.dof, rtol=1e-4)


def _log_t_tail_quadrature(t: float, dof: float) -> float:
    """log P(T > t) by integrating the log density over s = t e^u (independent of glm)."""
    u = np.linspace(0.0, 60.0, 600_001)
    s = t * np.exp(u)
    log_integrand = stats.t.logpdf(s, dof) + np.log(s)
    log_weights = np.log(np.r_[0.5, np.ones(u.size - 2), 0.5] * (u[1] - u[0]))
    return float(special.logsumexp(log_integrand + log_weights))


@pytest.mark.parametrize("t", [8.0, 40.0, 5000.0, 1e25, 1e60])
def test_t_to_z_does_not_saturate(t):
    dof = 14
    z = glm.t_to_z(np.array([t, -t]), dof)
    assert np.isfinite(z).all() and z[0] == -z[1] > 0
    # z has the tail probability of t, also where p is far below float64's range
    np.testing.assert_allclose(stats.norm.logsf(z[0]), _log_t_tail_quadrature(t, dof), rtol=1e-6)


def test_t_to_z_moderate_values_equal_plain_conversion():
    t = np.linspace(-6, 6, 41)
    np.testing.assert_allclose(glm.t_to_z(t, 20), stats.norm.isf(stats.t.sf(t, 20)), atol=1e-8)


def test_design_centres_covariates_and_pads_contrasts():
    subjects = _subjects()
    design = glm.design_matrix(subjects, "groupsAge", ("age",))
    assert design.columns == ["R", "NR", "age"]
    assert abs(design.matrix[:, 2].mean()) < 1e-10
    assert design.covariate_means["age"] == pytest.approx(subjects["age"].mean())
    assert design.contrast("NRgtR").tolist() == [-1.0, 1.0, 0.0]
    assert design.n_per_group == {"R": 8, "NR": 8}
    assert glm.model_names(()) == ["groups"]


def test_group_with_fewer_than_three_is_refused():
    with pytest.raises(UserInputError, match="group NR has 2 included"):
        glm.design_matrix(_subjects(8, 2), "groups", ())


def test_constant_covariate_is_refused():
    subjects = _subjects().assign(age=50.0)
    with pytest.raises(UserInputError, match="--covariates age: constant"):
        glm.design_matrix(subjects, "groupsAge", ("age",))
    # the groups model ignores covariates
    glm.design_matrix(subjects, "groups", ("age",))


def test_collinear_covariate_is_refused():
    subjects = _subjects()
    subjects["age"] = np.where(subjects["group"] == "R", 30.0, 60.0)
    with pytest.raises(UserInputError, match="--covariates age: collinear"):
        glm.design_matrix(subjects, "groupsAge", ("age",))
    subjects["age"] = np.arange(16.0)
    subjects["hads"] = 2 * subjects["age"] + 1
    with pytest.raises(UserInputError, match="collinear"):
        glm.design_matrix(subjects, "groupsAge", ("age", "hads"))
