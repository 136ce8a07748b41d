"""The Human mesh recovery page (AppTest): sample choice, the step control, the figures' data, body-model
and checkpoint mismatches, the fallback without offscreen rendering; and the page's exports."""
import csv
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from plotly_json import decode
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "explorer" / "app.py")
N_VERTS, N_FACES = 13718, 27420  # the Anny mesh


def _charts(at) -> dict:
    """The page's figures by name: the keypoint canvas (st.plotly_chart) and the step view's overlay and
    curves figures (plotly figure JSON inside the step-view component's arguments)."""
    out = {}
    for c in at.get("plotly_chart"):
        spec = json.loads(c.proto.spec)
        out[_chart_name(spec)] = (decode(spec), spec)
    for comp in at.get("component_instance"):
        spec = json.loads(comp.proto.json_args)["spec"]
        for name in ("overlay", "curves"):
            if spec.get(name) is not None:
                out[name] = (decode(spec[name]), spec[name])
    return out


def _mesh_view(at) -> tuple[dict, list[dict]]:
    """The 3-D view's component arguments, decoded: its spec and, per mesh, the label, colour, the view's
    x/y/z (float32) and the faces (int32, (3, F))."""
    comps = at.get("component_instance")
    assert len(comps) == 1 and comps[0].proto.component_name.endswith("hmr_step_view")
    proto = comps[0].proto
    spec = json.loads(proto.json_args)["spec"]
    blobs = {a.key: a.bytes for a in proto.special_args}
    assert len(blobs["vertices"]) == sum(12 * m["nv"] for m in spec["meshes"])  # float32 x, y, z
    verts = np.frombuffer(blobs["vertices"], dtype=np.float32)
    out, at_ = [], 0
    for m in spec["meshes"]:
        n = m["nv"]
        xyz = verts[at_:at_ + 3 * n].reshape(3, n)
        at_ += 3 * n
        faces = np.frombuffer(blobs[f"faces{m['face_set']}"], dtype=np.int32).reshape(3, -1)  # int32
        assert faces.shape[1] == m["nf"] and faces.max() < n
        out.append({"name": m["label"], "color": m["color"], "x": xyz[0], "y": xyz[1], "z": xyz[2], "faces": faces})
    return spec, out


def _chart_name(spec) -> str:
    data = spec.get("data", [])
    if spec.get("layout", {}).get("uirevision") == "hmr-overlay":
        return "overlay"
    if spec.get("layout", {}).get("uirevision") == "hmr-curves":
        return "curves"
    if any(t.get("name") == "observed keypoints" for t in data):
        return "keypoints"
    return "other"


def _tiny_checkpoints(root: Path) -> Path:
    """Untrained HMR checkpoints (width 16) that share one initializer, as training runs would."""
    from lsr1_core.hmr.anny_body import BODY_BONES, PHENOTYPES
    from lsr1_core.hmr.body import COCO18
    from lsr1_core.hmr.models import HMRModel, HMRModelConfig, save_hmr_model
    anny = {"body_model": "anny", "pose_dim": 3 * len(BODY_BONES), "shape_dim": len(PHENOTYPES),
            "keypoints": list(COCO18)}
    smpl = {"body_model": "smpl", "pose_dim": 72, "shape_dim": 10, "keypoints": list(COCO18)}
    torch.manual_seed(0)
    init = None
    for name, method, sec, sig in (("lsr1", "lsr1", 1.0, anny), ("lgd", "lgd", 1.0, anny),
                                   ("lsr1_nosec", "lsr1", 0.0, anny), ("smpl_lgd", "lgd", 1.0, smpl)):
        m = HMRModel(sig, HMRModelConfig(method=method, width=16))
        if sig is anny:
            if init is None:
                init = m.initializer.state_dict()
            m.initializer.load_state_dict(init)
        save_hmr_model(root / name / "best", m, iterations=0,
                       train_config={"stage": "update", "method": method, "secant_weight": sec,
                                     "unroll": 4 if method == "lgd" else 8})
    return root


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return _tiny_checkpoints(tmp_path_factory.mktemp("hmr_runs"))


@pytest.fixture(scope="module")
def anny():
    from lsr1_core.hmr import AnnyBody
    return AnnyBody()


@pytest.fixture
def page(runs_dir, monkeypatch):
    monkeypatch.setenv("LSR1_HMR_RUNS", str(runs_dir))
    monkeypatch.setenv("LSR1_CACHE_DIR", str(runs_dir.parent / "disk_cache"))  # not the user's cache
    monkeypatch.delenv("LSR1_NO_RENDER", raising=False)
    torch.set_num_threads(1)

    def open_page(**choices):
        at = AppTest.from_file(APP, default_timeout=300).run()
        at.switch_page("views/hmr.py").run()
        assert not at.exception, at.exception
        for slot, label in {"lsr1": "run: lsr1", "lgd": "run: lgd", "lsr1_nosec": "run: lsr1_nosec",
                            **choices}.items():
            at.selectbox(key=f"hmr_ckpt_{slot}").set_value(label)
        at.run()
        assert not at.exception, at.exception
        return at
    return open_page


def _rendering_works() -> bool:
    from lsr1_core.hmr.render import render_status
    return render_status() is None


def _to_display(v_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 3-D view's axes: x = camera x (plus the mesh's offset), y = depth − 6 m, z = −camera y."""
    return v_cam[:, 0], v_cam[:, 2] - 6.0, -v_cam[:, 1]


def test_sample_choice_and_step_control_drive_the_figures(page, anny):
    from lsr1_core.hmr import test_set
    from lsr1_core.hmr.data import to_camera, CameraConfig, project
    at = page()
    assert not at.error, [e.value for e in at.error]
    at.number_input(key="hmr_index").set_value(7).run()
    assert not at.exception, at.exception
    ch = _charts(at)
    assert {"keypoints", "curves"} <= set(ch)

    # the keypoint canvas: the observed keypoints of test sample 7 in pixels, missing ones marked apart
    b = test_set(anny).subset(slice(7, 8))
    vis = b.conf[0] > 0
    kp = ch["keypoints"][0]
    observed = next(t for t in kp["data"] if t["name"] == "observed keypoints")
    np.testing.assert_allclose(observed["x"], b.kp2d[0, vis, 0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(observed["y"], b.kp2d[0, vis, 1].numpy(), rtol=1e-6)
    missing = [t for t in kp["data"] if t["name"].startswith("missing")]
    assert len(missing) == int((~vis).any()) and (not missing or len(missing[0]["x"]) == int((~vis).sum()))
    # zoomed onto the body: every keypoint (and missing keypoint's true position) inside the square shown
    (x0, x1), (y1, y0) = kp["layout"]["xaxis"]["range"], kp["layout"]["yaxis"]["range"]
    assert x1 - x0 == pytest.approx(y1 - y0) and x1 - x0 < 256
    pts = [observed["x"], observed["y"]] + ([missing[0]["x"], missing[0]["y"]] if missing else [])
    for xs, ys in zip(pts[::2], pts[1::2]):
        assert (x0 < xs).all() and (xs < x1).all() and (y0 < ys).all() and (ys < y1).all()

    # the 3-D view: L-SR1 (blue) and LGD (pink) by default, in light tints of the project-wide colours, full
    # meshes, float32 vertices, int32 faces
    from lsr1_core.viz.palette import color_for, rgb01
    spec, meshes = _mesh_view(at)
    assert [t["name"] for t in meshes] == ["L-SR1", "LGD"]
    for t in meshes:
        tint, base = np.array(rgb01(t["color"])), np.array(rgb01(color_for(t["name"])))
        np.testing.assert_allclose(tint, base + 0.5 * (1 - base), atol=1 / 255)
    for t in meshes:
        assert len(t["x"]) == N_VERTS and t["faces"].shape == (3, N_FACES)
    assert spec["n_face_sets"] == 1  # the faces are sent once for meshes that share them
    assert spec["layout"]["uirevision"] and spec["layout"]["scene"]["uirevision"]
    assert spec["step"] == 15
    assert at.slider(key="hmr_step").value == 15
    # the keypoint canvas is large enough to read
    assert kp["layout"]["height"] >= 500

    # the curves: every method, steps 0..15, the current step marked
    def check_curves(step):
        cur = _charts(at)["curves"][0]
        lines = [t for t in cur["data"] if t["mode"] == "lines+markers"]
        assert {t["name"] for t in lines} == {"L-SR1", "LGD", "L-SR1 (no secant)", "Adam", "L-BFGS", "L-SR1 qn form"}
        assert all(t["line"]["color"] == color_for(t["name"]) for t in lines)  # one colour per method, app-wide
        assert len(lines) == 6 * 3 and all(len(t["y"]) == 16 for t in lines)
        marks = [t for t in cur["data"] if t["name"] == "current step"]
        assert len(marks) == 3 and all(list(m["x"]) == [step] * 6 for m in marks)
        for m, key in zip(marks, ("xaxis", "xaxis2", "xaxis3")):
            ys = {n: t["y"][step] for t in lines if t["xaxis"] == m["xaxis"] for n in [t["name"]]}
            assert sorted(m["y"]) == pytest.approx(sorted(ys.values()))
        assert [s["x0"] for s in cur["layout"]["shapes"]] == [step] * 3
        return lines
    lines15 = check_curves(15)

    # step 0: every method starts from the same initializer, so the meshes agree
    at.multiselect(key="hmr_in3d_lsr1-lgd-lsr1_nosec-adam-lbfgs-lsr1_qn").set_value(["lsr1", "lgd", "adam"])
    at.slider(key="hmr_step").set_value(0).run()
    assert not at.exception, at.exception
    check_curves(0)
    spec, m0 = _mesh_view(at)
    assert "step 0" in spec["layout"]["title"]["text"] and spec["step"] == 0
    assert [t["name"] for t in m0] == ["L-SR1", "LGD", "Adam"]
    for t in m0[1:]:
        np.testing.assert_allclose(t["z"], m0[0]["z"], atol=1e-5)
        np.testing.assert_allclose(t["x"] - t["x"][0], m0[0]["x"] - m0[0]["x"][0], atol=1e-4)
    # Adam moves the body between step 0 and step 15
    at.slider(key="hmr_step").set_value(15).run()
    adam15 = [t for t in _mesh_view(at)[1] if t["name"] == "Adam"][0]
    assert np.abs(np.asarray(adam15["z"]) - np.asarray(m0[2]["z"])).max() > 1e-3
    # the per-step 2-D error the page plots for Adam falls from its start
    adam = next(t for t in lines15 if t["name"] == "Adam" and t["xaxis"] == "x")
    assert adam["y"][15] < adam["y"][0]

    # ground truth: the true mesh, in the view's axes, from the sample's pose and shape
    at.toggle(key="hmr_gt").set_value(True).run()
    ch = _charts(at)
    gt = [t for t in _mesh_view(at)[1] if t["name"] == "Ground truth"]
    assert len(gt) == 1
    with torch.no_grad():
        v = to_camera(anny.vertices(b.pose, b.shape).float(), CameraConfig())[0].numpy()
    x, y, z = _to_display(v)
    np.testing.assert_allclose(gt[0]["z"], z, atol=1e-5)
    np.testing.assert_allclose(gt[0]["y"], y, atol=1e-5)
    np.testing.assert_allclose(gt[0]["x"] - gt[0]["x"][0], x - x[0], atol=1e-4)
    np.testing.assert_array_equal(gt[0]["faces"].T, anny.faces.numpy())

    # the rendered overlays: one image per method plus the ground truth, from the sample's camera, framed on
    # every projected vertex (nothing cropped) with the same window in every panel
    if _rendering_works():
        ov = ch["overlay"][0]
        imgs = ov["layout"]["images"]
        assert len(imgs) == 4 and all(i["source"].startswith("data:image/png;base64,") for i in imgs)
        titles = [a["text"] for a in ov["layout"]["annotations"]]
        assert titles == ["L-SR1", "LGD", "Adam", "Ground truth"]  # the meshes shown
        u0, v0, size = imgs[0]["x"], imgs[0]["y"], imgs[0]["sizex"]
        assert all((i["x"], i["y"], i["sizex"], i["sizey"]) == (u0, v0, size, size) for i in imgs)
        uv = project(torch.from_numpy(v).double(), CameraConfig()).numpy()
        assert (uv >= [u0, v0]).all() and (uv <= [u0 + size, v0 + size]).all()
        assert ov["layout"]["xaxis"]["range"] == [u0, u0 + size] and ov["layout"]["yaxis4"]["range"] == [v0 + size, v0]
    else:
        assert any("rendered images are missing" in i.value for i in at.info)

    # the metrics table follows the step
    at.slider(key="hmr_step").set_value(4).run()
    table = next(m.value for m in at.markdown if m.value.startswith("**At step 4**"))
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[4:]]
    assert [r[0] for r in rows] == ["L-SR1", "LGD", "L-SR1 (no secant)", "Adam", "L-BFGS", "L-SR1 qn form"]
    adam4 = next(t for t in _charts(at)["curves"][0]["data"] if t["name"] == "Adam" and t["xaxis"] == "x")["y"][4]
    assert float(next(r for r in rows if r[0] == "Adam")[1]) == pytest.approx(adam4, abs=0.006)

    # a random new sample from its seed: the same observation as the library draws for that seed
    at.radio(key="hmr_source").set_value("random new sample").run()
    at.number_input(key="hmr_seed").set_value(3).run()
    assert not at.exception, at.exception
    from lsr1_core.hmr import CameraConfig as Cam, PoseSampler, make_batch
    from lsr1_core.hmr.data import SampleConfig
    g = torch.Generator().manual_seed(3)
    pose, shape = PoseSampler(anny, "test", jitter=0.0).draw(1, g)
    r = make_batch(anny, pose, shape, g, Cam(), SampleConfig(noise=0.01))
    observed = next(t for t in _charts(at)["keypoints"][0]["data"] if t["name"] == "observed keypoints")
    np.testing.assert_allclose(observed["x"], r.kp2d[0, r.conf[0] > 0, 0].numpy(), rtol=1e-6)
    assert any("random-seed3" in m.value for m in at.markdown)


def test_checkpoints_that_do_not_fit_the_body_model_are_named(page):
    at = page(lgd="run: smpl_lgd")
    errs = [e.value for e in at.error]
    assert any("LGD" in e and "does not fit the chosen body model" in e and "'smpl'" in e for e in errs), errs
    meshes = _mesh_view(at)[1]
    assert [t["name"] for t in meshes] == ["L-SR1"]  # LGD is left out, the rest still runs
    lines = [t for t in _charts(at)["curves"][0]["data"] if t["mode"] == "lines+markers" and t["xaxis"] == "x"]
    assert {t["name"] for t in lines} == {"L-SR1", "L-SR1 (no secant)", "Adam", "L-BFGS", "L-SR1 qn form"}


def test_smpl_needs_its_path_and_refuses_anny_checkpoints(page, monkeypatch, tmp_path):
    pytest.importorskip("smplx")
    from smpl_fixture import write_tiny_smpl_fixture
    monkeypatch.delenv("LSR1_SMPL_MODEL", raising=False)
    at = page()
    at.selectbox(key="hmr_body").set_value("SMPL (from LSR1_SMPL_MODEL)").run()
    assert not at.exception, at.exception
    assert any("LSR1_SMPL_MODEL" in e.value for e in at.error)
    assert not at.get("plotly_chart") and not at.get("component_instance")

    model = write_tiny_smpl_fixture(tmp_path / "SMPL_NEUTRAL.pkl")
    monkeypatch.setenv("LSR1_SMPL_MODEL", str(model))
    at.run()
    assert not at.exception, at.exception
    errs = [e.value for e in at.error]
    assert sum("does not fit the chosen body model (SMPL" in e for e in errs) == 3, errs
    assert any("Adam, L-BFGS and the qn form start from the rest pose" in w.value for w in at.warning)
    from lsr1_core.hmr.smpl import SMPLBody
    smpl = SMPLBody(model)
    nv = smpl.vertices(torch.zeros(1, smpl.pose_dim), smpl.default_shape(1)).shape[1]
    meshes = _mesh_view(at)[1]
    assert [t["name"] for t in meshes] == ["Adam", "L-BFGS"] and len(meshes[0]["x"]) == nv


def test_no_learned_checkpoint_still_fits_classically(page):
    at = page(lsr1="none", lgd="none", lsr1_nosec="none")
    assert not at.error
    assert any("rest pose" in w.value for w in at.warning)
    lines = [t for t in _charts(at)["curves"][0]["data"] if t["mode"] == "lines+markers" and t["xaxis"] == "x"]
    assert {t["name"] for t in lines} == {"Adam", "L-BFGS", "L-SR1 qn form"}


def test_without_offscreen_rendering_the_3d_view_remains(page, monkeypatch):
    monkeypatch.setenv("LSR1_NO_RENDER", "1")
    at = page()
    assert any("rendered images are missing" in i.value and "LSR1_NO_RENDER" in i.value for i in at.info)
    ch = _charts(at)
    assert "overlay" not in ch and "curves" in ch
    assert len(_mesh_view(at)[1]) == 2


def test_a_checkpoint_without_its_weights_file_says_so(page, runs_dir, monkeypatch, tmp_path):
    """A card whose weights file is missing is not a body-model mismatch: the page gives the real reason."""
    import shutil
    shutil.copytree(runs_dir / "lgd", tmp_path / "lgd_noweights")
    (tmp_path / "lgd_noweights" / "best.safetensors").unlink()
    monkeypatch.setenv("LSR1_HMR_RUNS", f"{runs_dir}{os.pathsep}{tmp_path}")
    at = page(lgd="run: lgd_noweights")
    errs = [e.value for e in at.error]
    assert any("LGD" in e and "could not be loaded" in e and "weights file" in e and "missing" in e
               for e in errs), errs
    assert not any("does not fit" in e for e in errs), errs
    assert [t["name"] for t in _mesh_view(at)[1]] == ["L-SR1"]


def test_every_mesh_lies_inside_the_3d_view(page):
    """Five methods and the ground truth: the scene's box holds every vertex of every mesh, the meshes do not
    overlap, and the camera stands far enough back to see the box (plotly's 45° perspective)."""
    at = page()
    at.multiselect(key="hmr_in3d_lsr1-lgd-lsr1_nosec-adam-lbfgs-lsr1_qn").set_value(
        ["lsr1", "lgd", "lsr1_nosec", "adam", "lbfgs"])
    at.toggle(key="hmr_gt").set_value(True).run()
    assert not at.exception, at.exception
    spec, meshes = _mesh_view(at)
    assert [t["name"] for t in meshes] == ["L-SR1", "LGD", "L-SR1 (no secant)", "Adam", "L-BFGS", "Ground truth"]
    scene = spec["layout"]["scene"]
    for ax in "xyz":
        lo, hi = scene[f"{ax}axis"]["range"]
        for t in meshes:
            assert lo <= t[ax].min() and t[ax].max() <= hi, (ax, t["name"])
    for a, b in zip(meshes, meshes[1:]):
        assert a["x"].max() < b["x"].min()
    from lsr1_core.viz.hmr import ASSUMED_ASPECT, TAN_HALF_FOV
    asp, eye = scene["aspectratio"], scene["camera"]["eye"]
    d = -eye["y"] - asp["y"] / 2  # from the eye to the box's front face
    assert d * TAN_HALF_FOV * ASSUMED_ASPECT >= asp["x"] / 2 and d * TAN_HALF_FOV >= asp["z"] / 2
    labels = spec["labels"]
    assert labels["text"] == [t["name"] for t in meshes]
    assert all(z > t["z"].max() for z, t in zip(labels["z"], meshes))


def test_test_set_evaluation_statistics_per_step(page, runs_dir):
    """The evaluation over the first n test samples: per method a median line, a mean line and a quartile band
    for MPJPE and PA-MPJPE, LGD's training horizon marked, and a table with the time per step; the numbers are
    those of lsr1_core.hmr.compare.evaluate_steps."""
    at = page()
    assert not any(c.key == "hmr_eval_fig" for c in at.get("plotly_chart"))
    at.select_slider(key="hmr_eval_n").set_value(8)
    at.button(key="hmr_eval_run").click().run()
    assert not at.exception, at.exception
    fig = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "trained for" in c.proto.spec)
    fig = decode(fig)
    medians = [t for t in fig["data"] if t.get("mode") == "lines+markers"]
    assert {t["name"] for t in medians} == {"L-SR1", "LGD", "L-SR1 (no secant)", "Adam", "L-BFGS", "L-SR1 qn form"}
    assert len(medians) == 12 and all(len(t["y"]) == 16 for t in medians)
    notes = [a["text"] for a in fig["layout"]["annotations"] if "trained for" in a["text"]]
    assert notes.count("LGD trained for 4 steps") == 2 and notes.count("L-SR1, L-SR1 (no secant) trained for 8 steps") == 2
    assert [s["x0"] for s in fig["layout"]["shapes"]].count(4) == 2
    table = next(m.value for m in at.markdown if "ms per step" in m.value)
    assert "| L-SR1 |" in table and "| Adam |" in table and "| L-SR1 qn form |" in table
    # the page's statistics are the library's
    from lsr1_core.hmr import AnnyBody, test_set
    from lsr1_core.hmr.compare import evaluate_steps
    from lsr1_core.hmr.models import load_hmr_model
    body = AnnyBody()
    lgd = load_hmr_model(runs_dir / "lgd" / "best", body)[0]
    ev = evaluate_steps(body, test_set(body).subset(slice(0, 8)), {"lgd": lgd}, 15, classical=())
    lgd_pa = next(t for t in medians if t["name"] == "LGD" and t["xaxis"] == "x2")
    np.testing.assert_allclose(lgd_pa["y"], ev["stats"]["lgd"]["pa_mpjpe"]["median"], rtol=1e-4)


def test_the_3d_view_arguments_match_the_plotly_figure():
    from explorer.components.step_view import step_view_args as mesh_view_args
    from lsr1_core.viz.hmr import mesh3d_figure
    v, f = _tet()
    v2 = v + np.float32([0.1, 0.2, 6.0])
    meshes = {"lsr1": (v2, f), "lgd": (v2 * 1.1, f), "gt": (v2, f[:, ::-1].copy())}
    args = mesh_view_args(meshes, 5)
    spec = args["spec"]
    assert [m["face_set"] for m in spec["meshes"]] == [0, 0, 1] and spec["n_face_sets"] == 2
    fig = mesh3d_figure(meshes, 5)
    traces = [t for t in fig.data if t.type == "mesh3d"]
    verts = np.frombuffer(args["vertices"], dtype=np.float32).reshape(3, 3, 4)  # mesh, xyz, vertex
    for t, xyz, m in zip(traces, verts, spec["meshes"]):
        assert t.name == m["label"] and t.color == m["color"]
        np.testing.assert_array_equal(np.asarray(t.x), xyz[0])
        np.testing.assert_array_equal(np.asarray(t.z), xyz[2])
        faces = np.frombuffer(args[f"faces{m['face_set']}"], dtype=np.int32).reshape(3, -1)
        np.testing.assert_array_equal(np.asarray(t.i), faces[0])
    assert json.dumps(spec)  # the JSON part is plain JSON
    # a new step with new vertices changes the JSON (the component re-renders only then)
    assert mesh_view_args({"lsr1": (v2 + 0.01, f)}, 5)["spec"]["rev"] != mesh_view_args({"lsr1": (v2, f)}, 5)["spec"]["rev"]


def test_per_step_figures_patched_from_their_base_equal_the_built_ones():
    """The page patches a cached figure per step instead of building it; both must give the same JSON."""
    from explorer.component_files import plain_figure as _plain
    from lsr1_core.viz.hmr import curves_at, curves_figure, overlay_at, overlay_figure
    curves = {"lsr1": {"reproj": [3.0, 2.0, 1.5], "mpjpe": [90, 80, 70], "pa_mpjpe": [60, 55, 50], "f": [.1, .05, .02]},
              "adam": {"reproj": [3.0, 2.5, 2.4], "mpjpe": [90, 85, 84], "pa_mpjpe": [60, 58, 57], "f": [.1, .07, .06]}}
    base = _plain(curves_figure(curves, 0))
    for step in range(3):
        assert curves_at(base, curves, step) == _plain(curves_figure(curves, step))
    kp = np.random.default_rng(0).uniform(60, 200, (18, 2)).astype(np.float32)
    conf = np.ones(18, dtype=np.float32)
    conf[[3, 9]] = 0
    kp[[3, 9]] = 0
    window = (50.0, 40.0, 160.0)
    images = {"lsr1": "data:image/png;base64,AAAA", "lgd": "data:image/png;base64,BBBB"}
    base = _plain(overlay_figure({n: None for n in images}, kp, conf, 0))
    assert overlay_at(base, images, 7, window) == _plain(overlay_figure(images, kp, conf, 7, window))


# --- exports -------------------------------------------------------------------------------------
def _tet():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], dtype=np.int32)
    return v, f


def test_obj_export_holds_one_object_per_mesh():
    from explorer.hmr_export import obj_text
    v, f = _tet()
    text = obj_text({"L-SR1": (v, f), "LGD": (v + 1, f)}, "hello\nworld")
    lines = text.splitlines()
    assert lines[:2] == ["# hello", "# world"]
    assert [l for l in lines if l.startswith("o ")] == ["o L-SR1", "o LGD"]
    verts = np.array([[float(x) for x in l.split()[1:]] for l in lines if l.startswith("v ")])
    faces = np.array([[int(x) for x in l.split()[1:]] for l in lines if l.startswith("f ")])
    np.testing.assert_allclose(verts, np.concatenate([v, v + 1]))
    np.testing.assert_array_equal(faces, np.concatenate([f + 1, f + 5]))  # 1-based, offset by the first mesh


def test_ply_export_and_zip():
    from explorer.hmr_export import meshes_ply_zip, ply_text
    v, f = _tet()
    text = ply_text(v, f, "camera coordinates")
    head, body = text.split("end_header\n")
    assert "element vertex 4" in head and "element face 4" in head and "comment camera coordinates" in head
    rows = body.strip().splitlines()
    assert len(rows) == 8 and rows[4].split() == ["3", "0", "2", "1"]
    z = zipfile.ZipFile(io.BytesIO(meshes_ply_zip({"L-SR1": (v, f), "L-SR1 (no secant)": (v, f)})))
    assert z.namelist() == ["L-SR1.ply", "L-SR1_no_secant.ply"]
    assert z.read("L-SR1.ply").decode().startswith("ply\nformat ascii 1.0\n")
    with pytest.raises(ValueError, match="outside"):
        ply_text(v, f + 4)


def test_metrics_csv_has_a_row_per_method_and_step():
    from explorer.hmr_export import metrics_csv
    curves = {"lsr1": {"reproj": [3.0, 2.0, 1.5], "mpjpe": [90, 80, 70], "pa_mpjpe": [60, 55, 50], "f": [.1, .05, .02]},
              "lgd": {"reproj": [3.0, 2.5, 2.4], "mpjpe": [90, 85, 84], "pa_mpjpe": [60, 58, 57], "f": [.1, .07, .06]}}
    rows = list(csv.DictReader(io.StringIO(metrics_csv(curves, {"lsr1": "L-SR1", "lgd": "LGD"}))))
    assert len(rows) == 6
    assert list(rows[0]) == ["method", "label", "step", "reproj_px", "mpjpe_mm", "pa_mpjpe_mm", "objective"]
    assert rows[2] == {"method": "lsr1", "label": "L-SR1", "step": "2", "reproj_px": "1.5", "mpjpe_mm": "70",
                       "pa_mpjpe_mm": "50", "objective": "0.02"}


def test_page_mesh_download_is_in_camera_coordinates():
    from explorer.hmr_export import mesh_download
    v, f = _tet()
    obj = mesh_download({"lsr1": (v, f), "gt": (v, f)}, "OBJ", 3, "test-0")
    assert "inner iteration 3, sample test-0" in obj and "x right in the image, y down, z forward" in obj
    assert "o L-SR1" in obj and "o Ground_truth" in obj
    z = zipfile.ZipFile(io.BytesIO(mesh_download({"lgd": (v, f)}, "PLY", 3, "test-0")))
    assert z.namelist() == ["LGD.ply"]


def test_several_samples_side_by_side(page):
    """Three test samples: one row per sample, one panel per chosen method and the ground truth, each row framed
    on its own meshes; the PA-MPJPE in the titles is the single-sample view's."""
    at = page()
    names = "lsr1-lgd-lsr1_nosec-adam-lbfgs-lsr1_qn"
    at.multiselect(key="hmr_grid_samples").set_value([2, 7, 9])
    at.multiselect(key=f"hmr_grid_methods_{names}").set_value(["lsr1", "adam", "gt"])
    at.number_input(key="hmr_grid_step").set_value(4).run()
    assert not at.exception, at.exception
    grid = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "Several samples" in c.proto.spec)
    titles = [a["text"] for a in grid["layout"]["annotations"]]
    assert [t.split(" · ")[:2] for t in titles] == [[f"test-{i}", m] for i in (2, 7, 9)
                                                   for m in ("L-SR1", "Adam", "Ground truth")]
    # the same numbers as the single-sample view of test sample 7 at step 4
    at.number_input(key="hmr_index").set_value(7).run()
    table = next(m.value for m in at.markdown if m.value.startswith("**At step"))
    at.slider(key="hmr_step").set_value(4).run()
    table = next(m.value for m in at.markdown if m.value.startswith("**At step 4**"))
    rows = {r[0]: r for r in ([c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[4:])}
    for name in ("L-SR1", "Adam"):
        title = next(t for t in titles if t.startswith(f"test-7 · {name} ·"))
        assert float(title.split(" · ")[2].split()[0]) == pytest.approx(float(rows[name][3]), abs=0.6)
    if _rendering_works():
        imgs = grid["layout"]["images"]
        assert len(imgs) == 9
        by_row = [imgs[3 * i:3 * i + 3] for i in range(3)]
        for row in by_row:  # a row's panels share a window
            assert len({(i["x"], i["y"], i["sizex"]) for i in row}) == 1


def test_the_3d_view_stays_still_while_stepping(page):
    """The scene's box only grows while stepping with the same meshes (so the view does not jump), and it
    holds the meshes of every step seen."""
    at = page()
    boxes, seen = [], []
    for step in (15, 0, 7, 15):
        at.slider(key="hmr_step").set_value(step).run()
        spec, meshes = _mesh_view(at)
        scene = spec["layout"]["scene"]
        boxes.append({ax: scene[f"{ax}axis"]["range"] for ax in "xyz"})
        seen.append(meshes)
    for a, b in zip(boxes, boxes[1:]):
        assert all(b[ax][0] <= a[ax][0] and a[ax][1] <= b[ax][1] for ax in "xyz")
    assert boxes[-1] == boxes[-2]  # nothing new to hold
    for meshes in seen:
        for t in meshes:
            for ax in "xyz":
                assert boxes[-1][ax][0] <= t[ax].min() and t[ax].max() <= boxes[-1][ax][1]


def test_the_default_view_comes_from_the_set_up_cache(monkeypatch, tmp_path):
    """After `python -m explorer.hmr_prepare` (scripts/setup.sh) the page's default view (shipped checkpoints,
    test sample 0, last step, L-SR1 and LGD) is read from the disk cache: fits, meshes and overlays."""
    import streamlit as st
    from explorer import hmr_cache as diskcache
    from lsr1_core.hmr import PRETRAINED_DIR
    from explorer.hmr_prepare import default_view_key, prepare
    if not (PRETRAINED_DIR / "hmr_lsr1.json").exists():
        pytest.skip("no shipped HMR checkpoints")
    monkeypatch.setenv("LSR1_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LSR1_HMR_RUNS", str(tmp_path / "no_runs"))
    torch.set_num_threads(1)
    prepare(verbose=False)
    key = default_view_key()
    view = diskcache.load_arrays("view", key)
    assert diskcache.load_fit(key) is not None and view is not None
    # mark the stored overlays, to see that the page shows them rather than rendering its own
    marked = {**view, **{k: np.array(f"data:image/png;base64,STORED{k}") for k in view if k.startswith("image/")}}
    diskcache.save_arrays("view", key, marked)
    st.cache_data.clear()
    st.cache_resource.clear()  # the step cache may hold this view's renders from other tests' first runs
    at = AppTest.from_file(APP, default_timeout=300).run()
    at.switch_page("views/hmr.py").run()
    assert not at.exception, at.exception
    spec, meshes = _mesh_view(at)
    assert [t["name"] for t in meshes] == ["L-SR1", "LGD"] and spec["step"] == 15
    np.testing.assert_allclose(meshes[0]["z"], -view["mesh/lsr1"][:, 1], atol=1e-6)
    if any(k.startswith("image/") for k in view):
        sources = [i["source"] for i in spec["overlay"]["layout"]["images"]]
        assert sources == ["data:image/png;base64,STOREDimage/lsr1", "data:image/png;base64,STOREDimage/lgd"]
    # another step is computed (and rendered) as usual
    at.slider(key="hmr_step").set_value(14).run()
    assert not at.exception, at.exception
    spec, _ = _mesh_view(at)
    assert spec["step"] == 14 and not any("STORED" in i["source"] for i in (spec["overlay"] or {"layout": {
        "images": []}})["layout"]["images"])
