"""One colour per solver and per model (lsr1_core.viz.palette)."""
from lsr1_core.viz.palette import EXTENDED, FIXED, color_for, colors_for


def test_known_solvers_have_one_colour_whatever_the_spelling():
    assert color_for("lsr1") == color_for("L-SR1") == FIXED["lsr1"]
    assert color_for("sr1") == color_for("SR1 (classical)") == FIXED["sr1"]
    assert color_for("lbfgs") == color_for("L-BFGS")
    assert color_for("gd") == color_for("Gradient descent")
    assert color_for("gt") == color_for("Ground truth") == color_for("ground truth")
    assert color_for("L-SR1 (no secant)") == color_for("lsr1_nosec")
    assert len(set(FIXED.values())) == len(FIXED)
    assert not set(FIXED.values()) & set(EXTENDED)


def test_other_labels_get_a_deterministic_colour():
    a = color_for("L-SR1 profile_quadratic")
    assert a == color_for("L-SR1 profile_quadratic") and a in EXTENDED


def test_no_two_series_share_a_colour_in_one_figure():
    labels = ["L-SR1", "SR1 (classical)", "L-BFGS", "Adam", "Gradient descent", "Newton", "AdaHessian", "LODO"]
    labels += [f"L-SR1 run_{i}" for i in range(40)]
    cols = colors_for(labels)
    assert len(set(cols.values())) == len(labels)
    assert cols["L-SR1"] == color_for("L-SR1") and cols["Adam"] == color_for("adam")
    # a figure with one model keeps that model's page-wide colour
    assert colors_for(["Adam", "L-SR1 quadratic"])["L-SR1 quadratic"] == color_for("L-SR1 quadratic")
