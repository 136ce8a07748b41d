"""Per-step meshes and rendered images of the Human mesh recovery page, shared by the page's runs and a
one-thread prefetcher that prepares the neighbouring steps while the user looks at one, so that stepping by
one finds them ready; ``one_thread`` (lsr1_core.device.single_thread) keeps torch on one thread while any of them computes."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import numpy as np

from lsr1_core.device import single_thread as one_thread  # noqa: F401 - the pages' name for it (counts users)
from lsr1_core.hmr.compare import camera_vertices
from lsr1_core.hmr.render import render_mesh



def meshes_at(body, fit: dict, step: int, names, sample: int = 0) -> dict[str, np.ndarray]:
    """Camera-coordinate float32 vertices of the named methods at ``step`` for one sample of the fit (one
    batched skinning call)."""
    names = [n for n in names if n in fit["poses"]]
    if not names:
        return {}
    with one_thread():
        V = camera_vertices(body, np.stack([fit["poses"][n][step, sample] for n in names]),
                            np.stack([fit["shapes"][n][step, sample] for n in names]))
    return dict(zip(names, V))


class StepCache:
    """A request for something the prefetcher is computing waits for it instead of computing it again."""

    def __init__(self, max_meshes: int = 64, max_images: int = 512):
        self.lock = threading.Lock()
        self.store = {"meshes": OrderedDict(), "images": OrderedDict()}
        self.cap = {"meshes": max_meshes, "images": max_images}
        self.pending: dict = {}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lsr1-hmr-prefetch")
        self.generation = 0

    def _get_or_compute(self, kind: str, key, compute):
        d = self.store[kind]
        with self.lock:
            if key in d:
                d.move_to_end(key)
                return d[key]
            fut = self.pending.get((kind, key))
            owner = fut is None
            if owner:
                fut = self.pending[(kind, key)] = Future()
        if not owner:
            return fut.result()
        try:
            value = compute()
        except BaseException as e:
            fut.set_exception(e)
            raise
        finally:
            with self.lock:
                self.pending.pop((kind, key), None)
        with self.lock:
            d[key] = value
            while len(d) > self.cap[kind]:
                d.popitem(last=False)
        fut.set_result(value)
        return value

    def meshes(self, body: Callable, key: tuple, fit: dict, step: int, names: tuple,
               stored: dict | None = None) -> dict[str, np.ndarray]:
        """The named meshes at ``step``: from this cache, from ``stored`` (name → vertices, e.g. from the disk
        cache) when it holds them all, else skinned by ``body()`` (a function: the body model is built only
        when a mesh must be skinned)."""
        if stored is not None and all(n in stored for n in names):
            return self._get_or_compute("meshes", (key, step, names), lambda: {n: stored[n] for n in names})
        return self._get_or_compute("meshes", (key, step, names), lambda: meshes_at(body(), fit, step, names))

    def image(self, key: tuple, verts: np.ndarray, faces: np.ndarray, rgb: tuple, window: tuple,
              resolution: int = 256, stored: str | None = None) -> str:
        """PNG data URI of one mesh rendered from the sample's camera over ``window`` (transparent
        background), or ``stored`` (the same, from the disk cache); ``key`` names the mesh, the window is
        added to it."""
        return self._get_or_compute("images", (key, window), lambda: stored or render_mesh(
            verts, faces, rgb, window=window, resolution=resolution).data_uri())

    def prefetch(self, body: Callable, key: tuple, fit: dict, steps, names: tuple, faces: np.ndarray,
                 render: Callable[[int, dict], None] | None, delay: float = 0.0) -> None:
        """Prepare ``steps`` in the background: their meshes (building the body model with ``body()`` if the
        page has not needed it yet), then ``render(step, meshes)`` (the page's own rendering of that step,
        which fills this cache); a newer call abandons an older one's remaining work. ``delay``: seconds to
        wait first, e.g. while the browser draws a first view that needed no body model (building it takes
        seconds of CPU that a machine with few cores would take from the browser)."""
        with self.lock:
            self.generation += 1
            gen = self.generation

        def job():
            time.sleep(delay)
            for s in steps:
                if gen != self.generation:
                    return
                try:
                    verts = self.meshes(body, key, fit, s, names)
                    if render is not None and gen == self.generation:
                        render(s, verts)
                except Exception:  # noqa: BLE001 - a failed prefetch is only a missed cache entry
                    return
        self.pool.submit(job)
