"""Plotly figure JSON in tests: plotly ≥ 6 writes numeric arrays as {"dtype", "bdata"(, "shape")}."""
import base64

import numpy as np


def decode(obj, as_list: bool = False):
    """``obj`` with every {"dtype", "bdata"} array decoded into a numpy array (or a list)."""
    if isinstance(obj, dict):
        if "bdata" in obj and "dtype" in obj:
            arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=np.dtype(obj["dtype"]))
            shape = obj.get("shape")
            if isinstance(shape, str):
                shape = tuple(int(v) for v in shape.split(","))
            arr = arr.reshape(shape) if shape else arr
            return arr.tolist() if as_list else arr
        return {k: decode(v, as_list) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v, as_list) for v in obj]
    return obj
