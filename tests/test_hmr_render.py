"""Offscreen rendering (pyrender over EGL, Mesa llvmpipe on the CPU): the body lands on the pixels the
camera model says it should."""
import numpy as np
import pytest
import torch

from lsr1_core.hmr.data import CameraConfig, project
from lsr1_core.hmr.render import RenderUnavailable, render_mesh, render_meshes, render_status

CAM = CameraConfig()


def _require_rendering():
    reason = render_status()
    if reason:
        pytest.skip(f"offscreen rendering is unavailable on this machine: {reason}")


def _quad(x0, x1, y0, y1, z):
    v = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=np.float32)
    return v, np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int32)


def test_a_quad_covers_exactly_its_projected_rectangle():
    """Camera coordinates x right, y down: a quad in the upper-left quadrant must appear upper left."""
    _require_rendering()
    v, f = _quad(-1.0, -0.5, -1.0, -0.25, 6.0)  # u = 600 x / 6 + 128 → [28, 78]; v → [28, 103]
    out = render_mesh(v, f, color=(1.0, 0.0, 0.0))
    assert out.rgba.shape == (256, 256, 4) and out.rgba.dtype == np.uint8 and out.mask.shape == (256, 256)
    ys, xs = np.nonzero(out.mask)
    assert (xs.min(), xs.max()) == (28, 77)  # pixel centres at .5: columns 28 … 77
    assert (ys.min(), ys.max()) == (28, 102)
    assert out.mask.sum() == 50 * 75
    # transparent off the quad, opaque and red on it
    assert (out.rgba[..., 3][~out.mask] == 0).all() and (out.rgba[..., 3][out.mask] == 255).all()
    rgb = out.rgba[out.mask][:, :3].astype(int)
    assert (rgb[:, 0] > 100).all() and (rgb[:, 1] < 30).all() and (rgb[:, 2] < 30).all()


def test_an_opaque_background_and_several_meshes():
    _require_rendering()
    a = _quad(-1.0, -0.5, -1.0, -0.5, 6.0)
    b = _quad(0.5, 1.0, 0.5, 1.0, 6.0)
    out = render_meshes([(*a, (1, 1, 1)), (*b, (1, 1, 1))], background=(0.0, 0.0, 1.0))
    assert out.mask.sum() == 2 * 50 * 50
    assert (out.rgba[..., 3] == 255).all()
    assert (out.rgba[~out.mask][:, :3] == [0, 0, 255]).all()
    assert out.mask[200, 200] and out.mask[50, 50] and not out.mask[128, 128]
    assert out.png()[:8] == b"\x89PNG\r\n\x1a\n" and out.data_uri().startswith("data:image/png;base64,")


def test_the_body_mesh_covers_its_projected_keypoints_and_vertices():
    """A test-set body rendered from its sample's camera: the silhouette spans the projected vertices'
    bounding box and covers the projected keypoints (they lie inside the body)."""
    _require_rendering()
    from lsr1_core.hmr import AnnyBody, test_set
    from lsr1_core.hmr.data import to_camera
    torch.set_num_threads(1)
    body = AnnyBody()
    batch = test_set(body, n=4)
    for i in range(2):
        b = batch.subset(slice(i, i + 1))
        with torch.no_grad():
            verts = to_camera(body.vertices(b.pose, b.shape).float(), CAM)[0]
        uv = project(verts, CAM).numpy()
        out = render_mesh(verts.numpy(), body.faces.numpy(), color=(1.0, 0.56, 0.76))
        ys, xs = np.nonzero(out.mask)
        lo, hi = uv.min(0), uv.max(0)
        # every covered pixel lies within the projected vertices' box, and the box is filled to its edges
        assert xs.min() >= np.floor(lo[0]) - 1 and xs.max() <= np.ceil(hi[0]) + 1
        assert ys.min() >= np.floor(lo[1]) - 1 and ys.max() <= np.ceil(hi[1]) + 1
        assert abs(xs.min() - lo[0]) < 2 and abs(xs.max() + 1 - hi[0]) < 2
        assert abs(ys.min() - lo[1]) < 2 and abs(ys.max() + 1 - hi[1]) < 2
        assert out.mask.sum() > 800  # a body at 6 m is about 170 px tall
        # the keypoints (regressed from the surface, inside the body) project onto covered pixels
        kp = project(b.joints3d, CAM)[0].numpy()
        grown = out.mask.copy()
        grown[1:] |= out.mask[:-1]
        grown[:-1] |= out.mask[1:]
        grown[:, 1:] |= out.mask[:, :-1]
        grown[:, :-1] |= out.mask[:, 1:]
        inside = [bool(grown[int(y), int(x)]) for x, y in kp]
        assert sum(inside) >= 16, inside
        torso = [1, 2, 5, 8, 11]  # neck, shoulders, hips
        assert all(inside[j] for j in torso)
        # the pink material shows: red above green on the body, transparent elsewhere
        rgb = out.rgba[out.mask][:, :3].astype(float).mean(0)
        assert rgb[0] > rgb[1] + 20
        assert (out.rgba[..., 3][~out.mask] == 0).all()


def test_disabled_rendering_says_why(monkeypatch):
    monkeypatch.setenv("LSR1_NO_RENDER", "1")
    assert "LSR1_NO_RENDER" in render_status()
    v, f = _quad(-1, 1, -1, 1, 6)
    with pytest.raises(RenderUnavailable, match="disabled"):
        render_mesh(v, f)


def test_a_missing_opengl_library_is_reported_not_raised():
    """A platform whose library is absent (OSMesa is not installed here): RenderUnavailable with the reason."""
    import subprocess
    import sys
    code = ("import numpy as np\n"
            "from lsr1_core.hmr.render import RenderUnavailable, render_mesh, render_status\n"
            "print('status:', render_status())\n"
            "try:\n"
            "    render_mesh(np.zeros((3, 3)), np.array([[0, 1, 2]]))\n"
            "except RenderUnavailable as e:\n"
            "    print('raised:', e)\n")
    env = {**__import__("os").environ, "PYOPENGL_PLATFORM": "no-such-platform"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("status: offscreen rendering is unavailable") and "no-such-platform" in lines[0]
    assert lines[1].startswith("raised: offscreen rendering is unavailable")


def test_bad_meshes_are_refused():
    with pytest.raises(ValueError, match="faces"):
        render_mesh(np.zeros((4, 3)), np.zeros((2, 4), dtype=np.int32))


def test_a_window_renders_that_square_of_the_image_at_the_chosen_resolution():
    """window=(u0, v0, size): the same quad lands where the window's pixels say, scaled to the resolution,
    also past the virtual image's border (nothing is cut off at 256 px)."""
    _require_rendering()
    v, f = _quad(-1.0, -0.5, -1.0, -0.25, 6.0)  # image pixels u ∈ [28, 78], v ∈ [28, 103]
    out = render_mesh(v, f, color=(1.0, 0.0, 0.0), window=(20.0, 20.0, 100.0), resolution=200)
    assert out.mask.shape == (200, 200)
    ys, xs = np.nonzero(out.mask)
    assert (xs.min(), xs.max()) == (16, 115) and (ys.min(), ys.max()) == (16, 165)  # (u − 20) · 2
    # a quad right of the image (u ∈ [278, 328]) is visible in a window there
    v2, _ = _quad(1.5, 2.0, -0.25, 0.25, 6.0)
    assert not render_mesh(v2, f).mask.any()
    out = render_mesh(v2, f, window=(250.0, 78.0, 100.0), resolution=100)
    ys, xs = np.nonzero(out.mask)
    assert (xs.min(), xs.max()) == (28, 77) and (ys.min(), ys.max()) == (25, 74)


def test_the_framing_window_holds_every_projected_vertex_and_point():
    from lsr1_core.hmr.render import framing_window
    a, _ = _quad(-1.0, -0.5, -1.0, -0.25, 6.0)
    b, _ = _quad(1.5, 2.0, -0.25, 0.25, 6.0)
    u0, v0, size = framing_window([a, b], CAM, points=np.array([[10.0, 200.0]]), margin=0.0)
    uv = project(torch.from_numpy(np.concatenate([a, b])).double(), CAM).numpy()
    pts = np.concatenate([uv, [[10.0, 200.0]]])
    assert u0 == pytest.approx(pts[:, 0].min()) and size == pytest.approx(np.ptp(pts, 0).max())
    assert (pts >= [u0, v0]).all() and (pts <= [u0 + size, v0 + size]).all()
    with pytest.raises(ValueError, match="window"):
        render_mesh(a, np.array([[0, 1, 2]]), window=(0, 0, 0))
