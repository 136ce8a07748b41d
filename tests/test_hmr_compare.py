"""lsr1_core.hmr.compare: every method fitted from one start, per-sample metrics at every step, statistics."""
import numpy as np
import pytest
import torch

from lsr1_core.hmr import AnnyBody, CameraConfig, load_pretrained
from lsr1_core.hmr import test_set as hmr_test_set
from lsr1_core.hmr.compare import curves, evaluate_steps, fit_methods, step_statistics
from lsr1_core.hmr.compare import curves_of
from lsr1_core.hmr.models import HMRObjective, classical_fit


@pytest.fixture(scope="module")
def setting():
    torch.set_num_threads(1)
    body = AnnyBody()
    models = load_pretrained(body)
    if not models:
        pytest.skip("no shipped HMR checkpoints")
    return body, hmr_test_set(body).subset(slice(0, 3)), models


def test_fit_methods_equals_each_method_fitted_alone_and_its_metrics(setting):
    """The one fitting entry point against each method run by hand: the learned models' own fits, the classical
    ones from L-SR1's initializer; its FitResults (``results=True``) are the fits its arrays hold."""
    body, b, models = setting
    fit = fit_methods(body, b, models, 4, results=True)
    assert fit["order"] == [n for n in ("lsr1", "lgd", "lsr1_nosec", "adam", "lbfgs") if n in models or n in
                            ("adam", "lbfgs")]
    assert fit["start"] == "lsr1" and set(fit["seconds"]) == set(fit["order"]) == set(fit["results"])
    obj = HMRObjective(body, b.kp2d, b.conf, CameraConfig())
    ref = {}
    for name, m in models.items():
        with torch.no_grad(), m.inference(rows=len(b)):
            ref[name] = m.fit(obj, 4)
    with torch.no_grad(), models["lsr1"].inference(rows=len(b)):
        p0, s0 = models["lsr1"].initial(obj)
    ref.update({c: classical_fit(c, obj, p0, s0, 4) for c in ("adam", "lbfgs")})
    for name, r in ref.items():
        np.testing.assert_array_equal(fit["results"][name].poses[-1].numpy(), r.poses[-1].detach().numpy())
        assert fit["poses"][name].shape == (5, 3, body.pose_dim)
        np.testing.assert_allclose(fit["poses"][name][-1], r.poses[-1].numpy(), atol=1e-5)
        c = curves_of(body, b, obj, r)
        for k in ("reproj", "mpjpe", "pa_mpjpe", "f"):
            assert fit["metrics"][name][k].shape == (5, 3)
            np.testing.assert_allclose(curves(fit)[name][k], c[k], rtol=2e-4, atol=1e-4)


def test_without_learned_models_the_classical_ones_start_from_the_rest_pose(setting):
    body, b, _ = setting
    fit = fit_methods(body, b, {}, 2)
    assert fit["order"] == ["adam", "lbfgs"] and fit["start"] is None
    np.testing.assert_array_equal(fit["poses"]["adam"][0], 0.0)


def test_step_statistics_and_evaluate_steps(setting):
    v = np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    s = step_statistics(v)
    np.testing.assert_allclose(s["mean"], [2.5, 25.0])
    np.testing.assert_allclose(s["median"], [2.5, 25.0])
    np.testing.assert_allclose(s["q25"], [1.75, 17.5])
    np.testing.assert_allclose(s["q75"], [3.25, 32.5])
    body, b, models = setting
    calls = []
    ev = evaluate_steps(body, b, {"lgd": models["lgd"]}, 3, classical=("adam",),
                        progress=lambda i, n, name: calls.append((i, n, name)))
    assert calls == [(0, 2, "lgd"), (1, 2, "adam"), (2, 2, "")]
    assert ev["n"] == 3 and ev["order"] == ["lgd", "adam"]
    fit = fit_methods(body, b, {"lgd": models["lgd"]}, 3, classical=("adam",))
    np.testing.assert_allclose(ev["stats"]["lgd"]["pa_mpjpe"]["median"], np.median(fit["metrics"]["lgd"]["pa_mpjpe"], 1),
                               rtol=1e-5)
    assert all(t > 0 for t in ev["seconds_per_step"].values())


def test_the_disk_cache_round_trips_fits_and_the_test_set(setting, tmp_path, monkeypatch):
    from explorer import hmr_cache as diskcache
    monkeypatch.setenv("LSR1_CACHE_DIR", str(tmp_path))
    body, b, models = setting
    fit = fit_methods(body, b, {"lgd": models["lgd"]}, 2, classical=("adam",))
    key = diskcache.key_of(what="fit", n=1)
    assert diskcache.load_fit(key) is None
    diskcache.save_fit(key, fit)
    back = diskcache.load_fit(key)
    assert back["order"] == fit["order"] and back["start"] == fit["start"] and back["seconds"] == fit["seconds"]
    for g in ("poses", "shapes"):
        for n in fit["order"]:
            np.testing.assert_array_equal(back[g][n], fit[g][n])
    np.testing.assert_array_equal(back["metrics"]["adam"]["pa_mpjpe"], fit["metrics"]["adam"]["pa_mpjpe"])
    (tmp_path / f"fit_{key}.npz").write_bytes(b"not a zip")  # a broken entry is a miss, not an error
    assert diskcache.load_fit(key) is None
    # the key follows the checkpoints' cards (their weights' digests), not their paths
    from lsr1_core.hmr import PRETRAINED_DIR
    card = tmp_path / "copy.json"
    card.write_bytes((PRETRAINED_DIR / "hmr_lgd.json").read_bytes())
    k1 = diskcache.fit_key("anny", ("test", 0), [("lgd", PRETRAINED_DIR / "hmr_lgd")], ("adam",), 2)
    assert k1 == diskcache.fit_key("anny", ("test", 0), [("lgd", tmp_path / "copy")], ("adam",), 2)
    card.write_text(card.read_text().replace('"iterations"', '"iterations_"'))
    assert k1 != diskcache.fit_key("anny", ("test", 0), [("lgd", tmp_path / "copy")], ("adam",), 2)
    assert k1 != diskcache.fit_key("anny", ("test", 1), [("lgd", PRETRAINED_DIR / "hmr_lgd")], ("adam",), 2)
    ts = diskcache.test_set_cached(body)
    assert len(list(tmp_path.glob("batch_*.safetensors"))) == 1
    again = diskcache.test_set_cached(body)
    for k, v in ts.tensors().items():
        torch.testing.assert_close(again.tensors()[k], v)
    torch.testing.assert_close(ts.kp2d[:3], b.kp2d)


def test_the_untrained_qn_form_fits_beside_the_classical_methods(setting):
    """compare.FITTERS: the qn form (no HMR weights) is fitted from the same start as Adam and L-BFGS, lowers the
    objective at every step (its Armijo safeguard), and equals a direct LSR1Solver run."""
    from lsr1_core.errors import LSR1Error
    from lsr1_core.hmr.compare import FITTERS
    from lsr1_core.hmr.data import CameraConfig
    from lsr1_core.hmr.models import HMRObjective, classical_fit
    from lsr1_core.learned import LSR1Config, LSR1Net, LSR1Solver
    from lsr1_core.solvers import run
    body, b, models = setting
    assert FITTERS == ("adam", "lbfgs", "lsr1_qn")
    fit = fit_methods(body, b, {"lgd": models["lgd"]}, 4, classical=FITTERS)
    assert fit["order"] == ["lgd", "adam", "lbfgs", "lsr1_qn"]
    np.testing.assert_array_equal(fit["poses"]["lsr1_qn"][0], fit["poses"]["adam"][0])
    f = fit["metrics"]["lsr1_qn"]["f"]
    assert np.all(np.diff(f, axis=0) <= 1e-7) and np.all(f[-1] < f[0])
    obj = HMRObjective(body, b.kp2d, b.conf, CameraConfig())
    z0 = torch.cat([torch.as_tensor(fit["poses"]["adam"][0]), torch.as_tensor(fit["shapes"]["adam"][0])], 1)
    ref = run(LSR1Solver(model=LSR1Net(LSR1Config.qn())), obj, z0, 4)
    np.testing.assert_allclose(fit["poses"]["lsr1_qn"][4], ref.x[4][:, :body.pose_dim].numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(LSR1Error, match="lsr1_qn"):
        classical_fit("newton", obj, z0[:, :body.pose_dim], z0[:, body.pose_dim:], 2)
